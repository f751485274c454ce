"""Where each task's run stands: lock, status record, progress, history.

The truth about "is it running" is the task's lock (`<name>.lock`), held with
flock by the run process for its whole life: the kernel drops it when the
process dies, however it dies, and it is visible from the host and the
container alike (same file, same kernel). The status record says what the run
last reported; a record saying "running" or "queued" while nobody holds the
lock is a crashed run, and is shown as such -- except a task waiting in the
start queue (`.queue/<name>.json`), which has no process yet: a thousand
queued tasks are a thousand small files, not a thousand waiting processes.

Host-side and container-side code both read these files, so this module is
standard library only.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from ns8_imapsync import files
from ns8_imapsync.layout import TaskFiles, queue_dir

HISTORY_MAX = 20
ACTIVE_STATES = ("queued", "running")


@dataclass
class RunStatus:
    state: str = "never"  # never | queued | running | succeeded | failed | stopped | stalled | crashed
    started: float | None = None  # epoch seconds
    ended: float | None = None
    exit_code: int | None = None
    error_class: str = ""
    reason: str = ""  # one line, plain words
    engine: str = ""
    trigger: str = ""  # manual | cron | create
    copied: int = 0
    skipped: int = 0
    pid: int | None = None  # in the container's pid namespace: for stop only
    folder_mode: str = ""  # the task's foldersynchronization during this run
    queued_at: float | None = None  # when the start was asked: the oldest queued goes first
    # the remote messages this run answered for, and how many of them are on the local
    # server (None: the run never got that far); folders: {folder, listed, found} each
    listed: int | None = None
    found: int | None = None
    folders: list[dict] = field(default_factory=list)

    def short_folders(self) -> list[dict]:
        """The folders with remote messages not on the local server."""
        return [f for f in self.folders if f.get("found", 0) < f.get("listed", 0)]

    @classmethod
    def from_dict(cls, d: dict) -> RunStatus:
        known = {k: v for k, v in d.items() if k in cls.__dataclass_fields__}
        return cls(**known)


def lock_held(path: Path) -> bool:
    """True while a run holds the lock (probed with a shared lock for an instant)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except OSError as exc:
        if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
            return True
        raise
    finally:
        os.close(fd)  # releases the probe's lock
    return False


def acquire(path: Path, patience: float = 0.2) -> int | None:
    """The run lock (an fd to keep open), or None if another run holds it.

    A host-side `lock_held` probe holds a shared lock for microseconds, so a
    refusal is retried briefly before it means "running"."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    deadline = time.monotonic() + patience
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return fd
        except OSError as exc:
            if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN):
                os.close(fd)
                raise
        if time.monotonic() >= deadline:
            os.close(fd)
            return None
        time.sleep(0.05)


@dataclass(frozen=True)
class QueueEntry:
    """A start asked for and not yet taken by a run (see sync.dispatch)."""

    name: str
    queued_at: float
    trigger: str
    host: str  # the remote server, for the per-host cap
    mailbox: str = ""  # the local user, one run at a time (an entry written without it: from the name)

    @property
    def local_user(self) -> str:
        return self.mailbox or self.name.rsplit("_", 1)[0]


def enqueue(tasks_dir: Path, entry: QueueEntry) -> bool:
    """Add a start to the queue; False when the task is queued already.

    The entry is written whole to a temporary name, then linked into place:
    the link fails if the entry exists, and a crash never leaves a half-written
    entry that would keep the task "queued" for ever."""
    files.ensure_dir(queue_dir(tasks_dir))
    data = json.dumps({"queued_at": entry.queued_at, "trigger": entry.trigger, "host": entry.host,
                       "mailbox": entry.mailbox})
    try:  # not durable: a start lost in a power cut is asked again
        files.write_atomic(TaskFiles(tasks_dir, entry.name).queue_entry, data, 0o600, overwrite=False,
                           durable=False)
    except FileExistsError:
        return False
    return True


def dequeue(tasks_dir: Path, name: str) -> bool:
    """Take a task out of the queue; False when it was not (or no longer) there."""
    try:
        TaskFiles(tasks_dir, name).queue_entry.unlink()
    except FileNotFoundError:
        return False
    return True


def is_queued(tasks_dir: Path, name: str) -> bool:
    return TaskFiles(tasks_dir, name).queue_entry.exists()


def queued(tasks_dir: Path) -> list[QueueEntry]:
    """The queue, oldest first."""
    out = []
    try:
        paths = list(queue_dir(tasks_dir).glob("*.json"))
    except OSError:
        return []
    for path in paths:
        try:
            d = json.loads(path.read_text())
            out.append(QueueEntry(path.name[: -len(".json")], float(d["queued_at"]), str(d.get("trigger", "")),
                                  str(d.get("host", "")), str(d.get("mailbox", ""))))
        except (OSError, ValueError, KeyError, TypeError):
            continue  # being written, or removed meanwhile
    out.sort(key=lambda e: (e.queued_at, e.name))
    return out


def read_record(tf: TaskFiles) -> RunStatus:
    """The status record as last written, crash or not (for whoever holds the lock)."""
    try:
        return RunStatus.from_dict(json.loads(tf.status.read_text()))
    except (FileNotFoundError, json.JSONDecodeError, TypeError):
        return RunStatus()


def read_status(tf: TaskFiles) -> RunStatus:
    """The run status as it really is: an active record without a lock holder
    is a crash (kill -9, container restart, OOM), unless the task waits in the
    start queue. The lock holders include the run's children (imapsync): a
    killed run whose imapsync still lives is shown running until it is gone."""
    st = read_record(tf)
    if st.state in ACTIVE_STATES and not lock_held(tf.lock) and \
            not (st.state == "queued" and is_queued(tf.tasks_dir, tf.name)):
        st.state = "crashed"
        st.error_class = "crashed"
        st.reason = "the run ended unexpectedly (process killed or container restarted)"
    return st


def write_status(tf: TaskFiles, st: RunStatus) -> None:
    files.write_atomic(tf.status, json.dumps(asdict(st)), 0o600)


def write_progress(tf: TaskFiles, progress: dict) -> None:
    files.write_atomic(tf.progress, json.dumps(progress), 0o600)


def read_progress(tf: TaskFiles) -> dict | None:
    try:
        return json.loads(tf.progress.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None


def append_history(tf: TaskFiles, st: RunStatus) -> None:
    """The last HISTORY_MAX runs, newest last; rewritten whole (it is small: a run
    keeps its totals there, and only the folders that were short of mail)."""
    entries = read_history(tf)
    entries.append({**asdict(st), "folders": st.short_folders()})
    text = "".join(json.dumps(e) + "\n" for e in entries[-HISTORY_MAX:])
    files.write_atomic(tf.history, text, 0o600)


def read_history(tf: TaskFiles) -> list[dict]:
    try:
        lines = tf.history.read_text().splitlines()
    except FileNotFoundError:
        return []
    out = []
    for line in lines:
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return out


@dataclass
class TaskView:
    """What list-tasks shows of a task's runs."""

    running: bool
    status: RunStatus
    progress: dict | None = None
    history: list[dict] = field(default_factory=list)


def view(tasks_dir: Path, name: str) -> TaskView:
    tf = TaskFiles(tasks_dir, name)
    st = read_status(tf)
    running = st.state in ACTIVE_STATES  # read_status turned a dead run into "crashed"
    return TaskView(running=running, status=st, progress=read_progress(tf) if running else None)
