"""Section 4 of the reliability suite: the secrets audit.

While the module works -- login checks (create-task), syncs with the native
engine (and imapsync when it is on PATH), list-informations, a CSV import
(runagent and the action), a bulk export/import with DirectAdmin
provisioning -- a watcher scans again and again every process's command line
(and the environment of the audit's own processes), every file under the
module's home and state, the node's log directory (journal stand-in,
container log), the bulk migrator's directories, /var/tmp, all of Redis, and
afterwards every action output, CLI printout and cluster-admin API answer,
for every password used (remote, wrong, master, DirectAdmin) in all the forms
of `reliability.secretscan`.

Every password is unique to the run (the mail server's master password too:
the audit's node gets a fresh one), so a hit can only come from this run.
The audit passes with zero hits in what the module writes or runs, except
the `.pwd` files (0600 in 0700 directories) and the bulk config files
(0600). What NS8 itself holds for a while -- the queued task payload until
the agent pops it, the mail module's reveal-master-credentials output (8 h)
-- is counted as the platform's and listed in the results file
(tests/outputs/reliability/4-secrets-audit.json), never hidden. The local
node masks task contexts and expires task keys as NS8 does (spec 1.4):
`test_local_node_masks_task_contexts_and_expires_keys` holds it to that.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import re
import secrets
import shutil
import socket
import stat
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from localnode import corpus, dovecot, mailusers, node, redisd
from localnode.config import ImapServer, NodeConfig
from localnode.dapanel import PanelServer

from reliability.ownnode import NodeCli, configure
from reliability.resultsfile import Results, Target
from reliability.secretscan import Hit, Scanner, Secret, Watch, forms

PORT_BASE = int(os.environ.get("SECRETS_AUDIT_PORT_BASE", "27400"))
REPO = Path(__file__).resolve().parents[2]
IMAPSYNC = shutil.which("imapsync")
NO_IMAPSYNC = ("imapsync is not on PATH: the imapsync engine is audited only with it "
               "(real imapsync 2.229: PATH=/opt/imapsync-beside:$PATH)")
TOKEN = secrets.token_hex(4)
EIGHT_HOURS = 8 * 3600
MODULE_ID = "imapsync1"
DA_USER = "admin"
ALLOWED_FILES = r"(\.pwd|\.pass\.config\.json)$"


@dataclass
class Audit:
    """The audit's node, its secrets, and what was found so far."""

    cfg: NodeConfig
    cli: NodeCli
    secrets: dict[str, Secret]
    scanner: Scanner
    work: Path  # the bulk migrator's working directory
    inputs: Path  # what the administrator writes (a DA password file, CSVs): not the module's
    results: Results
    transcript_done: int = 0
    phases: dict[str, dict] = field(default_factory=dict)

    def password(self, name: str) -> str:
        return self.secrets[name].value


def make_secrets() -> dict[str, Secret]:
    """Unique passwords with the characters that trip quoting and encodings."""
    return {
        "audit1": Secret("remote:audit1@remote.test", "remote", f"Au1-{TOKEN}-q\"u o,t$e`\\;|&<>*?'"),
        "audit2": Secret("remote:audit2@remote.test", "remote", f"Au2-{TOKEN}+/=%20&x"),
        "wrong": Secret("remote:wrong-password", "remote", f"Wrong-{TOKEN}-pw#"),
        "master": Secret("master:vmail", "master", f"Mst-{TOKEN}-vmail/+"),
        "da": Secret("directadmin:admin", "directadmin", f"Da-{TOKEN}-panel&x=1%"),
    }


