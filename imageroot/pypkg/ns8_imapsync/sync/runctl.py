"""One run of one task, from lock to history: what `syncctl start` does.

The run holds the task lock from before it queues until it has written its
final status, so no second run can start while the first is queued, running
or still exiting. It then waits for a node-wide slot and a per-remote-host
slot (slot locks in `.slots/`, oldest queued first), runs the engine with a
watchdog, and records status, progress, history, log and a journal line.

The locks are inheritable: engine children (imapsync) hold them too, so a
task whose run was killed still counts as running while one of its
children lives, and `stop_run` and the watchdog end every process of a run
(`sync.lockholders`) before its end is recorded. The task log is 0600 and
every line of it, like the status reason, has the task's passwords masked.
"""

from __future__ import annotations

import os
import re
import signal
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import IO

from ns8_imapsync import layout, runstate
from ns8_imapsync.errors import ENGINE_ERROR
from ns8_imapsync.runstate import RunStatus, TaskFiles
from ns8_imapsync.statedir import StateDir
from ns8_imapsync.sync import lockholders
from ns8_imapsync.sync.activity import Activity, poll_interval
from ns8_imapsync.sync.plan import SyncPlan
from ns8_imapsync.sync.redact import Redactor
from ns8_imapsync.sync.report import Progress, RunReport

PROGRESS_EVERY = 1.0  # seconds between progress file writes


