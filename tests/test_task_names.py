"""Two tasks never share files: `<localuser>_<task_id>` must name one task.

A local user may hold `_`, so a new task id may not; files the reference module
wrote with `_` in the id keep working, and every action or helper acts only on
files whose LOCALUSER and TASK_ID are the ones it was asked for. Unit tests on
a StateDir, then the actions through api-cli on the local node."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import pytest
from localnode import mailusers
from localnode.cluster import AGENT_PYPKG
from localnode.config import NodeConfig
from ns8_imapsync.statedir import StateDir
from ns8_imapsync.task import TASK_ID_RE, Task, TaskError, format_env
from ns8_imapsync.upgrade import upgrade_task_files
from taskdata import task_input, wait_idle

sys.path.append(str(AGENT_PYPKG))  # the csvimport modules reach NS8's `agent` through ns8.py
from ns8_imapsync.csvimport import apply, plan  # noqa: E402
from ns8_imapsync.csvimport.parse import Row  # noqa: E402
from ns8_imapsync.taskrules import check_request  # noqa: E402

BASE = dict(remotehostname="imap.example.org", remoteport=143, remoteusername="alice@example.org")


def reference_env(localuser: str, task_id: str, host: str = "imap.example.org", port: int = 143,
                  user: str = "alice@example.org", extra: str = "") -> str:
    """A task file as the reference module wrote it (imapsync flags as values)."""
    return (f"\nTASK_ID={task_id}\nLOCALUSER={localuser}\nREMOTEUSERNAME={user}\nREMOTEHOSTNAME={host}\n"
            f"REMOTEPORT={port}\nSECURITY=--tls1\nDELETE_LOCAL=\nDELETEFOLDER=\nEXCLUDE=\nDELETE_REMOTE=\n"
            f"SIEVE_ENABLED=\nEXPUNGE_REMOTE=\nCRON=\nFOLDER_INBOX=\n{extra}")


@pytest.fixture
def state(tmp_path: Path) -> StateDir:
    st = StateDir(tmp_path / "imapsync", tmp_path / "cron")
    st.ensure()
    return st


def legacy(state: StateDir, localuser: str, task_id: str, **kw: object) -> dict[str, bytes]:
    """A reference-module task with its password and log; returns its files' bytes."""
    name = f"{localuser}_{task_id}"
    state.files(name).env.write_text(reference_env(localuser, task_id, **kw))  # type: ignore[arg-type]
    state.files(name).password.write_text("legacy-secret\n")
    state.files(name).log.write_text("legacy log\n")
    return files(state)


def files(state: StateDir) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for d in (state.tasks_dir, state.cron_dir) if d.is_dir() for p in d.iterdir()}


def request(localuser: str, task_id: str, **over: object) -> dict:
    return {"localuser": localuser, "task_id": task_id, **BASE, "security": "tls", "remotepassword": "pw",
            "delete_local": False, "delete_remote": False, "delete_remote_older": 0, "exclude": "", "cron": "",
            "foldersynchronization": "all", "sieve_enabled": False, **over}


# ---------------------------------------------------------------------------- unit: the rules
@pytest.mark.parametrize("task_id", ["abc123", "a1j44r", "x-y-z", "0"])
def test_new_ids_are_letters_digits_and_dashes(state: StateDir, task_id: str) -> None:
    assert state.resolve("u2", task_id) == f"u2_{task_id}"
    assert check_request(request("u2", task_id), state).task_id == task_id


@pytest.mark.parametrize("task_id", ["b_c", "ab_", "a__b"])
def test_a_new_id_with_underscore_is_refused(state: StateDir, task_id: str) -> None:
    with pytest.raises(TaskError) as exc:
        check_request(request("a", task_id), state)
    assert (exc.value.field, exc.value.error, exc.value.value) == ("task_id", "task_id_is_not_valid", task_id)


