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
    The rule both engines share (``deletion``): a host1 message is deleted only
    while a copy with its identity is found on host2 right now -- read from host2
    just before, not ``\\Deleted`` -- in the mapped folder (the UID where this
    engine put it is checked first), or with Sieve in any local folder; with
    delete_remote_older N, only when its INTERNALDATE is before today-N days.  A
    message the script discarded, or whose copy the user deleted, stays on host1
    and the log says so.  Combined with delete_local it is refused (imapsync
    refuses --delete1 with --delete2 too): together they would erase both sides.
delete_local
    host2 messages that stand for no host1 message of the mapped folders are
    expunged, and host2 folders that no host1 folder maps to are deleted, after all
    folders were synced without error -- unless the brake trips: a host1 folder
    with 0 messages while host2 has some, or more than ``delete_local_max_share`` of
    a host2 folder going (a whole non-empty folder counts as 100 %).  Then nothing
    at all is deleted and the run ends with ``delete_local_brake``.  INBOX,
    special-use folders, folders with children and the Shared/Public namespaces
    are never deleted.  Ignored in inbox mode.

What a run answers for
    Each folder's tally (``FolderTally``): the host1 messages of the folder (in
    inbox mode: the unseen and the already handled ones), and how many of them
    the acknowledged state places on host2.  A run with fewer found than listed
    is not a success.  A message the server lists but does not deliver (a UID
    missing from a FETCH reply while UID SEARCH still shows it) is an error, and
    its folder is not recorded as synced; a listing with fewer entries than the
    folder has disables every deletion of that folder for the run.

