"""delete_remote and delete_remote_older on both engines: a remote original is
deleted only while a copy of it is on the local server, against real Dovecots.

Each case runs with the native engine, with the imapsync engine driving a
stand-in imapsync (``standin_imapsync.py``, always), and with the imapsync
engine driving the real imapsync 2.229 when one is on PATH (it cannot be
installed from our registries; the case says so when it skips).
"""

from __future__ import annotations

import os
import shutil
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from localnode import dovecot
from localnode.imap_pair import REMOTE_OF, Pair, running_pair
from ns8_imapsync.imap.connection import open_session
from ns8_imapsync.sync import poststeps
from ns8_imapsync.sync.imapsync_engine import ImapsyncEngine
from ns8_imapsync.sync.native import NativeEngine
from ns8_imapsync.sync.plan import SyncPlan
from ns8_imapsync.sync.report import RunReport
from standin_imapsync import executable
from syncplans import plan_for

TESTS = Path(__file__).resolve().parent
PORT_BASE = int(os.environ.get("DELETION_TEST_PORT_BASE", "24900"))
USER = "user02"  # bob@remote.test -> u2
SIEVE = (b'require ["fileinto", "mailbox"];\n'
         b'if header :contains "subject" "[FILE-ME]" { fileinto :create "Filed"; stop; }\n'
         b'if header :contains "subject" "[DROP]" { discard; stop; }\n')
OLD = datetime.now(UTC) - timedelta(days=40)
RECENT = datetime.now(UTC) - timedelta(hours=2)
REAL = shutil.which("imapsync")
ENGINES = ["native", "imapsync-standin",
           pytest.param("imapsync", marks=pytest.mark.skipif(
               REAL is None, reason="needs the real imapsync 2.229 on PATH (not installable from our "
                                    "registries: run it beside the project)"))]


@pytest.fixture(scope="module")
def pair() -> Iterator[Pair]:
    with running_pair(PORT_BASE) as started:
        yield started


@pytest.fixture
def fresh(pair: Pair) -> Pair:
    dovecot.wipe(pair.cfg.remote, REMOTE_OF[USER])
    dovecot.wipe(pair.cfg.mail1, "u2")
    dovecot.doveadm(pair.cfg.mail1, "sieve", "put", "-a", "-u", "u2", "migration", input=SIEVE)
    return pair


def make_plan(pair: Pair, tmp: Path, **options: object) -> SyncPlan:
    return plan_for(pair, tmp, USER, "u2_del01", **options)


def standin(tmp: Path) -> str:
    """An ``imapsync`` executable running the stand-in with this interpreter."""
    return executable(tmp, "standin_imapsync.py")


def run(engine: str, plan: SyncPlan, tmp: Path) -> tuple[RunReport, list[str]]:
    lines: list[str] = []
    if engine == "native":
        runner = NativeEngine()
    else:
        runner = ImapsyncEngine(imapsync=REAL if engine == "imapsync" else standin(tmp))  # type: ignore[arg-type]
    report = runner.run(plan, lambda p: None, threading.Event(), lines.append)
    return report, lines


def put_remote(pair: Pair, folder: str, items: list[tuple[str, datetime]], flags: tuple = ()) -> None:
    client = open_session(pair.remote(USER), pair.password(USER))
    try:
        if folder != "INBOX" and not client.folder_exists(folder):
            client.create_folder(folder)
        for subject, when in items:
            raw = (f"From: a@example.org\r\nTo: b@example.org\r\nSubject: {subject}\r\n"
                   f"Message-ID: <{abs(hash(subject))}@example.org>\r\n\r\nbody of {subject}\r\n").encode()
            client.append(folder, raw, list(flags), when)
    finally:
        client.logout()


def subjects(pair: Pair, side: str, folder: str = "INBOX", undeleted: bool = False) -> list[str]:
    ep, pw = (pair.remote(USER), pair.password(USER)) if side == "remote" else (pair.local(USER), pair.master_pass)
    client = open_session(ep, pw)
    try:
        if not client.folder_exists(folder):
            return []
        client.select_folder(folder, readonly=True)
        uids = client.search(["UNDELETED"] if undeleted else ["ALL"])
        data = client.fetch(uids, ["BODY.PEEK[HEADER.FIELDS (SUBJECT)]"]) if uids else {}
        return sorted(d[b"BODY[HEADER.FIELDS (SUBJECT)]"].decode().split(":", 1)[1].strip() for d in data.values())
    finally:
        client.logout()


