"""4 and 8 mailboxes at once, through the real task path of a local node.

``start-all-tasks`` queues every task; the node's dispatcher starts the runs
(``syncctl start`` in the sync "container") within its caps, here raised to
8 node-wide and 8 per remote host so that all mailboxes run at once (each
task has its own local mailbox: one run per mailbox is the rule). Timed from
the api-cli call until every task's status says its new run ended. The
engine is the module's setting (configure-module ``engine``), so the
imapsync engine includes the module's own steps around imapsync (its
completion copies the duplicates imapsync leaves out).
"""

from __future__ import annotations

import time
from collections.abc import Callable

import engines
import probes
from fill import Account, fill
from localnode import dovecot
from nodeapi import Node
from runsampler import RunSampler

PASSWORD = "Bench,par-Secret7"
SEED = 2001
CAP = 8


def accounts(n: int) -> list[tuple[str, str]]:
    """The (local, remote) pairs of the parallel runs: each run its own mailbox."""
    return [(f"pb{i}", f"pb{i}@remote.test") for i in range(1, n + 1)]


def prepare(node: Node, n: int, messages: int, say) -> dict:
    """n local mailboxes and n remote accounts, each remote one filled with its own corpus."""
    filled = []
    for i, (local, remote) in enumerate(accounts(n)):
        node.add_account_pair(local, remote, PASSWORD)
        filled.append(fill(Account(node.cfg.remote, remote, PASSWORD), SEED + i, messages))
    say(f" parallel: {n} remote accounts of {messages} messages filled")
    return {"accounts": n, "messages_each": messages, "bytes": sum(f["bytes"] for f in filled)}


def fresh_tasks(node: Node, n: int) -> list[str]:
    """Exactly n tasks, never run (no engine state, no status), their local mailboxes empty."""
    for name in node.task_names():
        node.delete_task(name)
    names = []
    for i, (local, remote) in enumerate(accounts(n)):
        names.append(node.save_task(local, f"par{i + 1}", remote, PASSWORD))
        dovecot.wipe(node.cfg.mail1, local)
    return names


def _run_pids(node: Node, names: list[str]) -> Callable[[], set[int]]:
    """The pids of the tasks' runs now, for the sampler to follow their process trees."""
    return lambda: {s.pid for s in (node.status(n) for n in names) if s.pid}


def start_all(node: Node, names: list[str]) -> dict:
    """One start-all-tasks, measured until every task's run ended."""
    servers = {"remote": node.cfg.remote, "local": node.cfg.mail1}
    sampler = RunSampler(node.cfg.state_dir, _run_pids(node, names)).start()
    since = time.time()
    probe = probes.Probe(servers).start()
    returned = node.timed_api("start-all-tasks")
    states = node.wait_finished(names, since)
    out = probe.end()
    out.update(sampler.stop())
    out["returned_s"] = returned
    out["states"] = sorted(set(states.values()))
    out["dest_messages"] = sum(engines.count_messages(node.cfg.mail1, local) for local, _ in accounts(len(names)))
    if any(s != "succeeded" for s in states.values()):
        out["error"] = ", ".join(f"{n}: {node.status(n).reason}" for n, s in states.items() if s != "succeeded")
    return out


def run(node: Node, sizes: list[int], engine_names: list[str], reps: int, say) -> dict:
    """{str(n): {engine: {"first": [...], "rerun": [...]}}}."""
    results: dict = {str(n): {e: {"first": [], "rerun": []} for e in engine_names} for n in sizes}
    for rep in range(reps):
        order = engine_names[rep % len(engine_names):] + engine_names[:rep % len(engine_names)]
        for engine in order:
            node.configure(engine=engine, max_concurrent_syncs=CAP, max_syncs_per_host=CAP)
            for n in sizes:
                names = fresh_tasks(node, n)
                for scenario in ("first", "rerun"):
                    r = start_all(node, names)
                    results[str(n)][engine][scenario].append(r)
                    say(f"  {n} x {engine:8} {scenario:6} {r['wall_s']:8.2f} s  runs at once {r['peak_runs']}  "
                        f"dest {r['dest_messages']}  busy {r['machine_busy_pct']} %"
                        + (f"  ERROR {r['error']}" if r.get("error") else ""))
                for name in names:
                    node.delete_task(name)
    return results
