"""The actions the admin UI added, run as the UI runs them (through the
agent, schemas included) on the session's local node: get-task-history and
import-csv-tasks (the CSV as text, never a password in its answer or in the
task context Redis keeps)."""

from __future__ import annotations

import json
import time

import pytest
from localnode import redisd
from localnode.config import NodeConfig
from nodecli import Cli

TASK = {"delete_local": False, "delete_remote": False, "delete_remote_older": 0, "exclude": "", "cron": "",
        "foldersynchronization": "all", "sieve_enabled": False, "security": "tls"}
HEADER = "localusername,remoteusername,remotepassword,remotehostname,remoteport,security"


def all_tasks(cli: Cli) -> list[dict]:
    return cli.api_ok("module/imapsync1/list-tasks")["user_properties"]


@pytest.fixture
def no_tasks(cli: Cli, configured: dict):
    """Every test starts and ends with no task."""
    def wipe() -> None:
        for t in all_tasks(cli):
            cli.api_ok("module/imapsync1/delete-task", {"localuser": t["localuser"], "task_id": t["task_id"]})
    wipe()
    yield
    wipe()


def wait_finished(cli: Cli, task_id: str, runs: int, timeout: float = 120) -> dict:
    """The task once its history holds `runs` runs and it is not running."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        task = next(t for t in all_tasks(cli) if t["task_id"] == task_id)
        history = cli.api_ok("module/imapsync1/get-task-history", {"localuser": task["localuser"], "task_id": task_id})
        if not task["service_running"] and len(history["history"]) >= runs:
            return history
        time.sleep(0.5)
    raise AssertionError(f"{task_id} did not finish {runs} run(s)")


def test_get_task_history_lists_the_runs_newest_first(cli: Cli, localnode: NodeConfig, no_tasks) -> None:
    remote = localnode.remote
    cli.api_ok("module/imapsync1/create-task", {  # its first run starts at once (trigger "create")
        **TASK, "localuser": "u2", "task_id": "hist01", "remotehostname": remote.host,
        "remoteport": remote.imap_port, "remoteusername": "bob@remote.test",
        "remotepassword": remote.users["bob@remote.test"]})
    wait_finished(cli, "hist01", 1)
    cli.api_ok("module/imapsync1/start-task", {"localuser": "u2", "task_id": "hist01"})
    runs = wait_finished(cli, "hist01", 2)["history"]
    assert [r["trigger"] for r in runs] == ["manual", "create"]
    assert runs[0]["started"] >= runs[1]["ended"]
    for run in runs:
        assert run["state"] == "succeeded" and run["exit_code"] == 0
        assert run["duration_seconds"] == round(run["ended"] - run["started"], 1)
        assert run["listed"] == run["found"]
        assert "pid" not in run  # the container's business only
    # list-tasks' last run is the history's newest
    last = next(t for t in all_tasks(cli) if t["task_id"] == "hist01")
    assert int(runs[0]["started"]) == last["last_sync_timestamp"]


def test_get_task_history_of_a_missing_task_is_task_not_found(cli: Cli, no_tasks) -> None:
    proc = cli.api("module/imapsync1/get-task-history", {"localuser": "u1", "task_id": "nosuch"})
    assert proc.returncode == 3
    assert json.loads(proc.stdout)[0]["error"] == "task_not_found"
    proc = cli.api("module/imapsync1/get-task-history", {"localuser": "u1", "task_id": "../x"})
    assert proc.returncode == 10  # the schema's pattern


def csv_text(localnode: NodeConfig, rows: list[tuple[str, str]]) -> str:
    remote = localnode.remote
    lines = [HEADER]
    for local, user in rows:
        quoted = remote.users[user].replace('"', '""')
        lines.append(f'{local},{user},"{quoted}",{remote.host},{remote.imap_port},tls')
    return "\n".join(lines) + "\n"


def import_contexts(localnode: NodeConfig) -> list[dict]:
    """The task contexts Redis keeps for import-csv-tasks tasks (what cluster-admin may read back)."""
    rdb = redisd.connect(localnode)
    found = []
    for key in rdb.scan_iter("task/module/imapsync1/*/context"):
        ctx = json.loads(rdb.get(key) or "{}")
        if ctx.get("action") == "import-csv-tasks":
            found.append(ctx)
    return found


def test_import_csv_tasks_checks_then_imports_and_never_answers_a_password(
        cli: Cli, localnode: NodeConfig, no_tasks) -> None:
    rows = [("u2", "carol@remote.test"), ("u3", "dave@remote.test")]  # carol's: quotes, commas, `$`
    text = csv_text(localnode, rows)
    proc = cli.api("module/imapsync1/import-csv-tasks", {"csv_secret": text, "check": True})
    assert proc.returncode == 0, proc.stderr
    checked = json.loads(proc.stdout)
    assert checked["check"] is True and checked["exit_code"] == 0
    assert [(r["row"], r["outcome"]) for r in checked["rows"]] == [(2, "would-create"), (3, "would-create")]
    assert checked["summary"] == {"created": 2, "updated": 0, "skipped": 0, "failed": 0}
    assert all_tasks(cli) == []
    proc = cli.api("module/imapsync1/import-csv-tasks", {"csv_secret": text, "start": False})
    assert proc.returncode == 0, proc.stderr
    done = json.loads(proc.stdout)
    assert [r["outcome"] for r in done["rows"]] == ["created", "created"]
    made = {(t["localuser"], t["remoteusername"], t["task_id"]) for t in all_tasks(cli)}
    assert {(r["localusername"], r["remoteusername"], r["task_id"]) for r in done["rows"]} == made
    assert any("created, 0 updated" in m for m in done["messages"])
    assert not any("standard input" in m or "Report written" in m for m in done["messages"])
    secrets = [localnode.remote.users[u] for _, u in rows]
    for answer in (checked, done):
        assert not [s for s in secrets if s in json.dumps(answer)]
    contexts = import_contexts(localnode)
    assert contexts and all(c["data"]["csv_secret"] == "XXX" for c in contexts)
    assert not [s for s in secrets for c in contexts if s in json.dumps(c)]


def test_import_csv_tasks_reports_a_bad_file_in_its_answer(cli: Cli, no_tasks) -> None:
    proc = cli.api("module/imapsync1/import-csv-tasks", {"csv_secret": "localusername,remoteusername\nu1,x\n"})
    assert proc.returncode == 0, proc.stderr  # the outcome is the answer: the UI shows it
    out = json.loads(proc.stdout)
    assert out["exit_code"] == 1 and out["summary"]["failed"] == 1
    assert out["rows"][0]["row"] is None and "Missing required column" in out["rows"][0]["message"]
    assert all_tasks(cli) == []
    bad = cli.api("module/imapsync1/import-csv-tasks", {"csv_secret": 7})
    assert bad.returncode == 10
