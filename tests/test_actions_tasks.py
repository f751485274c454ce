"""Task actions through api-cli on the local node: valid input, documented errors, hostile input."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest
from localnode import corpus, dovecot, redisd
from localnode.config import NodeConfig
from ns8_imapsync.statedir import StateDir
from ns8_imapsync.sync.plan import SyncPlan
from ns8_imapsync.task import Task, format_env
from taskdata import REMOTE_USER, task_input, wait_idle


def files_of(localnode: NodeConfig) -> dict[str, bytes]:
    """The tasks' definitions (not their run records): .env, .pwd, .cron."""
    state = localnode.module_state_dir("imapsync1")
    found = {}
    for sub in ("imapsync", "cron"):
        d = state / sub
        if d.is_dir():
            found.update({f"{sub}/{p.name}": p.read_bytes() for p in d.iterdir()
                          if p.name != "vmail.pwd" and p.suffix in (".env", ".pwd", ".cron")})
    return found


@pytest.fixture
def clean(cli, localnode, configured):
    """Every test starts and ends with no task."""
    def wipe() -> None:
        for t in cli.api_ok("module/imapsync1/list-tasks")["user_properties"]:
            cli.api_ok("module/imapsync1/delete-task", {"localuser": t["localuser"], "task_id": t["task_id"]})
    wipe()
    yield
    wipe()


def test_create_list_delete(cli, localnode, clean) -> None:
    data = task_input(localnode, cron="5m", exclude="^Junk$,Sent Items", foldersynchronization="exclusion",
                      delete_remote=True, delete_remote_older=30)
    cli.api_ok("module/imapsync1/create-task", data)
    listing = cli.api_ok("module/imapsync1/list-tasks")
    assert [m["value"] for m in listing["enabled_mailboxes"]] == ["u1", "u2", "u3"]  # u4 is disabled
    (item,) = listing["user_properties"]
    expected = {k: v for k, v in data.items() if k != "remotepassword"}
    expected.update(remoteport=str(data["remoteport"]), remotepassword="")
    assert {k: item[k] for k in expected} == expected
    # a created task syncs at once
    done = wait_idle(cli, "t0001")
    assert (done["last_sync_state"], done["last_sync_exit_code"]) == ("succeeded", 0), done
    assert done["has_log"] is True and done["last_sync_timestamp"] > 0
    state = localnode.module_state_dir("imapsync1")
    for name in ("u2_t0001.env", "u2_t0001.pwd"):
        assert stat.S_IMODE(os.stat(state / "imapsync" / name).st_mode) == 0o600
    assert (state / "imapsync" / "u2_t0001.pwd").read_text() == data["remotepassword"] + "\n"
    cron = (state / "cron" / "u2_t0001.cron").read_text().splitlines()
    assert cron[0] == f"MAIL_HOST={localnode.mail1.host}"
    assert "*/5 * * * * root /usr/local/bin/syncctl start u2_t0001" in cron
    cli.api_ok("module/imapsync1/delete-task", {"localuser": "u2", "task_id": "t0001"})
    assert cli.api_ok("module/imapsync1/list-tasks")["user_properties"] == []
    assert files_of(localnode) == {}
    run_files = [p.name for p in (localnode.module_state_dir("imapsync1") / "imapsync").iterdir()
                 if p.name.startswith("u2_t0001")]
    assert run_files == []


@pytest.mark.parametrize("over,error,exit_code", [
    ({"remotepassword": "wrong"}, "bad_user_credentials", 2),
    ({"remoteport": 9}, "Check_hostname_or_tcp_port", 3),
    ({"remotehostname": "no-such-host.invalid"}, "Check_hostname_or_tcp_port", 3),
    ({"security": "ssl"}, "SSL_encryption_error", 4),  # IMAPS against the STARTTLS port
])
def test_refused_login_keeps_nothing(cli, localnode, clean, over, error, exit_code) -> None:
    proc = cli.api("module/imapsync1/create-task", task_input(localnode, **over))
    assert proc.returncode == exit_code, proc.stderr
    assert json.loads(proc.stdout) == [{"field": "createTask", "parameter": "createTask", "value": error,
                                        "error": error}]
    assert files_of(localnode) == {}


