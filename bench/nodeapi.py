"""Driving a throw-away local node as an administrator does: api-cli, runagent, task files.

The parallel and action-latency benchmarks go through the real task path
(agent, actions, syncctl in the sync "container", the node's caps); only the
set-up that is not measured (task files, mailbox users) is written directly,
because create-task would queue a first sync at once.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from localnode import mailusers
from localnode.config import LOCALNODE_SRC, NodeConfig
from ns8_imapsync import layout, runstate
from ns8_imapsync.statedir import StateDir
from ns8_imapsync.task import Task

MODULE = "imapsync1"
FINAL_STATES = ("succeeded", "failed", "stopped", "stalled", "crashed")


@dataclass
class Node:
    """A running throw-away node and the environment its commands need."""

    cfg: NodeConfig

    @property
    def env(self) -> dict:
        """The node's commands on PATH, without the bench's PYTHONPATH (the agent sets its own)."""
        env = dict(os.environ, LOCALNODE_DIR=str(self.cfg.state_dir),
                   PATH=f"{LOCALNODE_SRC / 'bin'}:{os.environ['PATH']}")
        env.pop("PYTHONPATH", None)
        return env

    @property
    def tasks_dir(self) -> Path:
        """The module's task directory on this node."""
        return self.cfg.module_state_dir(MODULE) / "imapsync"

    @property
    def state(self) -> StateDir:
        """The module's own StateDir, so set-up writes tasks exactly as its actions do."""
        return StateDir(self.tasks_dir, self.tasks_dir.parent / "cron")

    def api(self, action: str, data: object = None, timeout: float = 1800) -> object:
        """``api-cli run module/imapsync1/<action>``; its JSON answer (fails loudly)."""
        argv = ["api-cli", "run", f"module/{MODULE}/{action}"] + (["--data", json.dumps(data)] if data else [])
        proc = subprocess.run(argv, capture_output=True, text=True, env=self.env, timeout=timeout)
        if proc.returncode != 0:
            raise RuntimeError(f"{action} exited {proc.returncode}: {proc.stderr.strip()[-500:]}")
        return json.loads(proc.stdout) if proc.stdout.strip() else None

    def timed_api(self, action: str, data: object = None) -> float:
        """Wall seconds of one api-cli call, as an administrator waits for it."""
        start = time.perf_counter()
        self.api(action, data)
        return round(time.perf_counter() - start, 3)

    def configure(self, **settings: object) -> None:
        """Bind to mail1 with the given settings (engine, caps); the action restarts the service."""
        conf = self.api("get-configuration")
        uuid, host = conf["mail_server_URL"][0]["value"].split(",", 1)  # type: ignore[index]
        self.api("configure-module", {"mail_server": uuid, "mail_host": host, **settings})

    def add_account_pair(self, local: str, remote: str, password: str) -> None:
        """A local mailbox and a remote account (with its own password) for one task."""
        mailusers.add_user(self.cfg.mail1, local, password)
        mailusers.add_user(self.cfg.remote, remote, password)

    def save_task(self, local: str, task_id: str, remote: str, password: str) -> str:
        """A task with default options, written as create-task writes it, but not started."""
        r = self.cfg.remote
        task = Task(task_id=task_id, localuser=local, remoteusername=remote, remotehostname=r.host,
                    remoteport=r.imap_port, security="tls")
        self.state.save(task, password)
        return task.name

    def task_names(self) -> list[str]:
        """Every task of the module now."""
        return layout.task_names(self.tasks_dir)

    def delete_task(self, name: str) -> None:
        """Every file of the task gone (set-up, not timed)."""
        local, task_id = name.split("_", 1)
        self.state.delete(local, task_id)

    def status(self, name: str) -> runstate.RunStatus:
        """The task's run status as list-tasks reads it (a dead run reads as crashed)."""
        return runstate.read_status(self.state.files(name))

    def wait_finished(self, names: list[str], since: float, timeout: float = 3600) -> dict[str, str]:
        """Poll the status files until every task has a run started after ``since``
        (epoch) that ended; {task: final state}."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            now = {n: self.status(n) for n in names}
            if all(s.state in FINAL_STATES and (s.started or 0) >= since for s in now.values()):
                return {n: s.state for n, s in now.items()}
            time.sleep(0.05)
        raise TimeoutError(f"tasks not finished after {timeout} s")