def mark_local_deleted(pair: Pair, folder: str, subject: str) -> None:
    client = open_session(pair.local(USER), pair.master_pass)
    try:
        client.select_folder(folder)
        data = client.fetch(client.search(["ALL"]), ["BODY.PEEK[HEADER.FIELDS (SUBJECT)]"])
        uids = [u for u, d in data.items() if subject.encode() in d[b"BODY[HEADER.FIELDS (SUBJECT)]"]]
        client.delete_messages(uids)  # \Deleted only, as many clients do
    finally:
        client.logout()


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("older", [0, 10])
def test_sieve_filed_copies_allow_deletion_and_discarded_ones_never(fresh: Pair, tmp_path: Path, engine: str,
                                                                   older: int) -> None:
    put_remote(fresh, "INBOX", [("[FILE-ME] report", OLD), ("[DROP] spam", OLD), ("plain old", OLD),
                                ("plain fresh", RECENT)])
    plan = make_plan(fresh, tmp_path, folder_mode="inbox", sieve_enabled=True, delete_remote=True,
                     delete_remote_older=older)
    report, lines = run(engine, plan, tmp_path)
    assert report.ok, (report.errors, lines)
    assert subjects(fresh, "local", "Filed") == ["[FILE-ME] report"]
    assert subjects(fresh, "local", "INBOX", undeleted=True) == ["plain fresh", "plain old"]
    kept = ["[DROP] spam"] + (["plain fresh"] if older else [])
    assert subjects(fresh, "remote") == sorted(kept)  # the discarded one exists nowhere else
    assert any("kept on the remote server" in line and "discarded" in line for line in lines), lines
    # the next run neither copies the discarded message again nor deletes it
    report, lines = run(engine, plan, tmp_path)
    assert report.ok and report.copied == 0, (report.errors, lines)
    assert subjects(fresh, "remote") == sorted(kept)


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("older", [0, 10])
def test_a_copy_the_user_deleted_keeps_its_remote_original(fresh: Pair, tmp_path: Path, engine: str,
                                                         older: int) -> None:
    put_remote(fresh, "INBOX", [("one", OLD), ("marked deleted locally", OLD), ("fresh", RECENT)])
    put_remote(fresh, "Archive", [("archived", OLD)], flags=("\\Seen",))
    report, lines = run(engine, make_plan(fresh, tmp_path), tmp_path)  # first: copy, delete nothing
    assert report.ok, (report.errors, lines)
    mark_local_deleted(fresh, "INBOX", "marked deleted locally")
    plan = make_plan(fresh, tmp_path, delete_remote=True, delete_remote_older=older)
    if engine == "native":
        report, lines = run(engine, plan, tmp_path)
    else:
        # imapsync resyncs flags before our step runs (host1 has no \Deleted, so it undeletes the
        # copy): the window this rule guards is between imapsync's exit and the deletion step
        report, lines = RunReport(), []
        poststeps.after_run(plan, report, [], lines.append, threading.Event())
    assert report.ok, (report.errors, lines)
    assert subjects(fresh, "remote") == sorted(["marked deleted locally"] + (["fresh"] if older else []))
    assert subjects(fresh, "remote", "Archive") == []
    assert subjects(fresh, "local", "Archive") == ["archived"]
    assert any("1 message(s) kept on the remote server" in line for line in lines), lines


def damage_local_copy(pair: Pair, folder: str, subject: str) -> None:
    """The local copy replaced by one with the same headers and date but more bytes,
    as a re-sent literal after a dropped connection leaves it."""
    client = open_session(pair.local(USER), pair.master_pass)
    try:
        client.select_folder(folder)
        data = client.fetch(client.search(["ALL"]), ["BODY.PEEK[]", "INTERNALDATE"])
        uid, item = next((u, d) for u, d in data.items() if f"Subject: {subject}\r\n".encode() in d[b"BODY[]"])
        client.delete_messages([uid])
        client.expunge()
        client.append(folder, item[b"BODY[]"] + b"truncated literal, then the whole message again\r\n",
                      [], item[b"INTERNALDATE"])
    finally:
        client.logout()


