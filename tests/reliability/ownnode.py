"""A local node of this suite's own, and what the hostile-input and secrets
tests observe on it: command runs, state snapshots, the journal's new lines.

Each test module starts its node (a few seconds) instead of sharing the
session's: its tests reconfigure the module, fill Redis and the journal with
hostile values and scan everything afterwards, which must not depend on what
other suites left there, nor disturb them. The port base of each module is
an environment variable; the defaults collide with no other suite's ports.
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from localnode.config import LOCALNODE_SRC, NodeConfig
from nodecli import Cli
from ns8_imapsync import runstate

TRACEBACK = "Traceback (most recent call last)"
MODULE = "imapsync1"


@dataclass
class NodeCli(Cli):
    """The node's commands (tests/nodecli.py), every output kept for the secrets scan,
    ``extra_path`` before the node's PATH."""

    extra_path: str = ""
    transcript: list[str] = field(default_factory=list)

    @property
    def env(self) -> dict[str, str]:
        env = super().env
        if self.extra_path:
            env["PATH"] = env["PATH"].replace(f"{LOCALNODE_SRC / 'bin'}:", f"{LOCALNODE_SRC / 'bin'}:{self.extra_path}:", 1)
        return env

    def run(self, *argv: str, input: bytes | str | None = None, cwd: str | None = None, timeout: float = 180
            ) -> subprocess.CompletedProcess:
        """Run a command; stdout and stderr as text (undecodable bytes replaced)."""
        data = input.encode() if isinstance(input, str) else input
        proc = subprocess.run(list(argv), capture_output=True, env=self.env, input=data, timeout=timeout, cwd=cwd,
                              stdin=None if data is not None else subprocess.DEVNULL)
        out = subprocess.CompletedProcess(proc.args, proc.returncode, proc.stdout.decode(errors="replace"),
                                          proc.stderr.decode(errors="replace"))
        self.transcript.append(out.stdout + out.stderr)
        return out

    def api(self, action: str, data: object = None) -> subprocess.CompletedProcess:
        """`api-cli run module/imapsync1/<action> --data - --verbose` (the step's stderr even on success)."""
        agent = action if "/" in action else f"module/{MODULE}/{action}"
        return self.run("api-cli", "run", agent, "--data", "-", "--verbose", input=json.dumps(data))

def configure(cli: NodeCli, **settings: object) -> dict:
    """Bind imapsync1 to mail1 (as Settings does), with optional settings (engine, ...)."""
    conf = cli.api_ok("get-configuration")
    uuid, host = conf["mail_server_URL"][0]["value"].split(",", 1)
    cli.api_ok("configure-module", {"mail_server": uuid, "mail_host": host, **settings})
    return {"mail_server": uuid, "mail_host": host}


def _busy(tasks_dir: Path) -> bool:
    """A start is queued, or a run holds a task's lock (read from the state
    directory, as list-tasks does, without an action per poll)."""
    if any(tasks_dir.glob(".queue/*.json")):
        return True
    return any(runstate.lock_held(p) for p in tasks_dir.glob("*.lock") if not p.name.startswith("."))


def wait_idle(cfg: NodeConfig, timeout: float = 300) -> None:
    """Until no task is queued or running, seen twice in a row (a start moves
    from the queue to its lock in between)."""
    tasks_dir = state_dir(cfg) / "imapsync"
    deadline, calm = time.monotonic() + timeout, 0
    while time.monotonic() < deadline:
        calm = 0 if _busy(tasks_dir) else calm + 1
        if calm >= 2:
            return
        time.sleep(0.25)
    raise AssertionError(f"tasks still queued or running after {timeout} s")


def state_dir(cfg: NodeConfig) -> Path:
    return cfg.module_state_dir(MODULE)


def _entry(path: Path) -> tuple:
    st = path.lstat()
    if stat.S_ISREG(st.st_mode):
        return ("file", stat.S_IMODE(st.st_mode), hashlib.sha256(path.read_bytes()).hexdigest())
    if stat.S_ISLNK(st.st_mode):
        return ("link", os.readlink(path))
    return ("dir" if stat.S_ISDIR(st.st_mode) else "other", stat.S_IMODE(st.st_mode))


def snapshot(root: Path, skip: tuple[str, ...] = ()) -> dict[str, tuple]:
    """Every entry under `root`: kind, mode and content digest (times ignored).
    `skip` names top-level entries that change on their own (logs, sockets)."""
    found: dict[str, tuple] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        rel_dir = Path(dirpath).relative_to(root)
        if rel_dir == Path("."):
            dirnames[:] = [d for d in dirnames if d not in skip]
            filenames = [f for f in filenames if f not in skip]
        for name in dirnames + filenames:
            path = Path(dirpath) / name
            try:
                found[str(rel_dir / name)] = _entry(path)
            except FileNotFoundError:  # a lock or temp file that came and went
                continue
    return found


EMPTY = hashlib.sha256(b"").hexdigest()


def diff(before: dict[str, tuple], after: dict[str, tuple]) -> dict[str, list[str]]:
    """What changed between two snapshots, by path. An empty lock file that
    appears (`.import.lock`, a task's `.lock` after a start) is no change: the
    layout names them, and they hold nothing."""
    def lock(path: str) -> bool:
        return path.endswith(".lock") and after[path][:1] == ("file",) and after[path][2] == EMPTY
    return {
        "added": sorted(p for p in set(after) - set(before) if not lock(p)),
        "removed": sorted(set(before) - set(after)),
        "changed": sorted(p for p in set(before) & set(after) if before[p] != after[p]),
    }


def node_paths(cfg: NodeConfig) -> dict[str, tuple]:
    """The node's directory outside the parts that change by themselves: a
    file written there by a traversal shows up as an added path."""
    return {k: v[:1] for k, v in snapshot(cfg.state_dir, skip=("log", "redis", "dovecot", "run", "containers")).items()
            if not k.startswith(f"home/{MODULE}/.config/state/")}


class Journal:
    """The node's journal (and container logs) from a point on: new lines only."""

    def __init__(self, cfg: NodeConfig):
        self.paths = [cfg.log_dir / "journal.log", cfg.log_dir / "container-imapsync.log"]
        self.offsets = {p: p.stat().st_size if p.exists() else 0 for p in self.paths}

    def new_text(self) -> str:
        out = []
        for p in self.paths:
            if p.exists():
                with open(p, "rb") as f:
                    f.seek(self.offsets[p])
                    out.append(f.read().decode(errors="replace"))
                self.offsets[p] = p.stat().st_size
        return "".join(out)
