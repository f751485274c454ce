"""Browser tests of the admin UI: Debian's Chromium, driven by Playwright,
through the local node's cluster-admin stand-in and the real actions.

One node of their own (port base UI_TEST_PORT_BASE, default 31000: below
32768 and apart from every other suite's), the built UI (ui/dist, rebuilt by
scripts/install-ui-deps.sh when a source changed), one browser per session
and a fresh context per test. Every context blocks whatever is not
127.0.0.1, and a test fails on any console error, page error or blocked
request. Screenshots go to tests/outputs/ui/.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from localnode import node
from localnode.config import REPO_ROOT, NodeConfig
from playwright.sync_api import Browser, BrowserContext, sync_playwright

from ui.uibrowser import CHROMIUM, UI_TEST_PORT_BASE, WIDE, Admin, NodeCli, Watch, open_context


@pytest.fixture(scope="session")
def ui_dist() -> Path:
    """ui/dist as the sources are now (a no-op when it already is)."""
    proc = subprocess.run(["bash", str(REPO_ROOT / "scripts" / "install-ui-deps.sh")], capture_output=True,
                          text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    # Carbon's install scripts start telemetry processes: none may be left by the install
    ps = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True).stdout
    assert not [ln for ln in ps.splitlines() if "telemetry" in ln and "ps -eo" not in ln], ps
    return REPO_ROOT / "ui" / "dist"


@pytest.fixture(scope="session")
def ui_node(ui_dist: Path) -> Iterator[NodeConfig]:
    with node.throwaway(UI_TEST_PORT_BASE, "localnode-ui-") as cfg:
        yield cfg


@pytest.fixture(scope="session")
def node_cli(ui_node: NodeConfig) -> NodeCli:
    return NodeCli(ui_node)


@pytest.fixture(scope="session")
def browser() -> Iterator[Browser]:
    with sync_playwright() as pw:
        # root in CI: Chromium's sandbox needs an unprivileged user
        b = pw.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield b
        b.close()


@pytest.fixture
def admin_factory(browser: Browser, ui_node: NodeConfig):
    """Admin(viewport, locale) sessions; each checked for errors at the end of the test."""
    opened: list[tuple[BrowserContext, Watch]] = []

    def make(viewport: dict | None = None, locale: str = "en-US") -> Admin:
        watch = Watch()
        context = open_context(browser, watch, viewport or WIDE, locale)
        opened.append((context, watch))
        return Admin(context.new_page(), ui_node, watch)

    yield make
    problems = []
    for context, watch in opened:
        context.close()
        problems += watch.errors + [f"request off the machine: {u}" for u in watch.blocked]
    assert not problems, "\n".join(problems)


@pytest.fixture
def admin(admin_factory) -> Admin:
    return admin_factory()


@pytest.fixture(scope="session")
def configured(node_cli: NodeCli) -> dict:
    """imapsync1 bound to mail1 (the Settings test does it through the page; others need it done)."""
    conf = node_cli.api("get-configuration")
    uuid, host = conf["mail_server_URL"][0]["value"].split(",", 1)  # type: ignore[index]
    if conf["mail_server"] != uuid:  # type: ignore[index]
        node_cli.api("configure-module", {"mail_server": uuid, "mail_host": host})
    return {"mail_server": uuid, "mail_host": host}