def test_imaps_port_works(cli, localnode, clean) -> None:
    cli.api_ok("module/imapsync1/create-task", task_input(localnode, security="ssl",
                                                          remoteport=localnode.remote.imaps_port))


def test_refused_edit_leaves_the_task_as_it_was(cli, localnode, clean) -> None:
    cli.api_ok("module/imapsync1/create-task", task_input(localnode, cron="10m"))
    before = files_of(localnode)
    proc = cli.api("module/imapsync1/create-task", task_input(localnode, remotepassword="wrong", cron="1h",
                                                              remoteusername="bob@remote.test"))
    assert proc.returncode == 2
    assert files_of(localnode) == before


def test_edit_with_empty_password_keeps_the_stored_one(cli, localnode, clean) -> None:
    cli.api_ok("module/imapsync1/create-task", task_input(localnode))
    pwd = localnode.module_state_dir("imapsync1") / "imapsync" / "u2_t0001.pwd"
    stored = pwd.read_bytes()
    cli.api_ok("module/imapsync1/create-task", task_input(localnode, remotepassword="", cron="2h"))
    assert pwd.read_bytes() == stored
    assert cli.api_ok("module/imapsync1/list-tasks")["user_properties"][0]["cron"] == "2h"
    # but a new task needs one
    proc = cli.api("module/imapsync1/create-task", task_input(localnode, task_id="t0002", remotepassword=""))
    assert proc.returncode == 3 and json.loads(proc.stdout)[0]["field"] == "remotepassword"


HOSTILE = ["../../etc/passwd", "a;rm -rf /", "$(id)", "`id`", "a b", "a|b", "a\nb", "..", "/abs", "x" * 10240]


@pytest.mark.parametrize("field", ["localuser", "task_id"])
@pytest.mark.parametrize("value", HOSTILE)
def test_hostile_names_are_refused_by_the_schema(cli, localnode, clean, field, value) -> None:
    proc = cli.api("module/imapsync1/create-task", task_input(localnode, **{field: value}))
    assert proc.returncode == 10, proc.stdout
    assert field in {e["parameter"] for e in json.loads(proc.stdout)}
    assert "Validation errors" in proc.stderr
    assert files_of(localnode) == {}


@pytest.mark.parametrize("field,value,code", [
    ("remoteusername", "a\nEVIL=1", 3),
    ("remoteusername", "x" * 10240, 10),
    ("remotehostname", "a;b", 10),
    ("remotehostname", "$(id).example.org", 10),
    ("remotepassword", "x" * 10240, 10),
    ("exclude", "x" * 10240, 10),
    ("exclude", "(unclosed", 3),
    ("exclude", "^Junk$,(a+)+$", 3),  # backtracks for ever on a long folder name
    ("cron", "2d", 10),
    ("cron", "* * * * * root /bin/sh", 10),
    ("remoteport", "143", 10),
    ("remoteport", 0, 10),
    ("delete_remote", "yes", 10),
    ("security", "starttls", 10),
    ("delete_local", True, 3),  # with delete_remote: the remote copy could be the only one
])
def test_bad_values_name_the_field(cli, localnode, clean, field, value, code) -> None:
    over = {field: value, "delete_remote": True} if field == "delete_local" else {field: value}
    proc = cli.api("module/imapsync1/create-task", task_input(localnode, **over))
    assert proc.returncode == code, proc.stdout + proc.stderr
    assert field in {e["parameter"] for e in json.loads(proc.stdout)}
    assert files_of(localnode) == {}


def local_folders(localnode: NodeConfig, user: str) -> set[str]:
    proc = dovecot.doveadm(localnode.mail1, "mailbox", "list", "-u", user)
    return set(proc.stdout.decode().split("\n")) - {""}


