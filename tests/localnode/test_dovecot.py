"""Real-behaviour tests of the local node's two Dovecot instances and the corpus filler.

Both servers run for the whole module on port base 23000 under a tmp dir;
the tests talk IMAP/LMTP to them exactly as the migration code will.
"""

from __future__ import annotations

import hashlib
import os
import socket
from collections import Counter
from datetime import UTC
from pathlib import Path

import pytest
from imapclient import IMAPClient
from imapclient.exceptions import LoginError

from localnode import corpus, dovecot
from localnode.config import NodeConfig

# Overridable so two checkouts (or sessions) can run this file at the same time.
PORT_BASE = int(os.environ.get("LOCALNODE_TEST_DOVECOT_PORT_BASE", "23000"))
FILL_USER = "carol@remote.test"  # the password full of shell/CSV metacharacters
FILL_SEED, FILL_COUNT = 3, 30


def _make_traversable(path: Path) -> None:
    """As root, pytest's 0700 tmp dirs must be searchable by the mail and dovecot users."""
    if os.geteuid() != 0:
        return
    for d in [path, *path.parents]:
        mode = d.stat().st_mode
        if not mode & 0o001:
            os.chmod(d, mode | 0o001)


def _node_processes(root: Path) -> list[str]:
    """Dovecot processes whose command line, cwd or root lies under `root` (independent of dovecot.pids)."""
    prefix = str(root).rstrip("/") + "/"
    found = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            exe = os.readlink(f"/proc/{pid}/exe")
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            dirs = [os.readlink(f"/proc/{pid}/{link}") + "/" for link in ("cwd", "root")]
        except OSError:
            continue
        if "dove" not in exe and "dove" not in cmd:
            continue
        if prefix in cmd or any(d.startswith(prefix) for d in dirs):
            found.append(f"{pid} {exe} {cmd}")
    return found


@pytest.fixture(scope="module")
def node(tmp_path_factory) -> NodeConfig:
    state = tmp_path_factory.mktemp("localnode")
    _make_traversable(state)
    cfg = NodeConfig(state_dir=state, port_base=PORT_BASE)
    dovecot.start(cfg)  # stops what it started if it fails
    try:
        yield cfg
    finally:
        dovecot.stop(cfg)


@pytest.fixture(scope="module")
def filled(node: NodeConfig) -> list[dict]:
    server = node.remote
    return corpus.fill(server, FILL_USER, server.users[FILL_USER], FILL_SEED, FILL_COUNT,
                       large=1, large_size=1_000_000)


def _login(server, user, password, imaps=False) -> IMAPClient:
    client = corpus.connect(server, imaps=imaps, timeout=10)
    client.login(user, password)
    return client


def _counts_by_status(client: IMAPClient, separator: str) -> dict[str, int]:
    return {
        f: client.folder_status(f.replace("/", separator), [b"MESSAGES"])[b"MESSAGES"]
        for f in corpus.FOLDERS
    }


# ---------------------------------------------------------------------------
# servers
# ---------------------------------------------------------------------------


def test_both_servers_answer(node):
    assert dovecot.status(node) == {"mail1": True, "remote": True}
    for server in (node.mail1, node.remote):
        with socket.create_connection((server.host, server.imap_port), timeout=5) as s:
            assert s.recv(512).startswith(b"* OK")
    with socket.create_connection((node.mail1.host, node.mail1.sieve_port), timeout=5) as s:
        assert b"STARTTLS" in s.recv(2048)
    assert Path(node.mail1.dir, "run", "lmtp").is_socket()


def _all_logins():
    cfg = NodeConfig(state_dir=Path("/nonexistent"), port_base=PORT_BASE)
    for server in (cfg.mail1, cfg.remote):
        for user in server.users:
            if user not in server.disabled_users:
                for imaps in (False, True):
                    yield pytest.param(server.name, user, imaps, id=f"{server.name}-{user}-{'imaps' if imaps else 'starttls'}")


@pytest.mark.parametrize(("server_name", "user", "imaps"), list(_all_logins()))
def test_every_user_logs_in(node, server_name, user, imaps):
    server = getattr(node, server_name)
    client = _login(server, user, server.users[user], imaps=imaps)
    assert client.select_folder("INBOX", readonly=True)[b"EXISTS"] >= 0
    client.logout()


def test_master_user_logs_in_as_user(node):
    m = node.mail1
    master = _login(m, f"u1{m.master_separator}{m.master_user}", m.master_password)
    master.create_folder("MasterProbe")
    master.logout()
    own = _login(m, "u1", m.users["u1"])
    assert own.folder_exists("MasterProbe")
    own.delete_folder("MasterProbe")
    own.logout()
    with pytest.raises(LoginError):
        _login(m, f"u1{m.master_separator}{m.master_user}", "wrong")


