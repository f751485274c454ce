"""DirectAdmin pieces of the bulk migrator against the local fake panel
(tests/localnode/dapanel.py): the API client in both reply styles and its error
reports, the Provisioner, and `directadmin-indexer` driven through its menu in a
pseudo-terminal as an operator would."""

from __future__ import annotations

import json
import os
import pty
import select
import shutil
import socket
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import requests
from localnode.dapanel import PanelServer
from ns8_imapsync.bulk import exitcodes
from ns8_imapsync.bulk.directadmin import (
    DirectAdminClient,
    DirectAdminError,
    Provisioner,
    parse_reply,
    reply_error,
    reply_list,
)

REPO = Path(__file__).resolve().parents[1]
PANEL_USER = "reseller1"
PANEL_PW = "Pan3l-s3cret-xyzzy"
MAILBOX_PW = "Mailb0x-s3cret-plugh"
DOMAINS = {
    "alpha.example": ["alice", "bob"],
    "beta.example": ["carol"],
    "gamma.example": ["dave", "erin", "frank"],
    "delta.example": [],
}


@pytest.fixture
def panel():
    with PanelServer(PANEL_USER, PANEL_PW, {d: list(u) for d, u in DOMAINS.items()}) as server:
        yield server


def client_for(panel: PanelServer, **kw) -> DirectAdminClient:
    return DirectAdminClient(panel.url, PANEL_USER, PANEL_PW, timeout=10, **kw)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ---------------------------------------------------------------------------
# reply parsing: the shapes different panel versions send
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("text, expected", [
    ("list[]=a.example&list[]=b.example", ["a.example", "b.example"]),
    ("users[]=alice&users[]=bob", ["alice", "bob"]),
    ("list0=alice&list1=bob", ["alice", "bob"]),
    ('["alice", "bob"]', ["alice", "bob"]),
    ('{"list": ["alice", "bob"]}', ["alice", "bob"]),
    ('{"users": ["alice"]}', ["alice"]),
    ('{"domains": {"0": "a.example", "1": "b.example"}}', ["a.example", "b.example"]),
    ('{"0": "a.example", "1": "b.example"}', ["a.example", "b.example"]),
    ("", []),
])
def test_list_replies_in_every_shape(text, expected):
    reply = parse_reply(text)
    assert reply_error(reply) is None
    assert reply_list(reply) == expected


@pytest.mark.parametrize("text", [
    "error=1&text=Unable+to+create&details=That+user+already+exists",
    '{"error": "1", "text": "Unable to create", "details": "That user already exists"}',
])
def test_error_replies_name_text_and_details(text):
    assert reply_error(parse_reply(text)) == "Unable to create: That user already exists"


def test_success_reply_is_not_an_error():
    assert reply_error(parse_reply("error=0&text=Created")) is None
    assert reply_error(parse_reply('{"error": 0, "text": "Created"}')) is None


@pytest.mark.parametrize("text", ["<html><body>Login</body></html>", "Please log in to continue", "{not json"])
def test_non_api_replies_are_errors(text):
    with pytest.raises(DirectAdminError):
        parse_reply(text)


# ---------------------------------------------------------------------------
# client against the fake panel
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("use_json", [True, False], ids=["json", "urlencoded"])
def test_client_lists_and_creates(panel, use_json):
    client = client_for(panel, use_json=use_json)
    assert client.list_domains() == list(DOMAINS)
    assert client.list_mailboxes("gamma.example") == ["dave", "erin", "frank"]
    assert client.list_mailboxes("delta.example") == []
    client.create_mailbox("Grace@Beta.example", MAILBOX_PW, 250)
    assert panel.created == ["grace@beta.example"]
    assert client.list_mailboxes("beta.example") == ["carol", "grace"]
    # the panel answered in the style that was asked for
    assert all((r.params.get("json") == "yes") == use_json for r in panel.requests)
    create = [r for r in panel.requests if r.params.get("action") == "create"]
    assert [(r.method, r.params["user"], r.params["domain"], r.params["quota"]) for r in create] == [
        ("POST", "grace", "beta.example", "250")]
    # the password travelled in the POST body only, never in a URL
    assert not any(k.startswith("passwd") for r in panel.requests for k in r.query_keys)


