"""The imapsync engine's Python steps (completion, inbox \\Seen marking, Sieve
delivery, verified remote deletion, the delete_local pre-check), against the local
node's two real Dovecots.

imapsync cannot be installed from our registries (CI runs without it), so what
it would have copied is copied by the test (APPEND with flags and INTERNALDATE,
as imapsync does), and the steps are run on that; test_imapsync_completion and
test_remote_deletion also run them after the real imapsync when it is on PATH.  The last test runs the whole engine with a stand-in
``imapsync`` that prints imapsync's ``copied to`` lines for copies the test made,
so the wiring (pre-check, output, post-steps) is exercised end to end.
"""

from __future__ import annotations

import json
import os
import sys
import textwrap
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
from ns8_imapsync.sync.imapsync_output import CopiedMessage
from ns8_imapsync.sync.native import NativeEngine
from ns8_imapsync.sync.plan import SyncPlan
from ns8_imapsync.sync.report import RunReport
from syncplans import plan_for

PORT_BASE = int(os.environ.get("POSTSTEPS_TEST_PORT_BASE", "24600"))
SIEVE = b'require ["fileinto", "mailbox"];\nif header :contains "subject" "[FILE-ME]" { fileinto :create "Filed"; }\n'
USER = "user02"  # bob@remote.test -> u2


@pytest.fixture(scope="module")
def pair() -> Iterator[Pair]:
    with running_pair(PORT_BASE) as started:
        yield started


@pytest.fixture
def fresh(pair: Pair) -> Pair:
    dovecot.wipe(pair.cfg.remote, REMOTE_OF[USER])
    dovecot.wipe(pair.cfg.mail1, "u2")
    return pair


def make_plan(pair: Pair, tmp: Path, **options: object) -> SyncPlan:
    return plan_for(pair, tmp, USER, "u2_post01", **options)


def message(subject: str, i: int, message_id: bool = True) -> bytes:
    mid = f"Message-ID: <{subject.replace(' ', '.')}.{i}@example.org>\r\n" if message_id else ""
    return (f"From: a@example.org\r\nTo: b@example.org\r\nSubject: {subject}\r\n{mid}\r\n"
            f"body {i}\r\n").encode()


def put_remote(pair: Pair, folder: str, messages: list[tuple[bytes, list[str], datetime]]) -> None:
    client = open_session(pair.remote(USER), pair.password(USER))
    try:
        if folder != "INBOX" and not client.folder_exists(folder):
            client.create_folder(folder)
        for raw, flags, when in messages:
            client.append(folder, raw, flags, when)
    finally:
        client.logout()


def imapsync_like_copy(pair: Pair, skip: frozenset[int] = frozenset()) -> list[CopiedMessage]:
    """What ``imapsync --folder INBOX --search1=UNSEEN`` appends, and the lines it would print."""
    c1 = open_session(pair.remote(USER), pair.password(USER))
    c2 = open_session(pair.local(USER), pair.master_pass)
    copied = []
    try:
        c1.select_folder("INBOX", readonly=True)
        uids = [u for u in c1.search(["UNSEEN"]) if u not in skip]
        for uid, data in c1.fetch(uids, ["BODY.PEEK[]", "FLAGS", "INTERNALDATE", "RFC822.SIZE"]).items():
            flags = [f for f in data[b"FLAGS"] if f.lower() != b"\\recent"]
            reply = c2.append("INBOX", data[b"BODY[]"], flags, data[b"INTERNALDATE"])
            uid2 = int(reply.split(b"APPENDUID ")[1].split(b" ")[1].rstrip(b"]"))
            copied.append(CopiedMessage("INBOX", uid, data[b"RFC822.SIZE"], "INBOX", uid2))
    finally:
        c1.logout()
        c2.logout()
    return copied


def flags_by_subject(pair: Pair, side: str, folder: str = "INBOX") -> dict[str, set[bytes]]:
    ep, pw = (pair.remote(USER), pair.password(USER)) if side == "remote" else (pair.local(USER), pair.master_pass)
    client = open_session(ep, pw)
    try:
        if not client.folder_exists(folder):
            return {}
        client.select_folder(folder, readonly=True)
        out = {}
        for data in client.fetch(client.search(["ALL"]), ["FLAGS", "BODY.PEEK[HEADER.FIELDS (SUBJECT)]"]).values():
            subject = data[b"BODY[HEADER.FIELDS (SUBJECT)]"].decode().split(":", 1)[1].strip()
            out[subject] = set(data[b"FLAGS"])
        return out
    finally:
        client.logout()


