"""The imapsync engine: runs imapsync 2.229 for a SyncPlan and reads its output.

imapsync runs without a shell, in its own session (so its own process group),
with stdout and stderr merged and read line by line: each line goes to the
task log (with the task's passwords masked, in case a server echoes one), to
the heartbeat (an output line is a sign of life for the run's watchdog, even
when no message is done yet) and to the output parser, whose Progress updates
go to the caller.

imapsync inherits the run's inheritable descriptors (``close_fds=False``),
the task lock among them (see sync.lockholders): while an imapsync or any
process it started lives, its task counts as running, and a stop or the
watchdog that had to kill the run finds and kills it through that lock.

Stopping (``stop`` set) escalates so that a stop normally lands between two
messages: first imapsync's own abort file ``<pidfile>abort<pid>`` (checked
before each message; imapsync prints its statistics and exits 7), then after
``abort_grace`` SIGTERM to the group (statistics, then it kills itself), then
after ``term_grace`` SIGKILL to the group. The group is always killed once
the leader has exited, before it is reaped (the zombie keeps the group id
reserved, so no unrelated process can be hit).

Around imapsync, ``poststeps`` does in Python what a stock imapsync cannot:
before, the Sieve capability check and the delete_local brake; after, inbox-mode
``\\Seen`` marking, Sieve delivery of this run's copies and the deletion of old
verified remote messages.  ``last_copied`` lists the messages imapsync appended
(host1 folder/UID, host2 folder/UID), which the Sieve step filters.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path

from ns8_imapsync.errors import ENGINE_ERROR, VALIDATION_FAILED
from ns8_imapsync.sync import poststeps
from ns8_imapsync.sync.engine import HeartbeatFn
from ns8_imapsync.sync.imapsync_cmd import ArgvError, build_argv, default_pidfile
from ns8_imapsync.sync.imapsync_output import CopiedMessage, ImapsyncOutputParser
from ns8_imapsync.sync.plan import SyncPlan
from ns8_imapsync.sync.redact import Redactor
from ns8_imapsync.sync.report import ProgressFn, RunReport

_SECRET_ENV = re.compile(r"PASSWORD|PASSWD|SECRET|TOKEN", re.IGNORECASE)


def _failed(error_class: str, reason: str, exit_code: int) -> RunReport:
    return RunReport(errors=[reason], error_class=error_class, exit_code=exit_code)


def _child_env() -> dict[str, str]:
    """Our environment without secrets: imapsync would read IMAPSYNC_PASSWORD1/2,
    and it needs no other credential of this process."""
    return {k: v for k, v in os.environ.items() if not _SECRET_ENV.search(k)}


def _resolve(imapsync: str) -> str | None:
    if os.sep in imapsync:
        return imapsync if os.access(imapsync, os.X_OK) and Path(imapsync).is_file() else None
    return shutil.which(imapsync)


def _pid_in(pidfile: Path) -> int | None:
    try:
        first = pidfile.read_text(encoding="ascii", errors="replace").splitlines()[0].strip()
    except (OSError, IndexError):
        return None
    return int(first) if first.isdigit() else None


def _runs_with(pid: int, pidfile: Path) -> bool:
    """True when process ``pid`` is an imapsync started with this very pidfile.

    Checking the argv (not just "imapsync" in it) matters: in the container the
    package's own processes (``ns8_imapsync``) match a looser test.
    """
    try:
        args = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    wanted = os.fsencode(pidfile)
    return b"--pidfile=" + wanted in args or any(
        a == b"--pidfile" and b == wanted for a, b in zip(args, args[1:], strict=False)
    )


def clear_stale_pidfile(pidfile: Path) -> None:
    """Remove a pidfile whose PID is not a live imapsync of this task.

    imapsync only checks that the PID is alive: after a container restart the PID
    of a killed run is often reused (PIDs restart from 1), and --pidfilelocking
    would then refuse every future run with exit 8.
    """
    pid = _pid_in(pidfile)
    if pid is None or not _runs_with(pid, pidfile):
        with contextlib.suppress(FileNotFoundError):
            pidfile.unlink()


class _Supervisor(threading.Thread):
    """Watches the child: carries out a stop, and kills the group once the leader is gone."""

    def __init__(self, proc: subprocess.Popen, pidfile: Path, stop: threading.Event,
                 abort_grace: float, term_grace: float, drain_grace: float = 2.0, poll: float = 0.1) -> None:
        super().__init__(name=f"imapsync-{proc.pid}", daemon=True)
        self.proc, self.pidfile, self.stop = proc, pidfile, stop
        self.abort_grace, self.term_grace, self.drain_grace, self.poll = abort_grace, term_grace, drain_grace, poll
        self.eof = threading.Event()  # set by the reader at end of output
        self.kill_now = threading.Event()  # the reader failed: no grace, nobody reads the pipe
        self.abortfile: Path | None = None
        self.actions: list[str] = []  # what the stop did, for the log

    def _exited(self) -> bool:
        """True when the leader has exited; it is NOT reaped (WNOWAIT), so its group id stays ours."""
        try:
            return os.waitid(os.P_PID, self.proc.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None
        except ChildProcessError:
            return True

    def _killpg(self, sig: int) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, sig)

    def _touch_abortfile(self) -> bool:
        """imapsync's --abortbyfile: ``<pidfile>abort<pid>``, seen before the next message."""
        pid = _pid_in(self.pidfile)
        if pid is None:
            return False
        self.abortfile = Path(f"{self.pidfile}abort{pid}")
        try:
            self.abortfile.touch()
        except OSError:
            return False
        return True

    def _escalate(self, stopped_at: float, step: int) -> int:
        waited = time.monotonic() - stopped_at
        if step == 0:
            aborted = self._touch_abortfile()
            self.actions.append("abort file" if aborted else "no pidfile yet")
            return 1 if aborted else 2
        if step == 1 and waited >= self.abort_grace:
            self.actions.append("SIGTERM")
            self._killpg(signal.SIGTERM)
            return 3
        if step == 2:  # no abort file possible: straight to SIGTERM
            self.actions.append("SIGTERM")
            self._killpg(signal.SIGTERM)
            return 3
        if step == 3 and waited >= self.abort_grace + self.term_grace:
            self.actions.append("SIGKILL")
            self._killpg(signal.SIGKILL)
            return 4
        return step

    def run(self) -> None:
        step, stopped_at = 0, 0.0
        while not self._exited():
            if self.kill_now.is_set():
                self._killpg(signal.SIGKILL)
            elif self.stop.is_set():
                if step == 0:
                    stopped_at = time.monotonic()
                step = self._escalate(stopped_at, step)
            time.sleep(self.poll)
        # the leader is gone: let the reader drain the pipe, then no straggler may survive
        self.eof.wait(self.drain_grace)
        self._killpg(signal.SIGKILL)


