"""The native sync engine: copies folders and messages itself, over IMAP, with IMAPClient.

It gives the task options the same meaning as the imapsync engine, so a task can
switch engine without copying anything twice.  The rules, in one place:

Identity
    Per folder pair (host1 folder F -> host2 folder F'), a message is identified by
    imapsync's default header signature (Message-Id + Received lines, see
    ``imap.identity``).  A message with neither header -- imapsync would skip it --
    is copied and identified by ``sha256:`` of its content, line endings
    normalised to CRLF (Dovecot stores LF and serves CRLF, so bare LFs would
    otherwise change the hash).
Duplicates
    Matching is a multiset: n host1 messages with one key need n host2 messages
    with that key.  Exact duplicates inside a folder are therefore all copied
    (imapsync copies only the first); host2 ends up with what host1 has.  A
    message already on host2 (copied by imapsync or present before) is claimed,
    not copied again.
Flags
    A copy gets host1's flags (minus ``\\Recent``) and INTERNALDATE.  On later
    runs only *changes made on host1 since the last sync* reach host2: a flag newly
    set on host1 is added, a flag newly cleared on host1 is removed, except
    ``\\Seen`` (never removed) and ``\\Deleted`` (never propagated after the copy).
    So whatever the local user does to a message (reads it, marks it unread,
    unflags it) is never reverted by a later run (NethServer/dev#8107).  When the
    engine has no memory of a message (first run after imapsync, lost state), it
    changes no flag and takes host1's current flags as the baseline.
Inbox mode
    Only the host1 INBOX, only messages without ``\\Seen``.  Each is marked
    ``\\Seen`` on host1 once it is on host2 (copied, or found there), and
    remembered: it is never copied again, even if the local copy is deleted.  No
    flag sync in this mode (the message was "delivered").  A ``\\Deleted`` flag is
    not copied into the local INBOX.
Sieve (inbox mode)
    After each batch of APPENDs to INBOX: ``UID FILTER SIEVE DELIVERY UID <set>``
    (a bare set would mean sequence numbers).  Dovecot's imap_filter_sieve runs the
    user's active script; a ``fileinto``/``discard`` cancels the implicit keep and
    Dovecot marks the INBOX original ``\\Deleted`` (the filed copy is in the target
    folder).  We then UID EXPUNGE exactly those originals, so the message exists
    once, where the script filed it.  A script that keeps the message leaves it in
    INBOX.  Messages found already on host2 (not copied by this engine) are not
    filtered again.
delete_remote[_older]
    A host1 message is deleted only when its copy is present in the mapped host2
    folder right now (checked with UID SEARCH just before) -- or, with sieve, was
    filed by the script after it had been verified -- and, with delete_remote_older
    N, its INTERNALDATE is before today-N days (SEARCH BEFORE).  Deleted by UID
    EXPUNGE (without UIDPLUS: EXPUNGE, only when no other message of the folder is
    marked ``\\Deleted``; otherwise ours stay marked).  Combined with delete_local
    it is refused (imapsync refuses --delete1 with --delete2 too): together they
    would erase both sides.
delete_local
    host2 messages that stand for no host1 message of the mapped folders are
    expunged, and host2 folders that no host1 folder maps to are deleted, after all
    folders were synced without error -- unless the brake trips: a host1 folder
    with 0 messages while host2 has some, or more than ``delete_local_max_share`` of
    a host2 folder going (a whole non-empty folder counts as 100 %).  Then nothing
    at all is deleted and the run ends with ``delete_local_brake``.  INBOX,
    special-use folders, folders with children and the Shared/Public namespaces
    are never deleted.  Ignored in inbox mode.

Crash safety and cheap re-runs: see ``syncstate``.  Large messages are fetched in
chunks into an unlinked temporary file and APPENDed from it, so memory stays
bounded; smaller ones are fetched in batches.  The destination folder is
SELECTed before APPENDs (Dovecot spends twice the CPU otherwise).
"""

from __future__ import annotations

import errno
import imaplib
import ssl
import tempfile
import threading
import time
import traceback
from collections import Counter, defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import imapclient

from ns8_imapsync.imap import reads
from ns8_imapsync.imap.connection import close_quietly, describe, open_session, scrub
from ns8_imapsync.imap.errors import BAD_USER_CREDENTIALS, classify
from ns8_imapsync.imap.folders import Folder, folder_arg, folder_encoding, select_folder
from ns8_imapsync.imap.identity import HEADER_FETCH, header_from_fetch, header_signature
from ns8_imapsync.imap.messages import (
    AppendRefused,
    append_message,
    as_text,
    clean_flags,
    file_chunks,
    mailbox_arg,
    uid_fetch,
    uid_search_all,
    uid_sets,
)
from ns8_imapsync.sync import folderpairs
from ns8_imapsync.sync import syncstate as ss
from ns8_imapsync.sync.brake import FolderLoss, brake_reasons
from ns8_imapsync.sync.plan import SyncPlan, read_password
from ns8_imapsync.sync.report import Progress, ProgressFn, RunReport, Side

# above LARGE_MESSAGE a message is spooled to disk in CHUNK_SIZE partial FETCHes;
# body FETCHes (and progress events) go by reads.BODY_BATCH_* messages and bytes
LARGE_MESSAGE, CHUNK_SIZE = reads.LARGE_MESSAGE, reads.CHUNK_SIZE
SAVE_INTERVAL = 2.0  # seconds between state writes during a folder
MAX_ERROR_LINES = 50

