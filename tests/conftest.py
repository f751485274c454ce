"""Shared fixtures: one local node per test session, reached as a user would.

The node runs in its own state dir and port base, so a developer's `make up`
node (default `.localnode/`, ports 16xxx) is never touched by the tests.
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from localnode import node
from localnode.config import LOCALNODE_SRC, NodeConfig
from localnode.imap_pair import Pair, running_pair

TEST_PORT_BASE = int(os.environ.get("LOCALNODE_TEST_PORT_BASE", "26000"))
# the `pair` fixture's Dovecots; a second checkout running tests at once sets another base
PAIR_PORT_BASE = int(os.environ.get("LOCALNODE_PAIR_PORT_BASE", "24000"))


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
        assert proc.returncode == 0, f"{action} failed ({proc.returncode}): {proc.stderr}"
        return json.loads(proc.stdout)


@pytest.fixture(scope="session")
def localnode():
    with node.throwaway(TEST_PORT_BASE, "localnode-test-") as cfg:
        yield cfg


@pytest.fixture(scope="session")
def cli(localnode: NodeConfig) -> Cli:
    return Cli(localnode)


@pytest.fixture(scope="session")
def configured(cli: Cli) -> dict:
    """imapsync1 bound to mail1, as an administrator does from Settings."""
    conf = cli.api_ok("module/imapsync1/get-configuration")
    uuid, host = conf["mail_server_URL"][0]["value"].split(",", 1)
    cli.api_ok("module/imapsync1/configure-module", {"mail_server": uuid, "mail_host": host})
    return {"mail_server": uuid, "mail_host": host}


@pytest.fixture(scope="module")
def pair() -> Iterator[Pair]:
    """Both Dovecots alone (no agents), fresh for each test module that asks."""
    with running_pair(PAIR_PORT_BASE) as started:
        yield started