Crash safety and cheap re-runs: see ``syncstate``; a flag change enters the state
only once host2 acknowledged its STORE.  The copy itself (``transfer``): large
messages are read in partial FETCHes into an unlinked temporary file, smaller ones
in batches, each bounded by the size the server announced; a local server without
UIDPLUS works too (the new UID is found back by identity).  The destination
folder is SELECTed before APPENDs (Dovecot spends twice the CPU otherwise).
"""

from __future__ import annotations

import errno
import imaplib
import ssl
import threading
import time
import traceback
from collections import Counter, defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import imapclient

from ns8_imapsync.imap import reads, wire
from ns8_imapsync.imap.connection import close_quietly, describe, open_session, scrub
from ns8_imapsync.imap.errors import BAD_USER_CREDENTIALS, classify
from ns8_imapsync.imap.expunge import expunge_uids
from ns8_imapsync.imap.folders import Folder, folder_arg, folder_encoding, list_folders, select_folder
from ns8_imapsync.imap.identity import HEADER_FETCH, header_from_fetch, header_signature
from ns8_imapsync.imap.messages import as_text, chunked, clean_flags, uid_fetch, uid_search_all, uid_sets
from ns8_imapsync.sync import deletion, folderpairs
from ns8_imapsync.sync import syncstate as ss
from ns8_imapsync.sync.brake import FolderLoss, brake_reasons
from ns8_imapsync.sync.engine import HeartbeatFn
from ns8_imapsync.sync.plan import SyncPlan, read_password
from ns8_imapsync.sync.report import FolderTally, Progress, ProgressFn, RunReport, Side
from ns8_imapsync.sync.transfer import Copier, Placed, Source, describe_remote

# above LARGE_MESSAGE a message is spooled to disk in CHUNK_SIZE partial FETCHes;
# body FETCHes (and progress events) go by reads.BODY_BATCH_* messages and bytes
LARGE_MESSAGE, CHUNK_SIZE = reads.LARGE_MESSAGE, reads.CHUNK_SIZE
SAVE_INTERVAL = 2.0  # seconds between state writes during a folder
FLAG_STORE_BATCH = 500  # messages per flag STORE: a refusal costs only these baselines
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

    def run(self, plan: SyncPlan, progress: ProgressFn, stop: threading.Event, log,
            heartbeat: HeartbeatFn | None = None) -> RunReport:
        self.stats = Counter()
        return _Run(self, plan, progress, stop, log, heartbeat).execute()


class _Run:
    """One run: sessions, state, counters and the report (keeps NativeEngine stateless)."""

    def __init__(self, engine: NativeEngine, plan: SyncPlan, progress: ProgressFn,
                 stop: threading.Event, log: Callable[[str], None], heartbeat: HeartbeatFn | None) -> None:
        self.engine = engine
        self.heartbeat = heartbeat  # bytes moved on either session: the watchdog's sign of life
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
        self.no_deletions: set[str] = set()  # host2 folders whose remote listing was incomplete
        self.local_folders: list[Folder] | None = None  # LIST of host2, read when Sieve deletions need it
        self.limits = reads.Limits(engine.large_message, engine.chunk_size)
        self.fresh: set[int] = set()  # this folder: remote UIDs placed by this run (no flag sync for them)
        self.unsettled = 0  # this folder: copies stored whose local UID could not be found back

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
        for client in (self.c1, self.c2):
            wire.instrument(client, self.heartbeat)

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
        r.require_complete()
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
        for problem in found.problems:  # a folder the run could not decide about: not a success
            self.error(problem)
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
        self.unsettled = 0
        if self._unchanged(job, fs):
            self.stats["folders.unchanged"] += 1
            handled = len(fs.entries)
            if not self.inbox:
                self.report.skipped += job.messages
            self.report.folders.append(FolderTally(job.folder.name, handled if self.inbox else job.messages,
                                                   handled))
            if self.plan.delete_remote and fs.entries:
                self._select_h1(job, readonly=False)
                self._delete_remote(job, fs)
                if self.h1_modified:
                    fs.h1 = self._h1_snapshot_after(job, fs.h1)
                    fs.h2 = self._h2_snapshot(job)
            return
        self._full_sync(job, fs)

    def _unchanged(self, job: _Job, fs: ss.FolderState) -> bool:
        """True when both sides' counters equal those of the last complete sync,
        and the record accounts for every remote message."""
        if fs.h1 is None or fs.h2 is None or job.status2 is None or fs.h1.modseq is None:
            return False
        if not self.inbox and len(fs.entries) != job.messages:
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
        listing = self._h1_listing(job, fs, snap1)
        fs.forget_snapshots()  # until this folder is complete again
        self._reconcile(job)
        responsible = self._place(job, fs, listing)
        self.report.folders.append(FolderTally(job.folder.name, len(responsible),
                                               len(responsible & set(fs.entries)) + self.unsettled))
        if self.stop.is_set():
            return
        if self.sieve:
            self._filter_pending(job, fs)
        if not self.inbox:
            self._sync_flags(fs, listing.flags, self.fresh)
        if self.plan.delete_remote and job.target not in self.no_deletions:
            self._delete_remote(job, fs)
        if len(self.report.errors) == errors_before and not self.unsettled:
            fs.h1 = self._h1_snapshot_after(job, snap1)
            fs.h2 = self._h2_snapshot(job)

    def _place(self, job: _Job, fs: ss.FolderState, listing: reads.Listing) -> set[int]:
        """Claim or copy every remote message the run is responsible for; returns
        those messages (the folder's, or in inbox mode the unseen and the handled
        ones), without the ones that vanished meanwhile."""
        h1flags = listing.flags
        if not self.inbox:
            for uid in [u for u, e in fs.entries.items() if e.note == ss.GONE]:
                del fs.entries[uid]  # the local copy went away: copy it again (as imapsync does)
        for uid in [u for u in fs.entries if u not in h1flags and u not in listing.missing]:
            del fs.entries[uid]  # expunged on the remote
        responsible = {u for u, flags in h1flags.items()
                       if u in fs.entries or not (self.inbox and SEEN in flags)}
        candidates = sorted(u for u in responsible if u not in fs.entries)
        if not self.inbox:
            self.report.skipped += len(h1flags) - len(candidates)  # placed by an earlier run
        self.fresh = set()
        msgs, gone = self._h1_meta(job, candidates, h1flags)
        to_copy = self._claim(job, fs, msgs, self.fresh)
        gone += self._copy(job, fs, to_copy, self.fresh)
        return responsible - set(gone)

    def _select_h1(self, job: _Job, readonly: bool) -> dict:
        self.stats["h1.select"] += 1
        return select_folder(self.c1, job.folder, readonly=readonly)

    def _select_h2(self, job: _Job) -> dict:
        self.stats["h2.select"] += 1
        return self.c2.select_folder(job.target)

    def _h1_listing(self, job: _Job, fs: ss.FolderState, snap1: ss.Snapshot) -> reads.Listing:
        """host1 UID -> flags of every message; only the changed ones when CONDSTORE allows.

        A full listing that misses messages the folder has (a server dropping
        FETCH items) is kept, but every deletion of the folder's target is
        disabled for this run and the folder is not recorded as synced."""
        prev = fs.h1
        if snap1.messages == 0:
            return reads.Listing({}, True, set())
        if (prev is not None and prev.modseq and snap1.modseq and prev.uidvalidity == snap1.uidvalidity
                and prev.uidnext == snap1.uidnext and prev.messages == snap1.messages):
            # same UIDs as at the last complete sync: only flags changed
            self.stats["h1.fetch_changed"] += 1
            flags = {uid: e.flags for uid, e in fs.entries.items()}
            changed = uid_fetch(self.c1, "1:*", "(UID FLAGS)", f"(CHANGEDSINCE {prev.modseq})")
            flags.update({uid: clean_flags(item.get(b"FLAGS", ())) for uid, item in changed.items()})
            return reads.Listing(flags, True, set())
        self.stats["h1.fetch_flags"] += 1
        listing = reads.folder_listing(self.c1, snap1.messages)
        if not listing.complete:
            self.no_deletions.add(job.target)
            self.error(f"folder {job.folder.name}: the remote server listed {len(listing.flags)} of the "
                       f"{len(listing.flags) + len(listing.missing)} messages it has; nothing of this folder "
                       "is deleted in this run, and it is checked again next run")
        return listing

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

    def _copy_counter(self, what: str) -> None:
        """Copier counts: APPENDs are host2's commands, reads host1's."""
        self.stats[f"h2.{what}" if what.startswith("append") else f"h1.{what}"] += 1

    def _fetch_meta(self, client: imapclient.IMAPClient, side: str, uids: Sequence[int],
                    items: str) -> dict[int, dict]:
        return reads.fetch_meta(client, uids, items, self._counter(side))

    def _keys(self, client: imapclient.IMAPClient, side: str, uids: Sequence[int]) -> dict[int, str]:
        """Identity keys of local messages (header signature, else content hash).

        A local message that cannot be read stays without a key: it is never
        claimed nor deleted, and the remote message it might stand for is copied."""
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
        keys.update(self._content_keys(client, side, keyless, {}))
        return keys

    def _h1_meta(self, job: _Job, uids: Sequence[int],
                 h1flags: dict[int, tuple[str, ...]]) -> tuple[list[Source], list[int]]:
        """Size, date and key of the host1 messages not yet placed on host2, and
        the UIDs that vanished meanwhile. A message the server lists but does not
        describe, or whose content cannot be read, is an error, not "gone"."""
        if not uids:
            return [], []
        found = describe_remote(self.c1, job.folder.name, uids, self.limits, h1flags, self._counter("h1"))
        for line in found.errors:
            self.error(line)
        if found.gone:
            self.log(f"folder {job.folder.name}: {len(found.gone)} message(s) expunged on the remote server meanwhile")
        return found.sources, found.gone

    def _content_keys(self, client: imapclient.IMAPClient, side: str, sizes: dict[int, int],
                      refused: dict[int, str]) -> dict[int, str]:
        return reads.content_keys(client, sizes, self.limits, self._counter(side), refused=refused)

    # ---- placing messages --------------------------------------------------------
    def _claim(self, job: _Job, fs: ss.FolderState, msgs: list[Source], fresh: set[int]) -> list[Source]:
        """Match host1 messages to unclaimed host2 messages with the same key; the rest is to copy."""
        assert self.state is not None
        ts = self.state.target_state(job.target)
        claimed = self.state.claimed(job.target)
        pool: dict[str, list[int]] = defaultdict(list)
        for uid in sorted(ts.keys):
            if uid not in claimed:
                pool[ts.keys[uid]].append(uid)
        to_copy: list[Source] = []
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

    def _copy(self, job: _Job, fs: ss.FolderState, msgs: list[Source], fresh: set[int]) -> list[int]:
        """APPEND the messages no local message stands for (``transfer``); returns
        the remote UIDs that vanished meanwhile."""
        def placed_now(p: Placed) -> None:
            self._count_copy(p.msg)
            self._record_copy(job, fs, p, fresh)

        copier = Copier(self.c1, self.c2, self.limits, Path(self.plan.workdir), count=self._copy_counter,
                        stop=self.stop, on_chunk=self._chunk_done, on_placed=placed_now)
        gone: list[int] = []
        for outcome in copier.batches(job.folder.name, job.target, msgs, self._copy_flags):
            for p in outcome.found_back:
                self.unsettled -= 1
                self._record_copy(job, fs, p, fresh)
            gone += outcome.gone
            for line in copier.errors:
                self.error(line)
            copier.errors.clear()
            recorded = [p.msg.uid for p in outcome.placed if p.uid is not None]
            if recorded and self.sieve:
                self.save_state(force=True)  # the FILTER must be known to be pending first
                self._filter(job, fs, [fs.entries[u] for u in recorded])
            if outcome.placed and self.inbox:
                self.save_state(force=True)
                self._mark_seen([p.msg.uid for p in outcome.placed])
            self.save_state()
            self.emit()
        return gone

    def _copy_flags(self, msg: Source) -> list[str]:
        return [f for f in msg.flags if not (self.inbox and f == DELETED)]

    def _chunk_done(self, size: int) -> None:
        """Progress inside a large message (its bytes are not counted again once placed)."""
        self.prog.bytes_done += size
        self.emit()

    def _count_copy(self, msg: Source) -> None:
        self.report.copied += 1
        self.report.copied_bytes += msg.size
        self.prog.messages_done += 1
        if msg.size <= self.limits.large_message:
            self.prog.bytes_done += msg.size
        self.appends += 1
        if self.engine.after_append is not None:
            self.engine.after_append(self.appends)

    def _record_copy(self, job: _Job, fs: ss.FolderState, p: Placed, fresh: set[int]) -> None:
        """Remember an acknowledged copy at once (a crash right after loses nothing).

        A copy whose local UID is not known yet (no UIDPLUS) is not recorded
        until it is found back by identity; one never found back is left to the
        next run, which finds it by identity, and the folder is not marked
        complete meanwhile."""
        assert self.state is not None
        if p.uid is None:
            self.unsettled += 1
            return
        fs.entries[p.msg.uid] = ss.Entry(p.uid, p.msg.flags, ss.SIEVE_PENDING if self.sieve else ss.COPIED)
        self.state.target_state(job.target).keys[p.uid] = p.msg.key
        fresh.add(p.msg.uid)

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
        Whatever the script did (file, discard, keep), the remote message is
        deleted later only if a copy of it is found (``deletion``).
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
        if filed and not expunge_uids(self.c2, filed):
            self.log("INBOX: the local server lacks UIDPLUS and other messages are marked deleted: "
                     "the originals the Sieve script filed stay marked \\Deleted")
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
        """Apply to host2 the flag changes host1 made since the last sync (module docstring).

        A message's baseline moves to host1's flags only once every STORE it
        needed was acknowledged: a refused STORE or a dropped connection keeps
        the old baseline, so the change is sent again by the next run."""
        stores: dict[tuple[bool, tuple[str, ...]], list[int]] = defaultdict(list)  # (add?, flags) -> h2 UIDs
        todo: dict[int, tuple[ss.Entry, tuple[str, ...], int]] = {}  # h2 UID -> (entry, new flags, STOREs left)
        for uid, entry in fs.entries.items():
            now = h1flags.get(uid)
            if uid in fresh or entry.h2uid is None or now is None:
                continue
            old = set(entry.flags)
            add = tuple(sorted(set(now) - old - {DELETED}))
            remove = tuple(sorted(old - set(now) - {SEEN, DELETED}))
            if not add and not remove:
                entry.flags = now  # nothing to send: the new baseline holds
                continue
            for is_add, flags in ((True, add), (False, remove)):
                if flags:
                    stores[(is_add, flags)].append(entry.h2uid)
            todo[entry.h2uid] = (entry, now, bool(add) + bool(remove))
        refused = 0
        for (is_add, flags), uids in stores.items():
            store = self.c2.add_flags if is_add else self.c2.remove_flags
            for part in chunked(sorted(uids), FLAG_STORE_BATCH):
                self.stats["h2.store"] += 1
                try:
                    store(next(uid_sets(part)), list(flags), silent=True)
                except imaplib.IMAP4.abort:
                    raise
                except imaplib.IMAP4.error as exc:
                    refused += len(part)
                    self.error(f"flags of {len(part)} local message(s) could not be updated: {exc}")
                    continue
                for h2uid in part:
                    self._flag_store_done(todo, h2uid)
        self.report.flags_updated += len(todo) - sum(1 for _e, _n, left in todo.values() if left)

    def _flag_store_done(self, todo: dict[int, tuple[ss.Entry, tuple[str, ...], int]], h2uid: int) -> None:
        entry, now, left = todo[h2uid]
        todo[h2uid] = (entry, now, left - 1)
        if left - 1 == 0:
            entry.flags = now

    # ---- deletions ---------------------------------------------------------------
    def _delete_remote(self, job: _Job, fs: ss.FolderState) -> None:
        """Expunge on host1 the messages whose copy is on host2 right now (``deletion``)."""
        candidates = dict(fs.entries)
        if self.plan.delete_remote_older > 0 and candidates:
            self.stats["h1.search"] += 1
            old = deletion.older_than(self.c1, self.plan.delete_remote_older)
            candidates = {u: e for u, e in candidates.items() if u in old}
        if not candidates:
            return
        hints = {u: e.h2uid for u, e in candidates.items() if e.h2uid is not None}
        wanted = deletion.remote_wanted(self.c1, sorted(candidates), self.limits, hints)
        places = deletion.places_for(job.target, self._local_folders(), self.sieve)
        outcome = deletion.delete_verified(self.c1, self.c2, job.folder, wanted, places, self.limits, self.log)
        if outcome.deleted or outcome.held:
            self.h1_modified = True
        for uid in outcome.uids:
            fs.entries.pop(uid, None)
        self.report.deleted_host1 += outcome.deleted

    def _local_folders(self) -> list[Folder]:
        """host2's folders now (Sieve may have created some during the run), listed once."""
        if self.local_folders is None:
            self.local_folders = list_folders(self.c2) if self.sieve else []
        return self.local_folders

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
        if not expunge_uids(self.c2, uids):
            self.log(f"folder {target}: the local server lacks UIDPLUS and other messages are marked "
                     f"deleted: {len(uids)} local message(s) absent on the remote server were marked \\Deleted")
            return
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