def test_disabled_user_cannot_log_in(node):
    m = node.mail1
    assert Path(m.dir, "disabled-users").read_text().split() == ["u4"]
    with pytest.raises(LoginError):
        _login(m, "u4", m.users["u4"])
    assert b"u4" in dovecot.doveadm(m, "user", "*").stdout.split()


def test_plaintext_login_refused_on_mail1_but_not_on_remote(node):
    m = node.mail1
    client = IMAPClient(m.host, m.imap_port, ssl=False, timeout=10)
    assert b"LOGINDISABLED" in client.capabilities()
    with pytest.raises(LoginError):
        client.login("u1", m.users["u1"])
    client.shutdown()
    r = node.remote
    client = IMAPClient(r.host, r.imap_port, ssl=False, timeout=10)
    client.login("alice@remote.test", r.users["alice@remote.test"])
    client.logout()


def test_mail1_capabilities(node):
    client = _login(node.mail1, "u2", node.mail1.users["u2"])
    caps = client.capabilities()
    assert b"FILTER=SIEVE" in caps and b"SPECIAL-USE" in caps
    ns = client.namespace()
    assert ns.personal[0] == ("", "/")
    assert ("Shared/", "/") in (ns.other or ()) and ("Public/", "/") in (ns.shared or ())
    client.logout()


def test_separators(node):
    for server, sep in ((node.mail1, "/"), (node.remote, ".")):
        user = next(u for u in server.users if u not in server.disabled_users)
        client = _login(server, user, server.users[user])
        assert client.list_folders("", "INBOX")[0][1] == sep.encode()
        client.logout()


def test_lmtp_delivery_and_wipe(node):
    m = node.mail1
    with socket.socket(socket.AF_UNIX) as s:
        s.connect(str(Path(m.dir, "run", "lmtp")))
        f = s.makefile("rwb")

        def reply() -> bytes:
            while (line := f.readline())[3:4] == b"-":
                pass
            return line

        assert reply().startswith(b"220")
        for cmd in (b"LHLO test", b"MAIL FROM:<a@example.org>", b"RCPT TO:<u3>", b"DATA"):
            f.write(cmd + b"\r\n")
            f.flush()
            assert reply()[:1] in (b"2", b"3"), cmd
        f.write(b"Subject: lmtp\r\n\r\nhello\r\n.\r\n")
        f.flush()
        assert reply().startswith(b"250")
    status = dovecot.doveadm(m, "mailbox", "status", "-u", "u3", "messages", "INBOX").stdout
    assert status.strip() == b"INBOX messages=1"
    dovecot.wipe(m, "u3")
    assert not Path(m.dir, "mail", "u3").exists()
    status = dovecot.doveadm(m, "mailbox", "status", "-u", "u3", "messages", "INBOX").stdout
    assert status.strip() == b"INBOX messages=0"


def test_port_in_use_is_a_clear_error_and_nothing_stays_up(tmp_path):
    _make_traversable(tmp_path)
    other = NodeConfig(state_dir=tmp_path / "other", port_base=PORT_BASE + 500)
    port = other.remote.imap_port  # mail1 starts first, then remote fails: mail1 must be rolled back
    with socket.socket() as blocker:
        blocker.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        blocker.bind((other.remote.host, port))
        blocker.listen()
        with pytest.raises(dovecot.DovecotError, match=rf"{port}.*already in use"):
            dovecot.start(other)
    assert dovecot.status(other) == {"mail1": False, "remote": False}
    assert _node_processes(other.state_dir) == []


# ---------------------------------------------------------------------------
# corpus
# ---------------------------------------------------------------------------