def set_master_password(cfg: NodeConfig, password: str) -> None:
    """A master password of this run for mail1: its passdb and the mail
    module's dovecot.env (what reveal-master-credentials answers)."""
    m = cfg.mail1
    path = Path(m.dir) / "master-users"
    st = path.stat()
    tmp = path.with_name("master-users.audit")
    tmp.write_text(dovecot._passwd_line(m.master_user or "vmail", password))
    os.chmod(tmp, stat.S_IMODE(st.st_mode))
    os.chown(tmp, st.st_uid, st.st_gid)
    os.replace(tmp, path)
    dovecot.doveadm(m, "auth", "cache", "flush", check=False)
    env = cfg.module_state_dir("mail1") / "dovecot.env"
    env.write_text(f"DOVECOT_VMAIL_PASS={password}\n")


def add_user(server: ImapServer, email: str, password: str, timeout: float = 15) -> None:
    """mailusers.add_user, then wait until Dovecot takes the login: it re-reads
    its passwd-file on change, but two changes within one second can be missed
    until the next one."""
    deadline = time.monotonic() + timeout
    while True:
        mailusers.add_user(server, email, password)
        client = corpus.connect(server)
        try:
            client.login(email if server.name != "mail1" else email.split("@")[0], password)
            return
        except Exception:
            if time.monotonic() > deadline:
                raise
            time.sleep(1.1)
        finally:
            with contextlib.suppress(Exception):
                client.logout()


def prepare_accounts(cfg: NodeConfig, pw: dict[str, Secret]) -> None:
    """Two remote accounts with mail; audit1 also exists on mail1 by address
    (the bulk import's target), audit2 is created there by the panel."""
    for name, count in (("audit1", 20), ("audit2", 8)):
        email = f"{name}@remote.test"
        add_user(cfg.remote, email, pw[name].value)
        corpus.fill(cfg.remote, email, pw[name].value, seed=41, count=count, large=1 if count > 10 else 0,
                    large_size=120_000)
    add_user(cfg.mail1, "audit1@remote.test", pw["audit1"].value)


@pytest.fixture(scope="module")
def audit(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Audit]:
    pw = make_secrets()
    results = Results("4-secrets-audit", "Secrets audit")
    with node.throwaway(PORT_BASE, "secrets-audit-") as cfg:
        set_master_password(cfg, pw["master"].value)
        prepare_accounts(cfg, pw)
        cli = NodeCli(cfg)
        configure(cli, engine="native")
        work, inputs = tmp_path_factory.mktemp("bulk-audit"), tmp_path_factory.mktemp("audit-inputs")
        scanner = Scanner(list(pw.values()), roots={os.getpid()}, marker=str(cfg.state_dir),
                          rdb=redisd.connect(cfg), allowed_files=re.compile(ALLOWED_FILES),
                          file_roots=[cfg.home_dir(MODULE_ID), cfg.log_dir, work, Path("/var/tmp")])
        made = Audit(cfg, cli, pw, scanner, work, inputs, results)
        try:
            yield made
        finally:
            write_results(made)


def write_results(audit: Audit) -> None:
    r = audit.results
    s = audit.scanner
    r.notes.update({
        "secrets": {v.name: {"kind": v.kind, "forms": sorted(forms(v.value))} for v in audit.secrets.values()},
        "scanned": dict(s.scanned), "phases": audit.phases,
        "module_hits": [hit_json(h) for h in s.module_hits()],
        "platform_holdings": [hit_json(h, s.platform_ttls.get(h.where.removeprefix("redis:")))
                              for h in s.by_attribution("platform")],
        "allowed_holders": sorted({h.where for h in s.by_attribution("allowed")}),
        "platform": {
            "queued task payloads seen": sum(h.where.endswith("/tasks") for h in s.by_attribution("platform")),
            "why": "NS8's api-server LPUSHes the task, secrets included, to <agent>/tasks and the agent BRPOPs it "
                   "at once (the watcher polls every 0.25 s, so most are never seen); another module's task "
                   "output (mail1's reveal-master-credentials) is kept 8 h in Redis and served by the api-server "
                   "to authorized users, as on NS8",
        },
    })
    for category, count in s.scanned.items():
        r.targets.setdefault(category, Target()).cases = count
    if r.tests_run:
        r.write()