@pytest.mark.parametrize("engine", ENGINES)
def test_a_damaged_copy_with_the_right_headers_proves_nothing(fresh: Pair, tmp_path: Path, engine: str) -> None:
    """A local copy proves its original only with the same size too: headers alone
    would let a damaged copy (same Message-Id and Received lines) stand for it.  The
    native engine keeps the original; the imapsync engine's completion replaces the
    damaged copy first (it checks contents where sizes differ), then deletes it."""
    put_remote(fresh, "INBOX", [("damaged", OLD), ("intact", OLD)])
    report, lines = run(engine, make_plan(fresh, tmp_path), tmp_path)
    assert report.ok, (report.errors, lines)
    damage_local_copy(fresh, "INBOX", "damaged")
    plan = make_plan(fresh, tmp_path, delete_remote=True)
    if engine == "native":
        report, lines = run(engine, plan, tmp_path)
        assert subjects(fresh, "remote") == ["damaged"], lines
        assert any("1 message(s) kept on the remote server" in line for line in lines), lines
        return
    # the post-steps alone: imapsync would see the copy as there (same headers) and copy nothing;
    # the completion compares contents where sizes differ, copies the message again, removes the
    # damaged copy, and only then is the original deleted
    report, lines = RunReport(), []
    poststeps.after_run(plan, report, [], lines.append, threading.Event())
    assert report.ok, (report.errors, lines)
    assert any("is not the remote message" in line and "copied again" in line for line in lines), lines
    assert subjects(fresh, "remote") == []
    assert subjects(fresh, "local") == ["damaged", "intact"]
    client = open_session(fresh.local(USER), fresh.master_pass)
    try:
        client.select_folder("INBOX", readonly=True)
        bodies = [d[b"BODY[]"] for d in client.fetch(client.search(["ALL"]), ["BODY.PEEK[]"]).values()]
    finally:
        client.logout()
    assert not any(b"truncated literal" in body for body in bodies)


def set_remote_flag(pair: Pair, folder: str, subject: str, flag: bytes) -> None:
    client = open_session(pair.remote(USER), pair.password(USER))
    try:
        client.select_folder(folder)
        uids = client.search(["SUBJECT", subject])
        client.add_flags(uids, [flag])
    finally:
        client.logout()


@pytest.mark.parametrize("engine", [e for e in ENGINES if e != "native"])
def test_imapsync_keeps_an_original_whose_flags_changed_after_its_folder_was_synced(
        fresh: Pair, tmp_path: Path, engine: str) -> None:
    """imapsync keeps no record of the flags it synced: a flag set on the remote after it
    passed the folder would be lost with the original, so a copy proves its original only
    with the same flags; the next run carries the flag, then deletes."""
    put_remote(fresh, "INBOX", [("flagged later", OLD), ("unchanged", OLD)])
    report, lines = run(engine, make_plan(fresh, tmp_path), tmp_path)
    assert report.ok, (report.errors, lines)
    set_remote_flag(fresh, "INBOX", "flagged later", b"\\Flagged")
    plan = make_plan(fresh, tmp_path, delete_remote=True)
    report, lines = RunReport(), []
    poststeps.after_run(plan, report, [], lines.append, threading.Event())  # the window after imapsync's exit
    assert report.ok, (report.errors, lines)
    assert subjects(fresh, "remote") == ["flagged later"], lines
    assert any("1 message(s) kept on the remote server: their flags differ" in line for line in lines), lines
    report, lines = run(engine, plan, tmp_path)
    assert report.ok, (report.errors, lines)
    assert subjects(fresh, "remote") == []
    client = open_session(fresh.local(USER), fresh.master_pass)
    try:
        client.select_folder("INBOX", readonly=True)
        assert client.search(["FLAGGED"]) and len(client.search(["ALL"])) == 2
    finally:
        client.logout()
