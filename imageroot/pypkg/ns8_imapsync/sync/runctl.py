"""One run of one task, from lock to history: what `syncctl start` does.

The run holds the task lock from before it queues until it has written its
final status, so no second run can start while the first is queued, running
or still exiting. It then waits for a node-wide slot and a per-remote-host
slot (slot locks in `.slots/`, oldest queued first), runs the engine with a
watchdog, and records status, progress, history, log and a journal line.
"""

from __future__ import annotations

import json
import os
import re
import signal
import threading
import time
from dataclasses import asdict
from pathlib import Path

from ns8_imapsync import runstate
from ns8_imapsync.runstate import RunStatus, TaskFiles
from ns8_imapsync.statedir import StateDir
from ns8_imapsync.sync.plan import SyncPlan
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


class Slots:
    """Counting semaphores made of lock files: the kernel frees a dead run's slot."""

    def __init__(self, tasks_dir: Path):
        self.dir = tasks_dir / ".slots"
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

    def take(self, host: str, node_cap: int, host_cap: int) -> bool:
        node_fd = self._take("node", node_cap)
        if node_fd is None:
            return False
        host_fd = self._take(host_slot_prefix(host), host_cap)
        if host_fd is None:
            os.close(node_fd)
            return False
        self.held = [node_fd, host_fd]
        return True

    def release(self) -> None:
        for fd in self.held:
            os.close(fd)
        self.held = []


def older_waiters(state: StateDir, me: str, queued_at: float) -> bool:
    """Is another task queued for longer? (Oldest-due first.)"""
    for p in state.tasks_dir.glob("*.status.json"):
        name = p.name[: -len(".status.json")]
        if name == me:
            continue
        try:
            other = json.loads(p.read_text())
        except (OSError, json.JSONDecodeError):
            continue
        if other.get("state") == "queued" and (other.get("queued_at") or 0) < queued_at \
                and runstate.lock_held(state.tasks_dir / f"{name}.lock"):
            return True
    return False


def journal(line: str) -> None:
    """One summary line per run to the container's stdout, i.e. the journal."""
    path = os.environ.get("SYNC_JOURNAL", "/proc/1/fd/1")
    try:
        with open(path, "a") as f:
            f.write(line + "\n")
    except OSError:
        pass


