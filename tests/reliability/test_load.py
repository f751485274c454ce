"""Section 5, load: many tasks started at once on the local node.

``start-all-tasks`` on N tasks, then ``list-tasks`` asked every second while
they run, as the admin UI does.  Held: never more runs at once than the caps
(from every run's recorded start and end, not from samples), every task ends
``succeeded``, ``list-tasks`` answers within its bound, the node's memory stays
bounded.  ``make test`` runs 40 tasks; the long variant (marker
``reliability_long``, run by ``make reliability``, not by CI) runs 500.

The tasks are written to the state directory directly (``StateDir.save``, what
``create-task`` does after its checks): creating 500 through the API is the
benchmark's business, not this test's.
"""

from __future__ import annotations

import os
import statistics
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from localnode import corpus, node
from localnode.config import NodeConfig
from ns8_imapsync import runstate
from ns8_imapsync.statedir import StateDir
from ns8_imapsync.task import Task

from reliability.conftest import Record
from reliability.ownnode import NodeCli, configure, state_dir

SECTION = "5-load"
PORT_BASE = int(os.environ.get("RELIABILITY_LOAD_PORT_BASE", "19500"))
# SYNC_MAX_CONCURRENT binds: the node's 3 enabled local users allow 3 runs (one per local
# mailbox), the one remote host 4
CAP, PER_HOST = 2, 4
MESSAGES = 8  # per remote mailbox: the runs are short, the queue and the caps are what is loaded
LIST_TASKS_BOUND = 2.0  # seconds inside the action, while CAP syncs share the machine's 2 cores
RUN_RSS_BOUND_MB = 150  # per run process (an engine, its sessions, a body batch)


@pytest.fixture(scope="module")
def load_node() -> NodeCli:
    with node.throwaway(PORT_BASE, "reliability-load-") as cfg:
        cli = NodeCli(cfg)
        configure(cli, max_concurrent_syncs=CAP, max_syncs_per_host=PER_HOST, engine="native")
        yield cli


def make_tasks(cfg: NodeConfig, count: int, prefix: str) -> list[str]:
    """``count`` tasks over the three enabled local users and two remote accounts of one remote host."""
    remote = cfg.remote
    accounts = ["bob@remote.test", "dave@remote.test"]
    for i, user in enumerate(accounts):
        corpus.fill(remote, user, remote.users[user], seed=50 + i, count=MESSAGES, large=0)
    tasks_dir = state_dir(cfg) / "imapsync"
    state = StateDir(tasks_dir, tasks_dir.parent / "cron")
    names = []
    for i in range(count):
        user = accounts[i % 2]
        task = Task(localuser=f"u{1 + i % 3}", task_id=f"{prefix}{i:04d}", remotehostname=remote.host,
                    remoteport=remote.imap_port, security="tls", remoteusername=user,
                    foldersynchronization="all")
        state.save(task, remote.users[user])
        names.append(task.name)
    return names


@dataclass
class Sampler:
    """Memory of the node's processes and of its run processes, sampled while the load runs."""

    marker: str  # the node's state directory: in the environment or command line of each of its processes
    peak_node_kb: int = 0
    peak_run_kb: int = 0
    peak_run_processes: int = 0
    done: threading.Event = field(default_factory=threading.Event)

    def _ours(self) -> list[tuple[int, bool]]:
        """(RSS kB, is a run process) of every process belonging to the node."""
        found = []
        for proc in Path("/proc").glob("[0-9]*"):
            try:
                cmdline = (proc / "cmdline").read_bytes()
                if self.marker.encode() not in cmdline + (proc / "environ").read_bytes():
                    continue
                rss = next(int(ln.split()[1]) for ln in (proc / "status").read_text().splitlines()
                           if ln.startswith("VmRSS:"))
            except (OSError, StopIteration, ValueError):
                continue
            argv = cmdline.split(b"\0")
            found.append((rss, b"ns8_imapsync.cli.syncctl" in argv and b"start" in argv))
        return found

    def run(self) -> None:
        while not self.done.wait(0.2):
            ours = self._ours()
            runs = [rss for rss, is_run in ours if is_run]
            self.peak_node_kb = max(self.peak_node_kb, sum(rss for rss, _ in ours))
            self.peak_run_kb = max(self.peak_run_kb, max(runs, default=0))
            self.peak_run_processes = max(self.peak_run_processes, len(runs))


