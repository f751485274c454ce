"""The module as NS8 runs it: real images, the real unit under `systemd --user`,
rootless podman, cron inside the container, `podman exec syncctl` from actions.

One scenario, in order (each test starts from where the previous one left the
node): configure, sync, cron, stop, restart during a sync, a boot where the
mail module answers late, removal. See conftest.py for the set-up.
"""

from __future__ import annotations

import json
import os
import pwd
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from ctsuite import MODULE, Images
from faultproxy import FaultProxy
from localnode import cluster, corpus, dovecot, node, redisd, usermanager
from localnode.config import LOCALNODE_SRC, NodeConfig
from mailboxes import mailbox
from ns8_imapsync.imap.connection import Endpoint

UNIT = "imapsync.service"
SLOW_COUNT = 60  # messages behind the throttling proxy


# ---------------------------------------------------------------------------
# helpers
def api(cfg: NodeConfig, action: str, data: object = None, timeout: float = 180) -> subprocess.CompletedProcess:
    """`api-cli run module/imapsync1/<action>` as an administrator runs it."""
    env = dict(os.environ, LOCALNODE_DIR=str(cfg.state_dir), PATH=f"{LOCALNODE_SRC / 'bin'}:{os.environ['PATH']}")
    env.pop("PYTHONPATH", None)
    argv = ["api-cli", "run", f"module/{MODULE}/{action}"] + ([] if data is None else ["--data", json.dumps(data)])
    return subprocess.run(argv, capture_output=True, text=True, env=env, timeout=timeout)


def api_ok(cfg: NodeConfig, action: str, data: object = None) -> object:
    proc = api(cfg, action, data)
    assert proc.returncode == 0, f"{action} failed ({proc.returncode}): {proc.stdout} {proc.stderr}"
    return json.loads(proc.stdout)


def as_module(*argv: str, timeout: float = 120) -> subprocess.CompletedProcess:
    """A command as the module's Unix user (rootless podman, systemctl --user)."""
    return usermanager.run_as(MODULE, list(argv), capture_output=True, text=True, timeout=timeout)


def unit_show(prop: str) -> str:
    return as_module("systemctl", "--user", "show", "-p", prop, "--value", UNIT).stdout.strip()


def container_id() -> str:
    proc = as_module("podman", "ps", "--filter", "name=^imapsync$", "--format", "{{.ID}} {{.Image}}")
    return proc.stdout.strip()


def wait_for(check: Callable[[], object], timeout: float, what: str, every: float = 0.5) -> object:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(every)
    raise AssertionError(f"{what}: not within {timeout:.0f} s")


def task_entry(cfg: NodeConfig, task_id: str) -> dict | None:
    items = api_ok(cfg, "list-tasks")["user_properties"]  # type: ignore[index]
    return next((t for t in items if t["task_id"] == task_id), None)


def wait_idle(cfg: NodeConfig, task_id: str, timeout: float = 240) -> dict:
    def idle() -> dict | None:
        t = task_entry(cfg, task_id)
        return t if t and not t["service_running"] and t["last_sync_state"] else None
    return wait_for(idle, timeout, f"task {task_id} idle", every=1)  # type: ignore[return-value]


def wait_running(cfg: NodeConfig, task_id: str, timeout: float = 60) -> dict:
    return wait_for(lambda: (t := task_entry(cfg, task_id)) and t["state"] == "running" and t,  # type: ignore[return-value]
                    timeout, f"task {task_id} running", every=0.3)


def task_dir(cfg: NodeConfig) -> Path:
    return cfg.module_state_dir(MODULE) / "imapsync"


def task_input(cfg: NodeConfig, localuser: str, task_id: str, remote_user: str, **over: object) -> dict:
    r = cfg.remote
    data = {"localuser": localuser, "task_id": task_id, "remotehostname": r.host, "remoteport": r.imap_port,
            "security": "tls", "remoteusername": remote_user, "remotepassword": r.users[remote_user],
            "delete_local": False, "delete_remote": False, "delete_remote_older": 0, "exclude": "",
            "cron": "", "foldersynchronization": "all", "sieve_enabled": False}
    data.update(over)
    return data