SEEN, DELETED = "\\Seen", "\\Deleted"
_NETWORK_ERRNOS = frozenset({errno.ECONNRESET, errno.ECONNABORTED, errno.ECONNREFUSED, errno.EPIPE,
                             errno.ETIMEDOUT, errno.EHOSTUNREACH, errno.ENETUNREACH, errno.ENETDOWN})


class _Fatal(Exception):
    """Ends the run with ``error_class``; the text is for the administrator."""

    def __init__(self, error_class: str, text: str) -> None:
        super().__init__(text)
        self.error_class = error_class


def _is_network(exc: BaseException) -> bool:
    """A dropped or failing connection (not a local file problem, which is also an OSError)."""
    if isinstance(exc, imaplib.IMAP4.abort | ssl.SSLError | ConnectionError | TimeoutError):
        return True
    return isinstance(exc, OSError) and exc.errno in _NETWORK_ERRNOS


# ---------------------------------------------------------------------------
# the engine
# ---------------------------------------------------------------------------


@dataclass
class _Job:
    """One host1 folder to sync and where it goes on host2."""

    folder: Folder
    target: str
    status1: dict
    status2: dict | None = None

    @property
    def key(self) -> str:
        return self.folder.raw_text

    @property
    def messages(self) -> int:
        return int(self.status1.get(b"MESSAGES", 0))

    @property
    def size(self) -> int:
        return int(self.status1.get(b"SIZE", 0))


@dataclass
class _Msg:
    """A host1 message to place on host2."""

    uid: int
    flags: tuple[str, ...]
    size: int
    date: datetime | None
    key: str = ""


class NativeEngine:
    """Engine ``native``: see the module docstring for the rules it keeps.

    ``stats`` counts, after a run, the IMAP commands per side (``h1.commands``,
    ``h2.commands``) and the expensive operations (``h1.select``, ``h1.fetch_meta``,
    ``h1.fetch_body``, ``h2.append``...), so tests and logs can show what a run cost.
    The keyword arguments exist for tests: a small ``large_message`` exercises the
    chunked path; ``after_append(n)`` is called after the n-th acknowledged APPEND.
    """

    name = "native"

    def __init__(
        self,
        *,
        large_message: int = LARGE_MESSAGE,
        chunk_size: int = CHUNK_SIZE,
        after_append: Callable[[int], None] | None = None,
    ) -> None:
        self.large_message = large_message
        self.chunk_size = chunk_size
        self.after_append = after_append
        self.stats: Counter[str] = Counter()

    def run(self, plan: SyncPlan, progress: ProgressFn, stop: threading.Event, log) -> RunReport:
        self.stats = Counter()
        return _Run(self, plan, progress, stop, log).execute()


