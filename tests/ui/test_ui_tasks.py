"""The Tasks page in Chromium, through the cluster-admin stand-in and the real
actions on the local node: a task created through the form syncs a real
mailbox while its progress bar moves; a refused login lands on the password
field; edit, stop, start, delete; Informations and History against the
actions' own numbers; the log download; a CSV import of three rows; search,
sort, start all / stop all; and the auto-refresh never has two list-tasks in
flight."""

from __future__ import annotations

import re
import time

import pytest
from faultproxy import FaultProxy
from localnode import adminapi, corpus, dovecot
from localnode.config import NodeConfig
from playwright.sync_api import FrameLocator, expect

from ui.uibrowser import Admin, NodeCli, field_box

ALICE = "alice@remote.test"
BOB = "bob@remote.test"
ALICE_MESSAGES = 600  # 23 MB: through SLOW_LINK, a first sync of about 10 s
BOB_MESSAGES = 500  # through SLOW_LINK: about 8 s, stopped halfway
SLOW_LINK = 2_500_000  # bytes per second each way
EDITABLE = ("localuser", "task_id", "remoteusername", "delete_local", "delete_remote", "delete_remote_older",
            "exclude", "cron", "foldersynchronization", "sieve_enabled")


def fill_remote(cfg: NodeConfig, user: str, count: int, seed: int) -> None:
    """The remote mailbox holds exactly `count` deterministic messages."""
    dovecot.wipe(cfg.remote, user)
    corpus.fill(cfg.remote, user, cfg.remote.users[user], seed=seed, count=count, large=1, large_size=400_000)


def task_name(node_cli: NodeCli, remote_user: str) -> str:
    found = [t for t in node_cli.tasks() if t["remoteusername"] == remote_user]
    assert len(found) == 1, found
    return f"{found[0]['localuser']}_{found[0]['task_id']}"


def wait_task(node_cli: NodeCli, name: str, states: tuple[str, ...], timeout: float = 240) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        task = next((t for t in node_cli.tasks() if f"{t['localuser']}_{t['task_id']}" == name), None)
        if task and task["state"] in states:
            return task
        time.sleep(1)
    raise AssertionError(f"{name} never reached {states}")


def row(app: FrameLocator, name: str):
    return app.locator(f"tr[data-task={name}]")


def menu(app: FrameLocator, name: str, item: str) -> None:
    """Open the row's overflow menu and pick an item (Carbon moves the menu to <body>)."""
    app.locator(f"[data-test=menu-{name}] button").first.click()
    app.locator(f"[data-test={item}-{name}]").click()


def choose(app: FrameLocator, name: str) -> None:
    """Pick a radio button as a user does: by its label (Carbon hides the input itself)."""
    radio = app.locator(f"input[data-test={name}]")
    app.locator(f"label[for='{radio.get_attribute('id')}']").click()
    expect(radio).to_be_checked()


def open_form(app: FrameLocator):
    app.locator("[data-test=create-task]").click()
    form = app.locator("[data-test=task-form]")
    expect(form).to_have_class(re.compile("is-visible"))
    return form


def fill_form(app: FrameLocator, local: str, remote: str, password: str, server: tuple[str, int, str]) -> None:
    """The Create task form, as typed: `server` is (host, port, encryption)."""
    box = app.locator("[data-test=localuser] input")
    box.click()
    box.fill(local)
    app.locator(".bx--list-box__menu-item", has_text=re.compile(rf"^\s*{local}\s*$")).click()
    app.locator("input[data-test=remoteusername]").fill(remote)
    app.locator("input[data-test=remotepassword]").fill(password)
    app.locator("input[data-test=remotehostname]").fill(server[0])
    app.locator("select[data-test=security]").select_option(server[2])
    app.locator("input[data-test=remoteport]").fill(str(server[1]))