def hit_json(h: Hit, ttl: int | None = None) -> dict:
    out = {"where": h.where[:200], "secret": h.secret, "form": h.form}
    if h.note:
        out["note"] = h.note
    if ttl is not None:
        out["ttl_seconds"] = ttl
    return out


@pytest.fixture
def rec(request: pytest.FixtureRequest, audit: Audit) -> Results:
    audit.results.tests_run.append(request.node.name)
    if request.node.get_closest_marker("reliability_long"):
        audit.results.variant = "long"
    return audit.results


def full_scan(audit: Audit) -> None:
    """Everything once more, and the outputs gathered since the last time."""
    s = audit.scanner
    s.scan_processes()
    s.scan_redis()
    s.scan_files()
    for i, text in enumerate(audit.cli.transcript[audit.transcript_done:], start=audit.transcript_done):
        s.scan_text(f"output:{i}", text)
    audit.transcript_done = len(audit.cli.transcript)


@contextmanager
def phase(audit: Audit, name: str) -> Iterator[None]:
    """Run an activity under the watcher; fail on any new hit in the module's things."""
    before = set(audit.scanner.hits)
    started = time.monotonic()
    with Watch(audit.scanner) as watch:
        yield
    full_scan(audit)
    new = [h for k, h in audit.scanner.hits.items() if k not in before]
    leaks = [h for h in new if h.attribution == "module"]
    audit.phases[name] = {"seconds": round(time.monotonic() - started, 1), "watch_rounds": watch.rounds,
                          "module_hits": len(leaks), "platform_hits": sum(h.attribution == "platform" for h in new),
                          "watch_errors": watch.errors[:5]}
    assert not watch.errors, watch.errors[:5]
    assert not leaks, "secrets found:\n" + "\n".join(f"{h.where[:160]}: {h.secret} as {h.form}" for h in leaks)


def wait_idle(cli: NodeCli, timeout: float = 300) -> list[dict]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        tasks = cli.api_ok("list-tasks")["user_properties"]
        if not any(t["service_running"] or t["state"] in ("queued", "running") for t in tasks):
            return tasks
        time.sleep(0.5)
    raise AssertionError("tasks still running")


def task_input(audit: Audit, account: str = "audit1", **over: object) -> dict:
    r = audit.cfg.remote
    data = {"localuser": "u1", "task_id": "aud001", "remotehostname": r.host, "remoteport": r.imap_port,
            "security": "tls", "remoteusername": f"{account}@remote.test", "remotepassword": audit.password(account),
            "delete_local": False, "delete_remote": False, "delete_remote_older": 0, "exclude": "",
            "cron": "", "foldersynchronization": "all", "sieve_enabled": False}
    data.update(over)
    return data


def the_task(cli: NodeCli, task_id: str) -> dict:
    return next(t for t in wait_idle(cli) if t["task_id"] == task_id)


# ---------------------------------------------------------------------------
# the platform's own behaviour, and the scanner's
# ---------------------------------------------------------------------------
def contexts_of(rdb, agent: str, action: str) -> list[tuple[str, dict]]:
    found = []
    for key in rdb.scan_iter(f"task/{agent}/*/context"):
        raw = rdb.get(key)
        ctx = json.loads(raw) if raw else {}
        if ctx.get("action") == action:
            found.append((key, ctx))
    return found


SECRET_LIKE = {"remotepassword": 1, "user_pass": 1, "nested": {"ApiKey": 1, "Session_Token": 1, "list": [
    {"x_SECRET": 1, "plain": "kept"}]}, "plain": "kept", "passport": "kept"}


def masked_example(value: str) -> dict:
    return json.loads(json.dumps(SECRET_LIKE).replace("1", json.dumps(value)))