def test_exclude_with_commas_in_patterns_round_trips_and_excludes(cli, localnode, clean) -> None:
    """`{4,}` keeps its comma: list-tasks gives the same list back, the run's plan has
    the pattern whole, and the folder it names is not synced (split at the comma,
    `^Archive\\.[0-9]{4` would match nothing and the folder would be copied)."""
    remote = localnode.remote
    created = ["Archive.2024", "Archive.old"]
    dovecot.doveadm(remote, "mailbox", "create", "-u", REMOTE_USER, *created)
    exclude = r"^Archive\.[0-9]{4,}$,(Junk|Spam\,Ham),[,;]x"
    try:
        data = task_input(localnode, foldersynchronization="exclusion", exclude=exclude)
        cli.api_ok("module/imapsync1/create-task", data)
        (item,) = cli.api_ok("module/imapsync1/list-tasks")["user_properties"]
        assert item["exclude"] == exclude
        state = StateDir(localnode.module_state_dir("imapsync1") / "imapsync")
        plan = SyncPlan.from_task(state.load("u2", "t0001"), state.tasks_dir, localnode.mail1.host, 143)
        assert plan.exclude == [r"^Archive\.[0-9]{4,}$", r"(Junk|Spam\,Ham)", "[,;]x"]
        assert wait_idle(cli, "t0001")["last_sync_state"] == "succeeded"
        folders = local_folders(localnode, "u2")
        assert "Archive/old" in folders and "Archive/2024" not in folders, folders
    finally:
        dovecot.doveadm(remote, "mailbox", "delete", "-u", REMOTE_USER, *created, check=False)
        dovecot.doveadm(localnode.mail1, "mailbox", "delete", "-u", "u2", "-s", "Archive/old", "Archive",
                        check=False)


def test_backtracking_exclude_is_refused_naming_the_field(cli, localnode, clean) -> None:
    proc = cli.api("module/imapsync1/create-task", task_input(
        localnode, foldersynchronization="exclusion", exclude=r"^Junk$,^(\w+\s?)+$"))
    assert proc.returncode == 3, proc.stdout + proc.stderr
    assert json.loads(proc.stdout) == [{"field": "exclude", "parameter": "exclude", "value": r"^(\w+\s?)+$",
                                        "error": "exclude_backtracks_catastrophically"}]
    assert files_of(localnode) == {}


def test_unknown_and_missing_fields(cli, localnode, clean) -> None:
    proc = cli.api("module/imapsync1/create-task", task_input(localnode, surprise=1))
    assert proc.returncode == 10
    assert json.loads(proc.stdout)[0]["error"] == "(root)_additional_property_not_allowed"
    data = task_input(localnode)
    del data["remoteusername"]
    proc = cli.api("module/imapsync1/create-task", data)
    assert proc.returncode == 10 and json.loads(proc.stdout)[0]["error"] == "(root)_required"
    proc = cli.run("api-cli", "run", "module/imapsync1/create-task")  # no --data: null
    assert proc.returncode == 10


def test_get_log(cli, localnode, clean) -> None:
    assert cli.api_ok("module/imapsync1/get-log", {"localuser": "u2", "task_id": "nolog1"}) == \
        {"log_content": "", "truncated": False}
    tasks_dir = localnode.module_state_dir("imapsync1") / "imapsync"
    log = tasks_dir / "u2_biglog.log"
    lines = [f"line {i:06d} " + "x" * 90 for i in range(2000)]  # ~200 KB
    log.write_text("\n".join(lines) + "\n")
    env = tasks_dir / "u2_biglog.env"
    try:
        # a log no task file owns is nobody's to read
        assert cli.api_ok("module/imapsync1/get-log", {"localuser": "u2", "task_id": "biglog"}) == \
            {"log_content": "", "truncated": False}
        env.write_text(format_env(Task(localuser="u2", task_id="biglog", remotehostname="127.0.0.3", remoteport=143,
                                    remoteusername="x@remote.test").to_env()))
        out = cli.api_ok("module/imapsync1/get-log", {"localuser": "u2", "task_id": "biglog"})
        assert out["truncated"] is True and len(out["log_content"]) <= 102400
        assert out["log_content"].startswith("line ") and out["log_content"].endswith("line 001999 " + "x" * 90 + "\n")
    finally:
        log.unlink()
        env.unlink(missing_ok=True)
    for bad in ({"localuser": "u2", "task_id": "../../environment"}, {"localuser": "U2;x", "task_id": "abc123"}):
        proc = cli.api("module/imapsync1/get-log", bad)
        assert proc.returncode == 10 and "Validation errors" in proc.stderr


