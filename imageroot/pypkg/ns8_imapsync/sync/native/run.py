"""One native run: connect, discover, sync each folder, delete, finish; the
steps live in the modules named after them."""

from __future__ import annotations

import imaplib
import threading
import time
import traceback
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import imapclient

from ns8_imapsync.errors import (
    BAD_MASTER_CREDENTIALS,
    CONNECTION_LOST,
    ENGINE_ERROR,
    MESSAGE_ERRORS,
    SIEVE_UNAVAILABLE,
    STOPPED,
    VALIDATION_FAILED,
)
from ns8_imapsync.imap import sieve, wire
from ns8_imapsync.imap.connection import Endpoint, close_quietly, describe, open_session
from ns8_imapsync.imap.errors import BAD_USER_CREDENTIALS, classify
from ns8_imapsync.sync import syncstate as ss
from ns8_imapsync.sync.engine import HeartbeatFn
from ns8_imapsync.sync.plan import SyncPlan, read_password
from ns8_imapsync.sync.report import FolderTally, Progress, ProgressFn, RunReport
from ns8_imapsync.sync.stopping import SocketBreaker, Stopped, open_or_stop

from .base import CHUNK_SIZE, LARGE_MESSAGE, Fatal, Job, is_network
from .counters import CounterSteps
from .deletions import DeletionSteps
from .discover import DiscoverySteps
from .flags import FlagSteps
from .inbox import InboxSteps
from .placing import PlacingSteps


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
        return Run(self, plan, progress, stop, log, heartbeat).execute()


