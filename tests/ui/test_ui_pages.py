"""The admin UI's pages in Chromium, through the cluster-admin stand-in: Status,
the Tasks page before any mail server is bound, Settings, About, Italian,
and the layout at 1280 and 390 px. Runs before test_ui_tasks.py (file order):
the first test needs the node as installed, with no mail server bound."""

from __future__ import annotations

import json
import re

from playwright.sync_api import expect

from ui.uibrowser import NARROW, WIDE, Admin, NodeCli, field_box


def test_tasks_page_without_mail_server_links_to_settings(admin: Admin, node_cli: NodeCli) -> None:
    assert node_cli.api("get-configuration")["mail_server"] == "", "this test needs an unbound module"
    app = admin.login("tasks")
    empty = app.locator("[data-test=empty-unconfigured]")
    expect(empty).to_contain_text("No mail server configured")
    expect(app.locator("[data-test=toolbar]")).to_have_count(0)  # nothing to create tasks into
    admin.shot("tasks-unconfigured")
    app.locator("[data-test=go-settings]").click()
    admin.page.wait_for_url(re.compile(r"#/apps/imapsync1\?page=settings"))
    expect(app.locator(".app-main h2")).to_have_text("Settings")


def test_status_shows_instance_node_and_service(admin: Admin) -> None:
    app = admin.login("status")
    expect(app.locator("[data-test=instance-card]")).to_contain_text("imapsync1")
    expect(app.locator("[data-test=node-card]")).to_contain_text("Node 1")
    # the module's own unit, read by get-status from systemd/user/ and systemctl
    service = app.locator("[data-test=service-imapsync]")
    expect(service).to_contain_text("imapsync")
    expect(service).to_contain_text("inactive")  # no mail server bound yet: the unit is not started
    admin.shot("status-unconfigured")


def test_settings_bind_mail_server_and_caps(admin: Admin, node_cli: NodeCli) -> None:
    app = admin.login("settings")
    select = app.locator("select[data-test=mail-server]")
    expect(select.locator("option")).to_have_count(2)  # the placeholder and mail1
    select.select_option(label="mail1 (mail.domain.test)")
    app.locator("select[data-test=engine]").select_option("native")
    app.locator("input[data-test=stall_minutes]").fill("20")
    app.locator("input[data-test=max_syncs_per_host]").fill("99")  # over configure-module's 64
    app.locator("[data-test=save]").click()
    expect(field_box(app, "max_syncs_per_host")).to_contain_text("A whole number")
    assert node_cli.api("get-configuration")["mail_server"] == "", "an invalid form must not be sent"
    app.locator("input[data-test=max_syncs_per_host]").fill("3")
    app.locator("[data-test=save]").click()
    expect(app.get_by_text("Settings saved")).to_be_visible(timeout=30000)
    conf = node_cli.api("get-configuration")
    uuid, host = conf["mail_server_URL"][0]["value"].split(",", 1)
    assert (conf["mail_server"], conf["mail_host"]) == (uuid, host)
    assert (conf["engine"], conf["stall_minutes"], conf["max_syncs_per_host"]) == ("native", 20, 3)
    admin.shot("settings")
    # the page shows what is saved, after a reload too
    admin.page.reload()  # the token is kept: straight back to the page
    expect(app.locator("input[data-test=stall_minutes]")).to_have_value("20")
    expect(app.locator("select[data-test=mail-server]")).to_have_value(f"{uuid},{host}")
    # configure-module started the sync service: Status reads it from systemd
    admin.go("status")
    service = app.locator("[data-test=service-imapsync]")
    expect(service).to_contain_text(re.compile(r"\bactive\b"))
    expect(service).not_to_contain_text("inactive")
    admin.shot("status")


def test_about_shows_metadata_and_installed_version(admin: Admin) -> None:
    app = admin.login("about")
    expect(app.locator("[data-test=app-name]")).to_have_text("Imapsync")
    # list-installed-modules, a cluster task: the tag of the node's module image
    expect(app.locator("[data-test=version]")).to_have_text("localnode", timeout=30000)
    admin.shot("about")


def test_italian_browser_gets_italian_pages(admin_factory, configured: dict) -> None:
    admin = admin_factory(locale="it-IT")
    app = admin.login("tasks")
    expect(app.locator(".app-main h2")).to_have_text("Attività")
    nav = app.locator("nav")
    for label in ("Stato", "Impostazioni", "Attività", "Informazioni sull'app"):
        expect(nav).to_contain_text(label)
    expect(app.locator("[data-test=create-task]")).to_have_text("Crea attività")
    app.locator("[data-test=create-task]").click()
    form = app.locator("[data-test=task-form]")
    expect(form).to_contain_text("Casella locale")
    expect(form).to_contain_text("Password remota")
    expect(form).not_to_contain_text("Remote password")
    admin.shot("create-task-it")
    form.get_by_role("button", name="Annulla").click()
    admin.go("settings")
    expect(app.locator(".app-main h2")).to_have_text("Impostazioni")
    expect(app.locator(".app-main")).to_contain_text("Server di posta")


def overflows(admin: Admin) -> dict:
    """How far the module page spills out of its iframe sideways, and whether
    every toolbar button and nav link is inside the viewport."""
    return admin.page.frame_locator("iframe").locator("body").evaluate(
        """() => {
            const doc = document.documentElement;
            const inside = (el) => { const r = el.getBoundingClientRect(); return r.left >= 0 && r.right <= doc.clientWidth + 1; };
            const controls = [...document.querySelectorAll('.tasks-toolbar button, nav a')];
            return {scroll: doc.scrollWidth - doc.clientWidth, outside: controls.filter((e) => !inside(e)).map((e) => e.textContent.trim()),
                    controls: controls.length};
        }"""
    )


def test_layout_holds_at_1280_and_390_px(admin_factory, configured: dict) -> None:
    for name, viewport in (("wide", WIDE), ("narrow", NARROW)):
        admin = admin_factory(viewport=viewport)
        app = admin.login("tasks")
        expect(app.locator("[data-test=toolbar]")).to_be_visible()
        for page_name in ("tasks", "settings", "status", "about"):
            if page_name != "tasks":
                admin.go(page_name)
                app.locator(".app-main h2").wait_for()
            admin.page.wait_for_timeout(300)
            found = overflows(admin)
            assert found["scroll"] <= 0, f"{page_name} at {viewport['width']} px scrolls sideways by {found['scroll']} px"
            assert not found["outside"], f"{page_name} at {viewport['width']} px: outside the viewport: {found['outside']}"
            assert found["controls"] >= 4
            if page_name == "tasks":
                admin.shot(f"tasks-{name}")


def test_results_arrive_by_polling_when_the_websocket_drops_them(admin: Admin, configured: dict) -> None:
    """cluster-admin's fallback: a task silent for 8.1 s is asked for its status.
    Here the websocket passes only each task's first message, so no page could
    learn a task ended unless it polls."""
    first_seen: set[str] = set()

    def relay(ws) -> None:
        server = ws.connect_to_server()
        ws.on_message(lambda m: server.send(m))

        def from_server(message) -> None:
            msg = json.loads(message)
            if msg.get("type") != "task" or msg["name"] not in first_seen:
                first_seen.add(msg.get("name", ""))
                ws.send(message)

        server.on_message(from_server)

    admin.page.route_web_socket(re.compile(r"/cluster-admin/ws$"), relay)
    app = admin.login("status")
    expect(app.locator("[data-test=instance-card]")).to_contain_text("imapsync1", timeout=30000)
    assert first_seen, "the websocket was not relayed through the test"