def test_local_node_masks_task_contexts_and_expires_keys(audit: Audit, rec: Results) -> None:
    """Spec 1.4: the stored context masks every key ending in password,
    secret, token, key or pass (any case, any depth) as "XXX"; context and
    results live 8 h after the end."""
    marker = f"ctx-{TOKEN}"
    data = {**masked_example(marker), "plain": marker}
    audit.cli.api("get-facts", data)  # an action that ignores its input
    rdb = audit.scanner.rdb
    (key, ctx), = [(k, c) for k, c in contexts_of(rdb, f"module/{MODULE_ID}", "get-facts")
                   if c.get("data", {}).get("plain") == marker]
    d = ctx["data"]
    assert (d["remotepassword"], d["user_pass"], d["nested"]["ApiKey"], d["nested"]["Session_Token"],
            d["nested"]["list"][0]["x_SECRET"]) == ("XXX",) * 5, d
    assert (d["nested"]["list"][0]["plain"], d["passport"]) == ("kept", "kept")  # only the suffixes
    assert marker not in rdb.get(key).replace(f'"plain": "{marker}"', "")
    prefix = key.removesuffix("/context")
    for k in (key, f"{prefix}/output", f"{prefix}/error", f"{prefix}/exit_code"):
        assert EIGHT_HOURS - 120 <= rdb.ttl(k) <= EIGHT_HOURS, (k, rdb.ttl(k))
    rec.notes["local_node_masking"] = {"masked": sorted(["remotepassword", "user_pass", "ApiKey", "Session_Token",
                                                         "x_SECRET"]), "ttl_after_end_seconds": rdb.ttl(key)}


def test_context_ttl_while_running_is_60_s_refreshed(audit: Audit, rec: Results) -> None:
    """While an action runs its context expires in 60 s unless the agent's
    heartbeat refreshes it (every 5 s): a login check against a server that
    never greets keeps create-task running long enough to see both."""
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(8)
    data = task_input(audit, task_id="ttl001", remotehostname="127.0.0.1", remoteport=silent.getsockname()[1])
    worker = threading.Thread(target=audit.cli.api, args=("create-task", data), daemon=True)
    worker.start()
    rdb, ttls, started = audit.scanner.rdb, [], time.monotonic()
    try:
        while time.monotonic() < started + 14:
            running = [k for k, c in contexts_of(rdb, f"module/{MODULE_ID}", "create-task")
                       if c.get("data", {}).get("task_id") == "ttl001" and not rdb.exists(k.replace("context", "exit_code"))]
            ttls += [(round(time.monotonic() - started, 1), rdb.ttl(k)) for k in running]
            time.sleep(1)
    finally:
        silent.close()
        worker.join(timeout=120)
    assert ttls and all(0 < t <= 60 for _, t in ttls), ttls
    late = [t for at, t in ttls if at >= 10]
    assert late and min(late) >= 50, f"the context was not refreshed while running: {ttls}"
    rec.notes["context_ttl_while_running"] = ttls


def test_scanner_finds_planted_secrets(audit: Audit, rec: Results, tmp_path: Path) -> None:
    """The audit can fail: a secret planted in each kind of place, in each
    form, is found there and blamed on the module."""
    plant = Secret("planted", "remote", f"Plant-{TOKEN}-p\"w d$`")
    probe = Scanner([plant], roots={os.getpid()}, marker=str(tmp_path), rdb=audit.scanner.rdb,
                    file_roots=[tmp_path])
    for name, text in forms(plant.value).items():
        (tmp_path / f"leak-{name}.log").write_bytes(b"prefix " + text + b" suffix")
    blob = base64.b64encode(b"\0audit1\0" + plant.value.encode())  # AUTHENTICATE PLAIN
    (tmp_path / "auth.log").write_bytes(b"C: " + blob)
    audit.scanner.rdb.set(f"module/{MODULE_ID}/planted-{TOKEN}", json.dumps({"x": plant.value}), ex=60)
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)", plant.value],
                               env={**os.environ, "PLANTED": plant.value})
    try:
        probe.scan_files()
        probe.scan_redis()
        probe.scan_processes()
    finally:
        sleeper.kill()
        sleeper.wait()
        audit.scanner.rdb.delete(f"module/{MODULE_ID}/planted-{TOKEN}")
    found = {(h.where.split(":")[0], h.form) for h in probe.module_hits()}
    missing = [n for n in forms(plant.value) if ("file", n) not in found]
    assert not missing, f"forms not found in files: {missing}"
    assert any(h.where.startswith("file:") and h.where.endswith("auth.log") for h in probe.module_hits())
    assert ("redis", "json") in found or ("redis", "plain") in found
    wheres = {h.where.split(":")[2] for h in probe.module_hits() if h.where.startswith("proc:")}
    assert {"cmdline", "environ"} <= wheres, wheres
    rec.notes["scanner_self_test"] = {"forms_found_in_files": len(forms(plant.value)),
                                      "places": sorted({w for w, _ in found})}