def default_max_syncs() -> int:
    """A sync needs roughly 150 MB at its peak: leave room on small nodes."""
    try:
        with open("/proc/meminfo") as f:
            kb = int(next(ln for ln in f if ln.startswith("MemTotal:")).split()[1])
    except (OSError, StopIteration, ValueError):
        return 4
    return max(2, min(32, kb // (512 * 1024)))


def setting(name: str, default: int) -> int:
    try:
        return max(1, int(os.environ.get(name, "")))
    except ValueError:
        return default


def host_slot_prefix(host: str) -> str:
    return "host-" + re.sub(r"[^a-z0-9.-]", "_", host.lower())


def mailbox_slot_prefix(local_user: str) -> str:
    """One run per local mailbox: two tasks writing into one mailbox at once would
    race (both see a message missing and both copy it; both CREATE a folder and
    imapsync fails on ALREADYEXISTS)."""
    return "mailbox-" + re.sub(r"[^a-z0-9_.-]", "_", local_user.lower())


class Slots:
    """Counting semaphores made of lock files: the kernel frees a dead run's slot.

    Inheritable, like the task lock: an imapsync that outlives its run still
    counts against the caps until it is gone."""

    def __init__(self, tasks_dir: Path):
        self.dir = layout.slots_dir(tasks_dir)
        self.dir.mkdir(mode=0o700, exist_ok=True)
        self.held: list[int] = []

    def busy(self, prefix: str, count: int) -> int:
        """How many of the first ``count`` slots of ``prefix`` are held right now."""
        return sum(runstate.lock_held(self.dir / f"{prefix}-{i}.lock") for i in range(count))

    def _take(self, prefix: str, count: int) -> int | None:
        for i in range(count):
            fd = runstate.acquire(self.dir / f"{prefix}-{i}.lock", patience=0)
            if fd is not None:
                return fd
        return None

    def take(self, host: str, node_cap: int, host_cap: int, local_user: str) -> bool:
        """A node slot, a slot for the remote host and the local mailbox's only one, or none."""
        held: list[int] = []
        for prefix, count in (("node", node_cap), (host_slot_prefix(host), host_cap),
                              (mailbox_slot_prefix(local_user), 1)):
            fd = self._take(prefix, count)
            if fd is None:
                for taken in held:
                    os.close(taken)
                return False
            held.append(fd)
        for fd in held:
            os.set_inheritable(fd, True)
        self.held = held
        return True

    def release(self) -> None:
        for fd in self.held:
            os.close(fd)
        self.held = []


def older_waiters(state: StateDir, me: str, queued_at: float) -> bool:
    """Is another task's run waiting for a slot for longer? (Oldest-due first.)"""
    for name in layout.task_names(state.tasks_dir):
        if name == me:
            continue
        tf = state.files(name)
        other = runstate.read_record(tf)
        if other.state == "queued" and (other.queued_at or 0) < queued_at and runstate.lock_held(tf.lock):
            return True
    return False


@dataclass(frozen=True)
class Caps:
    """The concurrency caps, as configure-module set them (0 or unset: the defaults)."""

    node: int
    per_host: int

    @classmethod
    def from_env(cls) -> Caps:
        return cls(setting("SYNC_MAX_CONCURRENT", default_max_syncs()), setting("SYNC_MAX_PER_HOST", 4))


def journal(line: str) -> None:
    """One summary line per run to the container's stdout, i.e. the journal."""
    path = os.environ.get("SYNC_JOURNAL", "/proc/1/fd/1")
    try:
        with open(path, "a") as f:
            f.write(line + "\n")
    except OSError:
        pass


def get_engine(name: str):
    if name == "imapsync":
        from ns8_imapsync.sync.imapsync_engine import ImapsyncEngine

        return ImapsyncEngine()
    from ns8_imapsync.sync.native import NativeEngine

    return NativeEngine()


def engine_name() -> str:
    import shutil

    chosen = os.environ.get("SYNC_ENGINE", "")
    if chosen in ("native", "imapsync"):
        return chosen
    return "imapsync" if shutil.which("imapsync") else "native"


class Run:
    """One run. ``queued_at`` is when its start was asked (oldest first);
    ``from_queue``: the dispatcher started it for a queue entry, which the run
    takes under its lock -- a start whose entry is gone (stopped meanwhile) is
    dropped."""

    def __init__(self, state: StateDir, plan: SyncPlan, trigger: str, engine=None,
                 queued_at: float | None = None, from_queue: bool = False):
        self.state = state
        self.queued_at = queued_at
        self.from_queue = from_queue
        self.plan = plan
        self.tf = TaskFiles(state.tasks_dir, plan.task_name)
        self.trigger = trigger
        self.stop = threading.Event()
        self.engine = engine
        self.stall_after = setting("SYNC_STALL_SECONDS", 900)
        self.activity = Activity()  # progress events and engine heartbeats
        self.stalled = False
        self.engine_returned = threading.Event()
        self.redact = Redactor.for_plan(plan)
        self._last_write = 0.0
        self._end_lock = threading.Lock()  # the run's end is recorded once: by the run or by its watchdog
        self._ended = False
        self.status = RunStatus()

    # ---- the phases ---------------------------------------------------------
    def execute(self) -> RunStatus | None:
        """Run once; None if another run of this task holds the lock."""
        lock = runstate.acquire(self.tf.lock)
        if lock is None:
            return None
        taken = runstate.dequeue(self.state.tasks_dir, self.plan.task_name)
        if self.from_queue and not taken:  # stopped while queued, or started by someone else
            os.close(lock)
            return None
        os.set_inheritable(lock, True)  # engine children hold it too (sync.lockholders)
        try:  # lead our own process group, so stop can end engine children too
            os.setpgid(0, 0)
        except PermissionError:  # already a session leader (detached start)
            pass
        signal.signal(signal.SIGTERM, lambda *_: self.stop.set())
        signal.signal(signal.SIGINT, lambda *_: self.stop.set())
        try:
            return self._locked()
        finally:
            os.close(lock)

    def _locked(self) -> RunStatus:
        queued_at = self.queued_at or time.time()
        self.status = RunStatus(state="queued", trigger=self.trigger, pid=os.getpid(), queued_at=queued_at)
        self._write_status()
        slots = Slots(self.state.tasks_dir)
        caps = Caps.from_env()
        while not self.stop.is_set():
            if not older_waiters(self.state, self.plan.task_name, queued_at) and \
                    slots.take(self.plan.source.host, caps.node, caps.per_host, self.plan.local_user):
                break
            self.stop.wait(0.5)
        if self.stop.is_set():
            slots.release()
            return self._finish(RunReport(error_class="stopped", exit_code=143, errors=["stopped while queued"]))
        try:
            return self._running()
        finally:
            slots.release()

    def _running(self) -> RunStatus:
        if self.engine is None:
            try:
                self.engine = get_engine(engine_name())
            except ImportError as exc:
                return self._finish(RunReport(error_class=ENGINE_ERROR, exit_code=1, errors=[str(exc)]))
        self.status.state = "running"
        self.status.started = time.time()
        self.status.engine = self.engine.name
        self.status.folder_mode = self.plan.folder_mode
        self._write_status()
        try:
            logf = open_task_log(self.tf.log)
        except OSError as exc:
            return self._finish(RunReport(error_class=ENGINE_ERROR, exit_code=1,
                                          errors=[f"the task log could not be opened: {exc.strerror or exc}"]))
        self.activity.touch()  # the time spent queued is not idleness
        threading.Thread(target=self._watchdog, daemon=True).start()
        with logf:
            def log(line: str) -> None:
                logf.write(self.redact(line.rstrip("\n")) + "\n")
                logf.flush()

            log(f"run of {self.plan.task_name} with the {self.engine.name} engine ({self.trigger})")
            report = self._engine_report(log)
            log(f"end: {report.reason}")
        if self.stalled:
            report.error_class = "stalled"
            report.exit_code = report.exit_code or 1
        elif self.stop.is_set() and not report.ok:
            # asked to stop: whatever the engine met on its way out (a connect cut short,
            # a read it had to abandon) is the stop's doing; its lines stay in the reason
            report.error_class, report.exit_code = "stopped", 143
        return self._finish(report)

    def _engine_report(self, log) -> RunReport:
        """The engine's report; an engine bug must still end as a recorded failure."""
        try:
            return self.engine.run(self.plan, self._on_progress, self.stop, log,
                                   heartbeat=self.activity.heartbeat)
        except Exception as exc:
            log(f"engine error: {type(exc).__name__}: {exc}")  # log() masks the passwords
            return RunReport(error_class=ENGINE_ERROR, exit_code=1, errors=[f"{type(exc).__name__}"])
        finally:
            self.engine_returned.set()

    def _finish(self, report: RunReport) -> RunStatus:
        with self._end_lock:
            if self._ended:  # the watchdog (or the run) recorded it already
                return self.status
            self._ended = True
            report.require_complete()  # whatever the engine said: mail left behind is no success
            st = self.status
            st.ended = time.time()
            st.exit_code = report.exit_code
            st.error_class = report.error_class
            st.reason = self.redact(report.reason)
            st.copied, st.skipped = report.copied, report.skipped
            if report.folders:
                tally = report.tally_record()
                st.listed, st.found, st.folders = tally["listed"], tally["found"], tally["folders"]
            if report.ok:
                st.state = "succeeded"
            elif report.error_class in ("stopped", "stalled"):
                st.state = report.error_class
            else:
                st.state = "failed"
            unsaved = self._save_end(st)
            took = f"{st.ended - st.started:.0f}s" if st.started else "-"
            journal(f"imapsync task {self.plan.task_name}: {st.state} in {took}, exit {st.exit_code}: "
                    f"{st.reason}{unsaved}")
            return st

    def _save_end(self, st: RunStatus) -> str:
        """Status and history written; on a full or failing state directory, the
        words the journal line adds, since the journal is then the only record."""
        try:
            self._write_status()
            runstate.append_history(self.tf, st)
            self.tf.progress.unlink(missing_ok=True)
        except OSError as exc:
            return f" (its status could not be saved in {self.tf.tasks_dir}: {exc.strerror or exc})"
        return ""

    # ---- helpers -------------------------------------------------------------
    def _write_status(self) -> None:
        runstate.write_status(self.tf, self.status)

    def _on_progress(self, p: Progress) -> None:
        self.activity.touch()
        now = time.time()
        if now - self._last_write < PROGRESS_EVERY and p.messages_done < p.messages_total:
            return
        self._last_write = now
        elapsed = max(0.001, now - (self.status.started or now))
        rate = p.messages_done / elapsed
        remaining = max(0, p.messages_total - p.messages_done)
        record = asdict(p)
        record.update(rate=round(rate, 2), eta_seconds=int(remaining / rate) if rate > 0 else None,
                      updated=now)
        runstate.write_progress(self.tf, record)

    def _watchdog(self) -> None:
        """Ends a run with no sign of life (no progress, no heartbeat) for SYNC_STALL_SECONDS."""
        while not self.stop.wait(poll_interval(self.stall_after)):
            if self.activity.idle_seconds() > self.stall_after:
                self._end_stalled()
                return

    def _end_stalled(self) -> None:
        self.stalled = True
        self.stop.set()
        if self.engine_returned.wait(setting("SYNC_STOP_GRACE", 30)):
            return  # the run ends normally, recorded as stalled
        # the engine did not return: end its children (they hold our lock) first, then record and exit
        if not lockholders.end(self.tf.lock, spare={os.getpid()}):
            os._exit(1)  # a child outlived SIGKILL: the task shows running until it is gone, then crashed
        self._finish(RunReport(error_class="stalled", exit_code=1,
                               errors=[f"no activity for {self.stall_after}s"]))
        os._exit(1)


def open_task_log(path: Path) -> IO[str]:
    """The task log, truncated: 0600 from the first byte (an older, wider one is
    narrowed), never written through a symlink."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
    try:
        os.fchmod(fd, 0o600)
        return os.fdopen(fd, "w", encoding="utf-8", errors="replace")
    except BaseException:
        os.close(fd)
        raise


# ---- stop -----------------------------------------------------------------------

STOPPED_IN_QUEUE = "the run was stopped before it started (queued)"
STOPPED_KILLED = "the run was stopped (killed after the grace period)"
STOPPED_UNRECORDED = "the run was stopped (it exited without recording its end)"
ENQUEUE_PATIENCE = 0.3  # seconds: a start holds the task lock for a few milliseconds to queue
KILL_WAIT = 10.0  # seconds for killed processes to be gone


def stop_run(state: StateDir, name: str, grace: float | None = None) -> str:
    """Stop a task's run, or its queued start, and return once nothing of it is left.

    A queued start is taken out under the task lock, which `syncctl start`
    holds while it queues: a stop and a start of one task are serialised, so
    a start either is stopped by a stop that runs after it or is queued after
    it, never lost in between. A run (the lock holder) gets SIGTERM and the
    grace period (``SYNC_STOP_GRACE``, 30 s); then every process holding the
    task lock -- the run, its imapsync, their children -- is killed, and the
    end is recorded only once all are gone."""
    tf = TaskFiles(state.tasks_dir, name)
    if not tf.lock.exists() and not runstate.is_queued(tf.tasks_dir, name):
        return "not running"  # never started, nor being queued right now (a start creates the lock first)
    grace = setting("SYNC_STOP_GRACE", 30) if grace is None else grace
    deadline = time.monotonic() + grace
    asked = False
    while True:
        outcome = _settle(tf, asked)
        if outcome is not None:
            return outcome
        if time.monotonic() >= deadline:
            break
        asked = asked or _ask_run_to_stop(tf)
        time.sleep(0.1)
    lockholders.end(tf.lock, timeout=KILL_WAIT)
    return _settle(tf, asked=True, killed=True) or "still running"


def _ask_run_to_stop(tf: TaskFiles) -> bool:
    """SIGTERM to the run's group, once its record names it: a run that just took
    its lock may not have written its record yet, and a pid from an older record
    (a crashed run) is signalled only if that process really holds the lock."""
    st = runstate.read_record(tf)
    if st.state not in runstate.ACTIVE_STATES or not st.pid:
        return False
    return lockholders.signal_holder(st.pid, tf.lock, signal.SIGTERM) is not None


def _settle(tf: TaskFiles, asked: bool, killed: bool = False) -> str | None:
    """Under the task lock, so no start nor run interleaves: take a queued start
    out, record the end of a run that could not record it; None while a run
    (not just a start queuing) holds the lock."""
    fd = runstate.acquire(tf.lock, patience=ENQUEUE_PATIENCE)
    if fd is None:
        return None
    try:
        dequeued = runstate.dequeue(tf.tasks_dir, tf.name)
        st = runstate.read_record(tf)  # active while we hold the lock: nobody will record its end
        if st.state in runstate.ACTIVE_STATES and (dequeued or asked):
            reason = STOPPED_IN_QUEUE if dequeued else STOPPED_KILLED if killed else STOPPED_UNRECORDED
            st.state, st.error_class, st.exit_code, st.reason = "stopped", "stopped", 143, reason
            st.ended = time.time()
            runstate.write_status(tf, st)
            runstate.append_history(tf, st)
        return "stopped" if dequeued or asked else "not running"
    finally:
        os.close(fd)
