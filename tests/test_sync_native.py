"""The native engine end to end, against the local node's two real Dovecots.

The remote Dovecot plays the provider (Maildir++, "." separator), mail1 the NS8
mail server ("/" separator, master user, FILTER=SIEVE).  Every test compares
whole mailboxes: per folder, the multiset of (sha256 of the bytes, flags,
INTERNALDATE), so "every message exactly once, with its folder, flags and date"
is what is asserted, not a count.

Remote accounts: alice (user01) holds a 300-message corpus filled once and only
read; bob (user02) and dave (user03) are refilled by the tests that change them.
Local users: u1 (alice's), u2 (bob's), u3 (dave's), wiped before each use.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import signal
import subprocess
import sys
import threading
from collections import Counter
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from localnode import corpus, dovecot
from localnode.imap_pair import REMOTE_OF, Pair, running_pair
from mailboxes import Key, mailbox
from ns8_imapsync.imap.connection import open_session
from ns8_imapsync.sync import syncstate as ss
from ns8_imapsync.sync.native import NativeEngine
from ns8_imapsync.sync.plan import SyncPlan
from ns8_imapsync.sync.report import Progress, RunReport
from syncplans import plan_for

REPO = Path(__file__).resolve().parents[1]
ALICE_SEED, ALICE_COUNT = 11, 300
LARGE = dict(large=2, large_size=250_000)
SMALL_COUNT = 40
ENGINE_KW = dict(large_message=100_000, chunk_size=64_000)  # exercise the chunked path on the corpus
PORT_BASE = int(os.environ.get("NATIVE_TEST_PORT_BASE", "24300"))



@pytest.fixture(scope="module")
def pair() -> Iterator[Pair]:
    """The conftest pair, on its own port base so it runs beside the other IMAP test modules."""
    with running_pair(PORT_BASE) as started:
        yield started


@pytest.fixture(scope="module")
def alice(pair: Pair) -> list[corpus.CorpusMessage]:
    """alice's remote corpus (read-only for the tests): the built messages, with their kinds."""
    corpus.fill(pair.cfg.remote, REMOTE_OF["user01"], pair.password("user01"), ALICE_SEED, ALICE_COUNT, **LARGE)
    return corpus.build(ALICE_SEED, ALICE_COUNT, **LARGE)


# ---------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------


def make_plan(pair: Pair, tmp: Path, user: str, **options: object) -> SyncPlan:
    """A plan for remote account ``user`` -> its local user, password files 0600 in ``tmp``."""
    return plan_for(pair, tmp, user, f"{user}_t1", **options)


def sync(plan: SyncPlan, *, progress: Callable[[Progress], None] | None = None,
         stop: threading.Event | None = None, **engine_kw: object) -> tuple[RunReport, NativeEngine, list[str]]:
    engine = NativeEngine(**{**ENGINE_KW, **engine_kw})  # type: ignore[arg-type]
    lines: list[str] = []
    report = engine.run(plan, progress or (lambda p: None), stop or threading.Event(), lines.append)
    return report, engine, lines


def remote_box(pair: Pair, user: str) -> dict[str, Counter[Key]]:
    return mailbox(pair.remote(user), pair.password(user))


def local_box(pair: Pair, user: str) -> dict[str, Counter[Key]]:
    return mailbox(pair.local(user), pair.master_pass)


def local_user(user: str) -> str:
    return {"user01": "u1", "user02": "u2", "user03": "u3"}[user]


def wipe_local(pair: Pair, user: str) -> None:
    dovecot.wipe(pair.cfg.mail1, local_user(user))


def refill_remote(pair: Pair, user: str, seed: int, count: int = SMALL_COUNT) -> list[corpus.CorpusMessage]:
    dovecot.wipe(pair.cfg.remote, REMOTE_OF[user])
    corpus.fill(pair.cfg.remote, REMOTE_OF[user], pair.password(user), seed, count, large=1, large_size=150_000)
    return corpus.build(seed, count, large=1, large_size=150_000)