def engine_processes() -> list[int]:
    """Sync runs (`syncctl start` processes) anywhere on the machine: the
    container's processes are the host's too, in another pid namespace."""
    from localnode.procs import run_processes

    return run_processes()


# run inside the container: how many `syncctl start` processes (argv items, as localnode.procs counts)
COUNT_RUNS = """
import pathlib
def argv(p):
    try:
        return p.read_bytes().split(b"\\0")
    except OSError:
        return []
print(sum(b"ns8_imapsync.cli.syncctl" in a and b"start" in a for a in map(argv, pathlib.Path("/proc").glob("[0-9]*/cmdline"))))
"""


def identical(cfg: NodeConfig, remote_user: str, local_user: str) -> bool:
    """The comparator: every folder, message, flag set and date the same on both sides."""
    r, m = cfg.remote, cfg.mail1
    remote = Endpoint(r.host, r.imap_port, "tls", remote_user)
    local = Endpoint(m.host, m.imap_port, "tls", f"{local_user}{m.master_separator}{m.master_user}")
    return mailbox(remote, r.users[remote_user]) == mailbox(local, str(m.master_password))


@pytest.fixture(scope="module")
def slow_remote(ctnode: NodeConfig) -> Iterator[FaultProxy]:
    """dave's mailbox behind a throttling proxy on the host's loopback: a sync that lasts."""
    remote = ctnode.remote
    dovecot.wipe(remote, "dave@remote.test")
    corpus.fill(remote, "dave@remote.test", remote.users["dave@remote.test"], seed=11, count=SLOW_COUNT, large=1,
                large_size=600_000)
    with FaultProxy(remote.host, remote.imap_port) as proxy:
        proxy.throttle(40_000)
        yield proxy


def slow_task(cfg: NodeConfig, proxy: FaultProxy) -> dict:
    return task_input(cfg, "u3", "ctslow", "dave@remote.test", remotehostname=proxy.host,
                      remoteport=proxy.port, security="")


# ---------------------------------------------------------------------------
def test_configure_module_starts_the_service_and_its_container(ctnode: NodeConfig, images: Images) -> None:
    assert images.labels["org.nethserver.rootfull"] == "0"
    assert images.labels["org.nethserver.images"] == images.sync
    conf = api_ok(ctnode, "get-configuration")
    uuid, host = conf["mail_server_URL"][0]["value"].split(",", 1)  # type: ignore[index]
    api_ok(ctnode, "configure-module", {"mail_server": uuid, "mail_host": host})
    assert as_module("systemctl", "--user", "is-active", UNIT).stdout.strip() == "active"
    assert unit_show("UnitFileState") == "enabled"
    ps = container_id()
    assert ps.endswith(images.sync), ps
    # what the unit gave it: the mail server, the two volumes, --init
    info = as_module("podman", "exec", "imapsync", "/usr/local/bin/syncctl", "info").stdout
    assert f"mail server: {ctnode.mail1.host}:{ctnode.mail1.imap_port}" in info, info
    inspect = json.loads(as_module("podman", "inspect", "imapsync").stdout)[0]
    assert {m["Destination"] for m in inspect["Mounts"]} == {"/etc/imapsync", "/etc/cron.d"}
    assert inspect["HostConfig"]["Init"] is True and inspect["HostConfig"]["NetworkMode"] == "host"
    pw = task_dir(ctnode) / "vmail.pwd"
    assert pw.stat().st_mode & 0o777 == 0o600 and pw.read_text().strip() == ctnode.mail1.master_password
    assert pw.stat().st_uid == pwd.getpwnam(MODULE).pw_uid


