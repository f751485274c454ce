"""No incremental window: every imapsync-engine run examines every message of the selected folders.

imapsync's ``--maxage`` is a SEARCH SENTSINCE on the Date: header, so a
window computed from the last successful run hid restored, imported or
delayed mail, a message moved to another remote folder, and the whole older
mailbox of a remote account the task was pointed at later.

Both tests go through run control (runctl.Run in its own process), so the
history a window would be computed from is real. The argv test runs always,
with a stand-in imapsync that records its command line; the end-to-end test
runs the real imapsync 2.229 when it is on PATH, against the local Dovecot
pair (remote separator ".", local "/"), and compares mailboxes.
"""

from __future__ import annotations

import hashlib
import shutil
import time
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from pathlib import Path

import pytest
from localnode import dovecot
from localnode.imap_pair import REMOTE_OF, Pair
from ns8_imapsync import runstate
from ns8_imapsync.imap.connection import Endpoint, close_quietly, open_session
from ns8_imapsync.imap.folders import always_excluded, list_folders, select_folder
from runproc import endpoints, install_standin, kill_standins, set_mode, start_run, write_passwords

NAME = "u2_window"
DAY = 86400.0


def succeeded_before(tasks: Path, *days_ago: float) -> None:
    """A history of successful runs of this task, in the same folder mode."""
    tf = runstate.TaskFiles(tasks, NAME)
    now = time.time()
    for ago in days_ago:
        runstate.append_history(tf, runstate.RunStatus(state="succeeded", started=now - ago * DAY,
                                                       ended=now - ago * DAY + 60, exit_code=0,
                                                       engine="imapsync", folder_mode="all"))


def test_no_maxage_after_successful_runs(tmp_path: Path, pair: Pair) -> None:
    dovecot.wipe(pair.cfg.remote, REMOTE_OF["user02"])
    dovecot.wipe(pair.cfg.mail1, "u2")
    write_passwords(tmp_path, NAME, pair.password("user02"), pair.master_pass)
    bindir = install_standin(tmp_path)
    set_mode(tmp_path, "ok")
    succeeded_before(tmp_path, 10, 3.5, 0.5)
    try:
        out = start_run(tmp_path, NAME, endpoints(pair, "user02", "user02"), path=str(bindir))
        assert out.communicate(timeout=120)[0].strip() == "succeeded"
    finally:
        kill_standins(tmp_path)
    argv = (tmp_path / "argv.txt").read_text().split("\n")
    assert argv[0].endswith("/imapsync") and "--host1=" + pair.remote_host in argv
    assert not [a for a in argv if a.startswith(("--maxage", "--minage", "--search"))]


# ---------------------------------------------------------------- end to end, real imapsync

NOW = datetime.now(UTC).replace(microsecond=0)
BOB = {  # remote folder ("." separator) -> messages (tag, Date:), all long past
    "INBOX": [("bob-inbox-1", datetime(2023, 3, 1, 9, tzinfo=UTC)), ("bob-inbox-2", datetime(2024, 6, 2, 9, tzinfo=UTC))],
    "Archive": [("bob-archive-1", datetime(2020, 1, 5, 9, tzinfo=UTC)),
                ("bob-archive-2", datetime(2020, 2, 6, 9, tzinfo=UTC))],
    "Archive.2019": [("bob-2019-1", datetime(2019, 5, 7, 9, tzinfo=UTC))],
}
DAVE = {
    "INBOX": [("dave-inbox-1", datetime(2021, 4, 1, 9, tzinfo=UTC))],
    "Projects": [("dave-projects-1", datetime(2018, 8, 2, 9, tzinfo=UTC)),
                 ("dave-projects-2", datetime(2022, 9, 3, 9, tzinfo=UTC))],
}


def message(tag: str, when: datetime) -> bytes:
    return (f"Message-ID: <{tag}@window.test>\r\nDate: {format_datetime(when)}\r\nFrom: a@remote.test\r\n"
            f"To: someone@remote.test\r\nSubject: {tag}\r\n\r\nbody of {tag}\r\n").encode()