class _Run:
    """One run: sessions, state, counters and the report (keeps NativeEngine stateless)."""

    def __init__(self, engine: NativeEngine, plan: SyncPlan, progress: ProgressFn,
                 stop: threading.Event, log: Callable[[str], None]) -> None:
        self.engine = engine
        self.plan = plan
        self.progress_fn = progress
        self.stop = stop
        self.log_fn = log
        self.stats = engine.stats
        self.report = RunReport()
        self.prog = Progress()
        self.h1: imapclient.IMAPClient | None = None
        self.h2: imapclient.IMAPClient | None = None
        self.state: ss.SyncState | None = None
        self.inbox = plan.folder_mode == "inbox"
        self.sieve = self.inbox and plan.sieve_enabled
        self.modseq = False  # host1 gives HIGHESTMODSEQ (CONDSTORE enabled)
        self.secrets: list[str] = []
        self.appends = 0
        self.last_save = 0.0
        self.h1_modified = False  # this folder: we changed host1 (\Seen, expunge)
        self.found = folderpairs.Discovery([], [], [], "/")
        self.status2: dict[str, dict] = {}  # last STATUS of each host2 folder
        self.touched2: set[str] = set()  # host2 folders changed since their last STATUS

    # ---- plumbing --------------------------------------------------------------
    def log(self, line: str) -> None:
        text = line
        for secret in self.secrets:
            text = scrub(text, secret)
        try:
            self.log_fn(text)
        except Exception:
            pass

    def emit(self) -> None:
        try:
            self.progress_fn(replace(self.prog))
        except Exception as exc:  # a broken callback must not break the copy
            self.log(f"progress callback failed: {exc}")

    def error(self, line: str) -> None:
        for secret in self.secrets:
            line = scrub(line, secret)
        self.log(f"ERROR {line}")
        if len(self.report.errors) < MAX_ERROR_LINES:
            self.report.errors.append(line)
        elif len(self.report.errors) == MAX_ERROR_LINES:
            self.report.errors.append("(more errors in the log)")

    def save_state(self, force: bool = False) -> None:
        if self.state is None:
            return
        now = time.monotonic()
        if force or now - self.last_save >= SAVE_INTERVAL:
            self.state.save()
            self.last_save = now

    @property
    def c1(self) -> imapclient.IMAPClient:
        assert self.h1 is not None
        return self.h1

    @property
    def c2(self) -> imapclient.IMAPClient:
        assert self.h2 is not None
        return self.h2

    # ---- run -------------------------------------------------------------------
    def execute(self) -> RunReport:
        started = time.monotonic()
        try:
            self._check_options()
            self._connect()
            self._sync()
        except _Fatal as exc:
            self._fail(exc.error_class, str(exc))
        except Exception as exc:
            if _is_network(exc):
                self._fail("connection_lost", self._lost_text(exc))
            else:
                self.log(f"engine failure: {traceback.format_exc(limit=6)}")
                self._fail("engine_error", f"{type(exc).__name__}: {exc}")
        finally:
            self._finish(time.monotonic() - started)
        return self.report

    def _fail(self, error_class: str, text: str) -> None:
        if not self.report.error_class:
            self.report.error_class = error_class
        self.error(text)

    def _lost_text(self, exc: BaseException) -> str:
        """Which side dropped, found by probing both sessions (the dead one fails at once)."""
        for name, client, ep in (("remote", self.h1, self.plan.source), ("local", self.h2, self.plan.target)):
            if client is None:
                continue
            try:
                client.socket().settimeout(5)  # a silently dead peer must not cost another full timeout
                client.noop()
            except Exception:
                return f"the connection to the {name} server {ep.where} was lost ({exc})"
        return f"a connection was lost ({exc})"

    def _check_options(self) -> None:
        if self.plan.delete_remote and self.plan.delete_local:
            raise _Fatal("validation_failed",
                         "delete_remote and delete_local cannot be used together: they would erase both sides")

    def _password(self, path: Path, what: str) -> str:
        try:
            password = read_password(path)
        except OSError as exc:
            raise _Fatal("validation_failed", f"the {what} password file {path.name} cannot be read "
                                              f"({exc.strerror or exc})") from exc
        self.secrets.append(password)
        return password

    def _connect(self) -> None:
        pw1 = self._password(self.plan.source_password_file, "remote")
        pw2 = self._password(self.plan.target_password_file, "local")
        try:
            self.h1 = open_session(self.plan.source, pw1)
        except Exception as exc:
            raise _Fatal(classify(exc), describe(exc, self.plan.source, pw1)) from exc
        try:
            self.h2 = open_session(self.plan.target, pw2)
        except Exception as exc:
            error_class = classify(exc)
            if error_class == BAD_USER_CREDENTIALS:
                error_class = "bad_master_credentials"
            raise _Fatal(error_class, describe(exc, self.plan.target, pw2)) from exc
        self.c1.normalise_times = False  # keep INTERNALDATE's own offset
        self.c2.normalise_times = False

    def _finish(self, elapsed: float) -> None:
        for side, client in (("h1", self.h1), ("h2", self.h2)):
            if client is not None:
                self.stats[f"{side}.commands"] = int(getattr(client._imap, "tagnum", 0))
        try:
            self.save_state(force=True)
        except Exception as exc:  # never raise from run(); the next run re-checks by headers
            self._fail("engine_error", f"the sync state could not be saved: {exc}")
        close_quietly(self.h1)
        close_quietly(self.h2)
        r = self.report
        if not r.error_class:
            if self.stop.is_set():
                r.error_class = "stopped"
            elif r.errors:
                r.error_class = "message_errors"
        r.exit_code = 0 if not r.error_class else 1
        self.log(
            f"native sync ended in {elapsed:.1f}s: {r.copied} copied ({r.copied_bytes} bytes), "
            f"{r.skipped} already there, {r.flags_updated} flag updates, {r.deleted_host1} deleted on "
            f"the remote, {r.deleted_host2} deleted locally; IMAP commands: remote "
            f"{self.stats['h1.commands']}, local {self.stats['h2.commands']}"
            + (f"; {r.error_class}" if r.error_class else "")
        )

    # ---- setup -----------------------------------------------------------------
    def _sync(self) -> None:
        self._prepare_sessions()
        p = self.plan
        self.state = ss.SyncState.load(
            Path(p.workdir) / f"{p.task_name}.native.json",
            f"{p.source.user}@{p.source.where}",
            f"{p.target.user}@{p.target.where}",
        )
        jobs = self._discover()
        self._create_targets(jobs)
        self._status_all(jobs)
        self.prog = Progress(folders_total=len(jobs), messages_total=sum(j.messages for j in jobs),
                             bytes_total=sum(j.size for j in jobs))
        self.emit()
        for i, job in enumerate(jobs):
            if self.stop.is_set():
                break
            self._run_job(job)
            self.prog.folders_done = i + 1
            self.emit()
        if self.stop.is_set():
            return
        if p.delete_local:
            self._delete_local(jobs)
        self._host2_totals(jobs)

    def _prepare_sessions(self) -> None:
        c1, c2 = self.c1, self.c2
        if not c2.has_capability("UIDPLUS"):
            raise _Fatal("engine_error", f"the local server {self.plan.target.where} lacks UIDPLUS")
        if self.sieve and not c2.has_capability("FILTER=SIEVE"):
            raise _Fatal("sieve_unavailable",
                         f"the local server {self.plan.target.where} does not offer FILTER=SIEVE")
        if c1.has_capability("CONDSTORE") and c1.has_capability("ENABLE"):
            try:
                c1.enable("CONDSTORE")
                self.modseq = True
            except imaplib.IMAP4.abort:
                raise
            except imaplib.IMAP4.error:
                self.modseq = False

    def _discover(self) -> list[_Job]:
        """The host1 folders to sync (by mode and exclusions) and their host2 names."""
        found = folderpairs.discover(self.c1, self.c2, self.plan, self.log)
        self.found = found
        assert self.state is not None
        self.state.drop_folders_except({f.raw_text for f in found.folders1})
        jobs = [_Job(p.folder, p.target, {}) for p in found.pairs]
        self.log(f"{len(jobs)} folder(s) to sync of {len(found.folders1)} on the remote server")
        return jobs

    def _create_targets(self, jobs: list[_Job]) -> None:
        """CREATE missing host2 folders, parents first; subscribe them as host1 does."""
        c2 = self.c2
        existing = {f.name for f in self.found.folders2} | {"INBOX"}
        subscribed = self._h1_subscriptions()
        created: set[str] = set()
        for job in sorted(jobs, key=lambda j: j.target):
            if job.target in existing or job.target in created:
                continue
            try:
                c2.create_folder(job.target)
            except imaplib.IMAP4.abort:
                raise
            except imaplib.IMAP4.error as exc:
                if "ALREADYEXISTS" not in str(exc).upper():
                    self.error(f"folder {job.target} could not be created on the local server: {exc}")
                    continue
            created.add(job.target)
            self.report.folders_created += 1
            self.log(f"created folder {job.target}")
            if not subscribed or job.key in subscribed:
                try:
                    c2.subscribe_folder(job.target)
                except imaplib.IMAP4.abort:
                    raise
                except imaplib.IMAP4.error:
                    pass

    def _h1_subscriptions(self) -> set[str]:
        """Raw names of host1's subscribed folders; empty if it keeps none (then subscribe all)."""
        try:
            with folder_encoding(self.c1, False):
                rows = self.c1.list_sub_folders("", "*")
        except imaplib.IMAP4.abort:
            raise
        except imaplib.IMAP4.error:
            return set()
        return {as_text(name) if not isinstance(name, int) else str(name) for _f, _d, name in rows}

    def _status_all(self, jobs: list[_Job]) -> None:
        """One STATUS per folder on each side: totals, and the "unchanged" test."""
        items1 = ["MESSAGES", "UIDNEXT", "UIDVALIDITY"]
        if self.modseq:
            items1.append("HIGHESTMODSEQ")
        if self.c1.has_capability("STATUS=SIZE"):
            items1.append("SIZE")
        seen2: dict[str, dict | None] = {}
        for job in list(jobs):
            arg, encode = folder_arg(job.folder)
            try:
                with folder_encoding(self.c1, encode):
                    job.status1 = self.c1.folder_status(arg, items1)
            except imaplib.IMAP4.abort:
                raise
            except imaplib.IMAP4.error as exc:
                self.error(f"folder {job.folder.name} cannot be read on the remote server: {exc}")
                jobs.remove(job)
                continue
            if job.target not in seen2:
                seen2[job.target] = self._status2(job.target)
            job.status2 = seen2[job.target]
        self.report.host1 = Side(len(jobs), sum(j.messages for j in jobs), sum(j.size for j in jobs))

    def _status2(self, target: str) -> dict | None:
        """STATUS of a host2 folder (None if it does not exist); remembered for the final totals."""
        items = ["MESSAGES", "UIDNEXT", "UIDVALIDITY"] + (["SIZE"] if self.c2.has_capability("STATUS=SIZE") else [])
        try:
            status = self.c2.folder_status(target, items)
        except imaplib.IMAP4.abort:
            raise
        except imaplib.IMAP4.error:
            return None
        self.status2[target] = status
        return status

    # ---- one folder ------------------------------------------------------------
    def _run_job(self, job: _Job) -> None:
        self.prog.folder = job.folder.name
        base_messages, base_bytes = self.prog.messages_done, self.prog.bytes_done
        self.emit()
        errors_before = len(self.report.errors)
        copied_before, skipped_before = self.report.copied, self.report.skipped
        try:
            if job.status2 is None:
                raise imaplib.IMAP4.error(f"the local folder {job.target} does not exist")
            self._sync_folder(job)
        except imaplib.IMAP4.abort:
            raise
        except imaplib.IMAP4.error as exc:
            self.error(f"folder {job.folder.name}: {exc}")
        finally:
            self.save_state(force=True)
        if not self.stop.is_set():
            self.prog.messages_done = base_messages + job.messages
            self.prog.bytes_done = base_bytes + job.size
        if len(self.report.errors) == errors_before:
            self.log(f"folder {job.folder.name} -> {job.target}: {self.report.copied - copied_before} copied, "
                     f"{self.report.skipped - skipped_before} already there")

    def _sync_folder(self, job: _Job) -> None:
        assert self.state is not None
        fs = self.state.folder(job.key, job.folder.name, job.target)
        self.h1_modified = False
        if self._unchanged(job, fs):
            self.stats["folders.unchanged"] += 1
            if not self.inbox:
                self.report.skipped += job.messages
            if self.plan.delete_remote and fs.entries:
                self._select_h1(job, readonly=False)
                self._select_h2(job)
                self._delete_remote(job, fs)
                if self.h1_modified:
                    fs.h1 = self._h1_snapshot_after(job, fs.h1)
                    fs.h2 = self._h2_snapshot(job)
            return
        self._full_sync(job, fs)

    def _unchanged(self, job: _Job, fs: ss.FolderState) -> bool:
        """True when both sides' counters equal those of the last complete sync."""
        if fs.h1 is None or fs.h2 is None or job.status2 is None or fs.h1.modseq is None:
            return False
        s1 = ss.Snapshot(int(job.status1.get(b"UIDVALIDITY", 0)), int(job.status1.get(b"UIDNEXT", 0)),
                         job.messages, int(job.status1.get(b"HIGHESTMODSEQ", 0)) or None)
        s2 = ss.Snapshot(int(job.status2.get(b"UIDVALIDITY", 0)), int(job.status2.get(b"UIDNEXT", 0)),
                         int(job.status2.get(b"MESSAGES", 0)))
        return s1 == fs.h1 and s2 == fs.h2

    def _full_sync(self, job: _Job, fs: ss.FolderState) -> None:
        errors_before = len(self.report.errors)
        info1 = self._select_h1(job, readonly=not (self.inbox or self.plan.delete_remote))
        snap1 = ss.Snapshot(
            int(info1.get(b"UIDVALIDITY", 0)), int(info1.get(b"UIDNEXT", 0)), int(info1.get(b"EXISTS", 0)),
            (int(info1.get(b"HIGHESTMODSEQ", 0)) or None) if self.modseq else None,
        )
        if fs.uidvalidity != snap1.uidvalidity:
            if fs.entries:
                self.log(f"folder {job.folder.name}: the remote UIDVALIDITY changed, re-checking by headers")
            fs.entries.clear()
            fs.uidvalidity = snap1.uidvalidity
            fs.forget_snapshots()
        h1flags = self._h1_flags(fs, snap1)
        fs.forget_snapshots()  # until this folder is complete again
        self._reconcile(job)
        if not self.inbox:
            for uid in [u for u, e in fs.entries.items() if e.note == ss.GONE]:
                del fs.entries[uid]  # the local copy went away: copy it again (as imapsync does)
        for uid in [u for u in fs.entries if u not in h1flags]:
            del fs.entries[uid]  # expunged on the remote
        candidates = sorted(
            u for u, flags in h1flags.items()
            if u not in fs.entries and not (self.inbox and SEEN in flags)
        )
        if not self.inbox:
            self.report.skipped += len(h1flags) - len(candidates)  # placed by an earlier run
        fresh: set[int] = set()
        msgs = self._h1_meta(candidates, h1flags)
        to_copy = self._claim(job, fs, msgs, fresh)
        self._copy(job, fs, to_copy, fresh)
        if self.stop.is_set():
            return
        if self.sieve:
            self._filter_pending(job, fs)
        if not self.inbox:
            self._sync_flags(fs, h1flags, fresh)
        if self.plan.delete_remote:
            self._delete_remote(job, fs)
        if len(self.report.errors) == errors_before:
            fs.h1 = self._h1_snapshot_after(job, snap1)
            fs.h2 = self._h2_snapshot(job)

    def _select_h1(self, job: _Job, readonly: bool) -> dict:
        self.stats["h1.select"] += 1
        return select_folder(self.c1, job.folder, readonly=readonly)

    def _select_h2(self, job: _Job) -> dict:
        self.stats["h2.select"] += 1
        return self.c2.select_folder(job.target)

    def _h1_flags(self, fs: ss.FolderState, snap1: ss.Snapshot) -> dict[int, tuple[str, ...]]:
        """host1 UID -> flags of every message; only the changed ones when CONDSTORE allows."""
        prev = fs.h1
        if snap1.messages == 0:
            return {}
        if (prev is not None and prev.modseq and snap1.modseq and prev.uidvalidity == snap1.uidvalidity
                and prev.uidnext == snap1.uidnext and prev.messages == snap1.messages):
            # same UIDs as at the last complete sync: only flags changed
            self.stats["h1.fetch_changed"] += 1
            flags = {uid: e.flags for uid, e in fs.entries.items()}
            changed = uid_fetch(self.c1, "1:*", "(UID FLAGS)", f"(CHANGEDSINCE {prev.modseq})")
            flags.update({uid: clean_flags(item.get(b"FLAGS", ())) for uid, item in changed.items()})
            return flags
        self.stats["h1.fetch_flags"] += 1
        listing = uid_fetch(self.c1, "1:*", "(UID FLAGS)")
        return {uid: clean_flags(item.get(b"FLAGS", ())) for uid, item in listing.items()}

    def _reconcile(self, job: _Job) -> None:
        """SELECT the host2 folder and bring the state's UID -> key map in line with it."""
        assert self.state is not None
        self.touched2.add(job.target)
        info2 = self._select_h2(job)
        uidvalidity = int(info2.get(b"UIDVALIDITY", 0))
        ts = self.state.target_state(job.target)
        if ts.uidvalidity != uidvalidity:
            self.state.forget_target_uids(job.target, uidvalidity)
        present = uid_search_all(self.c2) if int(info2.get(b"EXISTS", 0)) else set()
        for uid in [u for u in ts.keys if u not in present]:
            del ts.keys[uid]
        for fs in self.state.folders_for(job.target):
            for entry in fs.entries.values():
                if entry.h2uid is not None and entry.h2uid not in present:
                    entry.h2uid = None
                    if entry.note in (ss.COPIED, ss.SIEVE_PENDING):
                        entry.note = ss.GONE
                    fs.forget_snapshots()
        unknown = sorted(present - set(ts.keys))
        if unknown:
            self.stats["h2.scanned"] += len(unknown)
            ts.keys.update(self._keys(self.c2, "h2", unknown))

    # ---- identity ----------------------------------------------------------------
    def _counter(self, side: str) -> reads.Count:
        def count(what: str) -> None:
            self.stats[f"{side}.{what}"] += 1
        return count

    def _fetch_meta(self, client: imapclient.IMAPClient, side: str, uids: Sequence[int],
                    items: str) -> dict[int, dict]:
        return reads.fetch_meta(client, uids, items, self._counter(side))

    def _keys(self, client: imapclient.IMAPClient, side: str, uids: Sequence[int]) -> dict[int, str]:
        """Identity keys of messages (header signature, else content hash)."""
        meta = self._fetch_meta(client, side, uids, f"(UID RFC822.SIZE {HEADER_FETCH.decode()})")
        keys: dict[int, str] = {}
        keyless: dict[int, int] = {}
        for uid, item in meta.items():
            header = header_from_fetch(item)
            signature = header_signature(header) if header is not None else None
            if signature:
                keys[uid] = signature
            else:
                keyless[uid] = int(item.get(b"RFC822.SIZE", 0))
        keys.update(self._content_keys(client, side, keyless))
        return keys

    def _h1_meta(self, uids: Sequence[int], h1flags: dict[int, tuple[str, ...]]) -> list[_Msg]:
        """Size, date and key of the host1 messages not yet placed on host2."""
        if not uids:
            return []
        meta = self._fetch_meta(self.c1, "h1", uids,
                                f"(UID RFC822.SIZE INTERNALDATE {HEADER_FETCH.decode()})")
        msgs: list[_Msg] = []
        keyless: dict[int, int] = {}
        for uid in uids:
            item = meta.get(uid)
            if item is None:
                continue  # expunged meanwhile
            header = header_from_fetch(item)
            msg = _Msg(uid, h1flags.get(uid, ()), int(item.get(b"RFC822.SIZE", 0)), item.get(b"INTERNALDATE"),
                       (header_signature(header) if header is not None else None) or "")
            if not msg.key:
                keyless[uid] = msg.size
            msgs.append(msg)
        if keyless:
            keys = self._content_keys(self.c1, "h1", keyless)
            for msg in msgs:
                msg.key = msg.key or keys.get(msg.uid, "")
            msgs = [m for m in msgs if m.key]
        return msgs

    def _content_keys(self, client: imapclient.IMAPClient, side: str, sizes: dict[int, int]) -> dict[int, str]:
        limits = reads.Limits(self.engine.large_message, self.engine.chunk_size)
        return reads.content_keys(client, sizes, limits, self._counter(side))

    def _fetch_bodies(self, client: imapclient.IMAPClient, side: str, uids: Sequence[int]) -> dict[int, bytes]:
        return reads.fetch_bodies(client, uids, self._counter(side))

    def _read_chunks(self, client: imapclient.IMAPClient, side: str, uid: int,
                     sink: Callable[[bytes], object]) -> bool:
        """Feed a message to ``sink`` by partial FETCHes; False if it vanished."""
        return reads.read_chunks(client, uid, sink, self.engine.chunk_size, self._counter(side))

    # ---- placing messages --------------------------------------------------------
    def _claim(self, job: _Job, fs: ss.FolderState, msgs: list[_Msg], fresh: set[int]) -> list[_Msg]:
        """Match host1 messages to unclaimed host2 messages with the same key; the rest is to copy."""
        assert self.state is not None
        ts = self.state.target_state(job.target)
        claimed = self.state.claimed(job.target)
        pool: dict[str, list[int]] = defaultdict(list)
        for uid in sorted(ts.keys):
            if uid not in claimed:
                pool[ts.keys[uid]].append(uid)
        to_copy: list[_Msg] = []
        found: list[int] = []
        for msg in msgs:
            if pool.get(msg.key):
                fs.entries[msg.uid] = ss.Entry(pool[msg.key].pop(0), msg.flags)
                fresh.add(msg.uid)
                found.append(msg.uid)
            else:
                to_copy.append(msg)
        self.report.skipped += len(found)
        if found and self.inbox:
            self._mark_seen(found)
        return to_copy

    def _copy(self, job: _Job, fs: ss.FolderState, msgs: list[_Msg], fresh: set[int]) -> None:
        assert self.state is not None
        ts = self.state.target_state(job.target)
        mailbox = mailbox_arg(job.target)
        sizes = {m.uid: m.size for m in msgs}
        by_uid = {m.uid: m for m in msgs}
        large = self.engine.large_message
        for batch_uids in reads.body_batches([m.uid for m in msgs], sizes):
            if self.stop.is_set():
                return
            small = [u for u in batch_uids if sizes[u] <= large]
            bodies = self._fetch_bodies(self.c1, "h1", small) if small else {}
            placed: list[int] = []
            for uid in batch_uids:
                if self.stop.is_set():
                    break
                msg = by_uid[uid]
                h2uid = self._copy_one(job, msg, mailbox, bodies.pop(uid, None), uid in small)
                if h2uid is None:
                    continue
                note = ss.SIEVE_PENDING if self.sieve else ss.COPIED
                fs.entries[uid] = ss.Entry(h2uid, msg.flags, note)
                ts.keys[h2uid] = msg.key
                fresh.add(uid)
                placed.append(uid)
                self.report.copied += 1
                self.report.copied_bytes += msg.size
                self.prog.messages_done += 1
                self.prog.bytes_done += msg.size
                self.appends += 1
                if self.engine.after_append is not None:
                    self.engine.after_append(self.appends)
            if placed and self.sieve:
                self.save_state(force=True)  # the FILTER must be known to be pending first
                self._filter(job, fs, [fs.entries[u] for u in placed])
            if placed and self.inbox:
                self.save_state(force=True)
                self._mark_seen(placed)
            self.save_state()
            self.emit()

    def _copy_one(self, job: _Job, msg: _Msg, mailbox: bytes, body: bytes | None, small: bool) -> int | None:
        """APPEND one host1 message to the SELECTed host2 folder; its host2 UID, or None."""
        flags = [f for f in msg.flags if not (self.inbox and f == DELETED)]
        try:
            if small:
                if body is None:
                    self.log(f"{job.folder.name}/{msg.uid}: gone from the remote server during the copy")
                    return None
                self.stats["h2.append"] += 1
                return append_message(self.c2, mailbox, flags, msg.date, len(body), [body])
            with tempfile.TemporaryFile(dir=self.plan.workdir) as spool:
                if not self._read_chunks(self.c1, "h1", msg.uid, spool.write):
                    self.log(f"{job.folder.name}/{msg.uid}: gone from the remote server during the copy")
                    return None
                size = spool.tell()
                spool.seek(0)
                self.stats["h2.append"] += 1
                self.stats["h2.append_streamed"] += 1
                return append_message(self.c2, mailbox, flags, msg.date, size, file_chunks(spool, self.engine.chunk_size))
        except AppendRefused as exc:
            self.error(f"{job.folder.name}/{msg.uid} ({msg.size} bytes) could not be copied: {exc}")
            return None

    def _mark_seen(self, h1uids: Sequence[int]) -> None:
        """Inbox mode: the message is on host2, so it is no longer new on host1."""
        for uidset in uid_sets(h1uids):
            self.stats["h1.store"] += 1
            self.c1.add_flags(uidset, [SEEN], silent=True)
        self.h1_modified = True

    def _filter_pending(self, job: _Job, fs: ss.FolderState) -> None:
        """Finish FILTERs a previous run started (or was killed before)."""
        pending = [e for e in fs.entries.values() if e.note == ss.SIEVE_PENDING and e.h2uid is not None]
        if pending:
            self._filter(job, fs, pending)

    def _filter(self, job: _Job, fs: ss.FolderState, entries: list[ss.Entry]) -> None:
        """Run the user's Sieve script on copies in INBOX; expunge the originals it filed away.

        An original already ``\\Deleted`` was filed by an earlier FILTER (copies are
        appended without ``\\Deleted`` in inbox mode), so it is not filtered twice.
        """
        assert self.state is not None
        ts = self.state.target_state(job.target)
        by_h2 = {e.h2uid: e for e in entries if e.h2uid is not None}
        if not by_h2:
            return
        filed = self._deleted_h2(by_h2)
        todo = [u for u in by_h2 if u not in filed]
        if todo:
            for uidset in uid_sets(todo):
                self.stats["h2.filter"] += 1
                typ, data = self.c2._raw_command(b"FILTER", [b"SIEVE", b"DELIVERY", b"UID", uidset.encode()],
                                                 uid=True)
                for name in ("FILTERED", "FILTER", "FETCH"):
                    self.c2._imap.untagged_responses.pop(name, None)
                if typ != "OK":  # e.g. no script: the messages stay in INBOX, as LMTP would leave them
                    self.log(f"WARNING the Sieve filter failed, messages stay in INBOX: {as_text(data[0] or b'')}")
            # whatever the reply, what the script filed away is what it marked \Deleted
            filed |= self._deleted_h2({u: by_h2[u] for u in todo})
        if filed:
            for uidset in uid_sets(filed):
                self.c2.uid_expunge(uidset)
        for h2uid, entry in by_h2.items():
            if h2uid in filed:
                ts.keys.pop(h2uid, None)
                entry.h2uid = None
                entry.note = ss.FILED
            else:
                entry.note = ss.COPIED
        self.save_state(force=True)

    def _deleted_h2(self, by_h2: dict[int, ss.Entry]) -> set[int]:
        out: set[int] = set()
        for uidset in uid_sets(by_h2):
            for uid, item in uid_fetch(self.c2, uidset, "(UID FLAGS)").items():
                if DELETED in clean_flags(item.get(b"FLAGS", ())):
                    out.add(uid)
        return out

    def _sync_flags(self, fs: ss.FolderState, h1flags: dict[int, tuple[str, ...]], fresh: set[int]) -> None:
        """Apply to host2 the flag changes host1 made since the last sync (module docstring)."""
        adds: dict[tuple[str, ...], list[int]] = defaultdict(list)
        removes: dict[tuple[str, ...], list[int]] = defaultdict(list)
        for uid, entry in fs.entries.items():
            now = h1flags.get(uid)
            if uid in fresh or entry.h2uid is None or now is None:
                continue
            old = set(entry.flags)
            add = set(now) - old - {DELETED}
            remove = old - set(now) - {SEEN, DELETED}
            if add:
                adds[tuple(sorted(add))].append(entry.h2uid)
            if remove:
                removes[tuple(sorted(remove))].append(entry.h2uid)
            entry.flags = now
        touched: set[int] = set()
        for groups, store in ((adds, self.c2.add_flags), (removes, self.c2.remove_flags)):
            for flags, uids in groups.items():
                for uidset in uid_sets(uids):
                    self.stats["h2.store"] += 1
                    store(uidset, list(flags), silent=True)
                touched.update(uids)
        self.report.flags_updated += len(touched)

    # ---- deletions ---------------------------------------------------------------
    def _delete_remote(self, job: _Job, fs: ss.FolderState) -> None:
        """Expunge on host1 the messages whose copy is on host2 (and old enough)."""
        assert self.state is not None
        ts = self.state.target_state(job.target)
        candidates = {u: e for u, e in fs.entries.items() if e.note == ss.FILED or e.h2uid in ts.keys}
        if self.plan.delete_remote_older > 0 and candidates:
            cutoff = (datetime.now(UTC) - timedelta(days=self.plan.delete_remote_older)).date()
            old = self._search_h1_before(cutoff)
            candidates = {u: e for u, e in candidates.items() if u in old}
        if not candidates:
            return
        # verified right now: the copy is still in the host2 folder
        wanted = {e.h2uid for e in candidates.values() if e.h2uid is not None}
        present: set[int] = set()
        for uidset in uid_sets(wanted):
            present.update(self.c2.search(["UID", uidset]))
        verified = sorted(u for u, e in candidates.items() if e.note == ss.FILED or e.h2uid in present)
        if not verified:
            return
        for uidset in uid_sets(verified):
            self.stats["h1.store"] += 1
            self.c1.add_flags(uidset, [DELETED], silent=True)
        self.h1_modified = True
        if self.c1.has_capability("UIDPLUS"):
            for uidset in uid_sets(verified):
                self.c1.uid_expunge(uidset)
        elif self._only_ours_deleted(verified):
            self.c1.expunge()
        else:
            self.log(f"folder {job.folder.name}: the remote server lacks UIDPLUS and other messages are "
                     "marked deleted there: verified messages were marked \\Deleted, not expunged")
            return
        for uid in verified:
            del fs.entries[uid]
        self.report.deleted_host1 += len(verified)
        self.log(f"folder {job.folder.name}: {len(verified)} verified message(s) deleted on the remote server")

    def _search_h1_before(self, cutoff: date) -> set[int]:
        self.stats["h1.search"] += 1
        return set(self.c1.search(["BEFORE", cutoff]))

    def _only_ours_deleted(self, ours: Sequence[int]) -> bool:
        """Without UIDPLUS, EXPUNGE would also remove others' \\Deleted messages: check none exist."""
        deleted = set(self.c1.search(["DELETED"]))
        return deleted <= set(ours)

    def _delete_local(self, jobs: list[_Job]) -> None:
        """Remove host2 messages and folders absent on host1, unless the brake trips."""
        assert self.state is not None
        if self.inbox:
            self.log("delete_local is ignored in inbox mode")
            return
        if self.report.errors:
            self.log("delete_local skipped: this run had errors")
            return
        losses: list[FolderLoss] = []
        plans: list[tuple[str, list[int]]] = []
        by_target: dict[str, list[_Job]] = defaultdict(list)
        for job in jobs:
            by_target[job.target].append(job)
        for target, tjobs in sorted(by_target.items()):
            present = set(self.state.target_state(target).keys)
            gone = sorted(present - self.state.claimed(target))
            if gone:
                losses.append(FolderLoss(target, sum(j.messages for j in tjobs), len(present), len(gone)))
                plans.append((target, gone))
        folders = self._local_folders_to_delete()
        brakes = brake_reasons(losses, [(f.name, n) for f, n in folders], self.plan.delete_local_max_share)
        if brakes:
            self.report.error_class = "delete_local_brake"
            for line in brakes:
                self.error(f"delete_local brake: {line}")
            return
        for target, uids in plans:
            self._expunge_local(target, uids)
        for folder, _count in folders:
            self._delete_local_folder(folder)

    def _expunge_local(self, target: str, uids: list[int]) -> None:
        assert self.state is not None
        self.stats["h2.select"] += 1
        self.touched2.add(target)
        self.c2.select_folder(target)
        for uidset in uid_sets(uids):
            self.c2.add_flags(uidset, [DELETED], silent=True)
            self.c2.uid_expunge(uidset)
        ts = self.state.target_state(target)
        for uid in uids:
            ts.keys.pop(uid, None)
        for fs in self.state.folders_for(target):
            fs.forget_snapshots()
        self.report.deleted_host2 += len(uids)
        self.log(f"folder {target}: {len(uids)} local message(s) absent on the remote server deleted")

    def _local_folders_to_delete(self) -> list[tuple[Folder, int]]:
        """host2 folders no host1 folder maps to, with their message counts."""
        out: list[tuple[Folder, int]] = []
        for folder in folderpairs.local_orphans(self.found):
            status = self._status2(folder.name)
            if status is not None:
                out.append((folder, int(status.get(b"MESSAGES", 0))))
        return out

    def _delete_local_folder(self, folder: Folder) -> None:
        try:
            if self.c2.has_capability("UNSELECT"):
                self.c2.unselect_folder()
        except imaplib.IMAP4.abort:
            raise
        except imaplib.IMAP4.error:
            pass
        try:
            try:
                self.c2.unsubscribe_folder(folder.name)
            except imaplib.IMAP4.abort:
                raise
            except imaplib.IMAP4.error:
                pass
            self.c2.delete_folder(folder.name)
        except imaplib.IMAP4.abort:
            raise
        except imaplib.IMAP4.error as exc:
            self.error(f"folder {folder.name} could not be deleted on the local server: {exc}")
            return
        self.report.folders_deleted_host2 += 1
        self.log(f"folder {folder.name} absent on the remote server deleted locally")

    # ---- snapshots and totals ------------------------------------------------------
    def _h1_snapshot_after(self, job: _Job, before: ss.Snapshot | None) -> ss.Snapshot | None:
        """host1 counters after our own changes (\\Seen, expunges), if nothing else arrived."""
        if not self.h1_modified or before is None:
            return before
        items = ["MESSAGES", "UIDNEXT", "UIDVALIDITY"] + (["HIGHESTMODSEQ"] if self.modseq else [])
        arg, encode = folder_arg(job.folder)
        with folder_encoding(self.c1, encode):
            status = self.c1.folder_status(arg, items)
        after = ss.Snapshot(int(status.get(b"UIDVALIDITY", 0)), int(status.get(b"UIDNEXT", 0)),
                            int(status.get(b"MESSAGES", 0)), int(status.get(b"HIGHESTMODSEQ", 0)) or None)
        if after.uidvalidity != before.uidvalidity or after.uidnext != before.uidnext:
            return before  # something arrived: let the next run look again
        return after

    def _h2_snapshot(self, job: _Job) -> ss.Snapshot | None:
        status = self._status2(job.target)
        if status is None:
            return None
        return ss.Snapshot(int(status.get(b"UIDVALIDITY", 0)), int(status.get(b"UIDNEXT", 0)),
                           int(status.get(b"MESSAGES", 0)))

    def _host2_totals(self, jobs: list[_Job]) -> None:
        """Messages and bytes on host2 at the end, from the last STATUS of each target."""
        side = Side()
        for target in sorted({j.target for j in jobs}):
            status = self.status2.get(target) if target not in self.touched2 else None
            status = status or self._status2(target)
            if status is None:
                continue
            side.folders += 1
            side.messages += int(status.get(b"MESSAGES", 0))
            side.bytes += int(status.get(b"SIZE", 0))
        self.report.host2 = side