def test_create_task_syncs_through_podman_exec(ctnode: NodeConfig) -> None:
    remote = ctnode.remote
    dovecot.wipe(remote, "alice@remote.test")
    dovecot.wipe(ctnode.mail1, "u1")
    manifest = corpus.fill(remote, "alice@remote.test", remote.users["alice@remote.test"], seed=7, count=40,
                           large=1, large_size=300_000)
    api_ok(ctnode, "create-task", task_input(ctnode, "u1", "ctsync", "alice@remote.test"))
    done = wait_idle(ctnode, "ctsync")
    assert done["last_sync_state"] == "succeeded", done
    assert done["last_sync_listed"] == done["last_sync_found"] == len(manifest)
    assert identical(ctnode, "alice@remote.test", "u1")
    log = api_ok(ctnode, "get-log", {"localuser": "u1", "task_id": "ctsync"})["log_content"]  # type: ignore[index]
    # the Debian image has no imapsync: the native engine ran, inside the container
    assert log.startswith("run of u1_ctsync with the native engine"), log[:200]
    journal = as_module("podman", "logs", "imapsync").stdout + as_module("podman", "logs", "imapsync").stderr
    assert "imapsync task u1_ctsync: succeeded" in journal, journal[-2000:]
    status = json.loads(as_module("podman", "exec", "imapsync", "/usr/local/bin/syncctl", "status",
                                  "u1_ctsync").stdout)
    assert status["running"] is False and status["status"]["state"] == "succeeded"


def test_cron_in_the_container_runs_custom_files_and_scheduled_tasks(ctnode: NodeConfig) -> None:
    remote = ctnode.remote
    dovecot.wipe(remote, "bob@remote.test")
    dovecot.wipe(ctnode.mail1, "u2")
    corpus.fill(remote, "bob@remote.test", remote.users["bob@remote.test"], seed=8, count=8, large=0)
    cron_dir = ctnode.module_state_dir(MODULE) / "cron"
    mark = task_dir(ctnode) / ".ct-cron-mark"
    custom = cron_dir / "ct-mark.custom"
    custom.write_text("* * * * * root echo tick >> /etc/imapsync/.ct-cron-mark\n")
    os.chown(custom, pwd.getpwnam(MODULE).pw_uid, pwd.getpwnam(MODULE).pw_gid)
    api_ok(ctnode, "create-task", task_input(ctnode, "u2", "ctcron", "bob@remote.test", cron="1m"))
    assert (cron_dir / "u2_ctcron.cron").exists()
    status_file = task_dir(ctnode) / "u2_ctcron.status.json"

    def scheduled_run_done() -> bool:
        try:
            st = json.loads(status_file.read_text())
        except (OSError, ValueError):
            return False
        return st.get("trigger") == "schedule" and st.get("state") in ("succeeded", "failed", "crashed")

    try:
        wait_for(lambda: mark.exists(), 130, "the *.custom cron file's mark")
        wait_for(scheduled_run_done, 130, "a run of the 1m task started by cron")
        st = json.loads(status_file.read_text())
        # cron's jobs have cron's environment: a run with the wrong mail port would fail here
        assert st["state"] == "succeeded", st
        assert identical(ctnode, "bob@remote.test", "u2")
    finally:
        custom.unlink(missing_ok=True)
        api_ok(ctnode, "delete-task", {"localuser": "u2", "task_id": "ctcron"})
    assert not (cron_dir / "u2_ctcron.cron").exists()


def test_stop_task_ends_the_run_inside_the_container(ctnode: NodeConfig, slow_remote: FaultProxy) -> None:
    dovecot.wipe(ctnode.mail1, "u3")
    api_ok(ctnode, "create-task", slow_task(ctnode, slow_remote))  # its first sync starts at once
    wait_running(ctnode, "ctslow")
    assert engine_processes(), "no sync process while the task shows running"
    api_ok(ctnode, "stop-task", {"localuser": "u3", "task_id": "ctslow"})
    entry = task_entry(ctnode, "ctslow")
    assert entry and entry["service_running"] is False and entry["state"] == "stopped", entry
    assert engine_processes() == []
    inside = as_module("podman", "exec", "imapsync", "python3", "-c", COUNT_RUNS)
    assert inside.stdout.strip() == "0", inside