@pytest.fixture(scope="module")
def alice_task(configured: dict, node_cli: NodeCli, ui_node: NodeConfig) -> dict:
    """u1 <- alice, synced: made by the form test when it ran, else by api-cli."""
    found = [t for t in node_cli.tasks() if t["remoteusername"] == ALICE]
    if not found:
        fill_remote(ui_node, ALICE, ALICE_MESSAGES, seed=11)
        dovecot.wipe(ui_node.mail1, "u1")
        node_cli.api("create-task", {
            "localuser": "u1", "task_id": "alic01", "remotehostname": ui_node.remote.host,
            "remoteport": ui_node.remote.imap_port, "security": "tls", "remoteusername": ALICE,
            "remotepassword": ui_node.remote.users[ALICE], "delete_local": False, "delete_remote": False,
            "delete_remote_older": 0, "exclude": "", "cron": "", "foldersynchronization": "all",
            "sieve_enabled": False})
    name = task_name(node_cli, ALICE)
    return wait_task(node_cli, name, ("succeeded",))


def test_wrong_password_is_shown_on_the_password_field_and_creates_nothing(
        admin: Admin, configured: dict, node_cli: NodeCli, ui_node: NodeConfig) -> None:
    app = admin.login("tasks")
    form = open_form(app)
    fill_form(app, "u1", ALICE, "not-alice-password", (ui_node.remote.host, ui_node.remote.imap_port, "tls"))
    form.get_by_role("button", name="Create task").click()
    expect(field_box(app, "remotepassword")).to_contain_text("refused the user or the password", timeout=60000)
    expect(field_box(app, "remotehostname")).not_to_contain_text("reached")
    expect(form).to_have_class(re.compile("is-visible"))  # still open, to fix the password
    admin.shot("create-task-wrong-password")
    assert node_cli.tasks() == []
    form.get_by_role("button", name="Cancel").click()
    expect(app.locator("[data-test=empty-tasks]")).to_be_visible()
    # a form opened again starts empty: the combo box too
    open_form(app)
    expect(app.locator("[data-test=localuser] input")).to_have_value("")
    expect(app.locator("input[data-test=remotepassword]")).to_have_value("")


def install_flicker_watch(app: FrameLocator) -> None:
    """Record any skeleton (the loading placeholder) that appears in the table from now on."""
    app.locator(".tasks-tile").evaluate("""(tile) => {
        window.__skeletons = 0;
        new MutationObserver((records) => {
            for (const r of records) for (const n of r.addedNodes)
                if (n.nodeType === 1 && (n.matches('[class*=skeleton]') || n.querySelector('[class*=skeleton]'))) window.__skeletons++;
        }).observe(tile, {childList: true, subtree: true});
    }""")


