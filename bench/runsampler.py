"""CPU and memory of the sync runs of one node, sampled from /proc.

Runs are started by the node's dispatcher, not by the bench, so wait4 cannot
measure them. A sampler thread looks every 0.1 s at the runs of the measured
tasks (the pid their status file names, checked to be this node's ``syncctl
start``: a pid of an old run may have been reused) and at their descendants
(imapsync): the peak RSS is exact (VmHWM), the CPU is the last sample of each
process, so it may miss up to 0.1 s of CPU per process at its very end.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path

from probes import proc_cpu

INTERVAL = 0.1


def _read(path: str) -> bytes:
    """A /proc file, or b"" when the process is gone already."""
    try:
        return Path(path).read_bytes()
    except OSError:
        return b""


def _hwm_kb(pid: int) -> int:
    """A process's peak RSS so far (VmHWM), which survives sampling gaps."""
    for line in _read(f"/proc/{pid}/status").splitlines():
        if line.startswith(b"VmHWM:"):
            return int(line.split()[1])
    return 0


def _children(pid: int) -> list[int]:
    """A process's children, since imapsync runs below the module's run."""
    return [int(c) for c in _read(f"/proc/{pid}/task/{pid}/children").split()]


class RunSampler:
    """Start before the runs, ``stop()`` after: run count, CPU sum and peak RSS.

    ``run_pids()`` gives the pids the measured tasks' status files name now."""

    def __init__(self, state_dir: Path, run_pids: Callable[[], set[int]]) -> None:
        """Follows the runs of a node's tasks, which the bench does not start itself."""
        self.marker = f"LOCALNODE_DIR={state_dir}".encode()
        self.run_pids = run_pids
        self.kind: dict[tuple[int, bytes], bool] = {}  # (pid, start time) -> a run of this node
        self.cpu: dict[int, float] = {}
        self.hwm_kb: dict[int, int] = {}
        self.peak_total_kb = 0
        self.peak_runs = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def _is_run(self, pid: int) -> bool:
        """True for a process of this node's runs, not of another node on the machine."""
        stat = _read(f"/proc/{pid}/stat").rsplit(b")", 1)[-1].split()
        key = (pid, stat[19] if len(stat) > 19 else b"")
        if key not in self.kind:
            argv = _read(f"/proc/{pid}/cmdline").split(b"\0")
            self.kind[key] = (b"ns8_imapsync.cli.syncctl" in argv and b"start" in argv
                              and self.marker in _read(f"/proc/{pid}/environ").split(b"\0"))
        return self.kind[key]

    def sample(self) -> None:
        """One look at the runs and their descendants."""
        runs = {p for p in self.run_pids() if self._is_run(p)}
        tracked, todo = set(), list(runs)
        while todo:
            pid = todo.pop()
            if pid not in tracked:
                tracked.add(pid)
                todo += _children(pid)
        total = 0
        for pid in tracked:
            self.cpu[pid] = max(self.cpu.get(pid, 0.0), proc_cpu(pid, children=False))
            hwm = _hwm_kb(pid)
            self.hwm_kb[pid] = max(self.hwm_kb.get(pid, 0), hwm)
            total += hwm
        self.peak_total_kb = max(self.peak_total_kb, total)
        self.peak_runs = max(self.peak_runs, len(runs))

    def _loop(self) -> None:
        """Sample every 0.1 s until stopped."""
        while not self._stop.is_set():
            self.sample()
            self._stop.wait(INTERVAL)

    def start(self) -> RunSampler:
        """Start sampling in a thread."""
        self._thread.start()
        return self

    def stop(self) -> dict:
        """Stop sampling; the runs' summed CPU and peak RSS."""
        self._stop.set()
        self._thread.join()
        return {"client_cpu_s": round(sum(self.cpu.values()), 3),
                "peak_process_rss_mb": round(max(self.hwm_kb.values(), default=0) / 1024, 1),
                "peak_total_rss_mb": round(self.peak_total_kb / 1024, 1),
                "peak_runs": self.peak_runs, "processes_seen": len(self.cpu)}