class ImapsyncEngine:
    """Engine "imapsync" (see engine.Engine)."""

    name = "imapsync"

    def __init__(self, imapsync: str = "imapsync", abort_grace: float = 30.0, term_grace: float = 10.0,
                 pidfile: Path | None = None) -> None:
        self.imapsync = imapsync
        self.abort_grace = abort_grace
        self.term_grace = term_grace
        self.pidfile = pidfile
        self.last_copied: list[CopiedMessage] = []
        self.last_argv: list[str] = []

    def run(self, plan: SyncPlan, progress: ProgressFn, stop: threading.Event, log: Callable[[str], object],
            heartbeat: HeartbeatFn | None = None) -> RunReport:
        self.last_copied = []
        pidfile = Path(self.pidfile if self.pidfile is not None else default_pidfile(plan)).absolute()
        try:
            argv = build_argv(plan, self.imapsync, pidfile)
        except ArgvError as exc:
            return _failed(VALIDATION_FAILED, str(exc), 1)
        executable = _resolve(self.imapsync)
        if executable is None:
            return _failed(ENGINE_ERROR, f"imapsync is not installed: {self.imapsync!r} was not found", 127)
        if stop.is_set():
            return _failed("stopped", "stopped before imapsync started", 0)
        argv[0] = executable
        self.last_argv = argv
        refused = poststeps.precheck(plan, log)
        if refused is not None:
            return refused
        clear_stale_pidfile(pidfile)
        try:
            # close_fds=False: only descriptors made inheritable on purpose (the run's locks) are passed
            proc = subprocess.Popen(
                argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                start_new_session=True, close_fds=False, cwd=_cwd(plan), env=_child_env(),
                text=True, encoding="utf-8", errors="replace", bufsize=1,
            )
        except OSError as exc:
            return _failed(ENGINE_ERROR, f"imapsync could not be started: {exc.strerror or exc}", 126)
        return self._supervise(proc, plan, pidfile, progress, stop, log, heartbeat or _no_heartbeat)

    def _supervise(self, proc: subprocess.Popen, plan: SyncPlan, pidfile: Path, progress: ProgressFn,
                   stop: threading.Event, log: Callable[[str], object], heartbeat: HeartbeatFn) -> RunReport:
        supervisor = _Supervisor(proc, pidfile, stop, self.abort_grace, self.term_grace)
        supervisor.start()
        parser = ImapsyncOutputParser()
        redact = Redactor.for_plan(plan)
        try:
            assert proc.stdout is not None
            for raw in proc.stdout:
                heartbeat(0)  # a line, not IMAP bytes: a sign of life
                line = redact(raw.rstrip("\r\n"))
                log(line)
                update = parser.feed(line)
                if update is not None:
                    progress(update)
        except BaseException:
            supervisor.kill_now.set()  # a failing callback must not leave imapsync running alone
            raise
        finally:
            supervisor.eof.set()
            supervisor.join()
            proc.wait()
            if proc.stdout is not None:
                proc.stdout.close()
            self._cleanup(proc, pidfile, supervisor)
        if supervisor.actions:
            log(f"imapsync engine: stop requested ({', '.join(supervisor.actions)})")
        self.last_copied = parser.copied
        report = parser.finish(proc.returncode, stop_requested=stop.is_set())
        poststeps.after_run(plan, report, self.last_copied, log, stop, heartbeat)
        return report

    @staticmethod
    def _cleanup(proc: subprocess.Popen, pidfile: Path, supervisor: _Supervisor) -> None:
        """imapsync removes both files when it exits by itself; not when it was killed."""
        if supervisor.abortfile is not None:
            with contextlib.suppress(FileNotFoundError):
                supervisor.abortfile.unlink()
        if _pid_in(pidfile) == proc.pid:
            with contextlib.suppress(FileNotFoundError):
                pidfile.unlink()


def _no_heartbeat(nbytes: int) -> None:
    """The heartbeat of a caller that watches no activity."""


def _cwd(plan: SyncPlan) -> str:
    workdir = Path(plan.workdir)
    return str(workdir) if workdir.is_dir() else "/"
