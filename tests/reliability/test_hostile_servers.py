"""Issue 15, section 2: hostile servers, through the fault proxy in front of the real Dovecots.

Each case gives the remote account the corpus plus what makes it hostile (a
message the proxy breaks, strange bytes, strange folder names, thousands of
folders, missing capabilities), runs the engine in a process of its own with
delete_remote where a lying server could tempt it to delete (the deletion
watch checks every ``\\Deleted``), and expects: no crash (a report, no
traceback, no engine error), bounded memory (the peak RSS of the engine
process and of the imapsync it starts is measured and recorded; the native
engine's is bounded by :data:`NATIVE_RSS_MB`), each bad message named in the
run's errors, and everything else copied (the comparator).
"""

from __future__ import annotations

import os
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from faultproxy import FaultProxy
from imapclient import imap_utf7
from localnode.imap_pair import REMOTE_OF, Pair

from reliability import comparator as cmp
from reliability.conftest import Mailboxes, Record, message, via
from reliability.deletionwatch import DeletionWatch
from reliability.engines import ENGINES, EngineRun, Task

SECTION = "2-hostile-servers"
NATIVE_RSS_MB = 120  # the native engine copies in bounded pieces: far below the messages it handles
BIG = 50 * 1024 * 1024


@dataclass
class Hostile:
    """One hostile-server case: the mailboxes, the engine, the proxies, what was measured."""

    boxes: Mailboxes
    engine: str
    remote_proxy: FaultProxy
    local_proxy: FaultProxy
    record: Record
    watch: DeletionWatch | None = None
    runs: list[EngineRun] = field(default_factory=list)

    def put(self, folder: str, raw: bytes, flags: tuple[bytes, ...] = ()) -> int:
        """A message appended straight to the remote; its UID."""
        client = cmp.connect(self.boxes.remote, self.boxes.remote_password)
        try:
            if folder != "INBOX" and not client.folder_exists(folder):
                client.create_folder(folder)
            reply = client.append(folder, raw, flags)
            return int(reply.split(b"[APPENDUID ")[1].split()[1].rstrip(b"]"))
        finally:
            client.logout()

    def task(self, local_via_proxy: bool = False, **options: object) -> Task:
        target = via(self.local_proxy, self.boxes.local) if local_via_proxy else self.boxes.local
        return self.boxes.task(self.engine, via(self.remote_proxy, self.boxes.remote), target, **options)

    def sync(self, task: Task, timeout: float = 900) -> EngineRun:
        """One run: it must report (no crash) within bounded memory."""
        run = task.run(timeout=timeout)
        self.runs.append(run)
        self.record.peak(run)
        self.record.counts["copied"] = self.record.counts.get("copied", 0) + int(run.report.get("copied") or 0)
        assert not run.crashed, run.explain()
        if self.engine == "native":
            assert run.peak_rss_mb < NATIVE_RSS_MB, f"peak RSS {run.peak_rss_mb} MB"
        return run

    def deleting(self) -> dict:
        """delete_remote on, and the watch on the remote proxy (from the remote as it is now)."""
        self.watch = self.boxes.watch(self.remote_proxy, self.boxes.remote_snapshot())
        return {"delete_remote": True}

    def judge(self, bad: dict[cmp.Path, Counter] | None = None, aliases: dict[str, str] | None = None,
              folders: set[cmp.Path] | None = None) -> cmp.Comparison:
        """Everything but ``bad`` is on the local server (with its flags and dates); the bad
        messages are not, and stayed on the remote; no deletion without a local copy."""
        remote = self.boxes.remote_snapshot(aliases=aliases)
        expected = cmp.Snapshot("expected", remote.delimiter, remote.prefix, dict(remote.folders))
        if self.watch is not None:
            assert self.watch.violations == [], self.watch.violations
            for path, msgs in self.watch.deleted.items():
                expected.folders[path] = expected.folders.get(path, []) + msgs
        result = cmp.compare(expected, self.boxes.local_snapshot(), folders=folders)
        missing = {p: Counter(d.missing) for p, d in result.folders.items() if d.missing}
        self.record.counts.update(result.counts())
        assert missing == {p: c for p, c in (bad or {}).items() if c}, result.summary()
        others = [(p, d) for p, d in result.folders.items() if d.extra or d.duplicated or d.flags or d.dates]
        assert others == [], result.summary()
        return result


@pytest.fixture
def hostile(mailboxes: Mailboxes, remote_proxy: FaultProxy, local_proxy: FaultProxy, record: Record,
            engine: str) -> Hostile:
    return Hostile(mailboxes, engine, remote_proxy, local_proxy, record)