def test_build_is_deterministic_with_every_feature():
    a = corpus.build(7, 40, large=1, large_size=200_000)
    b = corpus.build(7, 40, large=1, large_size=200_000)
    assert [(m.raw, m.flags, m.internaldate, m.folder) for m in a] == [
        (m.raw, m.flags, m.internaldate, m.folder) for m in b]
    assert [m.raw for m in corpus.build(8, 40, large=1, large_size=200_000)] != [m.raw for m in a]
    assert len(a) == 40 and [m.index for m in a] == list(range(40))

    for name in ("INBOX", "Sent", "Drafts", "Trash", "Archive/2023", "Old Projects",
                 "Clients/ACME/Contracts", "Документы", "Projets/Réunions", "日本語"):
        assert name in corpus.FOLDERS and any(m.folder == name for m in a), name
    assert corpus.EMPTY_FOLDERS and not any(m.folder in corpus.EMPTY_FOLDERS for m in a)

    for m in a:
        assert b"\n" not in m.raw.replace(b"\r\n", b""), "bare LF"
        head = b"\r\n" + m.raw.split(b"\r\n\r\n", 1)[0]
        assert all(b"\r\n" + h + b": " in head for h in (b"Date", b"From", b"To", b"Subject", b"MIME-Version"))
        assert (b"\r\nMessage-ID: " in head) == (m.message_id is not None)
    neither = [m for m in a if b"Received:" not in m.raw.split(b"\r\n\r\n", 1)[0] and m.message_id is None]
    assert len(neither) == 1 and neither[0].folder == "INBOX"
    assert any(m.message_id is None and b"Received: " in m.raw for m in a)

    dups = [m for m in a if m.duplicate_of is not None]
    assert dups
    for d in dups:
        orig = a[d.duplicate_of]
        assert d.raw == orig.raw and d.folder == orig.folder and d.index > orig.index
    reused = [m for m in a if m.reuses_message_id_of is not None]
    assert reused and all(m.message_id == a[m.reuses_message_id_of].message_id
                          and m.sha1 != a[m.reuses_message_id_of].sha1 for m in reused)
    ids = Counter(m.message_id for m in a if m.message_id and m.duplicate_of is None)
    assert max(ids.values()) >= 2

    large = [m for m in a if m.kind == corpus.LARGE]
    assert len(large) == 1 and 200_000 <= large[0].size < 230_000
    flags = {f for m in a for f in m.flags}
    assert set(corpus.REQUIRED_FLAGS) <= flags
    years = {m.internaldate.year for m in a}
    assert len(years) >= 4 and all(m.internaldate.tzinfo is not None for m in a)
    assert any(b"=?UTF-8?" in m.raw.split(b"\r\n\r\n", 1)[0] for m in a)
    assert any(b"multipart/mixed" in m.raw and b"Content-Disposition: attachment" in m.raw for m in a)

    entry = a[0].manifest_entry()
    assert set(entry) == {"index", "folder", "message_id", "size", "flags", "internaldate", "sha1",
                          "duplicate_of", "sha256"}
    assert entry["internaldate"].endswith("Z") and entry["sha256"] == hashlib.sha256(a[0].raw).hexdigest()


def test_fill_remote_matches_manifest(node, filled, tmp_path):
    assert len(filled) == FILL_COUNT
    path = tmp_path / "m.jsonl"
    corpus.write_manifest(filled, path)
    assert corpus.read_manifest(path) == filled
    assert "Документы" in path.read_text(encoding="utf-8")

    expected = Counter(e["folder"] for e in filled)
    client = _login(node.remote, FILL_USER, node.remote.users[FILL_USER])
    counts = _counts_by_status(client, ".")
    assert counts == {f: expected.get(f, 0) for f in corpus.FOLDERS}
    names = {name for _flags, _sep, name in client.list_folders()}
    assert {"Документы", "Projets.Réunions", "日本語", "Clients.ACME.Contracts", "Empty Folder"} <= names

    # A non-ASCII folder round-trips bytes, flags and internal dates.
    client.normalise_times = False
    client.select_folder("Документы", readonly=True)
    fetched = client.fetch(client.search(), ["BODY.PEEK[]", "FLAGS", "INTERNALDATE"])
    got = sorted(
        (hashlib.sha1(v[b"BODY[]"]).hexdigest(),
         sorted(f.decode() for f in v[b"FLAGS"] if f != b"\\Recent"),
         v[b"INTERNALDATE"].astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"))
        for v in fetched.values()
    )
    want = sorted((e["sha1"], sorted(e["flags"]), e["internaldate"]) for e in filled if e["folder"] == "Документы")
    assert got == want and want
    client.logout()


def test_start_is_idempotent(node):
    before = {s.name: dovecot.pids(s)[0] for s in (node.mail1, node.remote)}
    dovecot.start(node)
    assert {s.name: dovecot.pids(s)[0] for s in (node.mail1, node.remote)} == before


def test_restart_keeps_mail(node, filled):
    dovecot.stop(node)
    assert dovecot.status(node) == {"mail1": False, "remote": False}
    assert _node_processes(node.state_dir) == []
    dovecot.stop(node)  # idempotent
    dovecot.start(node)
    expected = Counter(e["folder"] for e in filled)
    client = _login(node.remote, FILL_USER, node.remote.users[FILL_USER])
    assert _counts_by_status(client, ".") == {f: expected.get(f, 0) for f in corpus.FOLDERS}
    client.logout()


def test_stop_leaves_no_process(node):
    client = _login(node.mail1, "u1", node.mail1.users["u1"])  # a live session must not survive either
    dovecot.stop(node)
    assert dovecot.status(node) == {"mail1": False, "remote": False}
    assert _node_processes(node.state_dir) == []
    client.shutdown()
