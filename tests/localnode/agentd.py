"""The agents' daemon: one process serving every agent of the local node.

Each agent pops tasks from `<agent_id>/tasks` with a Redis connection named
after the agent (so the idle check of `api-cli`/`agent.tasks` sees it), runs
them concurrently with `runner.ActionRun`, publishes progress on
`progress/<agent_id>/task/<id>`, writes the result keys in one MULTI/EXEC and
mirrors the module environment to `module/<id>/environment`. Events published
on `*/event/*` run the matching `events/<name>/` steps of every agent.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

import redis

from localnode import cluster, redisd
from localnode.config import NodeConfig, load
from localnode.runner import ActionRun, AgentSpec, TaskResult, read_envfile, run_event

MAX_CONCURRENCY = 32
POLL_INTERVAL = 5
SECRET_SUFFIXES = ("password", "secret", "token", "key", "pass")
BUILTINS = ("list-actions", "cancel-task")


def mask(value: object) -> object:
    """The task context as the agent stores it: secrets replaced by XXX."""
    if isinstance(value, dict):
        return {
            k: ("XXX" if isinstance(k, str) and k.lower().endswith(SECRET_SUFFIXES) else mask(v))
            for k, v in value.items()
        }
    if isinstance(value, list):
        return [mask(v) for v in value]
    return value


class Journal:
    """A stand-in for the systemd journal: one file, one line per record."""

    def __init__(self, path: Path):
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._lock = threading.Lock()

    def write(self, ident: str, line: str) -> None:
        ts = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        with self._lock, open(self.path, "a", encoding="utf-8") as f:
            f.write(f"{ts} {ident}: {line}\n")


class AgentWorker:
    def __init__(self, cfg: NodeConfig, spec: AgentSpec, journal: Journal, stopping: threading.Event):
        self.cfg = cfg
        self.spec = spec
        self.journal = journal
        self.stopping = stopping
        self.running: dict[str, ActionRun] = {}
        self.slots = threading.BoundedSemaphore(MAX_CONCURRENCY)
        self.lock = threading.Lock()
        self.ident = f"agent@{spec.agent_id.split('/', 1)[-1]}"
        self.retired = threading.Event()  # the module was removed

    def active(self) -> bool:
        return not (self.stopping.is_set() or self.retired.is_set())

    def conn(self) -> redis.Redis:
        return redisd.connect(self.cfg)

    def serve(self) -> None:
        rdb = redisd.connect(self.cfg, client_name=self.spec.agent_id)
        queue = f"{self.spec.agent_id}/tasks"
        while self.active():
            try:
                item = rdb.brpop([queue], timeout=POLL_INTERVAL)
            except redis.RedisError as exc:
                if not self.active():
                    return
                self.journal.write(self.ident, f"<3>redis error: {exc}")
                time.sleep(1)
                continue
            if item is None:
                continue
            if not self.active():  # removed meanwhile: leave the task to nobody, as NS8 would
                return
            try:
                task = json.loads(item[1])
            except json.JSONDecodeError:
                self.journal.write(self.ident, "<3>Undecodable task dropped")
                continue
            threading.Thread(target=self.handle, args=(task,), daemon=True).start()

    # ------------------------------------------------------------------
    def publish(self, rdb: redis.Redis, tid: str, status: str, progress: int) -> None:
        rdb.publish(
            f"progress/{self.spec.agent_id}/task/{tid}", json.dumps({"status": status, "progress": progress})
        )

    def handle(self, task: dict) -> None:
        rdb = self.conn()
        tid = str(task.get("id") or uuid.uuid4())
        action = str(task.get("action", ""))
        data = task.get("data")
        ctx_key = f"task/{self.spec.agent_id}/{tid}/context"
        rdb.set(ctx_key, json.dumps(mask(task)), ex=60)
        self.publish(rdb, tid, "pending", 0)
        if not self.slots.acquire(timeout=0.5):
            self.finish(rdb, tid, TaskResult("aborted", 11, "", f"Agent is busy. Action {action} rejected!\n"))
            return
        try:
            if action in BUILTINS:
                result = self.builtin(action, data)
            else:
                result = self.run_action(rdb, tid, action, data, task)
        except Exception as exc:  # the agent must always answer
            result = TaskResult("aborted", 1, "", f"localnode agent error: {exc!r}\n")
        finally:
            self.slots.release()
        self.finish(rdb, tid, result)

    def run_action(self, rdb: redis.Redis, tid: str, action: str, data: object, task: dict) -> TaskResult:
        state = {"status": "pending", "progress": 0}

        def progress(status: str, p: int) -> None:
            state["status"], state["progress"] = status, p
            self.publish(rdb, tid, status, p)

        run = ActionRun(
            self.spec,
            action,
            data,
            tid,
            user=str(task.get("user", "")),
            progress=progress,
            log=lambda line: self.journal.write(f"{self.ident}[{action}]", line),
        )
        with self.lock:
            self.running[tid] = run
        done = threading.Event()

        def heartbeat() -> None:
            ctx_key = f"task/{self.spec.agent_id}/{tid}/context"
            while not done.wait(POLL_INTERVAL):
                hb = self.conn()
                hb.expire(ctx_key, 60)
                if state["status"] == "running":
                    self.publish(hb, tid, "running", int(state["progress"]))

        threading.Thread(target=heartbeat, daemon=True).start()
        try:
            return run.run()
        finally:
            done.set()
            with self.lock:
                self.running.pop(tid, None)

    def builtin(self, action: str, data: object) -> TaskResult:
        if action == "list-actions":
            names = set()
            for d in self.spec.actions_dirs:
                if d.is_dir():
                    names.update(p.name for p in d.iterdir() if p.is_dir())
            return TaskResult("completed", 0, json.dumps(sorted(names) + list(BUILTINS)), "")
        # cancel-task
        if not isinstance(data, dict) or not isinstance(data.get("task"), str):
            err = [{"field": "task", "parameter": "task", "value": "", "error": "task_required"}]
            return TaskResult("validation-failed", 10, json.dumps(err), "Validation errors: [task: task is required]\n")
        with self.lock:
            run = self.running.get(data["task"])
        if run is None:
            err = [{"field": "task", "parameter": "task", "value": data["task"], "error": "task_not_found"}]
            return TaskResult("validation-failed", 2, json.dumps(err), f"Task {data['task']} not found\n")
        run.cancel()
        return TaskResult("completed", 0, "", "")

    def finish(self, rdb: redis.Redis, tid: str, result: TaskResult) -> None:
        prefix = f"task/{self.spec.agent_id}/{tid}"
        env = read_envfile(self.spec.state_dir / "environment")
        pipe = rdb.pipeline(transaction=True)
        pipe.set(f"{prefix}/output", result.output, ex=8 * 3600)
        pipe.set(f"{prefix}/error", result.error, ex=8 * 3600)
        pipe.set(f"{prefix}/exit_code", str(result.exit_code), ex=8 * 3600)
        pipe.expire(f"{prefix}/context", 8 * 3600)
        if self.spec.agent_id.startswith("module/"):
            ekey = f"{self.spec.agent_id}/environment"
            pipe.delete(ekey)
            if env:
                pipe.hset(ekey, mapping=env)
        pipe.execute()
        self.publish(rdb, tid, result.status, 100 if result.status == "completed" else 0)


class Daemon:
    def __init__(self, cfg: NodeConfig):
        self.cfg = cfg
        self.journal = Journal(cfg.log_dir / "journal.log")
        self.stopping = threading.Event()
        self.workers: dict[str, AgentWorker] = {}

    def refresh_agents(self) -> None:
        specs = cluster.agent_specs(self.cfg)
        current = {spec.agent_id for spec in specs}
        for agent_id in [a for a in self.workers if a not in current]:
            self.workers.pop(agent_id).retired.set()  # remove-module
            self.journal.write(f"agent@{agent_id.split('/', 1)[-1]}", "<6>agent stopped (module removed)")
        for spec in specs:
            if spec.agent_id in self.workers:
                self.workers[spec.agent_id].spec = spec
                continue
            w = AgentWorker(self.cfg, spec, self.journal, self.stopping)
            self.workers[spec.agent_id] = w
            threading.Thread(target=w.serve, daemon=True, name=spec.agent_id).start()
            self.journal.write(w.ident, "<6>agent started")

    def events(self) -> None:
        while not self.stopping.is_set():
            try:
                ps = redisd.connect(self.cfg).pubsub(ignore_subscribe_messages=True)
                ps.psubscribe("*/event/*")
                while not self.stopping.is_set():
                    msg = ps.get_message(timeout=1.0)
                    if msg is None:
                        continue
                    channel = str(msg["channel"])
                    source, _, name = channel.partition("/event/")
                    for w in list(self.workers.values()):
                        threading.Thread(
                            target=run_event,
                            args=(w.spec, name, source, str(msg["data"]), lambda ln, w=w: self.journal.write(w.ident, ln)),
                            daemon=True,
                        ).start()
            except redis.RedisError:
                time.sleep(1)

    def serve(self) -> None:
        signal.signal(signal.SIGTERM, lambda *_: self.stopping.set())
        signal.signal(signal.SIGINT, lambda *_: self.stopping.set())
        threading.Thread(target=self.events, daemon=True).start()
        while not self.stopping.is_set():
            self.refresh_agents()
            self.stopping.wait(1.0)
        # give running actions a moment, as systemd would on stop
        for w in self.workers.values():
            with w.lock:
                for run in w.running.values():
                    run.cancel()


def main() -> None:
    cfg = load(sys.argv[1] if len(sys.argv) > 1 else None)
    pidfile = cfg.run_dir / "agentd.pid"
    pidfile.parent.mkdir(parents=True, exist_ok=True)
    pidfile.write_text(str(os.getpid()))
    try:
        Daemon(cfg).serve()
    finally:
        pidfile.unlink(missing_ok=True)


if __name__ == "__main__":
    main()
