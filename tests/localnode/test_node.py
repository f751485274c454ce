"""The local node as an administrator uses it: api-cli, runagent, roles, events."""

from __future__ import annotations

import imaplib
import json
import ssl
import subprocess
import time

from localnode import cluster, node, redisd
from localnode.config import LOCALNODE_SRC, NodeConfig


def test_node_json_lists_endpoints_and_credentials(localnode: NodeConfig) -> None:
    data = json.loads(localnode.node_json.read_text())
    assert oct(localnode.node_json.stat().st_mode & 0o777) == "0o600"
    assert data["redis"]["port"] == localnode.redis_port
    assert data["mail1"]["imap_port"] == localnode.mail1.imap_port
    assert data["mail1"]["master_user"] == "vmail" and data["mail1"]["separator"] == "/"
    assert data["remote"]["separator"] == "." and len(data["remote"]["users"]) >= 3
    assert data["bin"] == str(LOCALNODE_SRC / "bin")


def test_up_is_idempotent(localnode: NodeConfig) -> None:
    before = cluster.installed(localnode)
    node.up(localnode)
    assert cluster.installed(localnode) == before
    assert all(node.status(localnode).values())


def test_api_cli_output_and_exit_codes(cli) -> None:
    proc = cli.api("module/imapsync1/get-configuration")
    assert proc.returncode == 0, proc.stderr
    conf = json.loads(proc.stdout)
    assert conf["mail_server_URL"][0]["name"] == "mail1"
    assert conf["mail_server_URL"][0]["label"] == "mail1 (mail.domain.test)"
    # schema failure: exit 10, the error list on stdout, the Go message on stderr
    proc = cli.api("module/imapsync1/configure-module", {"mail_server": "nope"})
    assert proc.returncode == 10
    errors = json.loads(proc.stdout)
    assert {e["error"] for e in errors} == {"(root)_required", "mail_server_format"}
    assert "Validation errors" in proc.stderr
    # no --data sends null; an unknown action is exit 8
    proc = cli.run("api-cli", "run", "module/imapsync1/no-such-action")
    assert proc.returncode == 8 and "Action no-such-action is not defined" in proc.stderr
    # an agent that does not exist fails the idle check
    proc = cli.api("module/ghost9/list-actions")
    assert proc.returncode == 1 and "TaskSubmissionCheckFailed" in proc.stderr


def test_list_actions_builtin(cli) -> None:
    actions = cli.api_ok("module/imapsync1/list-actions")
    assert {"configure-module", "get-configuration", "create-module", "list-actions", "cancel-task"} <= set(actions)


def test_custom_validation_names_the_field(cli) -> None:
    proc = cli.api("module/imapsync1/configure-module",
                   {"mail_server": "00000000-0000-4000-8000-000000000000", "mail_host": "10.5.4.1"})
    assert proc.returncode == 3
    assert json.loads(proc.stdout) == [{"field": "mail_server", "parameter": "mail_server",
                                        "value": "00000000-0000-4000-8000-000000000000",
                                        "error": "mail_server_is_not_valid"}]


def test_runagent_env_cwd_and_exit_code(cli, localnode: NodeConfig) -> None:
    proc = cli.run("runagent", "-m", "imapsync1", "sh", "-c", 'pwd; echo "$AGENT_ID $MODULE_ID"; exit 5')
    assert proc.returncode == 5
    cwd, ids = proc.stdout.splitlines()
    assert cwd == str(localnode.module_state_dir("imapsync1"))
    assert ids == "module/imapsync1 imapsync1"
    proc = cli.run("runagent", "-m", "imapsync1", "-c", "pwd", cwd="/")
    assert proc.stdout.strip() == "/"
    proc = cli.run("runagent", "-m", "nosuchmodule", "true")
    assert proc.returncode != 0 and "nosuchmodule" in proc.stderr
    # the module's bin/ is first on PATH, as on NS8
    proc = cli.run("runagent", "-m", "imapsync1", "sh", "-c", "command -v reveal-master-secret")
    assert proc.stdout.strip() == str(localnode.install_dir("imapsync1") / "bin" / "reveal-master-secret")


def test_environment_mirrored_to_redis_after_action(cli, localnode: NodeConfig, configured) -> None:
    rdb = redisd.connect(localnode)
    mirror = rdb.hgetall("module/imapsync1/environment")
    assert mirror["MAIL_SERVER"] == configured["mail_server"]
    assert mirror["MODULE_ID"] == "imapsync1"


def test_module_tasks_check_roles(cli, localnode: NodeConfig, configured) -> None:
    """A module's own agent.tasks.run goes through api-server authorization."""
    script = (
        "import agent.tasks, json\n"
        "ok = agent.tasks.run('module/mail1', 'reveal-master-credentials')\n"
        "print(json.dumps(sorted(ok['output'])))\n"
        "try:\n"
        "    agent.tasks.run('module/mail1', 'configure-module', {'hostname': 'x.test', 'user_domain': 'x'})\n"
        "    print('allowed')\n"
        "except agent.tasks.ClientResponseError as exc:\n"
        "    print('denied', exc.status)\n"
    )
    proc = cli.run("runagent", "-m", "imapsync1", "python3", "-c", script)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines() == ['["password", "username"]', "denied 403"]


