"""Helpers shared by the task tests: a valid create-task input, waiting for a run."""

from __future__ import annotations

import time

from localnode.config import NodeConfig

REMOTE_USER = "carol@remote.test"  # quotes, spaces, commas, $ and backslash in her password


def task_input(localnode: NodeConfig, **over: object) -> dict:
    r = localnode.remote
    data = {
        "localuser": "u2", "task_id": "t0001", "remotehostname": r.host, "remoteport": r.imap_port,
        "security": "tls", "remoteusername": REMOTE_USER, "remotepassword": r.users[REMOTE_USER],
        "delete_local": False, "delete_remote": False, "delete_remote_older": 0, "exclude": "",
        "cron": "", "foldersynchronization": "all", "sieve_enabled": False,
    }
    data.update(over)
    return data


def wait_idle(cli, task_id: str, timeout: float = 300) -> dict:
    """The task's list-tasks entry once its current run has finished."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        items = [t for t in cli.api_ok("module/imapsync1/list-tasks")["user_properties"] if t["task_id"] == task_id]
        if items and not items[0]["service_running"] and items[0]["last_sync_state"]:
            return items[0]
        time.sleep(0.5)
    raise AssertionError(f"task {task_id} did not finish in {timeout}s")