def named(run: EngineRun, folder: str, uid: int) -> bool:
    """The run's errors name the message: its folder and UID."""
    return any(folder in e and str(uid) in e for e in run.errors)


def key_in(boxes: Mailboxes, folder: str, uid: int) -> tuple[cmp.Path, cmp.Key]:
    client = cmp.connect(boxes.remote, boxes.remote_password)
    try:
        client.select_folder(folder, readonly=True)
        raw = client.fetch([uid], ["BODY.PEEK[]"])[uid][b"BODY[]"]
    finally:
        client.logout()
    return cmp.folder_path(folder, ".", ""), cmp.key_of(raw)


# ---- servers that lie about one message ----------------------------------------------

MALFORMED = {
    "unterminated-string": None,  # the proxy's default: '* n FETCH (UID u BODY[] "unterminated'
    "unbalanced-parens": b"* %d FETCH (UID %d FLAGS (\\Seen BODY[] NIL\r\n",
    "bad-literal-size": b"* %d FETCH (UID %d BODY[] {notanumber}\r\n",
}


@pytest.mark.parametrize("shape", list(MALFORMED))
@pytest.mark.parametrize("engine", ENGINES)
def test_a_malformed_fetch_response(hostile: Hostile, shape: str) -> None:
    hostile.boxes.fill(seed=41)
    uid = hostile.put("INBOX", message("malformed-victim"))  # a UID no other folder has
    raw = MALFORMED[shape]
    hostile.remote_proxy.malform(uid, None if raw is None else raw % (1, uid))
    task = hostile.task(**hostile.deleting())
    run = hostile.sync(task)
    assert not run.ok and named(run, "INBOX", uid), run.explain()
    path, key = key_in(hostile.boxes, "INBOX", uid)
    hostile.judge({path: Counter([key])})
    hostile.record.detail = f"run: {run.error_class}; errors: {run.errors[:2]}"


@pytest.mark.parametrize("engine", ENGINES)
def test_a_literal_far_larger_than_its_rfc822_size(hostile: Hostile) -> None:
    hostile.boxes.fill(seed=42)
    uid = hostile.put("INBOX", message("inflated-victim"))
    hostile.remote_proxy.inflate(uid, 40 * 1024 * 1024)  # 40 MB behind an announced ~200 bytes
    run = hostile.sync(hostile.task(**hostile.deleting()))
    assert not run.ok and named(run, "INBOX", uid), run.explain()
    path, key = key_in(hostile.boxes, "INBOX", uid)
    hostile.judge({path: Counter([key])})
    hostile.record.detail = f"run: {run.error_class}; peak RSS {run.peak_rss_mb} MB"