def fill(pair: Pair, user: str, folders: dict[str, list[tuple[str, datetime]]]) -> None:
    client = open_session(pair.remote(user), pair.password(user))
    try:
        for folder, items in folders.items():
            if folder != "INBOX" and not client.folder_exists(folder):
                client.create_folder(folder)
            for tag, when in items:
                client.append(folder, message(tag, when), (), when)
    finally:
        close_quietly(client)


def move_first(pair: Pair, user: str, source: str, target: str) -> None:
    """Move the first message of ``source`` to ``target`` on the remote (MOVE, as a mail client does)."""
    client = open_session(pair.remote(user), pair.password(user))
    try:
        client.select_folder(source)
        client.move(client.search(["ALL"])[:1], target)
    finally:
        close_quietly(client)


def mailbox(ep: Endpoint, password: str) -> dict[str, set[str]]:
    """Every folder (as a "/" path) -> the sha256 of each message's bytes."""
    client = open_session(ep, password)
    out: dict[str, set[str]] = {}
    try:
        for folder in list_folders(client):
            if always_excluded(folder.name, folder.delimiter):
                continue
            info = select_folder(client, folder, readonly=True)
            found = set()
            if info[b"EXISTS"]:
                for data in client.fetch(client.search(["ALL"]), ["BODY.PEEK[]"]).values():
                    found.add(hashlib.sha256(data[b"BODY[]"]).hexdigest())
            out[folder.name.replace(folder.delimiter, "/") if folder.delimiter else folder.name] = found
    finally:
        close_quietly(client)
    return out


def not_copied(pair: Pair, remote_user: str) -> dict[str, int]:
    """Per remote folder, how many of its messages the local mailbox (u2) lacks."""
    remote = mailbox(pair.remote(remote_user), pair.password(remote_user))
    local = mailbox(pair.local("user02"), pair.master_pass)
    return {f: len(shas - local.get(f, set())) for f, shas in remote.items() if shas - local.get(f, set())}


def run_task(tasks: Path, pair: Pair, remote_user: str) -> None:
    """One run of the task, its remote account being ``remote_user`` (a task edit changes it);
    imapsync itself was given no window (its echoed command line), whatever the steps after it do."""
    write_passwords(tasks, NAME, pair.password(remote_user), pair.master_pass)
    proc = start_run(tasks, NAME, endpoints(pair, remote_user, "user02"))
    out = proc.communicate(timeout=300)[0].strip()
    log = runstate.TaskFiles(tasks, NAME).log.read_text()
    assert out == "succeeded", log[-4000:]
    lines = log.splitlines()
    command = lines[next(i for i, line in enumerate(lines) if line.startswith("Command line used")) + 1]
    assert "--host1=" in command and "--maxage" not in command, command


def test_real_imapsync_copies_what_a_window_would_hide(tmp_path: Path, pair: Pair) -> None:
    if not shutil.which("imapsync"):
        pytest.skip("needs the real imapsync 2.229 on PATH (not installable from our registries: run it "
                    "beside the project)")
    for user in ("user02", "user03"):
        dovecot.wipe(pair.cfg.remote, REMOTE_OF[user])
    dovecot.wipe(pair.cfg.mail1, "u2")
    fill(pair, "user02", BOB)
    fill(pair, "user03", DAVE)
    run_task(tmp_path, pair, "user02")
    assert not_copied(pair, "user02") == {}

    # restored mail dated two years ago, and an old message filed into another folder
    fill(pair, "user02", {"INBOX": [("bob-restored", NOW - timedelta(days=730))]})
    move_first(pair, "user02", "Archive", "Archive.2019")
    assert not_copied(pair, "user02") == {"INBOX": 1, "Archive/2019": 1}
    run_task(tmp_path, pair, "user02")
    assert not_copied(pair, "user02") == {}

    # the task now points at another remote account: its whole (old) mailbox arrives
    assert not_copied(pair, "user03") == {"INBOX": 1, "Projects": 2}
    run_task(tmp_path, pair, "user03")
    assert not_copied(pair, "user03") == {}
    history = runstate.read_history(runstate.TaskFiles(tmp_path, NAME))
    assert [h["state"] for h in history] == ["succeeded"] * 3