def test_get_facts(cli, localnode, clean) -> None:
    cli.api_ok("module/imapsync1/create-task", task_input(localnode, task_id="f1", delete_remote=True,
                                                          cron="5m"))
    cli.api_ok("module/imapsync1/create-task", task_input(localnode, task_id="f2", foldersynchronization="inbox",
                                                          delete_remote=True, delete_remote_older=5,
                                                          sieve_enabled=True))
    cli.api_ok("module/imapsync1/create-task", task_input(localnode, task_id="f3", foldersynchronization="inbox"))
    assert cli.api_ok("module/imapsync1/get-facts") == {
        "tasks_total_count": 3, "tasks_delete_count": 2, "tasks_delete_older_count": 1,
        "tasks_inbox_count": 2, "tasks_inbox_and_delete_count": 1, "tasks_cron_enabled_count": 1,
        "tasks_sieve_enabled_count": 1,
    }


def test_list_tasks_when_mail_module_is_unconfigured(cli, localnode, clean) -> None:
    cli.api_ok("module/imapsync1/create-task", task_input(localnode))
    env = localnode.module_state_dir("mail1") / "environment"
    saved = env.read_text()
    try:
        env.write_text("".join(ln + "\n" for ln in saved.splitlines() if not ln.startswith("MAIL_HOSTNAME=")))
        out = cli.api_ok("module/imapsync1/list-tasks")
        assert out["enabled_mailboxes"] == [] and "reason" in out
        assert [t["task_id"] for t in out["user_properties"]] == ["t0001"]  # tasks still shown
    finally:
        env.write_text(saved)


def test_no_password_leaks(cli, localnode, clean) -> None:
    """Not in action output or errors, the journal, Redis, the environment files or a command line."""
    password = localnode.remote.users[REMOTE_USER]
    outputs = []
    for data in (task_input(localnode), task_input(localnode, remotepassword=password + "X"),
                 task_input(localnode, remoteport=9)):
        proc = cli.api("module/imapsync1/create-task", data)
        outputs += [proc.stdout, proc.stderr]
    outputs.append(cli.api("module/imapsync1/list-tasks").stdout)
    for text in outputs:
        assert password not in text
    journal = (localnode.log_dir / "journal.log").read_text(errors="replace")
    assert password not in journal
    rdb = redisd.connect(localnode)
    for key in rdb.scan_iter("task/module/imapsync1/*"):
        value = rdb.get(key) or ""
        assert password not in value, key
    for mid in ("imapsync1", "mail1"):
        state = localnode.module_state_dir(mid)
        for name in ("environment", "agent.env"):
            assert password not in (state / name).read_text()
        assert password not in json.dumps(rdb.hgetall(f"module/{mid}/environment"))
    for proc_dir in Path("/proc").iterdir():
        if proc_dir.name.isdigit():
            try:
                cmdline = (proc_dir / "cmdline").read_bytes().decode(errors="replace")
            except OSError:
                continue
            assert password not in cmdline.replace("\0", " ")