# ---------------------------------------------------------------------------
# the module at work
# ---------------------------------------------------------------------------
def test_login_checks_and_native_sync(audit: Audit, rec: Results) -> None:
    """create-task's login check (accepted, refused, an edit keeping the stored
    password), the native engine's first sync and a re-run."""
    cli = audit.cli
    with phase(audit, "login checks and native syncs"):
        cli.api_ok("create-task", task_input(audit))
        assert the_task(cli, "aud001")["last_sync_state"] == "succeeded"
        refused = cli.api("create-task", task_input(audit, task_id="aud002", remotepassword=audit.password("wrong")))
        assert refused.returncode == 2, refused.stdout
        cli.api_ok("create-task", task_input(audit, remotepassword="", cron="5m"))  # edit: keeps the password
        cli.api_ok("start-task", {"localuser": "u1", "task_id": "aud001"})
        assert the_task(cli, "aud001")["last_sync_state"] == "succeeded"
        cli.api_ok("create-task", task_input(audit, "audit2", localuser="u2", task_id="aud003",
                                             foldersynchronization="inbox", sieve_enabled=True))
        assert the_task(cli, "aud003")["last_sync_state"] == "succeeded"


def test_reads_list_informations_logs_history(audit: Audit, rec: Results) -> None:
    cli = audit.cli
    with phase(audit, "list-informations and the other reads"):
        for task in ({"localuser": "u1", "task_id": "aud001"}, {"localuser": "u2", "task_id": "aud003"}):
            assert cli.api_ok("list-informations", task)["status"] is True
            cli.api_ok("get-log", task)
            cli.api_ok("get-task-history", task)
        cli.api_ok("list-tasks")
        cli.api_ok("get-facts")
        cli.api_ok("get-configuration")
        cli.run("runagent", "-m", MODULE_ID, "podman", "exec", "imapsync", "/usr/local/bin/syncctl", "status",
                "u1_aud001")


@pytest.mark.skipif(IMAPSYNC is None, reason=NO_IMAPSYNC)
def test_imapsync_engine_sync(audit: Audit, rec: Results) -> None:
    """The same tasks with imapsync: its command line gets --passfile1/2, never a password."""
    cli = audit.cli
    image_has_it = (audit.cfg.image_extras_dir / "imapsync").exists()
    assert image_has_it, "the node was started without imapsync on PATH"
    with phase(audit, "imapsync engine syncs"):
        configure(cli, engine="imapsync")
        try:
            for task_id in ("aud001", "aud003"):
                user = "u1" if task_id == "aud001" else "u2"
                cli.api_ok("start-task", {"localuser": user, "task_id": task_id})
            tasks = {t["task_id"]: t for t in wait_idle(cli)}
            assert tasks["aud001"]["last_sync_state"] == "succeeded", tasks["aud001"]
            history = cli.api_ok("get-task-history", {"localuser": "u1", "task_id": "aud001"})["history"]
            assert history[0]["engine"] == "imapsync", history[0]
            assert cli.api_ok("list-informations", {"localuser": "u1", "task_id": "aud001"})["status"] is True
            refused = cli.api("create-task", task_input(audit, task_id="aud004", remotepassword=audit.password("wrong")))
            assert refused.returncode == 2
        finally:
            configure(cli, engine="native")
    rec.notes["imapsync"] = IMAPSYNC