def test_on_create_gets_the_mailbox_password_and_quota(panel):
    seen = []
    panel.on_create = lambda email, password, quota: seen.append((email, password, quota))
    client_for(panel).create_mailbox("heidi@alpha.example", MAILBOX_PW, 0)
    assert seen == [("heidi@alpha.example", MAILBOX_PW, 0)]


@pytest.mark.parametrize("use_json", [True, False], ids=["json", "urlencoded"])
def test_client_reports_the_panels_words(panel, use_json):
    client = client_for(panel, use_json=use_json)
    with pytest.raises(DirectAdminError, match="You do not own that domain"):
        client.list_mailboxes("not-mine.example")
    with pytest.raises(DirectAdminError, match="already exists"):
        client.create_mailbox("alice@alpha.example", MAILBOX_PW, 0)
    panel.fail_next = "Too many requests, slow down"
    with pytest.raises(DirectAdminError, match="Too many requests, slow down"):
        client.list_domains()
    assert client.list_domains() == list(DOMAINS)  # only the next call failed
    assert panel.created == []


def test_client_refuses_an_empty_password_before_asking_the_panel(panel):
    with pytest.raises(DirectAdminError, match="password is empty"):
        client_for(panel).create_mailbox("ivan@alpha.example", "", 0)
    assert panel.requests == []


def test_panel_checks_passwords_and_domain(panel):
    """The fake's own create checks, reached over plain HTTP as any client would."""
    def create(**fields):
        resp = requests.post(f"{panel.url}/CMD_API_POP", auth=(PANEL_USER, PANEL_PW), timeout=10,
                             data={"action": "create", "quota": "0", **fields})
        return parse_reply(resp.text)

    assert "do not match" in reply_error(create(domain="alpha.example", user="x", passwd="a", passwd2="b"))
    assert "do not own" in reply_error(create(domain="nope.example", user="x", passwd="a", passwd2="a"))
    assert reply_error(create(domain="alpha.example", user="x", passwd="a", passwd2="a")) is None
    assert panel.created == ["x@alpha.example"]
    assert all("passwd" not in r.params and "passwd2" not in r.params for r in panel.requests)


@pytest.mark.parametrize("login_page", [False, True], ids=["401", "login-page"])
def test_wrong_credentials_are_a_clear_error(panel, login_page):
    panel.login_page = login_page
    client = DirectAdminClient(panel.url, PANEL_USER, "wrong-" + PANEL_PW, timeout=10)
    with pytest.raises(DirectAdminError) as err:
        client.list_domains()
    message = str(err.value)
    assert ("login page" if login_page else "refused the login") in message
    assert PANEL_PW not in message
    assert panel.requests == []  # nothing ran unauthenticated
    assert PANEL_PW not in repr(client)


def test_unreachable_panel_is_named_in_plain_words():
    client = DirectAdminClient(f"http://127.0.0.1:{free_port()}", PANEL_USER, PANEL_PW, timeout=5)
    with pytest.raises(DirectAdminError, match="cannot reach the panel .*connection refused"):
        client.list_domains()


def test_a_url_with_credentials_is_refused():
    with pytest.raises(DirectAdminError, match="no credentials in the panel URL"):
        DirectAdminClient(f"https://{PANEL_USER}:{PANEL_PW}@panel.example:2222", PANEL_USER, PANEL_PW)


def test_tls_is_verified_unless_the_operator_says_otherwise():
    with PanelServer(PANEL_USER, PANEL_PW, {"alpha.example": ["alice"]}, tls=True) as panel:
        assert panel.url.startswith("https://")
        with pytest.raises(DirectAdminError, match="certificate .*could not be verified"):
            client_for(panel).list_domains()
        assert panel.requests == []
        assert client_for(panel, verify_ssl=False).list_domains() == ["alpha.example"]
        assert len(panel.requests) == 1


# ---------------------------------------------------------------------------
# Provisioner
# ---------------------------------------------------------------------------