def test_the_collision_is_refused_both_ways(state: StateDir) -> None:
    """(`a_b`, `c`) and (`a`, `b_c`) are both `a_b_c`: whichever exists keeps its files."""
    state.save(check_request(request("a_b", "c"), state), "first")
    before = files(state)
    with pytest.raises(TaskError) as exc:
        check_request(request("a", "b_c"), state)  # no such legacy task: the id is not valid
    assert exc.value.error == "task_id_is_not_valid"
    with pytest.raises(TaskError) as exc:
        state.save(Task(localuser="a", task_id="b_c", **BASE), "second")  # below the request checks
    assert (exc.value.field, exc.value.error) == ("task_id", "task_id_is_already_used")
    assert files(state) == before

    other = StateDir(state.tasks_dir.parent / "other", state.cron_dir.parent / "other-cron")
    other.ensure()
    before = legacy(other, "a", "b_c")
    with pytest.raises(TaskError) as exc:
        check_request(request("a_b", "c"), other)
    assert (exc.value.field, exc.value.error, exc.value.value) == ("task_id", "task_id_is_already_used", "c")
    assert files(other) == before


def test_a_file_that_names_nobody_is_not_free(state: StateDir) -> None:
    state.files("u2_abc123").env.write_text("garbage\n")
    with pytest.raises(TaskError) as exc:
        check_request(request("u2", "abc123"), state)
    assert exc.value.error == "task_id_is_already_used"


def test_load_delete_and_list_see_only_the_owner(state: StateDir) -> None:
    before = legacy(state, "a", "b_c")
    assert state.load("a_b", "c") is None
    assert state.load("a", "b_c").task_id == "b_c"
    with pytest.raises(TaskError) as exc:
        state.delete("a_b", "c")
    assert exc.value.error == "task_not_found"
    assert files(state) == before
    assert [(t.localuser, t.task_id) for t in state.tasks()] == [("a", "b_c")]
    assert state.load_name("a_b_c").localuser == "a"  # syncctl's name: the file's own task
    assert state.delete("a", "b_c") is True and files(state) == {}


def test_a_misnamed_file_is_nobodys_task(state: StateDir) -> None:
    """A copied or renamed .env names another task: acting on it would touch that task's files."""
    state.files("u2_copy01").env.write_text(format_env(Task(localuser="u2", task_id="abc123", **BASE).to_env()))
    assert state.tasks() == []
    assert state.load_name("u2_copy01") is None and state.load_name("u2_abc123") is None
    assert state.load("u2", "copy01") is None


def test_a_legacy_id_is_accepted_only_for_its_own_file(state: StateDir) -> None:
    legacy(state, "a", "b_c")
    assert state.resolve("a", "b_c") == "a_b_c"
    task = check_request(request("a", "b_c", remotepassword=""), state)  # an edit keeps the stored password
    state.save(task, None)
    assert state.read_password(task) == "legacy-secret"
    with pytest.raises(TaskError):
        state.resolve("a", "x_y")  # no file
    with pytest.raises(TaskError):
        state.resolve("a_b", "c_d")  # not this pair's file either


def test_upgrade_keeps_a_legacy_id(state: StateDir) -> None:
    legacy(state, "u2", "ref_01", extra="EXCLUDE=,^Archive\\.[0-9]{4,}$,Junk\nFOLDERSYNCHRONIZATION=exclusion\n")
    state.files("u2_x_y").env.write_text(reference_env("u2_x", "z"))  # names another task: left alone
    upgraded, unreadable = upgrade_task_files(state)
    assert (upgraded, unreadable) == (["u2_ref_01"], ["u2_x_y.env"])
    text = state.files("u2_ref_01").env.read_text()
    assert "FORMAT_VERSION=2\n" in text and "TASK_ID=ref_01\n" in text
    task = state.load("u2", "ref_01")
    assert task.exclude == [r"^Archive\.[0-9]{4,}$", "Junk"] and state.resolve("u2", "ref_01") == "u2_ref_01"
    assert [t.name for t in state.tasks()] == ["u2_ref_01"]


# ------------------------------------------------------------------------- unit: the CSV import
def test_csv_ids_never_hold_an_underscore() -> None:
    taken_ids: set[str] = set()
    ids = [plan.new_task_id("u2", taken_ids, set()) for _ in range(2000)]
    assert all(re.fullmatch(r"[a-z0-9]{6}", i) and TASK_ID_RE.match(i) for i in ids)
    assert len(set(ids)) == len(ids)


def test_csv_ids_avoid_a_name_another_task_file_has(monkeypatch) -> None:
    drawn = iter("xyz123" + "abc456")
    monkeypatch.setattr(plan.secrets, "choice", lambda _chars: next(drawn))
    # a legacy (`a`, `b_xyz123`) owns the files of (`a_b`, `xyz123`)
    assert plan.new_task_id("a_b", set(), {"a_b_xyz123"}) == "abc456"


