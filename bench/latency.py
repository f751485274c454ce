"""Action latency on a node with 1,000 tasks, and the agent's fixed cost apart.

Every action goes through the node's agent (api-cli, Redis, the agent
process, the action's steps), which costs the same for a trivial action:
``get-name`` (a core action reading one Redis key) measures that fixed
cost, so "inside the action" is the measured time minus it. The fixed cost
is timed right before each action and subtracted pairwise (``inside_s``):
on a shared machine the load drifts within seconds, and a difference of
medians taken minutes apart would carry that drift. create-task
checks the remote login, writes the task and queues its first sync; the task
is deleted afterwards (not timed). start-all-tasks queues 1,000 runs; they
are stopped afterwards (not timed) so the next measurement has a quiet node.
"""

from __future__ import annotations

from nodeapi import Node

FIXED = "get-name"
READS = ("list-tasks", "get-facts")


def _create_input(node: Node, rep: int, remote: str, password: str) -> dict:
    """A create-task request as the UI sends it, for a task deleted right after."""
    r = node.cfg.remote
    return {"localuser": "u1", "task_id": f"lat{rep}x", "remotehostname": r.host, "remoteport": r.imap_port,
            "security": "tls", "remoteusername": remote, "remotepassword": password, "delete_local": False,
            "delete_remote": False, "delete_remote_older": 0, "exclude": "", "cron": "",
            "foldersynchronization": "all", "sieve_enabled": False}


def paired(node: Node, action: str, data: object = None) -> dict:
    """The action's wall time, and that minus the fixed cost timed just before it."""
    fixed = node.timed_api(FIXED)
    wall = node.timed_api(action, data)
    return {"wall_s": wall, "fixed_s": fixed, "inside_s": round(wall - fixed, 3)}


def one_round(node: Node, rep: int, remote: str, password: str) -> dict[str, dict]:
    """One timing of each action, each paired with a fresh timing of the fixed cost."""
    out: dict[str, dict] = {FIXED: {"wall_s": node.timed_api(FIXED)}}
    for action in READS:
        out[action] = paired(node, action)
    out["create-task"] = paired(node, "create-task", _create_input(node, rep, remote, password))
    node.api("delete-task", {"localuser": "u1", "task_id": f"lat{rep}x"})
    out["start-all-tasks"] = paired(node, "start-all-tasks")
    node.api("stop-all-tasks")
    return out


def run(node: Node, reps: int, remote: str, password: str, say) -> dict:
    """{"tasks": N, action: [one measurement per repetition]}."""
    tasks = len(node.task_names())
    results: dict = {"tasks": tasks}
    for rep in range(reps):
        for action, measured in one_round(node, rep, remote, password).items():
            results.setdefault(action, []).append(measured)
        say(f"  latency round {rep + 1}/{reps}: " + ", ".join(
            f"{a} {results[a][-1]['wall_s']:.2f} s" for a in (FIXED, *READS, "create-task", "start-all-tasks")))
    return results