def test_provisioner_creates_only_what_is_missing_and_lists_each_domain_once(panel):
    lines: list[str] = []
    prov = Provisioner(client_for(panel), quota_mb=500, dry_run=False, log=lines.append)
    assert prov.ensure("alice@alpha.example", MAILBOX_PW) == "exists"
    assert prov.ensure("ALICE@alpha.example", MAILBOX_PW) == "exists"
    assert prov.ensure("judy@alpha.example", MAILBOX_PW) == "created"
    assert prov.ensure("judy@alpha.example", MAILBOX_PW) == "exists"
    assert prov.ensure("kim@beta.example", MAILBOX_PW) == "created"
    assert panel.created == ["judy@alpha.example", "kim@beta.example"]
    assert panel.domains["alpha.example"] == ["alice", "bob", "judy"]
    assert [r.params.get("quota") for r in panel.requests if r.params.get("action") == "create"] == ["500", "500"]
    calls = [(r.path, r.params.get("action"), r.params.get("domain")) for r in panel.requests]
    assert calls.count(("/CMD_API_SHOW_DOMAINS", None, None)) == 1
    assert calls.count(("/CMD_API_POP", "list", "alpha.example")) == 1
    assert calls.count(("/CMD_API_POP", "list", "beta.example")) == 1
    assert lines == ["created mailbox judy@alpha.example on the panel, quota 500 MB",
                     "created mailbox kim@beta.example on the panel, quota 500 MB"]


def test_dry_run_changes_nothing_and_says_what_it_would_do(panel):
    lines: list[str] = []
    prov = Provisioner(client_for(panel), quota_mb=0, dry_run=True, log=lines.append)
    assert prov.ensure("bob@alpha.example", MAILBOX_PW) == "exists"
    assert prov.ensure("liam@alpha.example", MAILBOX_PW) == "would-create"
    assert prov.ensure("liam@alpha.example", MAILBOX_PW) == "would-create"
    assert prov.ensure("mia@gamma.example", "") == "would-create"
    assert panel.created == []
    assert not any(r.method == "POST" or r.params.get("action") == "create" for r in panel.requests)
    assert len(lines) == 2 and all(line.startswith("dry run: would create") for line in lines)
    assert "liam@alpha.example" in lines[0] and "unlimited" in lines[0]
    assert "password in the config is empty" in lines[1]
    assert not any(MAILBOX_PW in line for line in lines)


def test_provisioner_refuses_a_domain_the_panel_user_does_not_own(panel):
    prov = Provisioner(client_for(panel), quota_mb=0, dry_run=False, log=lambda _: None)
    with pytest.raises(DirectAdminError, match="other.example does not belong to the panel user 'reseller1'"):
        prov.ensure("nina@other.example", MAILBOX_PW)
    assert panel.created == []


def test_provisioner_raises_the_panels_failure(panel):
    def refuse(email, password, quota):
        raise RuntimeError("Disk quota of the user exceeded")

    panel.on_create = refuse
    prov = Provisioner(client_for(panel), quota_mb=0, dry_run=False, log=lambda _: None)
    with pytest.raises(DirectAdminError, match="Disk quota of the user exceeded"):
        prov.ensure("oscar@alpha.example", MAILBOX_PW)
    assert panel.created == []
    panel.on_create = None
    assert prov.ensure("oscar@alpha.example", MAILBOX_PW) == "created"


def test_provisioner_takes_a_mailbox_made_meanwhile_as_existing(panel):
    """Its cache is stale when someone else created the box: the panel's
    'already exists' is then checked against a fresh list, not trusted blindly."""
    prov = Provisioner(client_for(panel), quota_mb=0, dry_run=False, log=lambda _: None)
    assert prov.ensure("alice@alpha.example", MAILBOX_PW) == "exists"  # alpha's list is now cached
    panel.domains["alpha.example"].append("paul")
    assert prov.ensure("paul@alpha.example", MAILBOX_PW) == "exists"
    assert panel.created == []


def test_fresh_ensure_notices_a_mailbox_removed_since_it_was_listed(panel):
    """The lazy second chance after a failed login must not trust the cache."""
    prov = Provisioner(client_for(panel), quota_mb=0, dry_run=False, log=lambda _: None)
    assert prov.ensure("carol@beta.example", MAILBOX_PW) == "exists"
    panel.domains["beta.example"].remove("carol")
    assert prov.ensure("carol@beta.example", MAILBOX_PW) == "exists"  # cached
    assert prov.ensure("carol@beta.example", MAILBOX_PW, fresh=True) == "created"
    assert panel.created == ["carol@beta.example"]