class Run(DiscoverySteps, PlacingSteps, FlagSteps, InboxSteps, DeletionSteps, CounterSteps):
    """One run: the steps, put together."""

    def execute(self) -> RunReport:
        started = time.monotonic()
        try:
            self._check_options()
            with SocketBreaker(self.stop, lambda: (self.h1, self.h2)):
                self._connect()
                self._sync()
        except Fatal as exc:
            self._fail(exc.error_class, str(exc))
        except Exception as exc:
            if is_network(exc) and self.stop.is_set():  # a stop that had to cut a blocked read
                self._fail(STOPPED, f"stopped while waiting on a server ({exc})")
            elif is_network(exc):
                self._fail(CONNECTION_LOST, self._lost_text(exc))
            else:
                self.log(f"engine failure: {traceback.format_exc(limit=6)}")
                self._fail(ENGINE_ERROR, f"{type(exc).__name__}: {exc}")
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
            raise Fatal(VALIDATION_FAILED,
                         "delete_remote and delete_local cannot be used together: they would erase both sides")

    def _password(self, path: Path, what: str) -> str:
        try:
            password = read_password(path)
        except OSError as exc:
            raise Fatal(VALIDATION_FAILED, f"the {what} password file {path.name} cannot be read "
                                              f"({exc.strerror or exc})") from exc
        self.secrets.append(password)
        return password

    def _open(self, ep: Endpoint, password: str) -> imapclient.IMAPClient:
        """A logged-in session, or the run ends "stopped" as soon as it is asked to."""
        try:
            return open_or_stop(lambda: open_session(ep, password), self.stop, close_quietly)
        except Stopped:
            raise Fatal(STOPPED, f"stopped while connecting to {ep.where}") from None

    def _connect(self) -> None:
        pw1 = self._password(self.plan.source_password_file, "remote")
        pw2 = self._password(self.plan.target_password_file, "local")
        try:
            self.h1 = self._open(self.plan.source, pw1)
        except Fatal:
            raise
        except Exception as exc:
            raise Fatal(classify(exc), describe(exc, self.plan.source, pw1)) from exc
        try:
            self.h2 = self._open(self.plan.target, pw2)
        except Fatal:
            raise
        except Exception as exc:
            error_class = classify(exc)
            if error_class == BAD_USER_CREDENTIALS:
                error_class = BAD_MASTER_CREDENTIALS
            raise Fatal(error_class, describe(exc, self.plan.target, pw2)) from exc
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
            self._fail(ENGINE_ERROR, f"the sync state could not be saved: {exc}")
        if self.state is not None:
            self.state.close()
        close_quietly(self.h1)
        close_quietly(self.h2)
        r = self.report
        if not r.error_class:
            if self.stop.is_set():
                r.error_class = STOPPED
            elif r.errors:
                r.error_class = MESSAGE_ERRORS
        r.require_complete()
        r.exit_code = 0 if not r.error_class else 1
        self.log(
            f"native sync ended in {elapsed:.1f}s: {r.copied} copied ({r.copied_bytes} bytes), "
            f"{r.skipped} already there, {r.flags_updated} flag updates, {r.deleted_host1} deleted on "
            f"the remote, {r.deleted_host2} deleted locally; IMAP commands: remote "
            f"{self.stats['h1.commands']}, local {self.stats['h2.commands']}"
            + (f"; {r.error_class}" if r.error_class else "")
        )

    def _sync(self) -> None:
        self._prepare_sessions()
        p = self.plan
        p.files.native_state_v1.unlink(missing_ok=True)  # the former JSON state: the next folders are rescanned by headers
        self.state = ss.SyncState.load(
            p.files.native_state,
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
        if self.sieve and not sieve.available(c2):
            raise Fatal(SIEVE_UNAVAILABLE,
                         f"the local server {self.plan.target.where} does not offer FILTER=SIEVE")
        if c1.has_capability("CONDSTORE") and c1.has_capability("ENABLE"):
            want = "QRESYNC" if c1.has_capability("QRESYNC") else "CONDSTORE"
            try:
                enabled = {e.decode().upper() if isinstance(e, bytes) else str(e).upper() for e in c1.enable(want)}
                self.modseq = True
                self.qresync = "QRESYNC" in enabled
            except imaplib.IMAP4.abort:
                raise
            except imaplib.IMAP4.error:
                self.modseq = False

    def _run_job(self, job: Job) -> None:
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
        assert self.state is not None
        self.state.release(job.key, job.target)  # saved: later saves need not look at it again
        if not self.stop.is_set():
            self.prog.messages_done = base_messages + job.messages
            self.prog.bytes_done = base_bytes + job.size
        if len(self.report.errors) == errors_before:
            self.log(f"folder {job.folder.name} -> {job.target}: {self.report.copied - copied_before} copied, "
                     f"{self.report.skipped - skipped_before} already there")

    def _sync_folder(self, job: Job) -> None:
        assert self.state is not None
        fs = self.state.folder(job.key, job.folder.name, job.target)
        self.h1_modified = False
        self.unsettled = 0
        if self._unchanged(job, fs):
            self.stats["folders.unchanged"] += 1
            handled = fs.count
            if not self.inbox:
                self.report.skipped += job.messages
            self.report.folders.append(FolderTally(job.folder.name, handled if self.inbox else job.messages,
                                                   handled))
            if self.plan.delete_remote and fs.count:
                self._select_h1(job, readonly=False)
                self._delete_remote(job, fs)
                if self.h1_modified:
                    fs.h1 = self._h1_snapshot_after(job, fs.h1)
                    fs.h2 = self._h2_snapshot(job)
            return
        self._full_sync(job, fs)

    def _unchanged(self, job: Job, fs: ss.FolderState) -> bool:
        """True when both sides' counters equal those of the last complete sync,
        and the record accounts for every remote message."""
        if fs.h1 is None or fs.h2 is None or job.status2 is None or fs.h1.modseq is None:
            return False
        if not self.inbox and fs.count != job.messages:
            return False
        s1 = ss.FolderCounters(int(job.status1.get(b"UIDVALIDITY", 0)), int(job.status1.get(b"UIDNEXT", 0)),
                         job.messages, int(job.status1.get(b"HIGHESTMODSEQ", 0)) or None)
        s2 = ss.FolderCounters(int(job.status2.get(b"UIDVALIDITY", 0)), int(job.status2.get(b"UIDNEXT", 0)),
                         int(job.status2.get(b"MESSAGES", 0)))
        return s1 == fs.h1 and s2 == fs.h2

    def _full_sync(self, job: Job, fs: ss.FolderState) -> None:
        errors_before = len(self.report.errors)
        info1 = self._select_h1(job, readonly=not (self.inbox or self.plan.delete_remote))
        snap1 = ss.FolderCounters(
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
