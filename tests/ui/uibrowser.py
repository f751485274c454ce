"""What the browser tests share: the Chromium, the node's command line, the
watch on what a page did, and an administrator's session in cluster-admin."""

from __future__ import annotations

import json
import os
import re
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from localnode import adminapi
from localnode.config import LOCALNODE_SRC, REPO_ROOT, NodeConfig
from playwright.sync_api import Browser, BrowserContext, FrameLocator, Page

UI_TEST_PORT_BASE = int(os.environ.get("UI_TEST_PORT_BASE", "31000"))
CHROMIUM = "/usr/bin/chromium"
OUTPUTS = REPO_ROOT / "tests" / "outputs" / "ui"
LOCAL_ORIGINS = ("http://127.0.0.1:", "ws://127.0.0.1:", "data:", "blob:")
WIDE = {"width": 1280, "height": 900}
NARROW = {"width": 390, "height": 844}


@dataclass
class NodeCli:
    """api-cli and friends against the UI tests' node (to set up and to check)."""

    cfg: NodeConfig

    def run(self, *argv: str, input: str | None = None) -> subprocess.CompletedProcess:
        env = dict(os.environ, LOCALNODE_DIR=str(self.cfg.state_dir))
        env["PATH"] = f"{LOCALNODE_SRC / 'bin'}:{env['PATH']}"
        env.pop("PYTHONPATH", None)
        return subprocess.run(list(argv), capture_output=True, text=True, env=env, input=input, timeout=300)

    def api(self, action: str, data: object = None) -> object:
        args = ["api-cli", "run", f"module/imapsync1/{action}"]
        if data is not None:
            args += ["--data", json.dumps(data)]
        proc = self.run(*args)
        assert proc.returncode == 0, f"{action}: {proc.stderr}"
        return json.loads(proc.stdout) if proc.stdout.strip() else None

    def tasks(self) -> list[dict]:
        return self.api("list-tasks")["user_properties"]  # type: ignore[index]


@dataclass
class Watch:
    """What a page did that a test must not let pass: console errors, page errors, requests off-machine."""

    errors: list[str] = field(default_factory=list)
    blocked: list[str] = field(default_factory=list)
    api_bodies: list[str] = field(default_factory=list)


def open_context(browser: Browser, watch: Watch, viewport: dict, locale: str) -> BrowserContext:
    context = browser.new_context(viewport=viewport, locale=locale, accept_downloads=True)

    def route(r) -> None:
        if r.request.url.startswith(LOCAL_ORIGINS):
            r.continue_()
        else:
            watch.blocked.append(r.request.url)
            r.abort()

    context.route("**/*", route)
    return context


class Admin:
    """cluster-admin in a browser tab: log in, open a module page, reach into its iframe."""

    def __init__(self, page: Page, cfg: NodeConfig, watch: Watch):
        self.page, self.cfg, self.watch = page, cfg, watch
        page.on("console", lambda m: watch.errors.append(f"console: {m.text}") if m.type == "error" else None)
        page.on("pageerror", lambda e: watch.errors.append(f"pageerror: {e}"))
        page.on("response", self._keep_api_body)

    def _keep_api_body(self, response) -> None:
        if "/cluster-admin/api/" in response.url:
            try:
                self.watch.api_bodies.append(response.text())
            except Exception:  # a body already gone (navigation): nothing to scan
                pass

    @property
    def app(self) -> FrameLocator:
        return self.page.frame_locator("iframe")

    def login(self, page_name: str = "status") -> FrameLocator:
        self.page.goto(f"http://127.0.0.1:{adminapi.port(self.cfg)}/cluster-admin/#/apps/imapsync1?page={page_name}")
        self.page.fill("#shell-password", adminapi.ADMIN_PASSWORD)
        self.page.click("#shell-login button[type=submit]")
        self.app.locator(".app-main h2").wait_for()
        return self.app

    def go(self, page_name: str) -> None:
        """Through the module's own side menu, as a user clicks."""
        self.app.locator(f"a[data-page={page_name}]").click()
        self.page.wait_for_url(re.compile(rf"page={page_name}"))

    def shot(self, name: str, full_page: bool = False) -> Path:
        OUTPUTS.mkdir(parents=True, exist_ok=True)
        path = OUTPUTS / f"{name}.png"
        self.page.screenshot(path=str(path), full_page=full_page)
        return path




def field_box(app: FrameLocator, name: str):
    """The form item around the input `data-test=name`: where Carbon shows its
    label, helper text and invalid message."""
    return app.locator(f"[data-test={name}]").locator(
        "xpath=ancestor::*[contains(@class,'bx--form-item') or contains(@class,'bx--list-box__wrapper')][1]")
