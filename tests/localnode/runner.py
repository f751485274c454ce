"""Run one action (or event) the way NS8's Go agent does.

Faithful to spec section 1: base and module action directories merged and
byte-sorted, later directory winning a name clash, non-executable steps
skipped, cwd = the module state dir, stdin = the input JSON (`null` when
absent), the `environment` file re-read before every step, `AGENT_*`
variables, the fd-3 command pipe, stdout/stderr concatenated, schema
validation with gojsonschema's error shape, and the agent's statuses and
exit codes.
"""

from __future__ import annotations

import csv
import json
import os
import pwd
import signal
import subprocess
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from localnode import validation

SCHEMA_FILES = ("validate-input.json", "validate-output.json")

ProgressFn = Callable[[str, int], None]
LogFn = Callable[[str], None]


@dataclass
class AgentSpec:
    """One agent: what `agent --agentid --actionsdir... --eventsdir` is given."""

    agent_id: str
    state_dir: Path
    actions_dirs: list[Path]
    events_dir: Path | None = None
    install_dir: Path | None = None
    env: dict[str, str] = field(default_factory=dict)
    # the Unix user the agent runs as (a rootless module's own); None: the node's user
    user: str | None = None

    def identity(self) -> dict:
        """Popen arguments that run a step as the agent's user."""
        if self.user is None:
            return {}
        pw = pwd.getpwnam(self.user)
        return {"user": pw.pw_uid, "group": pw.pw_gid, "extra_groups": []}


@dataclass
class TaskResult:
    status: str  # completed | aborted | validation-failed
    exit_code: int
    output: str
    error: str


@dataclass
class Step:
    name: str
    path: Path


def read_envfile(path: Path) -> dict[str, str]:
    """`KEY=VALUE` lines; the agent ignores lines without `=`."""
    env: dict[str, str] = {}
    try:
        text = path.read_text()
    except FileNotFoundError:
        return env
    for line in text.splitlines():
        if "=" not in line or line.startswith("#"):
            continue
        k, v = line.split("=", 1)
        env[k] = v
    return env


def discover(agent: AgentSpec, action: str) -> tuple[list[Step], Path | None, Path | None]:
    """Steps (sorted, later dir wins) and the winning input/output schemas."""
    by_name: dict[str, Path] = {}
    schemas: dict[str, Path] = {}
    for d in agent.actions_dirs:
        adir = d / action
        if not adir.is_dir():
            continue
        for entry in adir.iterdir():
            if entry.name in SCHEMA_FILES:
                schemas[entry.name] = entry
            elif not entry.is_dir():
                by_name[entry.name] = entry
    names = sorted(by_name, key=lambda n: n.encode())
    return [Step(n, by_name[n]) for n in names], schemas.get(SCHEMA_FILES[0]), schemas.get(SCHEMA_FILES[1])


def _definitions(agent: AgentSpec) -> dict | None:
    if agent.install_dir is None:
        return None
    p = agent.install_dir / "validator-definitions.json"
    if p.exists():
        return json.loads(p.read_text())
    return None