def test_create_task_syncs_to_completion_with_the_progress_bar_moving(
        admin: Admin, configured: dict, node_cli: NodeCli, ui_node: NodeConfig) -> None:
    fill_remote(ui_node, ALICE, ALICE_MESSAGES, seed=11)
    dovecot.wipe(ui_node.mail1, "u1")
    app = admin.login("tasks")
    # a remote server behind a slow link, so the run lasts long enough to watch
    with FaultProxy(ui_node.remote.host, ui_node.remote.imap_port) as slow:
        slow.throttle(SLOW_LINK)
        form = open_form(app)
        fill_form(app, "u1", ALICE, ui_node.remote.users[ALICE], (slow.host, slow.port, ""))
        admin.shot("create-task")
        install_flicker_watch(app)
        form.get_by_role("button", name="Create task").click()
        expect(form).not_to_have_class(re.compile("is-visible"), timeout=60000)
        name = task_name(node_cli, ALICE)
        the_row = row(app, name)
        expect(the_row).to_be_visible()
        handle = the_row.element_handle()
        seen = watch_progress(admin, the_row, ALICE_MESSAGES)
    # the bar moved forward, and it shows the share of the messages done
    assert len(seen) >= 2 and seen == sorted(seen) and seen[-1][1] > seen[0][1], f"progress seen: {seen}"
    assert all(value == done * 100 // ALICE_MESSAGES for done, value in seen), seen
    expect(the_row).to_contain_text(f"Succeeded: {ALICE_MESSAGES} of {ALICE_MESSAGES} remote messages")
    expect(the_row.locator("[data-state]").first).to_have_attribute("data-state", "idle")
    # every refresh updated the row in place: same element, never a skeleton
    assert handle.evaluate("(e) => e.isConnected")
    assert app.locator("body").evaluate("() => window.__skeletons") == 0
    task = node_cli.tasks()[0]
    assert (task["last_sync_state"], task["last_sync_found"]) == ("succeeded", ALICE_MESSAGES)
    admin.shot("tasks")
    # the proxy is gone: the task goes straight to the server from now on (the password is kept)
    node_cli.api("create-task", {**{k: task[k] for k in EDITABLE}, "remotehostname": ui_node.remote.host,
                                 "remoteport": ui_node.remote.imap_port, "security": "tls", "remotepassword": ""})
    wait_task(node_cli, name, ("succeeded",))


def watch_progress(admin: Admin, the_row, total: int) -> list[tuple[int, int]]:
    """(messages done, the bar's value) each time the row's progress changed, until the run succeeded."""
    seen: list[tuple[int, int]] = []
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline:
        state = the_row.locator("[data-state]").first.get_attribute("data-state")
        text = the_row.locator("[data-test=progress-messages]")
        bar = the_row.locator("[data-test=progress-bar]")
        if state == "running" and text.count() and bar.count():
            m = re.search(r"(\d+) of (\d+) messages", text.inner_text())
            value = bar.get_attribute("aria-valuenow")
            if m and value and int(m.group(2)) == total and (not seen or int(m.group(1)) != seen[-1][0]):
                seen.append((int(m.group(1)), int(value)))
                if len(seen) == 2:
                    admin.shot("tasks-running")
        if the_row.locator("[data-result=succeeded]").count():
            return seen
        admin.page.wait_for_timeout(250)
    raise AssertionError(f"the run did not succeed; progress seen: {seen}")


def test_informations_and_history_show_the_real_numbers(
        admin: Admin, alice_task: dict, node_cli: NodeCli) -> None:
    name = f"{alice_task['localuser']}_{alice_task['task_id']}"
    ids = {"localuser": alice_task["localuser"], "task_id": alice_task["task_id"]}
    counted = node_cli.api("list-informations", ids)
    assert counted["status"] and counted["host1Messages"] == ALICE_MESSAGES
    app = admin.login("tasks")
    menu(app, name, "informations")
    info = app.locator("[data-test=informations]")
    expect(info.locator("[data-test=remote-messages]")).to_have_text(str(counted["host1Messages"]), timeout=60000)
    expect(info.locator("[data-test=local-messages]")).to_have_text(str(counted["host2Messages"]))
    expect(info.locator("[data-test=remote-folders]")).to_have_text(str(counted["host1Folders"]))
    expect(info.locator("[data-test=copied-share]")).to_contain_text("100% of the remote messages")
    admin.shot("informations")
    info.locator(".bx--modal-close").click()
    history = node_cli.api("get-task-history", ids)["history"]
    assert history and history[0]["state"] == "succeeded"
    menu(app, name, "history")
    dialog = app.locator("[data-test=history]")
    newest = dialog.locator("[data-test=run-0]")
    expect(newest).to_have_attribute("data-state", "succeeded")
    expect(newest.locator("[data-test=run-found]")).to_have_text(
        f"{history[0]['found']} of {history[0]['listed']}")
    expect(newest.locator("[data-test=run-copied]")).to_have_text(str(history[0]["copied"]))
    expect(dialog.locator("tbody tr")).to_have_count(len(history))
    admin.shot("history")


def test_download_log_saves_the_task_log(admin: Admin, alice_task: dict, ui_node: NodeConfig) -> None:
    name = f"{alice_task['localuser']}_{alice_task['task_id']}"
    app = admin.login("tasks")
    with admin.page.expect_download() as download:
        menu(app, name, "log")
    file = download.value
    assert re.fullmatch(rf"imapsync_{name}_\d{{8}}_\d{{4}}\.log", file.suggested_filename)
    text = open(file.path(), encoding="utf-8").read()
    assert text.strip(), "the log of a finished run is not empty"
    assert ui_node.remote.users[ALICE] not in text


def test_edit_stop_start_and_delete(admin: Admin, configured: dict, node_cli: NodeCli, ui_node: NodeConfig) -> None:
    fill_remote(ui_node, BOB, BOB_MESSAGES, seed=12)
    dovecot.wipe(ui_node.mail1, "u2")
    with FaultProxy(ui_node.remote.host, ui_node.remote.imap_port) as slow:
        slow.throttle(SLOW_LINK)  # runs long enough to be stopped halfway
        node_cli.api("create-task", {  # create-task starts a first sync at once
            "localuser": "u2", "task_id": "bob001", "remotehostname": slow.host, "remoteport": slow.port,
            "security": "", "remoteusername": BOB, "remotepassword": ui_node.remote.users[BOB],
            "delete_local": False, "delete_remote": False, "delete_remote_older": 0, "exclude": "", "cron": "",
            "foldersynchronization": "all", "sieve_enabled": False})
        name = "u2_bob001"
        app = admin.login("tasks")
        the_row = row(app, name)
        stop_and_start(app, node_cli, name)
        edit_schedule_and_folders(app, node_cli, name)
    # Delete, behind the name typed in the danger dialog
    menu(app, name, "delete")
    dialog = app.locator("[data-test=delete-task]")
    confirm = dialog.get_by_role("button", name="I understand, delete")
    expect(confirm).to_be_disabled()
    dialog.locator("input").fill(name)
    confirm.click()
    expect(the_row).to_have_count(0, timeout=60000)
    assert all(t["task_id"] != "bob001" for t in node_cli.tasks())
    assert not list((ui_node.module_state_dir("imapsync1") / "imapsync").glob(f"{name}.*"))


def stop_and_start(app: FrameLocator, node_cli: NodeCli, name: str) -> None:
    """While the task runs, Edit is blocked and Stop ends the run; Start runs it to the end."""
    the_row = row(app, name)
    expect(the_row.locator("[data-test=progress]")).to_be_visible(timeout=60000)
    app.locator(f"[data-test=menu-{name}] button").first.click()
    expect(app.locator(f"[data-test=edit-{name}] button")).to_be_disabled()
    app.locator(f"[data-test=stop-{name}]").click()
    expect(the_row.locator("[data-result=stopped]")).to_be_visible(timeout=120000)
    expect(the_row.locator("[data-state]").first).to_have_attribute("data-state", "idle")
    assert wait_task(node_cli, name, ("stopped",))["last_sync_state"] == "stopped"
    menu(app, name, "start")
    expect(the_row.locator("[data-state]").first).to_have_attribute("data-state", re.compile("queued|running"))
    expect(the_row.locator("[data-result=succeeded]")).to_be_visible(timeout=240000)
    expect(the_row).to_contain_text(f"{BOB_MESSAGES} of {BOB_MESSAGES}")


def edit_schedule_and_folders(app: FrameLocator, node_cli: NodeCli, name: str) -> None:
    """Edit the schedule and the excluded folders; the stored password is kept (left empty)."""
    menu(app, name, "edit")
    form = app.locator("[data-test=task-form]")
    expect(form).to_contain_text("Edit the task of u2")
    expect(app.locator("input[data-test=remotepassword]")).to_have_value("")
    choose(app, "schedule-minutes")
    app.locator("input[data-test=schedule_minutes]").fill("30")
    choose(app, "folders-exclusion")
    app.locator("textarea[data-test=exclude]").fill("^Junk$\n^Archive/[0-9]{4,}$")
    form.get_by_role("button", name="Save").click()
    expect(form).not_to_have_class(re.compile("is-visible"), timeout=60000)
    expect(row(app, name).locator("[data-test=schedule]")).to_have_text("Every 30 minutes")
    task = wait_task(node_cli, name, ("succeeded",))
    assert (task["cron"], task["foldersynchronization"], task["exclude"]) == (
        "30m", "exclusion", "^Junk$,^Archive/[0-9]{4,}$")


CSV_ROWS = [("u1", BOB), ("u2", "carol@remote.test"), ("u3", "dave@remote.test")]


def test_import_csv_of_three_rows_checks_then_imports(
        admin: Admin, configured: dict, node_cli: NodeCli, ui_node: NodeConfig, tmp_path) -> None:
    remote = ui_node.remote
    users = remote.users
    lines = ["localusername,remoteusername,remotepassword,remotehostname,remoteport,security"]
    for local, user in CSV_ROWS:  # carol's password is full of quotes, commas and `$`
        lines.append(f'{local},{user},"{users[user].replace(chr(34), chr(34) * 2)}",{remote.host},{remote.imap_port},tls')
    path = tmp_path / "users.csv"
    path.write_text("\n".join(lines) + "\n")
    before = {t["task_id"] for t in node_cli.tasks()}
    app = admin.login("tasks")
    app.locator("[data-test=import-csv]").click()
    dialog = app.locator("[data-test=import-csv-dialog]")
    app.locator("input[data-test=csv-file]").set_input_files(str(path))
    expect(app.locator("[data-test=csv-file-name]")).to_have_text("users.csv")
    dialog.get_by_role("button", name="Check", exact=True).click()
    result = app.locator("[data-test=import-result]")
    expect(result).to_have_attribute("data-check", "true", timeout=120000)
    for number in (2, 3, 4):
        expect(result.locator(f"[data-test=import-row-{number}]")).to_have_attribute("data-outcome", "would-create")
    assert {t["task_id"] for t in node_cli.tasks()} == before, "a check changes nothing"
    dialog.get_by_role("button", name="Import", exact=True).click()
    expect(result).to_have_attribute("data-check", "false", timeout=120000)
    expect(result.locator("[data-test=import-summary]")).to_contain_text("3 created, 0 updated, 0 skipped, 0 failed")
    admin.shot("import-csv")
    for number in (2, 3, 4):
        expect(result.locator(f"[data-test=import-row-{number}]")).to_have_attribute("data-outcome", "created")
    dialog.get_by_role("button", name="Close", exact=True).click()
    made = {(t["localuser"], t["remoteusername"]) for t in node_cli.tasks() if t["task_id"] not in before}
    assert made == set(CSV_ROWS)
    for t in node_cli.tasks():
        if t["task_id"] not in before:
            expect(row(app, f"{t['localuser']}_{t['task_id']}")).to_be_visible()
    # the passwords went in; none came back, from any API answer, nor into the stand-in's log
    secrets = [users[u] for _, u in CSV_ROWS]
    leaked = [s for s in secrets for body in admin.watch.api_bodies if s in body]
    assert not leaked, "a password came back in an API answer"
    log = (ui_node.log_dir / "adminapi.log").read_text()
    assert not [s for s in secrets if s in log]


def test_search_and_sort_the_table(admin: Admin, configured: dict, node_cli: NodeCli) -> None:
    tasks = node_cli.tasks()
    assert len(tasks) >= 3, "runs after the CSV import"
    app = admin.login("tasks")
    rows = app.locator("tr[data-task]")
    expect(rows).to_have_count(len(tasks))
    app.locator("input[data-test=search]").fill("carol")
    expect(rows).to_have_count(1)
    expect(rows.first).to_contain_text("carol@remote.test")
    admin.page.wait_for_url(re.compile(r"search=carol"))  # the search is in cluster-admin's URL
    app.locator("input[data-test=search]").fill("")
    expect(rows).to_have_count(len(tasks))
    heading = app.locator("th", has_text="Remote user").locator("button")
    heading.click()  # ascending
    first_up = rows.first.get_attribute("data-task")
    heading.click()  # descending
    expect(rows.first).not_to_have_attribute("data-task", first_up)
    by_remote = sorted(tasks, key=lambda t: t["remoteusername"].lower(), reverse=True)
    expect(rows.first).to_have_attribute("data-task", f"{by_remote[0]['localuser']}_{by_remote[0]['task_id']}")


def test_start_all_and_stop_all_report_every_task(admin: Admin, configured: dict, node_cli: NodeCli) -> None:
    count = len(node_cli.tasks())
    app = admin.login("tasks")
    app.locator("[data-test=start-all]").click()
    notice = app.locator("[data-test=notice]")
    expect(notice).to_contain_text(f"{count} tasks queued to start", timeout=120000)
    app.locator("[data-test=stop-all]").click()
    expect(notice).to_contain_text(f"{count} tasks stopped", timeout=180000)
    assert not [t for t in node_cli.tasks() if t["service_running"]]


SLOW_LIST_TASKS = """(() => {
    if (window.top === window) {
        // cluster-admin: answer every list-tasks 4 s late, as a loaded node would
        let core;
        window.__answered = [];
        Object.defineProperty(window, "core", { configurable: true, get: () => core, set: (value) => {
            core = value;
            const emit = value.$root.$emit.bind(value.$root);
            value.$root.$emit = function (event, ...args) {
                if (/^list-tasks-completed-/.test(event)) {
                    setTimeout(() => { window.__answered.push(Date.now()); emit(event, ...args); }, 4000);
                    return this;
                }
                return emit(event, ...args);
            };
        }});
    } else {
        // the module: when each list-tasks is asked for
        window.__asked = [];
        const send = XMLHttpRequest.prototype.send;
        XMLHttpRequest.prototype.send = function (body) {
            try { if (JSON.parse(body).action === "list-tasks") window.__asked.push(Date.now()); } catch (e) {}
            return send.call(this, body);
        };
    }
})()"""


def test_auto_refresh_never_has_two_list_tasks_in_flight(admin: Admin, configured: dict) -> None:
    admin.page.context.add_init_script(SLOW_LIST_TASKS)
    app = admin.login("tasks")
    expect(app.locator("[data-test=toolbar]")).to_be_visible(timeout=30000)
    for _ in range(3):  # an impatient administrator on top of the auto-refresh
        app.locator("[data-test=reload]").click()
        admin.page.wait_for_timeout(700)
    admin.page.wait_for_timeout(12000)
    asked = app.locator("body").evaluate("() => window.__asked")
    answered = admin.page.evaluate("() => window.__answered")
    assert len(asked) >= 3, asked  # it does refresh by itself
    for i in range(1, len(asked)):
        assert i - 1 < len(answered) and answered[i - 1] <= asked[i], (
            f"list-tasks #{i + 1} asked before #{i} was answered: asked {asked}, answered {answered}")
    # three clicks while one was in flight made one more request, not three
    assert len(asked) <= 2 + 16 // 4, asked


def test_stand_in_rejects_a_bad_token_and_a_bad_login(ui_node: NodeConfig) -> None:
    """The API answers only with the login's token, as cluster-admin's api-server does."""
    import json
    import urllib.error
    import urllib.request

    base = f"http://127.0.0.1:{adminapi.port(ui_node)}/cluster-admin/api"

    def post(path: str, body: dict, token: str = "") -> int:
        req = urllib.request.Request(base + path, data=json.dumps(body).encode(), method="POST",
                                     headers={"Content-Type": "application/json", "Authorization": f"Bearer {token}"})
        try:
            with urllib.request.urlopen(req) as r:
                return r.status
        except urllib.error.HTTPError as exc:
            return exc.code

    assert post("/login", {"username": "admin", "password": "wrong"}) == 401
    assert post("/module/imapsync1/tasks", {"action": "list-tasks"}, token="x.y.z") == 401
    assert post("/module/imapsync1/tasks", {"action": "list-tasks"}) == 401