def big_message(size: int) -> bytes:
    line = b"0123456789abcdefghijklmnopqrstuvwxyz0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ0123\r\n"
    head = message("fifty-megabytes", headers="Content-Type: text/plain\r\n")
    return head + line * ((size - len(head)) // len(line))


@pytest.mark.parametrize("engine", ["native", pytest.param("imapsync", marks=[
    pytest.mark.reliability_long, *[m for p in ENGINES if not isinstance(p, str) for m in p.marks]])])
def test_a_50_mb_message(hostile: Hostile) -> None:
    hostile.boxes.fill(seed=43, count=20, large=0)
    hostile.put("INBOX", big_message(BIG))
    started = time.monotonic()
    run = hostile.sync(hostile.task(), timeout=900)
    assert run.ok, run.explain()
    hostile.judge()
    hostile.record.detail = f"copied in {time.monotonic() - started:.1f} s, peak RSS {run.peak_rss_mb} MB"


# ---- strange bytes ------------------------------------------------------------------

STRANGE = {
    "8bit-latin1-header": b"From: Jos\xe9 <jose@example.org>\r\nSubject: r\xe9union \xe0 9h\r\n"
                          b"Message-ID: <latin1@hostile.test>\r\n\r\n\xe9t\xe9\r\n",
    "8bit-utf8-header": "From: Zoë <zoe@example.org>\r\nSubject: 会議 ✓\r\nMessage-ID: <utf8@hostile.test>\r\n"
                        "\r\nbody\r\n".encode(),
    "control-chars-in-header": b"From: a@example.org\r\nSubject: bell\x07 esc\x1b tab\t del\x7f\r\n"
                               b"Message-ID: <ctl@hostile.test>\r\n\r\nbody\r\n",
    "broken-encoded-words": b"From: =?UTF-8?B?!!!notbase64?= <x@example.org>\r\nSubject: =?bogus?Q?a=ZZ?=\r\n"
                            b"Message-ID: <ew@hostile.test>\r\n\r\nbody\r\n",
    "header-without-colon": b"From: a@example.org\r\nThis line has no colon\r\nMessage-ID: <nocolon@hostile.test>"
                            b"\r\n\r\nbody\r\n",
    "unterminated-multipart": b"From: a@example.org\r\nMessage-ID: <mp@hostile.test>\r\nMIME-Version: 1.0\r\n"
                              b"Content-Type: multipart/mixed; boundary=\"never\"\r\n\r\n--never\r\n"
                              b"Content-Type: text/plain\r\n\r\nno closing boundary\r\n",
    "headers-only": b"From: a@example.org\r\nMessage-ID: <headonly@hostile.test>\r\nSubject: no body\r\n",
    "huge-header-line": b"From: a@example.org\r\nMessage-ID: <longhdr@hostile.test>\r\nX-Long: "
                        + b"x" * 200_000 + b"\r\n\r\nbody\r\n",
    "bare-lf-lines": b"From: a@example.org\nMessage-ID: <lf@hostile.test>\nSubject: lf\n\nline one\nline two\n",
    "nul-free-binary-body": b"From: a@example.org\r\nMessage-ID: <bin@hostile.test>\r\n\r\n"
                            + bytes(range(1, 256)) * 40 + b"\r\n",
    "no-headers-at-all": b"just a body, no header block\r\n",
}


@pytest.mark.parametrize("engine", ENGINES)
def test_8bit_and_broken_mime_headers_are_copied_byte_exact(hostile: Hostile) -> None:
    for name, raw in STRANGE.items():
        hostile.put("INBOX" if "header" in name else "Strange", raw)
    run = hostile.sync(hostile.task(**hostile.deleting()))
    assert run.ok, run.explain()
    hostile.judge()
    hostile.record.counts["kinds"] = len(STRANGE)


# ---- strange folders ------------------------------------------------------------------

HOSTILE_NAMES = {
    "zzdots": "..",
    "zzdotsin": "a..b",
    "zzslash": "x/y",
    "zztraversal": "../../../etc",
    "zzcontrol": "bell\x07esc\x1bdel\x7f",
    "zzlong": "L" * 1000,
}


@pytest.mark.parametrize("engine", ENGINES)
def test_hostile_folder_names(hostile: Hostile, pair: Pair) -> None:
    """Real folders shown by the proxy under hostile names: each hostile folder is either
    copied whole (under whatever name the product chose) or named in the run's errors;
    every other folder is copied; nothing is written outside the local user's mailbox."""
    hostile.boxes.fill(seed=44, count=20, large=0, recent=0)
    keys: dict[str, Counter] = {}
    for real, shown in HOSTILE_NAMES.items():
        keys[shown] = Counter(cmp.key_of(m) for m in (message(f"{real}-1"), message(f"{real}-2")))
        for raw in (message(f"{real}-1"), message(f"{real}-2")):
            hostile.put(real, raw)
        hostile.remote_proxy.rename_folder(real, imap_utf7.encode(shown).decode("ascii"))
    outside = mail_tree_outside(pair, "u3")
    run = hostile.sync(hostile.task(), timeout=300)
    assert mail_tree_outside(pair, "u3") == outside, "something was written outside u3's mailbox"
    local = hostile.boxes.local_snapshot()
    held = sum((local.keys(p) for p in local.folders), Counter())
    refused = [shown for shown, want in keys.items() if want - held]
    for shown in refused:
        assert any(shown in e or repr(shown)[1:-1] in e or shown[:60] in e for e in run.errors), \
            f"folder {shown[:40]!r} neither copied nor named: {run.errors}"
    plain = {p for p in hostile.boxes.remote_snapshot().folders if not p[0].startswith("zz")}
    hostile.judge(folders=plain)
    hostile.record.detail = f"refused: {[r[:20] for r in refused]}; errors: {[e[:80] for e in run.errors]}"


def mail_tree_outside(pair: Pair, user: str) -> set[str]:
    """Every path under mail1's mail directory that is not inside ``user``'s home."""
    root = Path(pair.cfg.mail1.dir) / "mail"
    return {str(p.relative_to(root)) for p in root.rglob("*") if not p.relative_to(root).parts[0] == user}


def many_folders(boxes: Mailboxes, n: int) -> None:
    """``n`` folders on the remote, 3 of them with a message. Written straight into its
    Maildir++ (a ``.Many.fNNNNN`` directory each, as Dovecot would): ``doveadm mailbox
    create`` rescans the whole list per folder and takes minutes for thousands."""
    client = cmp.connect(boxes.remote, boxes.remote_password)  # the Maildir exists once logged in
    client.create_folder("Many")
    client.logout()
    maildir = Path(boxes.pair.cfg.remote.dir) / "mail" / REMOTE_OF[boxes.user] / "Maildir"
    owner = (maildir / ".Many").stat()
    names = [f"Many.f{i:05d}" for i in range(n)]
    for name in names:
        for sub in ("", "cur", "new", "tmp"):
            path = maildir / f".{name}" / sub
            path.mkdir(mode=0o700)
            os.chown(path, owner.st_uid, owner.st_gid)
    # Dovecot indexes the new folders on this session (its LOGOUT alone took over 30 s on a loaded machine)
    client = cmp.connect(boxes.remote, boxes.remote_password, timeout=600)
    try:
        for name in (names[0], names[n // 2], names[-1]):
            client.append(name, message(f"in-{name}"))
    finally:
        client.logout()


def folders_test(hostile: Hostile, n: int) -> None:
    many_folders(hostile.boxes, n)
    hostile.put("INBOX", message("inbox-among-many"))
    started = time.monotonic()
    run = hostile.sync(hostile.task(), timeout=3000)
    took = time.monotonic() - started
    assert run.ok, run.explain()
    hostile.judge()
    local = hostile.boxes.local_snapshot()
    assert sum(1 for p in local.folders if p[0] == "Many" and len(p) == 2) == n  # every one, empty ones too
    hostile.record.detail = f"{n} folders in {took:.0f} s, peak RSS {run.peak_rss_mb} MB"


@pytest.mark.parametrize("engine", ENGINES)
def test_200_folders(hostile: Hostile) -> None:
    """The default suite's share of the 10,000-folder case (about 40 ms a folder here)."""
    folders_test(hostile, 200)


@pytest.mark.reliability_long
@pytest.mark.timeout(3000)
@pytest.mark.parametrize("engine", ENGINES)
def test_10000_folders(hostile: Hostile) -> None:
    folders_test(hostile, 10_000)


# ---- identities that collide -----------------------------------------------------------

def same_id(body: str, received: bool = False) -> bytes:
    hop = "Received: from mx.example.org by mail.remote.test; Mon, 2 Dec 2024 10:00:00 +0000\r\n" if received else ""
    return (f"{hop}From: a@example.org\r\nSubject: same id\r\nMessage-ID: <same@hostile.test>\r\n\r\n"
            f"{body}\r\n").encode()


@pytest.mark.parametrize("engine", ENGINES)
def test_duplicate_message_ids_with_different_bodies(hostile: Hostile) -> None:
    """Three bodies under one Message-ID (two with the same Received line too) in INBOX,
    one more in Archive; after a first run a fourth arrives: every body arrives once."""
    hostile.boxes.fill(seed=45, count=20, large=0, recent=0)
    for body, hop in (("first body", False), ("second body", True), ("third body", True)):
        hostile.put("INBOX", same_id(body, hop))
    hostile.put("Archive", same_id("archived body"))
    assert hostile.sync(hostile.task()).ok
    hostile.judge()
    hostile.put("INBOX", same_id("late body", True))
    run = hostile.sync(hostile.task(**hostile.deleting()))
    assert run.ok, run.explain()
    hostile.judge()


# ---- missing capabilities --------------------------------------------------------------

CAPABILITIES = {
    "remote-without-uidplus": ("remote", ("UIDPLUS",)),
    "remote-without-condstore": ("remote", ("CONDSTORE", "QRESYNC", "ENABLE")),
    "remote-without-literal-plus": ("remote", ("LITERAL+", "LITERAL-")),
    "local-without-literal-plus": ("local", ("LITERAL+", "LITERAL-")),
    "local-without-uidplus": ("local", ("UIDPLUS",)),
}


@pytest.mark.parametrize("server", [s if "uidplus" in s else pytest.param(s, marks=pytest.mark.reliability_long)
                                    for s in CAPABILITIES])
@pytest.mark.parametrize("engine", ENGINES)
def test_a_server_without_a_capability(hostile: Hostile, server: str) -> None:
    """With delete_remote, twice: the first run copies and deletes, the second finds
    nothing to do (no copy made twice for want of APPENDUID, none deleted unverified)."""
    side, names = CAPABILITIES[server]
    proxy = hostile.remote_proxy if side == "remote" else hostile.local_proxy
    for name in names:
        proxy.hide_capability(name)
    if server == "local-without-uidplus":
        proxy.strip_appenduid()
    hostile.boxes.fill(seed=46)
    task = hostile.task(local_via_proxy=side == "local", **hostile.deleting())
    first = hostile.sync(task)
    assert first.ok, first.explain()
    again = hostile.sync(task)
    assert again.ok and int(again.report.get("copied") or 0) == 0, again.explain()
    hostile.judge()
    hostile.record.detail = f"hidden: {', '.join(names)}"