def peak_overlap(intervals: list[tuple[float, float]]) -> int:
    """The most intervals open at one instant (an end before a start at the same time)."""
    events = sorted([(s, 1) for s, _ in intervals] + [(e, -1) for _, e in intervals], key=lambda x: (x[0], x[1]))
    now = peak = 0
    for _, step in events:
        now += step
        peak = max(peak, now)
    return peak


def runs_of(tasks_dir: Path, names: list[str]) -> list[dict]:
    return [run for name in names for run in runstate.read_history(runstate.TaskFiles(tasks_dir, name))]


def timed(cli: NodeCli, action: str) -> float:
    """Wall time of an action through api-cli (the agent's fixed cost included)."""
    t0 = time.perf_counter()
    cli.api_ok(action)
    return time.perf_counter() - t0


def poll_until_done(cli: NodeCli, names: set[str], timeout: float) -> tuple[list[float], dict[str, str]]:
    """list-tasks every second until no task is queued or running; its times inside the action."""
    deadline = time.monotonic() + timeout
    times: list[float] = []
    last: dict[str, str] = {}
    while time.monotonic() < deadline:
        t0 = time.perf_counter()
        listed = cli.api_ok("list-tasks")
        times.append(time.perf_counter() - t0)
        last = {f"{t['localuser']}_{t['task_id']}": t for t in listed["user_properties"]}  # type: ignore[index]
        if set(last) >= names and not any(t["state"] in ("queued", "running") for t in last.values()):
            break
        time.sleep(max(0.0, 1.0 - (time.perf_counter() - t0)))
    return times, last


def test_many_tasks_started_at_once_respect_the_caps_and_all_succeed(load_node: NodeCli, record: Record) -> None:
    held(load_node, record, 40)


@pytest.mark.reliability_long
@pytest.mark.timeout(3600)
def test_500_tasks_started_at_once_respect_the_caps_and_all_succeed(load_node: NodeCli, record: Record) -> None:
    held(load_node, record, 500)


def held(load_node: NodeCli, record: Record, count: int) -> None:
    """Start ``count`` tasks at once and check what the module docstring says is held."""
    record.variant = f"{count} tasks"
    cfg = load_node.cfg
    names = make_tasks(cfg, count, prefix=f"l{count}x")
    tasks_dir = state_dir(cfg) / "imapsync"
    sampler = Sampler(str(cfg.state_dir))
    thread = threading.Thread(target=sampler.run, daemon=True)
    thread.start()
    fixed_cost = statistics.median(timed(load_node, "get-name") for _ in range(3))  # the agent's own cost
    try:
        started = load_node.api_ok("start-all-tasks")
        assert set(names) <= set(started["done"]) and not started["failed"], started  # type: ignore[index]
        times, last = poll_until_done(load_node, set(names), timeout=60 + 3 * count)
    finally:
        sampler.done.set()
        thread.join()
    runs = runs_of(tasks_dir, names)
    states = {n: runstate.read_status(runstate.TaskFiles(tasks_dir, n)).state for n in names}
    intervals = [(r["started"], r["ended"]) for r in runs if r.get("started") and r.get("ended")]
    at_once = peak_overlap(intervals)
    agent_cost = statistics.median(times) - fixed_cost
    record.counts.update(tasks=count, runs=len(runs), succeeded=sum(s == "succeeded" for s in states.values()),
                         peak_runs=at_once, peak_run_processes=sampler.peak_run_processes,
                         list_tasks_polls=len(times))
    record.detail = (f"list-tasks median {statistics.median(times):.2f}s, max {max(times):.2f}s through api-cli "
                     f"(agent's fixed cost {fixed_cost:.2f}s); node RSS peak {sampler.peak_node_kb // 1024} MB, "
                     f"largest run process {sampler.peak_run_kb // 1024} MB")
    record.peak_rss_mb = sampler.peak_node_kb / 1024
    assert [n for n, s in states.items() if s != "succeeded"] == [], {n: s for n, s in states.items()
                                                                      if s != "succeeded"}
    assert len(runs) == count  # one run each: none lost, none doubled by the queue
    assert {t["state"] for t in last.values()} == {"succeeded"}  # what list-tasks says agrees
    assert at_once <= CAP, f"{at_once} runs at once"
    assert at_once >= 2, "the runs never overlapped: the load test loaded nothing"
    assert agent_cost <= LIST_TASKS_BOUND, record.detail
    assert sampler.peak_run_kb / 1024 <= RUN_RSS_BOUND_MB, record.detail
    assert sampler.peak_run_processes <= CAP + 2, record.detail  # runs holding slots, and starts taking them