def sha(msg: corpus.CorpusMessage) -> str:
    return hashlib.sha256(msg.raw).hexdigest()


def shas(box: dict[str, Counter[Key]], folder: str) -> Counter[str]:
    out: Counter[str] = Counter()
    for key, n in box.get(folder, Counter()).items():
        out[key[0]] += n
    return out


def assert_exact_copy(pair: Pair, user: str) -> dict[str, Counter[Key]]:
    remote, local = remote_box(pair, user), local_box(pair, user)
    assert local == remote
    return local


# ---------------------------------------------------------------------------
# full copy, re-runs, crash and network failures (alice -> u1)
# ---------------------------------------------------------------------------


def test_full_copy_is_exact_and_a_rerun_is_a_few_commands(pair: Pair, alice, tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    wipe_local(pair, "user01")
    plan = make_plan(pair, tmp_path, "user01")
    events: list[Progress] = []
    report, engine, lines = sync(plan, progress=events.append)
    assert report.ok, report.errors
    assert report.copied == ALICE_COUNT and report.skipped == 0
    assert engine.stats["h2.append_streamed"] > 0  # messages above large_message went through the spool
    # MULTIAPPEND: one APPEND command per batch of small messages, plus one per large message
    per_folder = Counter(m.folder for m in alice)
    batches = sum(-(-n // 50) for n in per_folder.values())
    assert engine.stats["h2.append_batched"] > 0
    assert engine.stats["h2.append"] <= batches + engine.stats["h2.append_streamed"]

    local = assert_exact_copy(pair, "user01")  # folders, bytes, flags, INTERNALDATE; duplicates included
    assert {"Projets/Réunions", "Archive/2023", "Clients/ACME/Contracts", "Old Projects", "Документы",
            "日本語", "Empty Folder"} <= set(local)
    assert not any("." in name for name in local)
    bare = next(m for m in alice if m.kind == corpus.NO_MESSAGE_ID_NO_RECEIVED)
    assert shas(local, "INBOX")[sha(bare)] == 1  # imapsync would skip it: no Message-Id, no Received
    for dup in (m for m in alice if m.duplicate_of is not None):
        assert shas(local, dup.folder)[sha(dup)] == 2  # exact duplicates: both copies, as on the remote
    assert report.host2.messages == report.host1.messages == ALICE_COUNT
    assert events[-1].messages_done == events[-1].messages_total == ALICE_COUNT
    assert len(events) >= ALICE_COUNT // 50 + 17
    assert pair.password("user01") not in "\n".join(lines)
    state = tmp_path / "user01_t1.native.db"
    assert state.stat().st_mode & 0o777 == 0o600

    entry_reads: list[bytes] = []
    real_loader = ss.SyncState._entries_loader
    monkeypatch.setattr(ss.SyncState, "_entries_loader",
                        lambda self, raw: lambda: (entry_reads.append(raw), real_loader(self, raw)())[1])
    report2, engine2, _ = sync(plan)
    assert entry_reads == []  # unchanged folders: their messages' records are not even read
    assert report2.ok and report2.copied == 0 and report2.skipped == ALICE_COUNT
    folders = len(local)
    assert engine2.stats["folders.unchanged"] == folders
    assert engine2.stats["h1.select"] == engine2.stats["h2.select"] == 0
    assert engine2.stats["h1.fetch_meta"] == engine2.stats["h1.fetch_body"] == engine2.stats["h2.append"] == 0
    # login + LIST + NAMESPACE + one STATUS per folder, on each side
    assert engine2.stats["h1.commands"] <= folders + 12
    assert engine2.stats["h2.commands"] <= folders + 12
    assert local_box(pair, "user01") == local


def test_lost_state_falls_back_to_headers_and_copies_nothing(pair: Pair, alice, tmp_path: Path) -> None:
    """Also what happens after an imapsync run: the same signatures recognise every message."""
    wipe_local(pair, "user01")
    plan = make_plan(pair, tmp_path, "user01")
    assert sync(plan)[0].ok
    (tmp_path / "user01_t1.native.db").unlink()
    report, engine, _ = sync(plan)
    assert report.ok and report.copied == 0 and report.skipped == ALICE_COUNT
    assert engine.stats["h2.scanned"] == ALICE_COUNT  # every local message identified by header or hash
    assert_exact_copy(pair, "user01")


def test_stop_mid_folder_then_rerun_is_exact(pair: Pair, alice, tmp_path: Path) -> None:
    wipe_local(pair, "user01")
    plan = make_plan(pair, tmp_path, "user01")
    stop = threading.Event()

    def progress(p: Progress) -> None:
        if p.folder == "INBOX" and p.messages_done >= 50:
            stop.set()

    report, _, _ = sync(plan, progress=progress, stop=stop)
    assert report.error_class == "stopped" and not report.ok
    assert 50 <= report.copied < ALICE_COUNT
    first = report.copied
    report2, _, _ = sync(plan)
    assert report2.ok and report2.copied == ALICE_COUNT - first
    assert_exact_copy(pair, "user01")


CHILD = r"""
import json, os, signal, sys, threading
from pathlib import Path
from ns8_imapsync.imap.connection import Endpoint
from ns8_imapsync.sync import syncstate as ss
from ns8_imapsync.sync.native import NativeEngine
from ns8_imapsync.sync.plan import SyncPlan

cfg = json.loads(sys.argv[1])
plan = SyncPlan(cfg["task"], Endpoint(**cfg["source"]), Endpoint(**cfg["target"]),
                Path(cfg["spw"]), Path(cfg["tpw"]), workdir=Path(cfg["workdir"]))

def after_append(n):
    if n >= cfg["kill_at"]:
        os.kill(os.getpid(), signal.SIGKILL)  # as the OOM killer or a container stop would

NativeEngine(after_append=after_append, **cfg["engine"]).run(plan, lambda p: None, threading.Event(), print)
sys.exit(3)  # not reached
"""


def test_sigkill_mid_folder_then_rerun_is_exact(pair: Pair, alice, tmp_path: Path) -> None:
    wipe_local(pair, "user01")
    plan = make_plan(pair, tmp_path, "user01")
    kill_at = 75  # after the first state write (batch of 50), mid-INBOX
    cfg = {"task": plan.task_name, "source": dataclasses.asdict(plan.source),
           "target": dataclasses.asdict(plan.target), "spw": str(plan.source_password_file),
           "tpw": str(plan.target_password_file), "workdir": str(tmp_path), "kill_at": kill_at,
           "engine": ENGINE_KW}
    env = {**os.environ, "PYTHONPATH": str(REPO / "imageroot" / "pypkg")}
    proc = subprocess.run([sys.executable, "-c", CHILD, json.dumps(cfg)], env=env, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    on_local = sum(sum(c.values()) for c in local_box(pair, "user01").values())
    assert kill_at <= on_local < ALICE_COUNT  # a batch is acknowledged whole: at least the 75
    report, engine, _ = sync(plan)
    assert report.ok, report.errors
    assert report.copied == ALICE_COUNT - on_local  # what the server acknowledged is not redone
    assert engine.stats["h2.scanned"] > 0  # the ones the state missed were found by header
    assert_exact_copy(pair, "user01")


def test_remote_connection_drop_then_rerun_is_exact(pair: Pair, alice, tmp_path: Path) -> None:
    wipe_local(pair, "user01")
    plan = make_plan(pair, tmp_path, "user01")
    kicked = threading.Event()

    def progress(p: Progress) -> None:
        if p.messages_done >= 50 and not kicked.is_set():
            kicked.set()
            dovecot.doveadm(pair.cfg.remote, "kick", REMOTE_OF["user01"])
            threading.Event().wait(0.3)  # let the remote imap process die

    report, _, lines = sync(plan, progress=progress)
    assert kicked.is_set()
    assert report.error_class in ("connection_lost", "Check_hostname_or_tcp_port"), report.errors
    assert "remote server" in report.errors[0]
    report2, _, _ = sync(plan)
    assert report2.ok and report2.copied == ALICE_COUNT - report.copied
    assert_exact_copy(pair, "user01")


def test_login_and_connect_failures_are_classified(pair: Pair, alice, tmp_path: Path) -> None:
    plan = make_plan(pair, tmp_path / "a", "user01")
    plan.source_password_file.write_text("wrong-password\n")
    report, _, lines = sync(plan)
    assert report.error_class == "bad_user_credentials" and report.exit_code != 0
    plan = make_plan(pair, tmp_path / "b", "user01")
    plan.target_password_file.write_text("wrong-master\n")
    report, _, lines = sync(plan)
    assert report.error_class == "bad_master_credentials"
    assert "wrong-master" not in "\n".join(lines + report.errors)
    plan = make_plan(pair, tmp_path / "c", "user01")
    plan.source = dataclasses.replace(plan.source, port=9, timeout=5)  # nothing listens there
    assert sync(plan)[0].error_class == "Check_hostname_or_tcp_port"


# ---------------------------------------------------------------------------
# flags (dave -> u3)
# ---------------------------------------------------------------------------


def _uids_by_sha(client, folder: str) -> dict[str, int]:
    client.select_folder(folder)
    data = client.fetch(client.search(["ALL"]), ["BODY.PEEK[]"])
    return {hashlib.sha256(d[b"BODY[]"]).hexdigest(): uid for uid, d in data.items()}


def test_flags_follow_remote_changes_but_never_revert_the_local_user(pair: Pair, tmp_path: Path) -> None:
    msgs = refill_remote(pair, "user03", seed=31)
    wipe_local(pair, "user03")
    plan = make_plan(pair, tmp_path, "user03")
    assert sync(plan)[0].ok
    dups = {sha(m) for m in msgs if m.duplicate_of is not None}
    inbox = [m for m in msgs if m.folder == "INBOX" and sha(m) not in dups]
    plain = [m for m in inbox if not {"\\Flagged", "$Label1", "Work"} & set(m.flags)]
    seen = [m for m in plain if "\\Seen" in m.flags]
    unseen = [m for m in plain if "\\Seen" not in m.flags]
    assert len(seen) >= 3 and len(unseen) >= 3
    a, e, f = seen[:3]  # a: read on the remote, marked unread locally; e: unread remotely; f: keyword
    b, c, d = unseen[:3]  # b: marked read locally; c: flagged remotely; d: read remotely

    local = open_session(pair.local("user03"), pair.master_pass)
    remote = open_session(pair.remote("user03"), pair.password("user03"))
    try:
        l_uid, r_uid = _uids_by_sha(local, "INBOX"), _uids_by_sha(remote, "INBOX")
        local.remove_flags([l_uid[sha(a)]], [b"\\Seen"])
        local.add_flags([l_uid[sha(b)]], [b"\\Seen"])
        remote.add_flags([r_uid[sha(c)]], [b"\\Flagged", b"$Label1"])
        remote.add_flags([r_uid[sha(d)]], [b"\\Seen"])
        remote.remove_flags([r_uid[sha(e)]], [b"\\Seen"])  # unread on the remote: \Seen stays locally
        remote.add_flags([r_uid[sha(f)]], [b"Work"])
        report, _, _ = sync(plan)
        assert report.ok and report.copied == 0
        assert report.flags_updated == 3  # c, d, f
        remote.remove_flags([r_uid[sha(f)]], [b"Work"])  # a keyword cleared on the remote is cleared
        assert sync(plan)[0].flags_updated == 1
        flags = {uid: {x.decode() for x in fl} for uid, fl in local.get_flags(list(l_uid.values())).items()}
    finally:
        local.logout()
        remote.logout()
    assert "\\Seen" not in flags[l_uid[sha(a)]]
    assert "\\Seen" in flags[l_uid[sha(b)]]
    assert {"\\Flagged", "$Label1"} <= flags[l_uid[sha(c)]]
    assert "\\Seen" in flags[l_uid[sha(d)]]
    assert "\\Seen" in flags[l_uid[sha(e)]]
    assert "Work" not in flags[l_uid[sha(f)]]


# ---------------------------------------------------------------------------
# inbox mode and sieve (bob -> u2)
# ---------------------------------------------------------------------------


def _append_remote(pair: Pair, user: str, subjects: list[str]) -> None:
    client = open_session(pair.remote(user), pair.password(user))
    try:
        for i, subject in enumerate(subjects):
            msg = (f"From: a@example.org\r\nTo: b@example.org\r\nSubject: {subject}\r\n"
                   f"Message-ID: <{subject.replace(' ', '.')}.{i}@example.org>\r\n\r\nbody {i}\r\n").encode()
            client.append("INBOX", msg, [], datetime(2024, 3, 1, 10, i, tzinfo=UTC))
    finally:
        client.logout()


def test_a_rerun_after_a_few_changes_reads_only_the_changes(pair: Pair, tmp_path: Path) -> None:
    """QRESYNC: flags changed, messages expunged and new mail since the last
    complete sync come from one FETCH (CHANGEDSINCE ... VANISHED) per folder,
    never a listing of every message; the result is exact all the same."""
    refill_remote(pair, "user02", seed=23, count=120)
    wipe_local(pair, "user02")
    plan = make_plan(pair, tmp_path, "user02", delete_local=True)
    assert sync(plan)[0].ok
    client = open_session(pair.remote("user02"), pair.password("user02"))
    try:
        client.select_folder("INBOX")
        uids = sorted(client.search(["ALL"]))
        client.add_flags(uids[:2], ["\\Flagged"], silent=True)
        client.delete_messages(uids[2:4])
        client.expunge()
    finally:
        client.logout()
    _append_remote(pair, "user02", ["after one", "after two"])
    report, engine, _ = sync(plan)
    assert report.ok, report.errors
    assert report.copied == 2 and report.deleted_host2 == 2 and report.flags_updated >= 2
    assert engine.stats["h1.fetch_qresync"] >= 1 and engine.stats["h1.qresync_mismatch"] == 0
    assert engine.stats["h1.fetch_flags"] == 0  # no folder was listed in full
    assert_exact_copy(pair, "user02")


def test_inbox_mode_copies_unseen_once_and_marks_them_seen(pair: Pair, tmp_path: Path) -> None:
    msgs = refill_remote(pair, "user02", seed=21, count=320)  # several batches: \Seen set while the next is read
    wipe_local(pair, "user02")
    plan = make_plan(pair, tmp_path, "user02", folder_mode="inbox")
    unseen = Counter(sha(m) for m in msgs if m.folder == "INBOX" and "\\Seen" not in m.flags)
    assert sum(unseen.values()) > 50  # more than one batch
    report, _, _ = sync(plan)
    assert report.ok and report.copied == sum(unseen.values())
    local = local_box(pair, "user02")
    assert set(local) == {"INBOX"} and shas(local, "INBOX") == unseen
    assert all("\\Seen" not in k[1] for k in local["INBOX"])  # still new for the local user
    assert all("\\Seen" in k[1] for k in remote_box(pair, "user02")["INBOX"])

    client = open_session(pair.local("user02"), pair.master_pass)  # the user deletes one copy
    try:
        client.select_folder("INBOX")
        client.delete_messages(client.search(["ALL"])[:1])
        client.expunge()
    finally:
        client.logout()
    assert sync(plan)[0].copied == 0  # never copied again
    _append_remote(pair, "user02", ["fresh one"])
    assert sync(plan)[0].copied == 1
    (tmp_path / "user02_t1.native.db").unlink()
    assert sync(plan)[0].copied == 0  # without memory: the remote \Seen still says "done"
    assert sum(local_box(pair, "user02")["INBOX"].values()) == sum(unseen.values())


SIEVE = b'require ["fileinto", "mailbox"];\nif header :contains "subject" "[FILE-ME]" { fileinto :create "Filed"; }\n'


def test_inbox_sieve_files_copies_where_the_script_says(pair: Pair, tmp_path: Path) -> None:
    dovecot.wipe(pair.cfg.remote, REMOTE_OF["user02"])
    wipe_local(pair, "user02")
    plan = make_plan(pair, tmp_path, "user02", folder_mode="inbox", sieve_enabled=True)
    _append_remote(pair, "user02", ["[FILE-ME] before any script"])
    report, _, lines = sync(plan)  # no script yet: delivered to INBOX, as LMTP would
    assert report.ok and report.copied == 1 and any("Sieve filter failed" in line for line in lines)

    dovecot.doveadm(pair.cfg.mail1, "sieve", "put", "-a", "-u", "u2", "migration", input=SIEVE)
    _append_remote(pair, "user02", ["[FILE-ME] one", "plain a", "[FILE-ME] two", "plain b", "[FILE-ME] three"])
    report, engine, _ = sync(plan)
    assert report.ok, report.errors
    assert report.copied == 5 and engine.stats["h2.filter"] >= 1
    local = local_box(pair, "user02")
    assert sum(local["Filed"].values()) == 3 and sum(local["INBOX"].values()) == 3
    assert all("\\Deleted" not in k[1] for k in local["INBOX"])  # filed originals expunged
    assert all("\\Seen" in k[1] for k in remote_box(pair, "user02")["INBOX"])
    assert sync(plan)[0].copied == 0
    assert local_box(pair, "user02") == local


def test_sieve_without_filter_capability_is_a_clear_error(pair: Pair, tmp_path: Path) -> None:
    plan = make_plan(pair, tmp_path, "user02", folder_mode="inbox", sieve_enabled=True)
    plan.target = pair.remote("user02")  # a Dovecot without imap_filter_sieve
    plan.target_password_file.write_text(pair.password("user02") + "\n")
    report, engine, _ = sync(plan)
    assert report.error_class == "sieve_unavailable" and engine.stats["h2.append"] == 0


# ---------------------------------------------------------------------------
# deletions (dave -> u3)
# ---------------------------------------------------------------------------


def _all_shas(box: dict[str, Counter[Key]]) -> Counter[tuple[str, str]]:
    out: Counter[tuple[str, str]] = Counter()
    for folder in box:
        for digest, n in shas(box, folder).items():
            out[(folder, digest)] += n
    return out


def test_delete_remote_deletes_only_verified_messages(pair: Pair, tmp_path: Path) -> None:
    msgs = refill_remote(pair, "user03", seed=32)
    wipe_local(pair, "user03")
    plan = make_plan(pair, tmp_path, "user03", delete_remote=True)
    before = _all_shas(remote_box(pair, "user03"))
    stop = threading.Event()

    def progress(p: Progress) -> None:
        if p.folders_done >= 3:
            stop.set()  # some folders done (and purged), the rest untouched

    report, _, _ = sync(plan, progress=progress, stop=stop)
    assert report.error_class == "stopped" and report.deleted_host1 > 0
    remote, local = _all_shas(remote_box(pair, "user03")), _all_shas(local_box(pair, "user03"))
    deleted = before - remote
    assert sum(deleted.values()) == report.deleted_host1
    assert not deleted - local  # everything deleted on the remote is on the local server
    report, _, _ = sync(plan)
    assert report.ok and report.deleted_host1 + sum(deleted.values()) == len(msgs)
    assert not _all_shas(remote_box(pair, "user03"))
    assert _all_shas(local_box(pair, "user03")) == before


def test_delete_remote_older_keeps_recent_messages(pair: Pair, tmp_path: Path) -> None:
    msgs = refill_remote(pair, "user03", seed=33)
    wipe_local(pair, "user03")
    dates = sorted({m.internaldate.date() for m in msgs})
    gap = max(range(1, len(dates)), key=lambda i: (dates[i] - dates[i - 1]).days)
    assert (dates[gap] - dates[gap - 1]).days >= 4
    cutoff = dates[gap - 1] + timedelta(days=2)  # far from any message: no time-zone edge
    days = (datetime.now(UTC).date() - cutoff).days
    plan = make_plan(pair, tmp_path, "user03", delete_remote=True, delete_remote_older=days)
    before = remote_box(pair, "user03")
    report, _, _ = sync(plan)
    assert report.ok
    old = [m for m in msgs if m.internaldate.date() < cutoff]
    assert report.deleted_host1 == len(old) > 0
    remaining = Counter(sha(m) for m in msgs if m.internaldate.date() >= cutoff)
    left: Counter[str] = Counter()
    for (_folder, digest), n in _all_shas(remote_box(pair, "user03")).items():
        left[digest] += n
    assert left == remaining
    assert local_box(pair, "user03") == before  # everything was copied first
    report, engine, _ = sync(plan)
    assert report.ok and report.deleted_host1 == 0
    report, engine, _ = sync(plan)  # the remaining (recent) ones are re-checked cheaply
    assert engine.stats["folders.unchanged"] == len(before) and engine.stats["h1.fetch_meta"] == 0


def test_delete_local_brake_and_normal_deletion(pair: Pair, tmp_path: Path) -> None:
    refill_remote(pair, "user03", seed=34)
    wipe_local(pair, "user03")
    plan = make_plan(pair, tmp_path, "user03", delete_local=True)
    assert sync(plan)[0].ok
    full = local_box(pair, "user03")

    dovecot.wipe(pair.cfg.remote, REMOTE_OF["user03"])  # the remote mailbox looks empty
    report, _, _ = sync(plan)
    assert report.error_class == "delete_local_brake"
    assert report.deleted_host2 == report.folders_deleted_host2 == 0
    assert local_box(pair, "user03") == full

    msgs = refill_remote(pair, "user03", seed=34)  # the same mailbox again (new UIDVALIDITY)
    report, _, _ = sync(plan)
    assert report.ok and report.copied == 0 and report.deleted_host2 == 0
    victim = next(m for m in msgs if m.folder == "Sent" and m.duplicate_of is None)
    remote = open_session(pair.remote("user03"), pair.password("user03"))
    try:
        uid = _uids_by_sha(remote, "Sent")[sha(victim)]
        remote.delete_messages([uid])
        remote.expunge()
        remote.create_folder("Tmp")
    finally:
        remote.logout()
    report, _, _ = sync(plan)
    assert report.ok and report.deleted_host2 == 1 and report.folders_created == 1
    assert shas(local_box(pair, "user03"), "Sent")[sha(victim)] == 0
    remote = open_session(pair.remote("user03"), pair.password("user03"))
    try:
        remote.delete_folder("Tmp")
    finally:
        remote.logout()
    report, _, _ = sync(plan)
    assert report.ok and report.deleted_host2 == 0 and report.folders_deleted_host2 == 1
    assert_exact_copy(pair, "user03")


def test_exclusion_mode_and_refused_option_mix(pair: Pair, tmp_path: Path) -> None:
    refill_remote(pair, "user03", seed=35)
    wipe_local(pair, "user03")
    plan = make_plan(pair, tmp_path, "user03", folder_mode="exclusion", exclude=["^Trash$", "Archive"])
    assert sync(plan)[0].ok
    remote, local = remote_box(pair, "user03"), local_box(pair, "user03")
    kept = {k: v for k, v in remote.items() if k != "Trash" and "Archive" not in k}
    assert local == kept
    plan = make_plan(pair, tmp_path / "x", "user03", delete_remote=True, delete_local=True)
    report, engine, _ = sync(plan)
    assert report.error_class == "validation_failed" and engine.stats["h1.commands"] == 0