def _row(number: int, localuser: str, remoteuser: str, port: str = "143") -> Row:
    return Row(number, {"localusername": localuser, "remoteusername": remoteuser, "remotepassword": "pw",
                        "remotehostname": "imap.example.org", "remoteport": port, "security": "tls"})


def test_csv_update_goes_to_the_tasks_own_files(state: StateDir) -> None:
    legacy(state, "u1", "ab_cd12")  # the reference task of u1 / alice
    copy = format_env(Task(localuser="u2", task_id="zz9999", **BASE).to_env())
    state.files("u2_copy01").env.write_text(copy)  # a copy: names u2_zz9999, nobody's task
    plans = plan.plan_rows([_row(2, "u1", "alice@example.org", "993"), _row(3, "u2", "alice@example.org")],
                           state, None, update=True)
    assert [(p.action, p.task_id) for p in plans[:1]] == [("update", "ab_cd12")]
    assert plans[0].task.name == "u1_ab_cd12"
    assert plans[1].action == "create" and plans[1].task_id != "zz9999"


def test_csv_refuses_names_taken_during_the_import(state: StateDir) -> None:
    legacy(state, "u1", "ab_cd12")
    create, update = plan.plan_rows([_row(2, "u2", "bob@example.org"), _row(3, "u1", "alice@example.org", "993")],
                                    state, None, update=True)
    assert (create.action, update.action) == ("create", "update")
    state.save(Task(localuser="u2", task_id=create.task_id, **BASE), "meanwhile")  # create-task got there first
    state.files("u1_ab_cd12").env.write_text(reference_env("u1_ab", "cd12"))  # and the legacy file changed owner
    apply.refuse_taken_names(state, [create, update])
    assert (create.action, update.action) == ("fail", "fail")
    assert "belong to another task" in create.message


# ---------------------------------------------------------------------- the actions, local node
def tasks_dir(localnode: NodeConfig) -> Path:
    return localnode.module_state_dir("imapsync1") / "imapsync"


def snapshot(localnode: NodeConfig) -> dict[str, bytes]:
    state = localnode.module_state_dir("imapsync1")
    return {f"{d}/{p.name}": p.read_bytes() for d in ("imapsync", "cron") if (state / d).is_dir()
            for p in (state / d).iterdir() if p.is_file() and p.name != "vmail.pwd"}


def write_reference(localnode: NodeConfig, localuser: str, task_id: str, remoteuser: str, extra: str = "") -> str:
    """A reference-module task of `remoteuser` on the local node's remote server."""
    r = localnode.remote
    name = f"{localuser}_{task_id}"
    (tasks_dir(localnode) / f"{name}.env").write_text(
        reference_env(localuser, task_id, r.host, r.imap_port, remoteuser, extra))
    (tasks_dir(localnode) / f"{name}.pwd").write_text(r.users[remoteuser] + "\n")
    return name


def failure(proc) -> tuple[int, list[dict]]:
    return proc.returncode, json.loads(proc.stdout)


@pytest.fixture
def u2_x(localnode: NodeConfig):
    """A mailbox whose name looks like a task file's prefix (u2_x): create-task takes only
    enabled mailboxes, and the collision needs a task of this user."""
    mailusers.add_user(localnode.mail1, "u2_x", "Mailbox,u2x-1")
    yield
    mailusers.remove_user(localnode.mail1, "u2_x")


@pytest.fixture
def clean(cli, localnode, configured, u2_x):
    """No task before and after; also the files a test wrote that no list shows."""
    def wipe() -> None:
        for t in cli.api_ok("module/imapsync1/list-tasks")["user_properties"]:
            cli.api_ok("module/imapsync1/delete-task", {"localuser": t["localuser"], "task_id": t["task_id"]})
        for p in tasks_dir(localnode).glob("u2_x_t1*"):
            p.unlink()
    wipe()
    yield
    wipe()


