"""Shared fixtures: one local node per test session, reached as a user would.

The node runs in its own state dir and port base, so a developer's `make up`
node (default `.localnode/`, ports 16xxx) is never touched by the tests.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
from faultproxy import FaultProxy
from localnode import node
from localnode.config import NodeConfig
from localnode.imap_pair import Pair, running_pair
from nodecli import Cli

TEST_PORT_BASE = int(os.environ.get("LOCALNODE_TEST_PORT_BASE", "26000"))
# the `pair` fixture's Dovecots; a second checkout running tests at once sets another base
PAIR_PORT_BASE = int(os.environ.get("LOCALNODE_PAIR_PORT_BASE", "24000"))


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


# ---- fault proxies in front of the `pair` fixture in scope (a module may override `pair`) ----

@pytest.fixture
def remote_proxy(pair: Pair) -> Iterator[FaultProxy]:
    with FaultProxy(pair.remote_host, pair.remote_imap) as proxy:
        yield proxy


@pytest.fixture
def local_proxy(pair: Pair) -> Iterator[FaultProxy]:
    m = pair.cfg.mail1
    with FaultProxy(m.host, m.imap_port, source_host=m.host) as proxy:
        yield proxy