def after(plan: SyncPlan, copied: list[CopiedMessage], stop: bool = False) -> tuple[RunReport, list[str]]:
    report, lines, event = RunReport(), [], threading.Event()
    if stop:
        event.set()
    poststeps.after_run(plan, report, copied, lines.append, event)
    return report, lines


WHEN = datetime(2024, 3, 1, 10, 0, tzinfo=UTC)


def test_inbox_marks_only_verified_copies_seen(fresh: Pair, tmp_path: Path) -> None:
    put_remote(fresh, "INBOX", [(message("copied", 1), [], WHEN), (message("also copied", 2), [], WHEN),
                                (message("read before", 3), ["\\Seen"], WHEN)])
    plan = make_plan(fresh, tmp_path, folder_mode="inbox")
    copied = imapsync_like_copy(fresh)
    assert len(copied) == 2
    put_remote(fresh, "INBOX", [(message("arrived after the copy", 4), [], WHEN),
                                (message("no id", 5, message_id=False), [], WHEN)])
    report, lines = after(plan, copied, stop=True)  # stopped: no completion, only the inbox steps
    remote = flags_by_subject(fresh, "remote")
    assert b"\\Seen" in remote["copied"] and b"\\Seen" in remote["also copied"]
    # not on the local server: still new on the remote, so the next run copies them
    assert b"\\Seen" not in remote["arrived after the copy"] and b"\\Seen" not in remote["no id"]
    assert any("2 remote message(s) verified" in line for line in lines)

    report, lines = after(plan, [])  # a whole run: the completion copies what imapsync left out
    assert report.ok, report.errors
    assert report.copied == 2 and [(t.listed, t.found) for t in report.folders] == [(2, 2)]
    assert all(b"\\Seen" in f for f in flags_by_subject(fresh, "remote").values())
    local = flags_by_subject(fresh, "local")
    assert set(local) == {"copied", "also copied", "arrived after the copy", "no id"}
    assert all(b"\\Seen" not in f for f in local.values())  # new for the local user
    assert after(plan, [])[0].copied == 0


def test_inbox_multiset_two_identical_messages_need_two_copies(fresh: Pair, tmp_path: Path) -> None:
    twin = message("twin", 1)
    put_remote(fresh, "INBOX", [(twin, [], WHEN)])
    copied = imapsync_like_copy(fresh)
    # the same message delivered again an hour later: imapsync never copies it
    put_remote(fresh, "INBOX", [(twin, [], WHEN + timedelta(hours=1))])
    plan = make_plan(fresh, tmp_path, folder_mode="inbox")
    after(plan, copied, stop=True)
    assert _unseen(fresh) == 1  # one copy proves one message
    report, _ = after(plan, [])
    assert report.ok and report.copied == 1  # the completion adds the second copy
    assert _unseen(fresh) == 0 and _count(fresh, "local", "INBOX") == 2


def _unseen(pair: Pair) -> int:
    client = open_session(pair.remote(USER), pair.password(USER))
    try:
        client.select_folder("INBOX", readonly=True)
        return len(client.search(["UNSEEN"]))
    finally:
        client.logout()


def _count(pair: Pair, side: str, folder: str) -> int:
    ep, pw = (pair.remote(USER), pair.password(USER)) if side == "remote" else (pair.local(USER), pair.master_pass)
    client = open_session(ep, pw)
    try:
        return int(client.folder_status(folder, ["MESSAGES"])[b"MESSAGES"])
    finally:
        client.logout()


def test_sieve_files_this_runs_copies_and_finishes_an_interrupted_run(fresh: Pair, tmp_path: Path) -> None:
    dovecot.doveadm(fresh.cfg.mail1, "sieve", "put", "-a", "-u", "u2", "migration", input=SIEVE)
    plan = make_plan(fresh, tmp_path, folder_mode="inbox", sieve_enabled=True)
    put_remote(fresh, "INBOX", [(message("[FILE-ME] one", 1), [], WHEN), (message("plain", 2), [], WHEN)])
    copied = imapsync_like_copy(fresh)
    # a message already \Deleted in the local INBOX, listed as copied: never expunged by us
    put_remote(fresh, "INBOX", [(message("[FILE-ME] deleted one", 3), ["\\Deleted"], WHEN)])
    copied += imapsync_like_copy(fresh, skip=frozenset(c.uid1 for c in copied))
    report, lines = after(plan, copied, stop=True)  # a stop still finishes the inbox steps
    assert report.ok, report.errors
    local_inbox, filed = flags_by_subject(fresh, "local"), flags_by_subject(fresh, "local", "Filed")
    assert set(filed) == {"[FILE-ME] one"}
    assert set(local_inbox) == {"plain", "[FILE-ME] deleted one"}
    assert not (tmp_path / "u2_post01.sieve.json").exists()

    # an interrupted run: the copies are made, the pending list written, the filter never ran
    put_remote(fresh, "INBOX", [(message("[FILE-ME] two", 4), [], WHEN)])
    copied = imapsync_like_copy(fresh)
    assert len(copied) == 1
    info = json.dumps({"uidvalidity": _uidvalidity(fresh), "uids": [copied[0].uid2]})
    (tmp_path / "u2_post01.sieve.json").write_text(info)
    after(plan, [])  # the next run copies nothing new, yet filters what was pending
    assert set(flags_by_subject(fresh, "local", "Filed")) == {"[FILE-ME] one", "[FILE-ME] two"}
    assert not (tmp_path / "u2_post01.sieve.json").exists()
    after(plan, [])  # nothing is filtered twice
    assert len(flags_by_subject(fresh, "local", "Filed")) == 2