def test_list_informations(cli, localnode, clean) -> None:
    remote = localnode.remote
    user = "dave@remote.test"
    dovecot.wipe(remote, user)
    manifest = corpus.fill(remote, user, remote.users[user], seed=7, count=30, large=1, large_size=200_000)
    data = task_input(localnode, localuser="u3", task_id="info01", remoteusername=user,
                      remotepassword=remote.users[user])
    dovecot.wipe(localnode.mail1, "u3")
    cli.api_ok("module/imapsync1/create-task", data)
    assert wait_idle(cli, "info01")["last_sync_state"] == "succeeded"  # the first sync
    info = cli.api_ok("module/imapsync1/list-informations", {"localuser": "u3", "task_id": "info01"})
    assert info["status"] is True
    assert info["host1Messages"] == len(manifest)
    assert info["host1Sizes"] == sum(m["size"] for m in manifest)
    assert info["host1Folders"] >= len({m["folder"] for m in manifest})
    # every message arrived (all copies of a duplicate too) in the same folders
    assert (info["host2Messages"], info["host2Folders"]) == (info["host1Messages"], info["host1Folders"])
    # exclusion mode counts only what the task would sync
    cli.api_ok("module/imapsync1/create-task", {**data, "remotepassword": "", "foldersynchronization": "exclusion",
                                                "exclude": "^INBOX$"})
    excl = cli.api_ok("module/imapsync1/list-informations", {"localuser": "u3", "task_id": "info01"})
    inbox = [m for m in manifest if m["folder"] == "INBOX"]
    assert excl["host1Messages"] == len(manifest) - len(inbox) and excl["host1Folders"] == info["host1Folders"] - 1
    # a server that cannot be reached is a readable status, not a failed action
    env = localnode.module_state_dir("imapsync1") / "imapsync" / "u3_info01.env"
    env.write_text(env.read_text().replace(f"REMOTEPORT={remote.imap_port}", "REMOTEPORT=9"))
    down = cli.api_ok("module/imapsync1/list-informations", {"localuser": "u3", "task_id": "info01"})
    assert down["status"] is False and down["reason"]
    missing = cli.api_ok("module/imapsync1/list-informations", {"localuser": "u3", "task_id": "nosuch"})
    assert missing == {"status": False, "reason": "task u3_nosuch does not exist"}


@pytest.mark.parametrize("action", ["delete-task", "start-task", "stop-task", "get-log", "list-informations"])
@pytest.mark.parametrize("over", [
    {"localuser": "../../x"}, {"task_id": "../environment"}, {"task_id": "a;id"}, {"localuser": "$(id)"},
    {"task_id": "x" * 10240}, {"localuser": 5}, {"surprise": "1"}, {"localuser": None},
])
def test_task_actions_refuse_hostile_names(cli, localnode, clean, action, over) -> None:
    cli.api_ok("module/imapsync1/create-task", task_input(localnode))
    before = files_of(localnode)
    proc = cli.api(f"module/imapsync1/{action}", {"localuser": "u2", "task_id": "t0001", **over})
    assert proc.returncode == 10, (proc.stdout, proc.stderr)
    assert "Validation errors" in proc.stderr
    param = next(iter(over))
    assert {e["parameter"] for e in json.loads(proc.stdout)} & {param, "(root)"}
    assert files_of(localnode) == before


@pytest.mark.parametrize("action", ["start-task", "stop-task"])
def test_start_stop_unknown_task(cli, localnode, clean, action) -> None:
    proc = cli.api(f"module/imapsync1/{action}", {"localuser": "u2", "task_id": "nosuch"})
    assert proc.returncode == 3
    assert json.loads(proc.stdout)[0]["error"] == "task_not_found"


def test_stop_all_tasks(cli, localnode, clean) -> None:
    cli.api_ok("module/imapsync1/create-task", task_input(localnode))
    cli.api_ok("module/imapsync1/create-task", task_input(localnode, task_id="t0002"))
    out = cli.api_ok("module/imapsync1/stop-all-tasks")
    assert sorted(out["done"]) == ["u2_t0001", "u2_t0002"] and out["failed"] == []
    for t in cli.api_ok("module/imapsync1/list-tasks")["user_properties"]:
        assert t["service_running"] is False


def test_configure_module_hostile_input(cli, configured) -> None:
    for bad in ({"mail_server": configured["mail_server"], "mail_host": "a;rm -rf /"},
                {"mail_server": configured["mail_server"], "mail_host": "$(id)"},
                {"mail_server": "../../etc", "mail_host": "10.5.4.1"},
                {"mail_server": configured["mail_server"], "mail_host": "h\nX=1"}):
        proc = cli.api("module/imapsync1/configure-module", bad)
        assert proc.returncode == 10, bad
    assert cli.api_ok("module/imapsync1/get-configuration")["mail_host"] == configured["mail_host"]