class _StepProcess:
    """A step child with fd 3 wired to a command pipe; cancellable as a group."""

    def __init__(self, path: Path, cwd: Path, env: dict[str, str], stdin: bytes, comfd: int = 3,
                 identity: dict | None = None):
        r, w = os.pipe()
        self._cmd_r = r

        def child_setup() -> None:
            # dup2 makes fd 3 inheritable; every other parent fd is
            # close-on-exec (PEP 446), so close_fds=False leaks nothing.
            if w != comfd:
                os.dup2(w, comfd)
            else:
                os.set_inheritable(comfd, True)

        self.proc = subprocess.Popen(
            [str(path)],
            cwd=cwd,
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            start_new_session=True,
            preexec_fn=child_setup,
            close_fds=False,
            **(identity or {}),
        )
        os.close(w)
        self.stdin = stdin

    def terminate_group(self) -> None:
        try:
            os.killpg(self.proc.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass


class ActionRun:
    """One task running on one agent; `cancel()` is what `cancel-task` calls."""

    def __init__(
        self,
        agent: AgentSpec,
        action: str,
        data: object,
        task_id: str,
        user: str = "",
        progress: ProgressFn | None = None,
        log: LogFn | None = None,
    ):
        self.agent = agent
        self.action = action
        self.data = data
        self.task_id = task_id
        self.user = user
        self._progress = progress or (lambda s, p: None)
        self._log = log or (lambda line: None)
        self._current: _StepProcess | None = None
        self._cancelled = False
        self._lock = threading.Lock()
        self.started = threading.Event()

    def cancel(self) -> None:
        with self._lock:
            self._cancelled = True
            if self._current is not None:
                self._current.terminate_group()

    # ------------------------------------------------------------------
    def run(self) -> TaskResult:
        steps, in_schema, out_schema = discover(self.agent, self.action)
        if not steps:
            return TaskResult("aborted", 8, "", f"Action {self.action} is not defined\n")
        stdin = json.dumps(self.data, separators=(",", ":"), sort_keys=True, ensure_ascii=False).encode()
        if in_schema is not None:
            errors = validation.validate(json.loads(in_schema.read_text()), self.data, _definitions(self.agent))
            if errors:
                return TaskResult("validation-failed", 10, json.dumps(errors), validation.error_message(errors))

        weights = {s.name: 1 for s in steps}
        done: list[str] = []
        current: dict[str, object] = {"name": None, "progress": 0}

        def overall() -> int:
            total = sum(100 * w for w in weights.values())
            if total == 0:
                return 0
            acc = sum(100 * weights[n] for n in done)
            if current["name"] is not None:
                acc += int(current["progress"]) * weights.get(str(current["name"]), 1)
            return int(acc * 100 / total)

        out_chunks: list[bytes] = []
        err_chunks: list[bytes] = []
        status_override: str | None = None
        self._progress("running", 0)
        self.started.set()
        exit_code = 0
        for step in steps:
            if self._cancelled:
                exit_code = -1
                break
            if not os.access(step.path, os.X_OK):
                self._log(f"<4>Skipping step {step.name}: not executable")
                done.append(step.name)
                continue
            env = dict(self.agent.env)
            env.update(read_envfile(self.agent.state_dir / "environment"))
            env.update(
                {
                    "AGENT_COMFD": "3",
                    "AGENT_TASK_ID": self.task_id,
                    "AGENT_TASK_ACTION": self.action,
                    "AGENT_TASK_USER": self.user,
                }
            )
            current["name"], current["progress"] = step.name, 0
            try:
                sp = _StepProcess(step.path, self.agent.state_dir, env, stdin, identity=self.agent.identity())
            except OSError as exc:  # bad interpreter, vanished file
                self._log(f"<4>Skipping step {step.name}: {exc}")
                done.append(step.name)
                current["name"] = None
                continue
            with self._lock:
                self._current = sp
                if self._cancelled:
                    sp.terminate_group()

            def on_command(line: str) -> None:
                nonlocal status_override
                try:
                    parts = next(csv.reader([line], delimiter=" "))
                except (csv.Error, StopIteration):
                    self._log(f"<4>Bad command: {line!r}")
                    return
                if not parts:
                    return
                if parts[0] == "set-status" and len(parts) == 2 and parts[1] == "validation-failed":
                    status_override = "validation-failed"
                elif parts[0] == "set-progress" and len(parts) == 2 and parts[1].lstrip("-").isdigit():
                    current["progress"] = max(0, min(100, int(parts[1])))
                    self._progress("running", overall())
                elif parts[0] == "set-weight" and len(parts) == 3 and parts[2].isdigit():
                    weights[parts[1]] = int(parts[2])
                else:
                    self._log(f"<4>Unknown command: {line!r}")

            rc = self._communicate(sp, out_chunks, err_chunks, on_command)
            with self._lock:
                self._current = None
            current["name"] = None
            done.append(step.name)
            if status_override == "validation-failed":
                exit_code = rc if rc != 0 else 10
                break
            if rc != 0:
                exit_code = rc
                break
            self._progress("running", overall())

        output = b"".join(out_chunks).decode(errors="replace")
        error = b"".join(err_chunks).decode(errors="replace")
        if status_override == "validation-failed":
            return TaskResult("validation-failed", exit_code, output, error)
        if exit_code != 0:
            return TaskResult("aborted", exit_code, output, error)
        if out_schema is not None:
            try:
                decoded = json.loads(output)
            except json.JSONDecodeError as exc:
                return TaskResult("aborted", 1, output, error + f"JSON unmarshal error: {exc}\n")
            errors = validation.validate(json.loads(out_schema.read_text()), decoded, _definitions(self.agent))
            if errors:
                return TaskResult("aborted", 1, output, error + validation.error_message(errors))
        return TaskResult("completed", 0, output, error)

    def _communicate(
        self,
        sp: _StepProcess,
        out_chunks: list[bytes],
        err_chunks: list[bytes],
        on_command: Callable[[str], None],
    ) -> int:
        proc = sp.proc

        def feed() -> None:
            try:
                assert proc.stdin is not None
                proc.stdin.write(sp.stdin)
                proc.stdin.close()
            except (BrokenPipeError, OSError):
                pass

        def pump_out() -> None:
            assert proc.stdout is not None
            for chunk in iter(lambda: proc.stdout.read(65536), b""):
                out_chunks.append(chunk)

        def pump_err() -> None:
            assert proc.stderr is not None
            for raw in iter(proc.stderr.readline, b""):
                err_chunks.append(raw)
                self._log(raw.decode(errors="replace").rstrip("\n"))

        def pump_cmd() -> None:
            with os.fdopen(sp._cmd_r, "rb") as f:
                for raw in f:
                    on_command(raw.decode(errors="replace").strip())

        threads = [threading.Thread(target=t, daemon=True) for t in (feed, pump_out, pump_err, pump_cmd)]
        for t in threads:
            t.start()
        rc = proc.wait()
        for t in threads:
            t.join()
        # Go reports a signal death as -1.
        return -1 if rc < 0 else rc


def run_event(agent: AgentSpec, name: str, source: str, payload: str, log: LogFn) -> None:
    """Event handlers: `events/<name>/` steps; stdout and stderr go to the journal."""
    if agent.events_dir is None:
        return
    edir = agent.events_dir / name
    if not edir.is_dir():
        return
    env = dict(agent.env)
    env.update(read_envfile(agent.state_dir / "environment"))
    env.update({"AGENT_EVENT_NAME": name, "AGENT_EVENT_SOURCE": source, "AGENT_COMFD": "2"})
    for step in sorted((p for p in edir.iterdir() if not p.is_dir()), key=lambda p: p.name.encode()):
        if not os.access(step, os.X_OK):
            log(f"<4>Skipping event step {step.name}: not executable")
            continue
        try:
            proc = subprocess.run(
                [str(step)],
                cwd=agent.state_dir,
                env=env,
                input=payload.encode(),
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                **agent.identity(),
            )
        except OSError as exc:
            log(f"<4>Skipping event step {step.name}: {exc}")
            continue
        for line in proc.stdout.decode(errors="replace").splitlines():
            log(line)
        if proc.returncode != 0:
            log(f"<3>Event {name} step {step.name} exited with {proc.returncode}")