def test_provisioner_is_safe_across_import_workers(panel):
    prov = Provisioner(client_for(panel), quota_mb=0, dry_run=False, log=lambda _: None)
    results: list[str] = []
    errors: list[BaseException] = []

    def worker():
        try:
            results.append(prov.ensure("quinn@gamma.example", MAILBOX_PW))
        except BaseException as exc:  # surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert errors == []
    assert sorted(results) == ["created"] + ["exists"] * 7
    assert panel.created == ["quinn@gamma.example"]


# ---------------------------------------------------------------------------
# directadmin-indexer, run as a user runs it
# ---------------------------------------------------------------------------


def indexer_argv() -> list[str]:
    script = Path(sys.executable).parent / "directadmin-indexer"
    if script.exists():
        return [str(script)]
    found = shutil.which("directadmin-indexer")
    return [found] if found else [sys.executable, "-m", "ns8_imapsync.bulk.indexer"]


def indexer_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("DA_PASSWORD", "DA_DEFAULT_PASSWORD")}
    env["PYTHONPATH"] = str(REPO / "imageroot" / "pypkg")
    env.update(extra)
    return env


def base_args(panel: PanelServer, out: Path) -> list[str]:
    return ["--url", panel.url, "--username", PANEL_USER, "--imap-host", "mail.old.example", "--out", str(out)]