def test_unconfigured_mail_module_fails_list_user_mailboxes(cli, localnode: NodeConfig) -> None:
    ok = cli.api_ok("module/mail1/list-user-mailboxes")
    users = {u["user"]: u for u in ok["user_mailboxes"]}
    assert set(users) == {"u1", "u2", "u3", "u4"} and users["u4"]["enabled"] is False
    env = localnode.module_state_dir("mail1") / "environment"
    saved = env.read_text()
    try:
        env.write_text("".join(ln + "\n" for ln in saved.splitlines() if not ln.startswith("MAIL_HOSTNAME=")))
        proc = cli.api("module/mail1/list-user-mailboxes")
        assert proc.returncode == 1 and "Validation errors" in proc.stderr
    finally:
        env.write_text(saved)


def test_service_runs_in_container_standin(cli, localnode: NodeConfig, configured) -> None:
    proc = cli.run("runagent", "-m", "imapsync1", "systemctl", "--user", "is-active", "imapsync.service")
    assert proc.stdout.strip() == "active"
    pwd = localnode.module_state_dir("imapsync1") / "imapsync" / "vmail.pwd"
    assert oct(pwd.stat().st_mode & 0o777) == "0o600"
    assert pwd.read_text().strip() == localnode.mail1.master_password
    proc = cli.run("runagent", "-m", "imapsync1", "podman", "exec", "imapsync", "/usr/local/bin/syncctl", "info")
    assert proc.returncode == 0, proc.stderr
    # the container sees its /etc/imapsync mount as the module's state/imapsync
    assert f"tasks: {localnode.module_state_dir('imapsync1') / 'imapsync'}" in proc.stdout
    assert f"{localnode.mail1.host}:{localnode.mail1.imap_port}" in proc.stdout


def test_event_is_delivered_to_module_handler(cli, localnode: NodeConfig, configured) -> None:
    """mail-settings-changed from our mail module refreshes MAIL_HOST; others are ignored."""
    rdb = redisd.connect(localnode)
    key = "module/mail1/srv/tcp/imap"
    env = localnode.module_state_dir("imapsync1") / "environment"
    original = rdb.hget(key, "host")
    try:
        rdb.hset(key, "host", "127.0.0.9")
        rdb.publish("module/mail1/event/mail-settings-changed", json.dumps({"module_uuid": "someone-else"}))
        time.sleep(1.5)
        assert "MAIL_HOST=127.0.0.9" not in env.read_text()
        rdb.publish("module/mail1/event/mail-settings-changed",
                    json.dumps({"module_uuid": configured["mail_server"], "reason": "test"}))
        for _ in range(50):
            if "MAIL_HOST=127.0.0.9" in env.read_text():
                break
            time.sleep(0.2)
        assert "MAIL_HOST=127.0.0.9" in env.read_text()
    finally:
        rdb.hset(key, "host", original)
        rdb.publish("module/mail1/event/mail-settings-changed", json.dumps({"module_uuid": configured["mail_server"]}))
        # the handlers' restarts run one after the other: the last one gives the container the original host
        for _ in range(100):
            proc = cli.run("runagent", "-m", "imapsync1", "podman", "exec", "imapsync", "env")
            if f"MAIL_HOST={original}" in proc.stdout.splitlines():
                break
            time.sleep(0.2)
        assert f"MAIL_HOST={original}" in proc.stdout.splitlines()


def test_both_dovecots_reachable_with_master_login(localnode: NodeConfig) -> None:
    ctx = ssl.create_default_context(cafile=localnode.mail1.ca_cert)
    ctx.check_hostname = False
    m = localnode.mail1
    with imaplib.IMAP4(m.host, m.imap_port) as imap:
        imap.starttls(ssl_context=ctx)
        imap.login(f"u2{m.master_separator}{m.master_user}", m.master_password)
        typ, _ = imap.select("INBOX")
        assert typ == "OK"
    r = localnode.remote
    user = "carol@remote.test"  # the password full of shell and CSV metacharacters
    with imaplib.IMAP4_SSL(r.host, r.imaps_port, ssl_context=ctx) as imap:
        typ, _ = imap.login(user, r.users[user])
        assert typ == "OK"


def test_down_leaves_no_process() -> None:
    """A second, throw-away node: up, then down, and nothing of it keeps running."""
    with node.throwaway(27000, "localnode-down-") as cfg:
        assert all(node.status(cfg).values())
    time.sleep(0.3)
    ps = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True).stdout
    assert str(cfg.state_dir) not in ps
    assert not any(node.status(cfg).values())


def test_redis_port_in_use_is_a_clear_error(tmp_path) -> None:
    import socket

    import pytest

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        cfg = NodeConfig(state_dir=tmp_path, port_base=port - 379)
        with pytest.raises(RuntimeError, match="already in use"):
            redisd.start(cfg)
