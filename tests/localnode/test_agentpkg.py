"""The local node's `agent` package behaves like NS8's for the module's actions.

Runs against a private redis-server; the agent side of a task is simulated by
a small thread that pops the queue and answers like the Go agent does
(result keys, then the final progress message).
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import stat
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest
import redis

REPO = Path(__file__).resolve().parents[2]
PYPKG = REPO / "tests" / "localnode" / "pypkg"
HOST_PYTHON = REPO / ".venv-host" / "bin" / "python"

sys.path.insert(0, str(PYPKG))
import agent  # noqa: E402
import agent.tasks  # noqa: E402


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def redis_server(tmp_path_factory):
    """A throw-away redis-server on a free loopback port."""
    assert shutil.which("redis-server"), "redis-server missing: run scripts/install-deps.sh (make test does)"
    workdir = tmp_path_factory.mktemp("redis")
    port = _free_port()
    proc = subprocess.Popen(
        ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--dir", str(workdir),
         "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    client = redis.Redis(port=port, decode_responses=True)
    for _ in range(100):
        try:
            client.ping()
            break
        except redis.ConnectionError:
            time.sleep(0.05)
    else:
        proc.kill()
        raise RuntimeError("redis-server did not start")
    yield port
    proc.terminate()
    proc.wait(timeout=10)


@pytest.fixture
def rdb(redis_server, monkeypatch):
    """A clean database, and the environment a module action has (REDIS_*, NODE_ID...)."""
    client = redis.Redis(port=redis_server, decode_responses=True)
    client.flushall()
    monkeypatch.setenv("REDIS_ADDRESS", f"127.0.0.1:{redis_server}")
    monkeypatch.setenv("REDIS_REPLICA_ADDRESS", f"127.0.0.1:{redis_server}")
    monkeypatch.setenv("REDIS_USER", "module/imapsync1")
    monkeypatch.delenv("REDIS_PASSWORD", raising=False)
    monkeypatch.setenv("AGENT_TASK_ID", "parent-task-id")
    monkeypatch.setenv("NODE_ID", "1")
    yield client
    client.close()


# ---------------------------------------------------------------------------
# Environment file
# ---------------------------------------------------------------------------


@pytest.fixture
def state_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("AGENT_STATE_DIR", str(tmp_path))
    return tmp_path


def test_envfile_round_trip_sorted_comments_skipped(state_dir):
    path = state_dir / "environment"
    path.write_text("# comment\n\nB=2\nA=x=y\n")
    with pytest.warns(UserWarning, match="Cannot parse line 2"):
        (state_dir / "bad").write_text("OK=1\nnoequal\n")
        assert agent.read_envfile(str(state_dir / "bad")) == {"OK": "1"}
    env = agent.read_envfile(str(path))
    assert env == {"B": "2", "A": "x=y"}
    agent.write_envfile(str(path), dict(env, C=3))
    assert path.read_text() == "A=x=y\nB=2\nC=3\n"


def test_envfile_write_is_atomic_and_keeps_mode(state_dir):
    path = state_dir / "environment"
    path.write_text("A=1\n")
    os.chmod(path, 0o640)
    inode = path.stat().st_ino
    agent.write_envfile(str(path), {"A": "2"})
    assert stat.S_IMODE(path.stat().st_mode) == 0o640
    assert path.stat().st_ino != inode  # replaced by rename, never rewritten in place
    assert sorted(p.name for p in state_dir.iterdir()) == ["environment"]


def test_set_env_family_edits_the_state_environment(state_dir):
    path = state_dir / "environment"
    path.write_text("MODULE_ID=imapsync1\n")
    agent.set_env("MAIL_SERVER", "uuid-1")
    agent.mset_env({"MAIL_HOST": "10.5.4.1", "B": "x"})
    assert agent.read_envfile(str(path)) == {"MODULE_ID": "imapsync1", "MAIL_SERVER": "uuid-1",
                                             "MAIL_HOST": "10.5.4.1", "B": "x"}
    agent.unset_env("B")
    agent.unset_env("MISSING")
    agent.munset_env(["MAIL_HOST", "ALSO_MISSING"])
    assert path.read_text() == "MAIL_SERVER=uuid-1\nMODULE_ID=imapsync1\n"
    assert (state_dir / ".environment.lock").exists()
    assert agent.slurp_file(str(path)) == "MAIL_SERVER=uuid-1\nMODULE_ID=imapsync1"


def test_set_env_is_safe_across_concurrent_writers(state_dir):
    (state_dir / "environment").write_text("")
    threads = [threading.Thread(target=agent.set_env, args=(f"V{i}", i)) for i in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(agent.read_envfile(str(state_dir / "environment"))) == 20


# ---------------------------------------------------------------------------
# Agent commands
# ---------------------------------------------------------------------------


def test_commands_are_written_to_agent_comfd(monkeypatch):
    fdr, fdw = os.pipe()
    monkeypatch.setenv("AGENT_COMFD", str(fdw))
    agent.set_status("validation-failed")
    agent.set_progress(42)
    agent.set_weight("20step name", 0)
    agent.get_progress_callback(50, 70)(50)
    os.close(fdw)
    with os.fdopen(fdr) as f:
        lines = f.read().splitlines()
    assert lines == ["set-status validation-failed", "set-progress 42", 'set-weight "20step name" 0',
                     "set-progress 60"]
    assert not hasattr(agent, "SD_ERROR") and agent.SD_ERR == "<3>"


def test_commands_fall_back_to_stderr_without_comfd():
    env = dict(os.environ, PYTHONPATH=str(PYPKG))
    env.pop("AGENT_COMFD", None)
    proc = subprocess.run([sys.executable, "-c", "import agent; agent.set_progress(5)"],
                          env=env, capture_output=True, check=True)
    assert proc.stderr == b"set-progress 5\r\n" and proc.stdout == b""  # csv.writer line ending, as NS8


def test_run_helper_forwards_progress_and_keeps_stdout_off_the_output(tmp_path):
    helper = tmp_path / "helper.py"
    helper.write_text(textwrap.dedent("""\
        import os
        fd = int(os.environ["AGENT_COMFD"])
        print("helper says hi", flush=True)
        for line in ("set-progress 30", "set-status validation-failed", "set-progress 20", "set-progress 60"):
            os.write(fd, (line + "\\n").encode())
        raise SystemExit(3)
    """))
    script = textwrap.dedent(f"""\
        import json, sys, agent
        seen = []
        proc = agent.run_helper(sys.executable, {str(helper)!r}, progress_callback=seen.append)
        print(json.dumps({{"rc": proc.returncode, "seen": seen, "args": list(proc.args)}}))
    """)
    env = dict(os.environ, PYTHONPATH=str(PYPKG))
    proc = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, check=True)
    result = json.loads(proc.stdout)
    assert result == {"rc": 3, "seen": [30, 60, 100], "args": [sys.executable, str(helper)]}
    assert "helper says hi" in proc.stderr
    assert proc.stderr.startswith("<6>" + sys.executable)


def test_assert_exp_exits_2_with_message():
    env = dict(os.environ, PYTHONPATH=str(PYPKG))
    proc = subprocess.run([sys.executable, "-c", "import agent; agent.assert_exp(1 == 2, 'boom')"],
                          env=env, capture_output=True, text=True)
    assert proc.returncode == 2 and proc.stderr.startswith("boom\n")


def test_ids():
    assert agent.get_module_seq("mail12") == 12
    assert agent.get_module_seq("mail") == -1
    assert agent.get_image_name_from_url("ghcr.io/nethserver/imapsync:1.2.3") == "imapsync"
    assert agent.get_image_name_from_url("ghcr.io/nethserver/mail@sha256:abc") == "mail"
    assert agent.resolve_agent_id("mail1") == "module/mail1"
    assert agent.resolve_agent_id("2") == "node/2"
    assert agent.resolve_agent_id("node", node_id=3) == "node/3"
    assert agent.resolve_agent_id("module/x") == "module/x"


def test_resolve_default_instances(rdb):
    rdb.set("cluster/default_instance/mail", "mail1")
    rdb.set("node/1/default_instance/mail", "mail3")
    assert agent.resolve_agent_id("mail@cluster") == "module/mail1"
    assert agent.resolve_agent_id("mail@node") == "module/mail3"
    with pytest.warns(UserWarning):
        assert agent.resolve_agent_id("samba@cluster") is None


# ---------------------------------------------------------------------------
# Redis and service discovery
# ---------------------------------------------------------------------------


def _seed_mail(rdb, module_id: str, node: str, uuid: str, host: str) -> None:
    rdb.hset(f"module/{module_id}/srv/tcp/imap", mapping={
        "port": "143", "host": host, "node": node, "user_domain": "example.org",
        "module_uuid": "stale-uuid-from-srv-hash", "mail_hostname": "mail.example.org"})
    rdb.hset("cluster/module_uuid", module_id, uuid)
    rdb.hset("cluster/module_node", module_id, node)


def test_redis_connect_reads_the_agent_environment(rdb):
    conn = agent.redis_connect()
    assert conn.ping() and conn.connection_pool.connection_kwargs["username"] == "default"
    assert conn.get("nothing") is None
    with pytest.raises(KeyError):
        agent.redis_connect(privileged=True)  # REDIS_PASSWORD is unset


def test_list_service_providers(rdb, monkeypatch):
    rdb.hset("cluster/environment", "NODE_ID", "2")
    _seed_mail(rdb, "mail1", "1", "uuid-1", "10.5.4.1")
    _seed_mail(rdb, "mail3", "3", "uuid-3", "10.5.4.3")
    _seed_mail(rdb, "mail2", "2", "uuid-2", "10.5.4.2")
    rdb.set("module/mail2/ui_name", "Main mail")
    rdb.hset("module/mail1/q1/srv/tcp/imap", mapping={"port": "993"})
    conn = agent.redis_connect(use_replica=True)

    found = agent.list_service_providers(conn, "imap", "tcp")
    assert [r["module_id"] for r in found] == ["mail1", "mail1", "mail2", "mail3"]  # local, leader, others
    assert sorted(str(r.get("qualifier")) for r in found[:2]) == ["None", "q1"]  # ties keep SCAN order
    mail2 = next(r for r in found if r["module_id"] == "mail2")
    assert mail2 == {"port": "143", "host": "10.5.4.2", "node": "2", "user_domain": "example.org",
                     "module_uuid": "uuid-2", "mail_hostname": "mail.example.org", "module_seq": 2,
                     "transport": "tcp", "module_id": "mail2", "ui_name": "Main mail"}

    assert [r["host"] for r in agent.list_service_providers(conn, "imap", filters={"module_uuid": "uuid-3"})] == [
        "10.5.4.3"]
    assert agent.list_service_providers(conn, "imap", filters={"module_uuid": "stale-uuid-from-srv-hash"}) == []
    assert agent.list_service_providers(conn, "imap", "udp") == []
    assert [r["module_seq"] for r in agent.list_service_providers(conn, "imap", sortby="module_seq_desc")] == [
        3, 2, 1, 1]

    # a restored clone duplicates the uuid: the highest sequence number wins
    _seed_mail(rdb, "mail7", "3", "uuid-3", "10.5.4.7")
    only = agent.list_service_providers(conn, "imap", "tcp", filters={"module_uuid": "uuid-3"})
    assert [r["module_id"] for r in only] == ["mail7"]


# ---------------------------------------------------------------------------
# agent.tasks
# ---------------------------------------------------------------------------


class FakeAgent:
    """Pops `<agent_id>/tasks` like the Go agent and answers each task."""

    def __init__(self, port: int, agent_id: str, answer=None, publish_final: bool = True):
        self.agent_id = agent_id
        self.answer = answer or (lambda task: (json.dumps({"echo": task["data"]}), "", 0))
        self.publish_final = publish_final
        self.tasks: list[dict] = []
        self.conn = redis.Redis(port=port, decode_responses=True)
        self.conn.client_setname(agent_id)  # what idle checks look for
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.loop, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        self.thread.join(timeout=5)
        self.conn.close()

    def loop(self):
        while not self.stop.is_set():
            item = self.conn.brpop(f"{self.agent_id}/tasks", timeout=1)
            if item is None:
                continue
            task = json.loads(item[1])
            self.tasks.append(task)
            channel = f"progress/{self.agent_id}/task/{task['id']}"
            prefix = f"task/{self.agent_id}/{task['id']}"
            self.conn.publish(channel, json.dumps({"status": "pending", "progress": 0}))
            self.conn.publish(channel, json.dumps({"status": "running", "progress": 50}))
            output, error, exit_code = self.answer(task)
            with self.conn.pipeline(transaction=True) as pipe:
                pipe.set(f"{prefix}/output", output)
                pipe.set(f"{prefix}/error", error)
                pipe.set(f"{prefix}/exit_code", exit_code)
                if self.publish_final:
                    status = "completed" if exit_code == 0 else "aborted"
                    pipe.publish(channel, json.dumps({"status": status, "progress": 100}))
                pipe.execute()


def _grant(rdb, user: str, agent_id: str, role: str, *actions: str) -> None:
    rdb.hset(f"roles/{user}", agent_id, role)
    if actions:
        rdb.sadd(f"{agent_id}/roles/{role}", *actions)


def test_run_is_forbidden_without_a_role_granting_the_action(rdb, redis_server):
    _grant(rdb, "module/imapsync1", "module/mail1", "mailadm", "get-*", "list-*")
    with FakeAgent(redis_server, "module/mail1") as fake:
        with pytest.raises(agent.tasks.ClientResponseError) as excinfo:
            agent.tasks.run("module/mail1", "reveal-master-credentials", {})
        assert excinfo.value.status == 403 and excinfo.value.message == "Forbidden"
        assert "url='http://cluster-leader:9311/api/module/mail1/tasks'" in str(excinfo.value)
        with pytest.raises(agent.tasks.ClientResponseError):
            agent.tasks.run("module/mail2", "list-user-mailboxes")  # no role at all on mail2
        assert fake.tasks == []


def test_run_with_granted_role_returns_decoded_result(rdb, redis_server):
    _grant(rdb, "module/imapsync1", "module/mail1", "mailadm", "reveal-master-credentials", "list-*")
    seen: list = []
    with FakeAgent(redis_server, "module/mail1") as fake:
        result = agent.tasks.run("module/mail1", "list-user-mailboxes", {"a": 1},
                                 progress_callback=seen.append, extra={"title": "t"})
    assert result == {"output": {"echo": {"a": 1}}, "error": "", "exit_code": 0}
    assert seen == [0, 50, 100]
    task = fake.tasks[0]
    assert list(task) == ["id", "action", "data", "extra", "queue", "user", "timestamp", "parent"]
    assert task["user"] == "module/imapsync1" and task["queue"] == "module/mail1/tasks"
    assert task["parent"] == "parent-task-id" and task["extra"] == {"title": "t"} and task["data"] == {"a": 1}
    assert task["timestamp"].endswith("Z")


def test_run_refuses_a_worker_thread_as_ns8s_agent_does(rdb, redis_server):
    """NS8's agent.tasks installs a SIGTERM handler with loop.add_signal_handler: outside
    the main thread that raises ValueError before anything is sent."""
    import concurrent.futures
    _grant(rdb, "module/imapsync1", "module/mail1", "owner", "*")
    with FakeAgent(redis_server, "module/mail1") as fake, concurrent.futures.ThreadPoolExecutor(1) as pool:
        with pytest.raises(ValueError, match="main thread"):
            pool.submit(agent.tasks.run, "module/mail1", "list-user-mailboxes").result()
    assert fake.tasks == []


def test_run_returns_raw_output_and_failures(rdb, redis_server):
    _grant(rdb, "module/imapsync1", "module/mail1", "owner", "*")
    with FakeAgent(redis_server, "module/mail1", answer=lambda t: ("not json\n", "boom\n", 2)):
        result = agent.tasks.run("module/mail1", "anything")
    assert result == {"output": "not json\n", "error": "boom\n", "exit_code": 2}


def test_idle_check_failures(rdb, redis_server):
    _grant(rdb, "module/imapsync1", "module/mail1", "owner", "*")
    with pytest.raises(agent.tasks.ClientResponseError) as excinfo:
        agent.tasks.run("module/mail1", "list-user-mailboxes")
    assert excinfo.value.status == 404
    with pytest.raises(agent.tasks.TaskSubmissionCheckFailed, match='Client "module/mail1" was not found'):
        agent.tasks.run("module/mail1", "list-user-mailboxes", endpoint="redis://cluster-leader")
    assert rdb.llen("module/mail1/tasks") == 0


def test_redis_endpoint_skips_roles_and_sends_empty_user(rdb, redis_server, monkeypatch):
    monkeypatch.setenv("AGENT_TASK_ID", "")
    with FakeAgent(redis_server, "module/imapsync1") as fake:
        result = agent.tasks.run("module/imapsync1", "get-configuration", None, endpoint="redis://cluster-leader")
    assert result["exit_code"] == 0 and result["output"] == {"echo": None}
    assert fake.tasks[0]["user"] == "" and fake.tasks[0]["parent"] == ""


def test_polling_fallback_without_final_message(rdb, redis_server, monkeypatch):
    monkeypatch.setattr(agent.tasks, "POLL_INTERVAL", 0.5)
    with FakeAgent(redis_server, "module/imapsync1", publish_final=False):
        result = agent.tasks.run("module/imapsync1", "x", endpoint="redis://cluster-leader")
    assert result["exit_code"] == 0


def test_runp_nowait_and_brief(rdb, redis_server, capsys):
    _grant(rdb, "module/imapsync1", "module/mail1", "reader", "list-*")
    with FakeAgent(redis_server, "module/mail1"):
        results = agent.tasks.runp([
            {"agent_id": "module/mail1", "action": "list-things"},
            {"agent_id": "module/mail1", "action": "remove-things"},
        ])
        assert results[0]["exit_code"] == 0
        assert isinstance(results[1], agent.tasks.ClientResponseError) and results[1].status == 403
        failures = agent.tasks.runp_brief([{"agent_id": "module/mail1", "action": "remove-things"},
                                           {"agent_id": "module/mail1", "action": "list-x"}])
        path = agent.tasks.run_nowait("module/mail1", "list-x")
    assert failures == 1 and "run error: 403" in capsys.readouterr().err
    assert path.startswith("module/mail1/task/")
    rpath = agent.tasks.run_nowait("module/nobody", "x", endpoint="redis://cluster-leader")
    assert rpath.startswith("task/module/nobody/") and rdb.llen("module/nobody/tasks") == 1


def test_package_imports_in_the_host_agent_environment():
    assert HOST_PYTHON.exists(), ".venv-host missing: run scripts/install-deps.sh (make test does)"
    env = {"PATH": os.environ.get("PATH", ""), "PYTHONPATH": str(PYPKG)}
    code = ("import sys, agent, agent.tasks; "
            "assert 'aiohttp' not in sys.modules; "
            "print(agent.tasks.run.__module__, agent.SD_INFO)")
    proc = subprocess.run([str(HOST_PYTHON), "-c", code], env=env, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["agent.tasks", "<6>"]