def _uidvalidity(pair: Pair) -> int:
    client = open_session(pair.local(USER), pair.master_pass)
    try:
        return int(client.folder_status("INBOX", ["UIDVALIDITY"])[b"UIDVALIDITY"])
    finally:
        client.logout()


def test_sieve_unavailable_stops_before_imapsync(fresh: Pair, tmp_path: Path) -> None:
    plan = make_plan(fresh, tmp_path, folder_mode="inbox", sieve_enabled=True)
    plan.target = fresh.remote(USER)  # a Dovecot without imap_filter_sieve
    plan.target_password_file.write_text(fresh.password(USER) + "\n")
    report = poststeps.precheck(plan, lambda _line: None)
    assert report is not None and report.error_class == "sieve_unavailable"
    assert "FILTER=SIEVE" in report.reason


def test_delete_remote_older_deletes_only_old_verified_messages(fresh: Pair, tmp_path: Path) -> None:
    old, recent = datetime.now(UTC) - timedelta(days=40), datetime.now(UTC) - timedelta(days=2)
    put_remote(fresh, "INBOX", [(message("old copied", 1), ["\\Seen"], old),
                                (message("recent copied", 2), [], recent)])
    put_remote(fresh, "Archive", [(message("old archived", 3), ["\\Seen"], old),
                                  (message("old not copied", 4), [], old),
                                  (message("old, local copy marked deleted", 5), [], old)])
    plan = make_plan(fresh, tmp_path, delete_remote=True, delete_remote_older=10)
    # everything copied first (the native engine without deletions plays imapsync)
    assert NativeEngine().run(make_plan(fresh, tmp_path), lambda p: None, threading.Event(),
                              lambda line: None).ok
    client = open_session(fresh.local(USER), fresh.master_pass)  # one old copy is gone locally
    try:
        client.select_folder("Archive")
        subjects = {d[b"BODY[HEADER.FIELDS (SUBJECT)]"]: u for u, d in
                    client.fetch(client.search(["ALL"]), ["BODY.PEEK[HEADER.FIELDS (SUBJECT)]"]).items()}
        gone = [u for subject, u in subjects.items() if b"not copied" in subject]
        client.delete_messages(gone)
        client.expunge()
        # the user deleted this copy in a client that only marks: it is no copy any more
        client.delete_messages([u for subject, u in subjects.items() if b"marked deleted" in subject])
    finally:
        client.logout()
    report, lines = after(plan, [], stop=True)  # a stopped run deletes nothing
    assert report.deleted_host1 == 0
    report, lines = after(plan, [])
    assert report.ok, report.errors
    # "old not copied" is copied again by the completion, then deleted: its copy is there
    assert report.copied == 1 and report.deleted_host1 == 3
    assert set(flags_by_subject(fresh, "remote")) == {"recent copied"}
    assert set(flags_by_subject(fresh, "remote", "Archive")) == {"old, local copy marked deleted"}
    assert any("1 message(s) kept on the remote server" in line for line in lines)
    assert after(plan, [])[0].deleted_host1 == 0