def test_restart_during_a_sync_shows_crashed_and_the_next_run_has_no_duplicates(
        ctnode: NodeConfig, slow_remote: FaultProxy) -> None:
    before = container_id()
    api_ok(ctnode, "start-task", {"localuser": "u3", "task_id": "ctslow"})
    wait_running(ctnode, "ctslow")
    wait_for(lambda: (task_dir(ctnode) / "u3_ctslow.progress.json").exists(), 30, "progress of the run")
    restart = as_module("systemctl", "--user", "restart", UNIT)
    assert restart.returncode == 0, restart.stderr
    assert container_id() not in ("", before)
    entry = task_entry(ctnode, "ctslow")
    assert entry and entry["service_running"] is False and entry["state"] in ("crashed", "failed"), entry
    assert not list(task_dir(ctnode).glob("*.progress.json")) and not list(task_dir(ctnode).glob("*.pid"))
    assert engine_processes() == []
    slow_remote.throttle(None)
    api_ok(ctnode, "start-task", {"localuser": "u3", "task_id": "ctslow"})
    done = wait_idle(ctnode, "ctslow")
    assert done["last_sync_state"] == "succeeded", done
    assert done["last_sync_listed"] == done["last_sync_found"] == SLOW_COUNT
    assert identical(ctnode, "dave@remote.test", "u3")  # every message once: no duplicates


def test_a_boot_with_the_mail_module_late_still_brings_the_unit_up(ctnode: NodeConfig) -> None:
    usermanager.stop(ctnode, MODULE)  # shutdown: the manager stops the unit, the user's processes end
    assert usermanager.user_pids(pwd.getpwnam(MODULE).pw_uid) == []
    node.stop_pidfile(ctnode.run_dir / "agentd.pid")  # no agent: the mail module does not answer
    try:
        cluster.start_user_managers(ctnode)  # boot: linger starts systemd --user, which starts the unit
        # reveal-master-secret gives up after its attempts, the unit start fails and is retried
        wait_for(lambda: int(unit_show("NRestarts") or 0) >= 1, 150, "a retried start of the unit", every=2)
        assert unit_show("ActiveState") == "activating", unit_show("ActiveState")
        assert container_id() == ""
    finally:
        node.start_agentd(ctnode)
    wait_for(lambda: unit_show("ActiveState") == "active", 90, "the unit active once the mail module answers")
    assert container_id()
    assert task_entry(ctnode, "ctsync")["state"] == "succeeded"  # type: ignore[index]


def test_remove_module_leaves_nothing_behind(ctnode: NodeConfig) -> None:
    uid = pwd.getpwnam(MODULE).pw_uid
    home = ctnode.home_dir(MODULE)
    cluster.remove_module(ctnode, MODULE)
    with pytest.raises(KeyError):
        pwd.getpwnam(MODULE)
    assert usermanager.user_pids(uid) == [], "processes of the module's user are left"
    assert not home.exists() and not Path(f"/run/user/{uid}").exists()
    assert not any((t / "user.slice" / f"user-{uid}.slice").exists() for t in usermanager.CGROUP_TREES)
    rdb = redisd.connect(ctnode)
    assert list(rdb.scan_iter(match=f"module/{MODULE}/*")) == []
    assert f"module/{MODULE}" not in rdb.execute_command("ACL", "USERS")
    assert MODULE not in cluster.installed(ctnode)
    ps = subprocess.run(["ps", "-e", "-o", "uid=,args="], capture_output=True, text=True).stdout
    assert not [line for line in ps.splitlines() if line.split(None, 1)[0] == str(uid)]
