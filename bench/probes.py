"""What a measurement reads from /proc: server CPU, machine busy %, child rusage.

Client and both servers share the machine's cores, so a run's cost is only
understood with all three: the client's own wall time, CPU and peak RSS
(``os.wait4`` by ``launch.py``, a small parent: see why there), each
Dovecot's CPU, and how busy the whole machine was (``/proc/stat``).

Server CPU is measured as before this bench (growth of the master's utime+stime+cutime+
cstime, which covers its reaped imap and imap-login children), plus the
utime+stime of the instance's children still alive at either end, so a
session that outlives the measurement is not missed.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from localnode import dovecot
from localnode.config import ImapServer

TICK = os.sysconf("SC_CLK_TCK")
LAUNCHER = Path(__file__).resolve().parent / "launch.py"


def proc_cpu(pid: int, children: bool = True) -> float:
    """utime+stime (and the reaped children's cutime+cstime) of a process, in seconds."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return 0.0
    ticks = int(fields[11]) + int(fields[12])
    if children:
        ticks += int(fields[13]) + int(fields[14])
    return ticks / TICK


def server_cpu(server: ImapServer) -> float:
    """CPU seconds spent so far by one Dovecot instance (master, reaped and live children)."""
    master = dovecot._master_pid(server)
    if master is None:
        return 0.0
    live = [p for p in dovecot.pids(server) if p != master]
    return proc_cpu(master) + sum(proc_cpu(p, children=False) for p in live)


def machine_ticks() -> tuple[int, int]:
    """(busy, total) jiffies of all CPUs since boot; idle and iowait count as not busy."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    total = sum(fields[:8])  # guest time is already inside user/nice
    return total - fields[3] - fields[4], total


@dataclass
class Probe:
    """Server CPU and machine ticks at the start of a measurement; ``end`` gives the growth."""

    servers: dict[str, ImapServer]
    cpu0: dict[str, float] = field(default_factory=dict)
    ticks0: tuple[int, int] = (0, 0)
    t0: float = 0.0

    def start(self) -> Probe:
        """Snapshot of the servers' CPU and the machine's ticks before the run."""
        self.cpu0 = {name: server_cpu(s) for name, s in self.servers.items()}
        self.ticks0 = machine_ticks()
        self.t0 = time.perf_counter()
        return self

    def end(self) -> dict:
        """The figures since start(): wall, machine busy %, each server's CPU."""
        wall = time.perf_counter() - self.t0
        busy, total = machine_ticks()
        db, dt = busy - self.ticks0[0], total - self.ticks0[1]
        out = {"wall_s": round(wall, 3), "machine_busy_pct": round(100 * db / dt, 1) if dt else None}
        for name, s in self.servers.items():
            out[f"{name}_server_cpu_s"] = round(server_cpu(s) - self.cpu0[name], 3)
        return out


@dataclass
class ChildResult:
    """A measured child process: exit code, wall time, CPU, peak RSS and its output."""

    returncode: int
    wall_s: float
    cpu_s: float
    maxrss_mb: float
    stdout: str


def run_child(argv: Sequence[str], *, env: dict | None = None, log: Path | None = None,
              cwd: Path | None = None) -> ChildResult:
    """Run argv to completion under ``launch.py``, whose rusage of it is the command's own
    (and its reaped children's); stderr goes to ``log``."""
    fd, result = tempfile.mkstemp(prefix="bench-launch-", suffix=".json")
    os.close(fd)
    wrapped = [sys.executable, "-S", "-E", str(LAUNCHER), result, "--", *argv]
    out = open(log, "wb") if log else subprocess.DEVNULL
    try:
        proc = subprocess.run(wrapped, env=env, cwd=cwd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                              stderr=out)
        measured = json.loads(Path(result).read_text() or "{}")
    finally:
        if log:
            out.close()
        os.unlink(result)
    if not measured:
        raise RuntimeError(f"launcher failed ({proc.returncode}) for {argv[0]}")
    return ChildResult(measured["returncode"], round(measured["wall_s"], 3), round(measured["cpu_s"], 3),
                       round(measured["maxrss_kb"] / 1024, 1), proc.stdout.decode(errors="replace"))