class Terminal:
    """The indexer in a pseudo-terminal: wait for text, type an answer."""

    def __init__(self, argv: list[str], env: dict[str, str], cwd: Path) -> None:
        self.pid, self.fd = pty.fork()
        if self.pid == 0:  # child
            try:
                os.chdir(cwd)
                os.execve(argv[0], argv, env)
            finally:
                os._exit(127)
        self.output = ""

    def expect(self, text: str, timeout: float = 20) -> str:
        """Read until `text` appears (counted after what earlier calls consumed)."""
        start = len(self.output)
        deadline = time.monotonic() + timeout
        while text not in self.output[start:]:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"timed out waiting for {text!r}; output so far:\n{self.output}")
            ready, _, _ = select.select([self.fd], [], [], left)
            if ready:
                try:
                    chunk = os.read(self.fd, 4096)
                except OSError:  # EIO: the child closed the terminal
                    chunk = b""
                if not chunk:
                    raise AssertionError(f"the indexer ended before {text!r}; output:\n{self.output}")
                self.output += chunk.decode("utf-8", "replace")
        return self.output[start:]

    def send(self, line: str) -> None:
        os.write(self.fd, line.encode() + b"\r")

    def cmdline(self) -> str:
        return Path(f"/proc/{self.pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()

    def wait(self, timeout: float = 20) -> int:
        deadline = time.monotonic() + timeout
        while True:
            try:
                ready, _, _ = select.select([self.fd], [], [], 0.2)
                if ready:
                    chunk = os.read(self.fd, 4096)
                    self.output += chunk.decode("utf-8", "replace")
            except OSError:
                pass
            pid, status = os.waitpid(self.pid, os.WNOHANG)
            if pid:
                try:
                    while chunk := os.read(self.fd, 4096):
                        self.output += chunk.decode("utf-8", "replace")
                except OSError:
                    pass
                os.close(self.fd)
                return os.waitstatus_to_exitcode(status)
            if time.monotonic() > deadline:
                os.kill(self.pid, 9)
                os.waitpid(self.pid, 0)
                raise AssertionError(f"the indexer did not end; output:\n{self.output}")


def read_config(path: Path) -> dict:
    return json.loads(path.read_text(encoding="utf-8"))


def test_menu_range_after_invalid_answers_with_passwords_from_the_environment(panel, tmp_path):
    out = tmp_path / "export.pass.config.json"
    term = Terminal(indexer_argv() + base_args(panel, out),
                    indexer_env(DA_PASSWORD=PANEL_PW, DA_DEFAULT_PASSWORD=MAILBOX_PW), tmp_path)
    menu = term.expect("Enter for all): ")
    for n, domain in enumerate(DOMAINS, 1):
        assert f"{n}) {domain}" in menu
    # while it waits for the operator, its command line holds no secret
    assert PANEL_PW not in term.cmdline() and MAILBOX_PW not in term.cmdline()
    term.send("9")
    assert "outside 1-4" in term.expect("Enter for all): ")
    term.send("two")
    assert "not a number or a range" in term.expect("Enter for all): ")
    term.send("3-1")
    assert "backwards" in term.expect("Enter for all): ")
    term.send("1, 3-4")
    assert term.wait() == exitcodes.OK
    config = read_config(out)
    assert config["server"] == {"host": "mail.old.example", "port": 993, "ssl": True, "starttls": False}
    assert config["accounts"] == [
        {"email": f"{u}@{d}", "password": MAILBOX_PW}
        for d in ("alpha.example", "gamma.example") for u in DOMAINS[d]
    ]
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    assert "wrote 5 account(s)" in term.output
    assert PANEL_PW not in term.output and MAILBOX_PW not in term.output
    assert [p.name for p in tmp_path.iterdir()] == [out.name]  # no temp file left
    listed = [r.params["domain"] for r in panel.requests if r.params.get("action") == "list"]
    assert listed == ["alpha.example", "gamma.example", "delta.example"]


def test_menu_enter_takes_all_domains_and_passwords_are_left_for_the_operator(panel, tmp_path):
    pw_file = tmp_path / "da.pass"
    pw_file.write_text(PANEL_PW + "\n")
    pw_file.chmod(0o600)
    out = tmp_path / "export.pass.config.json"
    term = Terminal(indexer_argv() + base_args(panel, out) + ["--password-file", str(pw_file),
                                                              "--imap-starttls"],
                    indexer_env(), tmp_path)
    term.expect("Enter for all): ")
    assert PANEL_PW not in term.cmdline()
    term.send("")
    assert term.wait() == exitcodes.OK
    config = read_config(out)
    assert config["server"] == {"host": "mail.old.example", "port": 143, "ssl": False, "starttls": True}
    assert [a["email"] for a in config["accounts"]] == [
        f"{u}@{d}" for d in DOMAINS for u in sorted(DOMAINS[d])]
    assert {a["password"] for a in config["accounts"]} == {""}
    assert "passwords" in term.output and "fill them in" in term.output
    assert PANEL_PW not in term.output
    assert stat.S_IMODE(out.stat().st_mode) == 0o600


def test_panel_password_prompt_on_the_terminal_is_not_echoed(panel, tmp_path):
    out = tmp_path / "export.pass.config.json"
    term = Terminal(indexer_argv() + base_args(panel, out) + ["--domains", "beta.example"],
                    indexer_env(), tmp_path)
    term.expect("DirectAdmin password: ")
    term.send(PANEL_PW)
    assert term.wait() == exitcodes.OK
    assert PANEL_PW not in term.output
    assert [a["email"] for a in read_config(out)["accounts"]] == ["carol@beta.example"]


def test_ctrl_c_at_the_menu_writes_nothing(panel, tmp_path):
    out = tmp_path / "export.pass.config.json"
    term = Terminal(indexer_argv() + base_args(panel, out), indexer_env(DA_PASSWORD=PANEL_PW), tmp_path)
    term.expect("Enter for all): ")
    os.write(term.fd, b"\x03")
    assert term.wait() == exitcodes.INTERRUPTED
    assert "nothing written" in term.output
    assert list(tmp_path.iterdir()) == []


def run_indexer(args: list[str], cwd: Path, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(indexer_argv() + args, cwd=cwd, env=indexer_env(**env), stdin=subprocess.DEVNULL,
                          capture_output=True, text=True, timeout=60)


def test_without_a_terminal_all_domains_are_taken_and_an_existing_file_is_kept(panel, tmp_path):
    out = tmp_path / "export.pass.config.json"
    out.write_text("{}\n")
    proc = run_indexer(base_args(panel, out), tmp_path, DA_PASSWORD=PANEL_PW)
    assert proc.returncode == exitcodes.ENVIRONMENT, proc.stderr
    assert "--overwrite" in proc.stderr
    assert out.read_text() == "{}\n"
    assert panel.requests == []  # refused before asking the panel anything

    proc = run_indexer(base_args(panel, out) + ["--overwrite", "--no-imap-ssl", "--imap-port", "1143"],
                       tmp_path, DA_PASSWORD=PANEL_PW)
    assert proc.returncode == exitcodes.OK, proc.stderr
    assert "not a terminal: taking all 4 domain(s)" in proc.stdout
    config = read_config(out)
    assert config["server"] == {"host": "mail.old.example", "port": 1143, "ssl": False, "starttls": False}
    assert len(config["accounts"]) == sum(len(u) for u in DOMAINS.values())
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    assert PANEL_PW not in proc.stdout + proc.stderr


def test_domains_flag_chooses_without_a_menu(panel, tmp_path):
    out = tmp_path / "cfg.json"
    proc = run_indexer(base_args(panel, out) + ["--domains", "beta.example,GAMMA.example"], tmp_path,
                       DA_PASSWORD=PANEL_PW)
    assert proc.returncode == exitcodes.OK, proc.stderr
    assert [a["email"] for a in read_config(out)["accounts"]] == [
        "carol@beta.example", "dave@gamma.example", "erin@gamma.example", "frank@gamma.example"]

    proc = run_indexer(base_args(panel, tmp_path / "other.json") + ["--domains", "beta.example,zeta.example"],
                       tmp_path, DA_PASSWORD=PANEL_PW)
    assert proc.returncode == exitcodes.ENVIRONMENT
    assert "zeta.example" in proc.stderr
    assert not (tmp_path / "other.json").exists()


def test_password_on_the_command_line_works_but_warns(panel, tmp_path):
    out = tmp_path / "cfg.json"
    proc = run_indexer(base_args(panel, out) + ["--password", PANEL_PW, "--default-password", MAILBOX_PW],
                       tmp_path)
    assert proc.returncode == exitcodes.OK, proc.stderr
    assert proc.stderr.count("warning: a ") == 2 and "on the command line is visible" in proc.stderr
    assert {a["password"] for a in read_config(out)["accounts"]} == {MAILBOX_PW}
    assert PANEL_PW not in proc.stdout + proc.stderr and MAILBOX_PW not in proc.stdout + proc.stderr


def test_panel_failures_exit_with_the_connectivity_code(panel, tmp_path):
    out = tmp_path / "cfg.json"
    proc = run_indexer(base_args(panel, out), tmp_path, DA_PASSWORD="wrong")
    assert proc.returncode == exitcodes.CONNECTIVITY
    assert "refused the login" in proc.stderr
    panel.fail_next = "Cannot Execute Your Request"
    proc = run_indexer(base_args(panel, out), tmp_path, DA_PASSWORD=PANEL_PW)
    assert proc.returncode == exitcodes.CONNECTIVITY
    assert "Cannot Execute Your Request" in proc.stderr
    assert not out.exists()


def test_missing_panel_password_is_a_usage_error(panel, tmp_path):
    proc = run_indexer(base_args(panel, tmp_path / "cfg.json"), tmp_path)
    assert proc.returncode == exitcodes.ENVIRONMENT
    assert "no panel password" in proc.stderr
    proc = run_indexer(base_args(panel, tmp_path / "cfg.json") + ["--password-file", str(tmp_path / "nope")],
                       tmp_path)
    assert proc.returncode == exitcodes.ENVIRONMENT
    assert "cannot read" in proc.stderr


def test_indexer_verifies_the_panel_certificate_unless_told_not_to(tmp_path):
    with PanelServer(PANEL_USER, PANEL_PW, {"alpha.example": ["alice"]}, tls=True) as panel:
        out = tmp_path / "cfg.json"
        proc = run_indexer(base_args(panel, out), tmp_path, DA_PASSWORD=PANEL_PW)
        assert proc.returncode == exitcodes.CONNECTIVITY
        assert "certificate" in proc.stderr and "no-verify-ssl" in proc.stderr
        proc = run_indexer(base_args(panel, out) + ["--no-verify-ssl"], tmp_path, DA_PASSWORD=PANEL_PW)
        assert proc.returncode == exitcodes.OK, proc.stderr
        assert "not verified" in proc.stderr
        assert "InsecureRequestWarning" not in proc.stderr
        assert read_config(out)["accounts"] == [{"email": "alice@alpha.example", "password": ""}]


def test_help_shows_an_example():
    proc = subprocess.run(indexer_argv() + ["--help"], env=indexer_env(), capture_output=True, text=True,
                          timeout=30)
    assert proc.returncode == 0
    assert "example:" in proc.stdout and "directadmin-indexer --url https://" in proc.stdout
    for flag in ("--password-file", "--default-password-file", "--overwrite", "--no-verify-ssl", "--domains"):
        assert flag in proc.stdout
