"""The local node's commands as an administrator runs them (api-cli, runagent).

Its own module, not conftest.py: several directories of the suite have a
conftest.py, and `from conftest import ...` reaches whichever pytest loaded last.
"""

from __future__ import annotations

import json
import os
import subprocess
from dataclasses import dataclass

from localnode.config import LOCALNODE_SRC, NodeConfig


@dataclass
class Cli:
    """Runs the node's commands with the environment an administrator has."""

    cfg: NodeConfig

    @property
    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        env["LOCALNODE_DIR"] = str(self.cfg.state_dir)
        env["PATH"] = f"{LOCALNODE_SRC / 'bin'}:{env['PATH']}"
        env.pop("PYTHONPATH", None)
        return env

    def run(self, *argv: str, input: str | None = None, cwd: str | None = None,
            timeout: float = 120) -> subprocess.CompletedProcess:
        return subprocess.run(list(argv), capture_output=True, text=True, env=self.env, input=input,
                              cwd=cwd, timeout=timeout)

    def api(self, action: str, data: object = None) -> subprocess.CompletedProcess:
        args = ["api-cli", "run", action]
        if data is not None:
            args += ["--data", json.dumps(data)]
        return self.run(*args)

    def api_ok(self, action: str, data: object = None) -> object:
        proc = self.api(action, data)
        assert proc.returncode == 0, f"{action} failed ({proc.returncode}): {proc.stdout} {proc.stderr}"
        return json.loads(proc.stdout)
