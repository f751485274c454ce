"""The processes of a run are the holders of its task lock: finding and ending them.

A run's task lock (``<task>.lock``, an exclusive ``flock``) is inheritable:
the imapsync the engine starts, and anything imapsync starts, share the
run's open file description, so the kernel keeps the lock held until the
last of them has exited. That makes the lock the list of the run's
processes, whatever session or group each one is in:

* "running" stays true while an imapsync outlives its run (the run was
  killed), so no second run starts beside it and fails on its pid file;
* a stop, or the watchdog, can find every one of them in ``/proc``: a process
  whose file descriptor to the lock file shows the exclusive FLOCK in
  ``/proc/<pid>/fdinfo`` holds it through the run's own open file description
  (another opener's descriptor never shows the lock), which proves the
  process belongs to this run -- a recycled PID never does;
* a signal goes through a pidfd opened *before* that proof, so a process that
  exits and whose PID is reused in between is never hit (its pidfd refers to
  the dead process and the signal fails); a holder that leads its own process
  group (the run, imapsync) has its whole group signalled, which reaches
  children that closed the lock descriptor.

Standard library only; Linux ``/proc`` (fdinfo lock lines: Linux 3.8).
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from collections.abc import Collection, Iterator
from pathlib import Path

POLL = 0.05


def _lock_path(lock: Path) -> str:
    return os.path.realpath(lock)


def _fds_on(pid: int, target: str) -> Iterator[str]:
    """The fd numbers of ``pid`` open on ``target`` (readlink of the magic link: never blocks)."""
    try:
        names = os.listdir(f"/proc/{pid}/fd")
    except OSError:
        return
    for name in names:
        with contextlib.suppress(OSError):
            if os.readlink(f"/proc/{pid}/fd/{name}") == target:
                yield name


def _shows_exclusive_flock(pid: int, fd: str) -> bool:
    try:
        info = Path(f"/proc/{pid}/fdinfo/{fd}").read_text()
    except OSError:
        return False
    return any(line.startswith("lock:") and "FLOCK" in line and "WRITE" in line for line in info.splitlines())


def holds(pid: int, lock: Path) -> bool:
    """True when process ``pid`` holds the exclusive flock on ``lock`` (it is the run or one of its children)."""
    target = _lock_path(lock)
    return any(_shows_exclusive_flock(pid, fd) for fd in _fds_on(pid, target))


def _pids() -> list[int]:
    try:
        return [int(n) for n in os.listdir("/proc") if n.isdigit()]
    except OSError:
        return []


def holders(lock: Path, spare: Collection[int] = ()) -> list[int]:
    """Every process holding ``lock``, but those in ``spare``."""
    return [pid for pid in _pids() if pid not in spare and holds(pid, lock)]


def _pidfd(pid: int) -> int | None:
    """A pidfd for ``pid``; -1 where the kernel has none (then os.kill is used); None if it is gone."""
    try:
        return os.pidfd_open(pid)
    except ProcessLookupError:
        return None
    except (OSError, AttributeError):
        return -1


def signal_holder(pid: int, lock: Path, sig: int) -> int | None:
    """Send ``sig`` to ``pid`` -- to its whole group when it leads one -- only if it holds ``lock``.

    Returns the process group signalled (or the pid), None when ``pid`` is not a holder."""
    pidfd = _pidfd(pid)
    if pidfd is None:
        return None
    try:
        if not holds(pid, lock):
            return None
        with contextlib.suppress(ProcessLookupError, PermissionError):
            if os.getpgid(pid) == pid:  # the leader is alive (pidfd open): its group id is its own
                os.killpg(pid, sig)
            elif pidfd >= 0:
                signal.pidfd_send_signal(pidfd, sig)
            else:
                os.kill(pid, sig)
        return pid
    finally:
        if pidfd >= 0:
            os.close(pidfd)


def group_alive(pgids: Collection[int]) -> bool:
    """A live (non-zombie) process in one of these groups? Only used to wait, never to signal."""
    if not pgids:
        return False
    for pid in _pids():
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if fields[0] != "Z" and int(fields[2]) in pgids:
            return True
    return False


def end(lock: Path, spare: Collection[int] = (), timeout: float = 10.0) -> bool:
    """SIGKILL every holder of ``lock`` but ``spare`` (and the groups they lead), and wait
    until none is left; True when they are all gone within ``timeout``.

    Signalling again on each pass catches a holder that forked meanwhile."""
    deadline = time.monotonic() + timeout
    groups: set[int] = set()
    while True:
        for pid in holders(lock, spare):
            pgid = signal_holder(pid, lock, signal.SIGKILL)
            if pgid is not None:
                groups.add(pgid)
        if not holders(lock, spare) and not group_alive(groups - set(spare)):
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(POLL)
