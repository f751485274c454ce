"""What every step of a native run shares: sessions, state, counters,
the report and the plumbing (log with secrets masked, progress, errors,
state saves)."""

from __future__ import annotations

import errno
import imaplib
import ssl
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

import imapclient

from ns8_imapsync.imap import reads
from ns8_imapsync.imap.connection import scrub
from ns8_imapsync.imap.folders import Folder, select_folder
from ns8_imapsync.sync import folderpairs
from ns8_imapsync.sync import syncstate as ss
from ns8_imapsync.sync.engine import HeartbeatFn
from ns8_imapsync.sync.plan import SyncPlan
from ns8_imapsync.sync.report import Progress, ProgressFn, RunReport

if TYPE_CHECKING:
    from .run import NativeEngine

# above LARGE_MESSAGE a message is spooled to disk in CHUNK_SIZE partial FETCHes;
# body FETCHes (and progress events) go by reads.BODY_BATCH_* messages and bytes
LARGE_MESSAGE, CHUNK_SIZE = reads.LARGE_MESSAGE, reads.CHUNK_SIZE
SAVE_INTERVAL = 2.0  # seconds between state writes during a folder
FLAG_STORE_BATCH = 500  # messages per flag STORE: a refusal costs only these baselines
MAX_ERROR_LINES = 50

SEEN, DELETED = "\\Seen", "\\Deleted"
_NETWORK_ERRNOS = frozenset({errno.ECONNRESET, errno.ECONNABORTED, errno.ECONNREFUSED, errno.EPIPE,
                             errno.ETIMEDOUT, errno.EHOSTUNREACH, errno.ENETUNREACH, errno.ENETDOWN})


class Fatal(Exception):
    """Ends the run with ``error_class``; the text is for the administrator."""

    def __init__(self, error_class: str, text: str) -> None:
        super().__init__(text)
        self.error_class = error_class


def is_network(exc: BaseException) -> bool:
    """A dropped or failing connection (not a local file problem, which is also an OSError)."""
    if isinstance(exc, imaplib.IMAP4.abort | ssl.SSLError | ConnectionError | TimeoutError):
        return True
    return isinstance(exc, OSError) and exc.errno in _NETWORK_ERRNOS


@dataclass
class Job:
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


class RunBase:
    """The state one run's steps share (keeps NativeEngine stateless)."""

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
        self.qresync = False  # host1 tells what was expunged since a MODSEQ (QRESYNC enabled)
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

    def _counter(self, side: str) -> reads.Count:
        def count(what: str) -> None:
            self.stats[f"{side}.{what}"] += 1
        return count

    def _copy_counter(self, what: str) -> None:
        """Copier counts: APPENDs are host2's commands, reads host1's."""
        self.stats[f"h2.{what}" if what.startswith("append") else f"h1.{what}"] += 1

    def _select_h1(self, job: Job, readonly: bool) -> dict:
        self.stats["h1.select"] += 1
        return select_folder(self.c1, job.folder, readonly=readonly)

    def _select_h2(self, job: Job) -> dict:
        self.stats["h2.select"] += 1
        return self.c2.select_folder(job.target)

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