def test_create_task_never_gives_one_tasks_files_to_another(cli, localnode, clean) -> None:
    """(`u2_x`, `t1`) then (`u2`, `x_t1`): the second would overwrite the first's
    files, keep its password and sync alice's mail into u2_x's mailbox."""
    cli.api_ok("module/imapsync1/create-task", task_input(localnode, localuser="u2_x", task_id="t1"))
    before = snapshot(localnode)
    r = localnode.remote
    proc = cli.api("module/imapsync1/create-task", task_input(
        localnode, localuser="u2", task_id="x_t1", remoteusername="alice@remote.test",
        remotepassword=r.users["alice@remote.test"]))
    assert failure(proc) == (3, [{"field": "task_id", "parameter": "task_id", "value": "x_t1",
                                  "error": "task_id_is_not_valid"}])
    assert {k: v for k, v in snapshot(localnode).items() if k.endswith((".env", ".pwd", ".cron"))} == \
        {k: v for k, v in before.items() if k.endswith((".env", ".pwd", ".cron"))}
    (item,) = cli.api_ok("module/imapsync1/list-tasks")["user_properties"]
    assert (item["localuser"], item["task_id"], item["remoteusername"]) == ("u2_x", "t1", "carol@remote.test")


def test_create_task_refuses_the_files_of_a_reference_task(cli, localnode, clean) -> None:
    write_reference(localnode, "u2", "x_t1", "alice@remote.test")
    before = snapshot(localnode)
    proc = cli.api("module/imapsync1/create-task", task_input(localnode, localuser="u2_x", task_id="t1"))
    assert failure(proc) == (3, [{"field": "task_id", "parameter": "task_id", "value": "t1",
                                  "error": "task_id_is_already_used"}])
    assert snapshot(localnode) == before


def test_task_actions_leave_another_tasks_files_alone(cli, localnode, clean) -> None:
    name = write_reference(localnode, "u2", "x_t1", "alice@remote.test")
    (tasks_dir(localnode) / f"{name}.log").write_text("alice's log\n")
    before = snapshot(localnode)
    foreign = {"localuser": "u2_x", "task_id": "t1"}
    for action in ("delete-task", "get-log", "start-task", "stop-task"):
        proc = cli.api(f"module/imapsync1/{action}", foreign)
        assert failure(proc) == (3, [{"field": "task_id", "parameter": "task_id", "value": "t1",
                                      "error": "task_not_found"}]), action
        assert snapshot(localnode) == before, action
    assert cli.api_ok("module/imapsync1/list-informations", foreign) == \
        {"status": False, "reason": "task u2_x_t1 does not exist"}
    assert snapshot(localnode) == before
    # the owner still reaches them
    assert cli.api_ok("module/imapsync1/get-log", {"localuser": "u2", "task_id": "x_t1"})["log_content"] == \
        "alice's log\n"


def test_a_reference_task_with_underscore_keeps_working(cli, localnode, clean) -> None:
    """Upgraded by update-module, then listed, started, stopped, edited and deleted by its own id."""
    name = write_reference(localnode, "u2", "ref_01", "carol@remote.test", extra="CRON=15m\n")
    proc = cli.api("module/imapsync1/update-module", {"module_url": "ghcr.io/nethserver/imapsync:latest",
                                                      "force": False})
    assert proc.returncode == 0, proc.stderr
    assert "TASK_ID=ref_01\n" in (tasks_dir(localnode) / f"{name}.env").read_text()
    (item,) = cli.api_ok("module/imapsync1/list-tasks")["user_properties"]
    assert (item["localuser"], item["task_id"], item["remoteusername"]) == ("u2", "ref_01", "carol@remote.test")
    ref = {"localuser": "u2", "task_id": "ref_01"}
    cli.api_ok("module/imapsync1/start-task", ref)
    assert wait_idle(cli, "ref_01")["last_sync_state"] == "succeeded"
    cli.api_ok("module/imapsync1/stop-task", ref)
    assert cli.api_ok("module/imapsync1/get-log", ref)["log_content"]
    cli.api_ok("module/imapsync1/create-task", task_input(localnode, **ref, remotepassword="", cron="1h"))
    (item,) = cli.api_ok("module/imapsync1/list-tasks")["user_properties"]
    assert (item["task_id"], item["cron"]) == ("ref_01", "1h")
    # but no new task gets such an id
    proc = cli.api("module/imapsync1/create-task", task_input(localnode, localuser="u2", task_id="ref_02"))
    assert failure(proc)[1][0]["error"] == "task_id_is_not_valid"
    cli.api_ok("module/imapsync1/delete-task", ref)
    assert [p.name for p in tasks_dir(localnode).glob("u2_ref_0*")] == []
    assert not (localnode.module_state_dir("imapsync1") / "cron" / f"{name}.cron").exists()