def csv_body(audit: Audit, rows: list[tuple[str, str, str]]) -> bytes:
    """CSV rows (localuser, account, password) for the remote test server."""
    r = audit.cfg.remote
    head = "localusername,remoteusername,remotepassword,remotehostname,remoteport,security\n"
    quote = lambda v: '"' + v.replace('"', '""') + '"'  # noqa: E731
    return (head + "".join(f"{u},{a}@remote.test,{quote(p)},{r.host},{r.imap_port},tls\n" for u, a, p in rows)).encode()


def test_csv_import(audit: Audit, rec: Results) -> None:
    """runagent import-csv-tasks (check, a failed file, an import) and the
    import-csv-tasks action with the same rows."""
    cli = audit.cli
    good = csv_body(audit, [("u3", "audit2", audit.password("audit2"))])
    bad = csv_body(audit, [("u3", "audit2", audit.password("audit2")), ("u2", "audit1", audit.password("wrong"))])
    with phase(audit, "CSV import"):
        for body, args, code in ((bad, (), 1), (good, ("--check",), 0), (good, (), 0), (good, ("--update",), 0)):
            proc = cli.run("runagent", "-m", MODULE_ID, "import-csv-tasks", *args, input=body)
            assert proc.returncode == code, proc.stdout + proc.stderr
        wait_idle(cli)
        out = cli.api_ok("import-csv-tasks", {"csv_secret": bad.decode(), "check": True})
        assert out["summary"]["failed"] == 1
        out = cli.api_ok("import-csv-tasks", {"csv_secret": good.decode(), "update": True})
        assert out["exit_code"] == 0, out
        wait_idle(cli)
    leftovers = [p.name for p in Path("/tmp").glob("import-csv-tasks-*")]
    assert not leftovers, f"the action left its temporary directory: {leftovers}"


def bulk(audit: Audit, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO / "imageroot" / "pypkg")}
    env.pop("DA_PASSWORD", None)
    proc = subprocess.run([sys.executable, "-m", "ns8_imapsync.bulk.cli", *args], cwd=audit.work, env=env,
                          capture_output=True, text=True, timeout=300, stdin=subprocess.DEVNULL)
    audit.cli.transcript.append(proc.stdout + proc.stderr)
    return proc


def bulk_configs(audit: Audit) -> None:
    """export (remote) and import (mail1) configs, 0600, as the README asks."""
    for name, server in (("export", audit.cfg.remote), ("import", audit.cfg.mail1)):
        data = {"server": {"host": server.host, "port": server.imap_port, "ssl": False, "starttls": True},
                "accounts": [{"email": f"{a}@remote.test", "password": audit.password(a)} for a in ("audit1", "audit2")]}
        path = audit.work / f"{name}.pass.config.json"
        path.write_text(json.dumps(data))
        path.chmod(0o600)


def test_bulk_export_import_with_directadmin(audit: Audit, rec: Results) -> None:
    """export, import with DirectAdmin provisioning (the panel password from a
    file), validate and test mode (imapsync --justconnect when it is there)."""
    bulk_configs(audit)
    da_file = audit.inputs / "da.pass"
    da_file.write_text(audit.password("da") + "\n")
    da_file.chmod(0o600)
    mail1 = audit.cfg.mail1
    with PanelServer(DA_USER, audit.password("da"), {"remote.test": ["audit1"]},
                     on_create=lambda email, pw, quota: mailusers.add_user(mail1, email, pw)) as panel, \
            phase(audit, "bulk export and import"):
        ca = ("--ca-file", audit.cfg.remote.ca_cert)
        assert bulk(audit, "--mode", "export", *ca).returncode == 0
        da = ("--auto-provision-da", "--da-url", panel.url, "--da-username", DA_USER, "--da-password-file", str(da_file))
        proc = bulk(audit, "--mode", "import", *ca, *da)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        assert panel.created == ["audit2@remote.test"]
        assert bulk(audit, "--mode", "validate", *ca).returncode == 0
        bulk(audit, "--mode", "test", *ca)
    for p in audit.work.glob("*.pass.config.json"):
        assert stat.S_IMODE(p.stat().st_mode) == 0o600, p