def test_delete_local_precheck_brakes_on_an_emptied_remote(fresh: Pair, tmp_path: Path) -> None:
    put_remote(fresh, "INBOX", [(message(f"m{i}", i), [], WHEN) for i in range(4)])
    put_remote(fresh, "Projects", [(message(f"p{i}", i), [], WHEN) for i in range(2)])
    plan = make_plan(fresh, tmp_path, delete_local=True)
    assert NativeEngine().run(plan, lambda p: None, threading.Event(), lambda line: None).ok
    assert poststeps.precheck(plan, lambda _line: None) is None  # in step: nothing would go

    dovecot.wipe(fresh.cfg.remote, REMOTE_OF[USER])  # the remote looks empty
    report = poststeps.precheck(plan, lambda _line: None)
    assert report is not None and report.error_class == "delete_local_brake"
    assert any("INBOX: the remote folder is empty" in e for e in report.errors)
    assert any("Projects: the folder is absent on the remote server" in e for e in report.errors)

    put_remote(fresh, "INBOX", [(message(f"m{i}", i), [], WHEN) for i in range(1)])
    put_remote(fresh, "Projects", [(message(f"p{i}", i), [], WHEN) for i in range(2)])
    report = poststeps.precheck(plan, lambda _line: None)  # 3 of 4 would go: over half
    assert report is not None and report.errors == ["delete_local brake: INBOX: 3 of 4 local messages would be deleted"]


FAKE = f"""#!{sys.executable}
import json, os, sys
opt = dict(a[2:].split("=", 1) for a in sys.argv[1:] if a.startswith("--") and "=" in a)
with open(opt["pidfile"], "w") as f:
    f.write(f"{{os.getpid()}}\\n")
here = os.path.dirname(os.path.abspath(__file__))
open(os.path.join(here, "ran"), "w").close()
for c in json.load(open(os.path.join(here, "copied.json"))):
    print(f"msg INBOX/{{c[0]}} {{{{{{c[1]}}}}}}        copied to INBOX/{{c[2]}}          1.00 msgs/s  1.000 KiB/s", flush=True)
os.unlink(opt["pidfile"])
"""


def test_engine_runs_the_steps_around_imapsync(fresh: Pair, tmp_path: Path) -> None:
    dovecot.doveadm(fresh.cfg.mail1, "sieve", "put", "-a", "-u", "u2", "migration", input=SIEVE)
    put_remote(fresh, "INBOX", [(message("[FILE-ME] engine", 1), [], WHEN), (message("kept", 2), [], WHEN)])
    copied = imapsync_like_copy(fresh)
    bindir = tmp_path / "bin"
    bindir.mkdir()
    (bindir / "copied.json").write_text(json.dumps([[c.uid1, c.size, c.uid2] for c in copied]))
    fake = bindir / "imapsync"
    fake.write_text(textwrap.dedent(FAKE))
    fake.chmod(0o755)
    plan = make_plan(fresh, tmp_path, folder_mode="inbox", sieve_enabled=True)
    engine = ImapsyncEngine(imapsync=str(fake))
    lines: list[str] = []
    report = engine.run(plan, lambda p: None, threading.Event(), lines.append)
    assert (bindir / "ran").exists() and len(engine.last_copied) == 2
    assert report.ok, (report.errors, lines)
    assert set(flags_by_subject(fresh, "local", "Filed")) == {"[FILE-ME] engine"}
    assert all(b"\\Seen" in f for f in flags_by_subject(fresh, "remote").values())

    # without FILTER=SIEVE on host2 imapsync never starts
    (bindir / "ran").unlink()
    plan.target = fresh.remote(USER)
    plan.target_password_file.write_text(fresh.password(USER) + "\n")
    report = engine.run(plan, lambda p: None, threading.Event(), lines.append)
    assert report.error_class == "sieve_unavailable" and not (bindir / "ran").exists()


def test_inbox_sieve_and_age_deletion_find_copies_the_script_filed(fresh: Pair, tmp_path: Path) -> None:
    dovecot.doveadm(fresh.cfg.mail1, "sieve", "put", "-a", "-u", "u2", "migration", input=SIEVE)
    old, recent = datetime.now(UTC) - timedelta(days=40), datetime.now(UTC) - timedelta(days=1)
    put_remote(fresh, "INBOX", [(message("[FILE-ME] old", 1), [], old), (message("old kept in inbox", 2), [], old),
                                (message("[FILE-ME] recent", 3), [], recent)])
    plan = make_plan(fresh, tmp_path, folder_mode="inbox", sieve_enabled=True, delete_remote=True,
                     delete_remote_older=10)
    report, lines = after(plan, imapsync_like_copy(fresh))
    assert report.ok, report.errors
    assert set(flags_by_subject(fresh, "local", "Filed")) == {"[FILE-ME] old", "[FILE-ME] recent"}
    assert report.deleted_host1 == 2  # the filed old one too, found in Filed
    assert set(flags_by_subject(fresh, "remote")) == {"[FILE-ME] recent"}