def incremental_window(history: list[dict], folder_mode: str, now: float) -> int | None:
    """imapsync's --maxage for this run: the days since the last successful run
    in the same folder mode, plus one day of margin (--maxage compares the Date:
    header, and clocks differ); None (a full pass) after a mode change, a
    failure-only history or a first run. The native engine keeps its own
    per-folder state and needs no window."""
    for entry in reversed(history):
        if entry.get("state") == "succeeded" and entry.get("started"):
            if entry.get("folder_mode") != folder_mode:
                return None
            return int((now - float(entry["started"])) // 86400) + 2
    return None


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
        self.last_progress = time.monotonic()
        self.stalled = False
        self.engine_returned = threading.Event()
        self._last_write = 0.0
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
        self.status = RunStatus(state="queued", trigger=self.trigger, pid=os.getpid())
        self._write_status(queued_at=queued_at)
        slots = Slots(self.state.tasks_dir)
        node_cap = setting("SYNC_MAX_CONCURRENT", default_max_syncs())
        host_cap = setting("SYNC_MAX_PER_HOST", 4)
        while not self.stop.is_set():
            if not older_waiters(self.state, self.plan.task_name, queued_at) and \
                    slots.take(self.plan.source.host, node_cap, host_cap):
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
                return self._finish(RunReport(error_class="engine_error", exit_code=1, errors=[str(exc)]))
        self.status.state = "running"
        self.status.started = time.time()
        self.status.engine = self.engine.name
        self.status.folder_mode = self.plan.folder_mode
        if self.engine.name == "imapsync" and self.plan.folder_mode != "inbox":
            self.plan.maxage_days = incremental_window(runstate.read_history(self.tf), self.plan.folder_mode,
                                                       self.status.started)
        self._write_status()
        watchdog = threading.Thread(target=self._watchdog, daemon=True)
        watchdog.start()
        with open(self.tf.log, "w", encoding="utf-8", errors="replace") as logf:
            def log(line: str) -> None:
                logf.write(line.rstrip("\n") + "\n")
                logf.flush()

            log(f"run of {self.plan.task_name} with the {self.engine.name} engine ({self.trigger})")
            try:
                report = self.engine.run(self.plan, self._on_progress, self.stop, log)
            except Exception as exc:  # an engine bug must still end as a recorded failure
                log(f"engine error: {type(exc).__name__}: {exc}")
                report = RunReport(error_class="engine_error", exit_code=1, errors=[f"{type(exc).__name__}"])
            finally:
                self.engine_returned.set()
            log(f"end: {report.reason}")
        if self.stalled:
            report.error_class = "stalled"
            report.exit_code = report.exit_code or 1
        elif self.stop.is_set() and not report.error_class:
            report.error_class, report.exit_code = "stopped", 143
        return self._finish(report)

    def _finish(self, report: RunReport) -> RunStatus:
        st = self.status
        st.ended = time.time()
        st.exit_code = report.exit_code
        st.error_class = report.error_class
        st.reason = report.reason
        st.copied, st.skipped = report.copied, report.skipped
        if report.ok:
            st.state = "succeeded"
        elif report.error_class in ("stopped", "stalled"):
            st.state = report.error_class
        else:
            st.state = "failed"
        self._write_status()
        runstate.append_history(self.tf, st)
        self.tf.progress.unlink(missing_ok=True)
        took = f"{st.ended - st.started:.0f}s" if st.started else "-"
        journal(f"imapsync task {self.plan.task_name}: {st.state} in {took}, exit {st.exit_code}: {st.reason}")
        return st

    # ---- helpers -------------------------------------------------------------
    def _write_status(self, **extra: object) -> None:
        runstate.write_status(self.tf, self.status, **extra)

    def _on_progress(self, p: Progress) -> None:
        self.last_progress = time.monotonic()
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
        while not self.stop.wait(5):
            if time.monotonic() - self.last_progress > self.stall_after:
                self.stalled = True
                self.stop.set()
                if self.engine_returned.wait(setting("SYNC_STOP_GRACE", 30)):
                    return  # the run ends normally, recorded as stalled
                # the engine did not return: record it and end the process
                self.status.state = "stalled"
                self._finish(RunReport(error_class="stalled", exit_code=1,
                                       errors=[f"no progress for {self.stall_after}s"]))
                os._exit(1)


def stop_run(state: StateDir, name: str, grace: float | None = None) -> str:
    """Stop a task's run and wait until it has exited; never leaves it half-alive."""
    tf = TaskFiles(state.tasks_dir, name)
    stopped_in_queue = runstate.dequeue(state.tasks_dir, name) and _record_stopped_in_queue(tf)
    if not runstate.lock_held(tf.lock):
        return "stopped" if stopped_in_queue else "not running"
    grace = setting("SYNC_STOP_GRACE", 30) if grace is None else grace
    deadline = time.monotonic() + grace
    pid = None
    while time.monotonic() < deadline and runstate.lock_held(tf.lock):
        if pid is None:  # a run that just took its lock may not have written its record yet
            st = runstate.read_status(tf)
            if st.state in runstate.ACTIVE_STATES and st.pid:  # never the pid of a finished run
                pid = st.pid
                _signal_group(pid, signal.SIGTERM)
        time.sleep(0.1)
    if runstate.lock_held(tf.lock) and pid:
        _signal_group(pid, signal.SIGKILL)
        end = time.monotonic() + 10
        while time.monotonic() < end and runstate.lock_held(tf.lock):
            time.sleep(0.1)
    if runstate.lock_held(tf.lock):
        return "still running"
    after = runstate.read_status(tf)
    if after.state == "crashed":  # killed: record the stop ourselves, under the lock
        fd = runstate.acquire(tf.lock)
        if fd is not None:
            try:
                after.state, after.error_class, after.exit_code = "stopped", "stopped", 143
                after.reason = "the run was stopped (killed after the grace period)"
                after.ended = time.time()
                runstate.write_status(tf, after)
                runstate.append_history(tf, after)
            finally:
                os.close(fd)
    return "stopped"


STOPPED_IN_QUEUE = "the run was stopped before it started (queued)"


def _record_stopped_in_queue(tf: TaskFiles) -> bool:
    """A queue entry has no process to record its own end: do it, under the task lock."""
    fd = runstate.acquire(tf.lock)
    if fd is None:  # a run took it meanwhile: it records its own end
        return False
    try:
        st = runstate.read_status(tf)
        if st.state not in ("queued", "crashed"):
            return False
        st.state, st.error_class, st.exit_code, st.reason = "stopped", "stopped", 143, STOPPED_IN_QUEUE
        st.ended = time.time()
        runstate.write_status(tf, st)
        runstate.append_history(tf, st)
        return True
    finally:
        os.close(fd)


def _signal_group(pid: int, sig: int) -> None:
    """The run leads its own process group (engine children included); never
    signal a group the run does not lead (crond's, for instance)."""
    try:
        if os.getpgid(pid) == pid:
            os.killpg(pid, sig)
        else:
            os.kill(pid, sig)
    except ProcessLookupError:
        pass