# ---------------------------------------------------------------------------
# the cluster-admin stand-in's API (the UI's view)
# ---------------------------------------------------------------------------
def admin_api(cfg: NodeConfig) -> tuple[object, str]:
    """The stand-in module and its API URL, or None and why it cannot be scanned."""
    try:
        from localnode import adminapi
    except ImportError as exc:
        return None, f"tests/localnode/adminapi.py is not importable ({exc})"
    if not adminapi.running(cfg):
        return None, "the cluster-admin stand-in is not running on this node"
    return adminapi, f"http://127.0.0.1:{adminapi.port(cfg)}/cluster-admin/api"


def http(url: str, body: object = None, token: str = "") -> tuple[int, str]:
    req = urllib.request.Request(url, data=None if body is None else json.dumps(body).encode(),
                                 headers={"Content-Type": "application/json",
                                          **({"Authorization": f"Bearer {token}"} if token else {})})
    try:
        with urllib.request.urlopen(req, timeout=60) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def api_task(audit: Audit, base: str, token: str, action: str, data: object) -> dict:
    """Submit as the UI does, poll its status to the end; every answer is scanned."""
    code, text = http(f"{base}/module/{MODULE_ID}/tasks", {"action": action, "data": data,
                                                             "extra": {"title": action, "isNotificationHidden": True}},
                      token)
    audit.scanner.scan_text(f"api:POST {action}", text)
    assert code == 201, text
    tid = json.loads(text)["data"]["id"]
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        code, text = http(f"{base}/module/{MODULE_ID}/task/{tid}/status", token=token)
        audit.scanner.scan_text(f"api:status {action}", text)
        status = json.loads(text)["data"]
        if status["exit_code"] is not None:
            break
        time.sleep(0.5)
    _, ctx = http(f"{base}/module/{MODULE_ID}/task/{tid}/context", token=token)
    audit.scanner.scan_text(f"api:context {action}", ctx)
    return status


def scan_every_task_through_api(audit: Audit, base: str, token: str) -> int:
    """What the UI could fetch: status and context of every task still in Redis.
    The mail module's reveal-master-credentials output is the platform's."""
    count = 0
    for key in audit.scanner.rdb.scan_iter("task/*/*/context"):
        agent, tid = key.removeprefix("task/").removesuffix("/context").rsplit("/", 1)
        owner, note = audit.scanner.redis_owner(f"task/{agent}/{tid}/output")
        for what in ("status", "context"):
            _, text = http(f"{base}/{agent}/task/{tid}/{what}", token=token)
            where = f"api:{agent}/task/{tid}/{what}"
            if owner == "platform" and what == "status":
                audit.scanner._record(where, text.encode(), "platform", note + " (served by the api-server)")
            else:
                audit.scanner.scan_text(where, text)
            count += 1
    return count


def test_admin_api_responses(audit: Audit, rec: Results) -> None:
    adminapi, base = admin_api(audit.cfg)
    if adminapi is None:
        rec.notes["admin_api"] = f"skipped: {base}"
        pytest.skip(base)
    with phase(audit, "cluster-admin API"):
        code, text = http(f"{base}/login", {"username": adminapi.ADMIN_USER, "password": adminapi.ADMIN_PASSWORD})
        assert code == 200, text
        token = json.loads(text)["token"]
        status = api_task(audit, base, token, "create-task", task_input(audit, "audit2", localuser="u3", task_id="aud005"))
        assert status["exit_code"] == 0, status
        csv = csv_body(audit, [("u2", "audit2", audit.password("audit2"))]).decode()
        api_task(audit, base, token, "import-csv-tasks", {"csv_secret": csv, "check": True})
        api_task(audit, base, token, "list-tasks", None)
        wait_idle(audit.cli)
        fetched = scan_every_task_through_api(audit, base, token)
    rec.notes["admin_api"] = {"url": base, "task_answers_scanned": fetched}


# ---------------------------------------------------------------------------
# where the passwords are allowed to be
# ---------------------------------------------------------------------------
def test_pwd_files_are_private(audit: Audit, rec: Results) -> None:
    """Every .pwd file is 0600 in a 0700 directory, and holds its password
    only (a task's, or the master password in vmail.pwd)."""
    found = sorted(audit.cfg.home_dir(MODULE_ID).rglob("*.pwd"))
    assert any(p.name == "vmail.pwd" for p in found) and len(found) > 1, found
    bad = [(str(p), oct(stat.S_IMODE(p.stat().st_mode)), oct(stat.S_IMODE(p.parent.stat().st_mode))) for p in found
           if stat.S_IMODE(p.stat().st_mode) != 0o600 or stat.S_IMODE(p.parent.stat().st_mode) != 0o700]
    assert not bad, bad
    vmail = next(p for p in found if p.name == "vmail.pwd")
    assert vmail.read_text().strip() == audit.password("master")
    rec.notes["pwd_files"] = {"count": len(found), "mode": "0600", "directory_mode": "0700"}


def test_zz_everything_once_more(audit: Audit, rec: Results) -> None:
    """After all activities: one more scan of every place; zero hits in the
    module's things, and the platform's holdings are what NS8 keeps."""
    full_scan(audit)
    leaks = audit.scanner.module_hits()
    assert not leaks, "\n".join(f"{h.where[:160]}: {h.secret} as {h.form}" for h in leaks)
    for h in audit.scanner.by_attribution("platform"):
        ttl = audit.scanner.platform_ttls.get(h.where.removeprefix("redis:"))
        assert ttl is None or ttl <= EIGHT_HOURS, (h, ttl)
    assert audit.scanner.scanned["process command lines"] > 0 and audit.scanner.scanned["redis keys"] > 0


@pytest.mark.reliability_long
@pytest.mark.timeout(3600)
def test_long_many_tasks_and_rounds(audit: Audit, rec: Results) -> None:
    """Ten more tasks (create-task, and a CSV import checked and updated),
    start-all-tasks three times with each engine available, list-informations
    of each task, all under the watcher."""
    cli = audit.cli
    engines = ["native"] + (["imapsync"] if IMAPSYNC and (audit.cfg.image_extras_dir / "imapsync").exists() else [])
    with phase(audit, "long: many tasks and rounds"):
        for i in range(10):
            account = "audit1" if i % 2 else "audit2"
            cli.api_ok("create-task", task_input(audit, account, localuser=f"u{1 + i % 3}", task_id=f"long{i:02d}",
                                                 foldersynchronization=("all", "inbox")[i % 2], sieve_enabled=i % 4 == 1))
        body = csv_body(audit, [(f"u{1 + i % 3}", a, audit.password(a)) for i, a in enumerate(("audit1", "audit2"))])
        for args in (("--check",), ("--update", "--no-start")):
            cli.run("runagent", "-m", MODULE_ID, "import-csv-tasks", *args, input=body)
        for engine in engines:
            configure(cli, engine=engine)
            for _ in range(3):
                cli.api_ok("start-all-tasks")
                for t in wait_idle(cli, timeout=900):
                    cli.api("list-informations", {"localuser": t["localuser"], "task_id": t["task_id"]})
        configure(cli, engine="native")
    rec.notes["long_engines"] = engines
