"""imapsync-bulk-migrator end to end: the CLI as a user runs it, against the local
node's two real Dovecots (remote: "." delimiter, source; mail1: "/" delimiter,
target) and, for provisioning, the fake DirectAdmin panel.

Target accounts log in with the same address and password as on the source
(added to mail1 by ``localnode.mailusers``), as after a panel migration.
Mailboxes are compared whole: per folder, the multiset of (sha256 of the
bytes, flags, INTERNALDATE), so "every message exactly once, in its folder, with
its flags and date" is what is asserted, not a count.

A server that lies (leaves messages out of a listing, sends more than it
announced, ignores partial ranges, never returns APPENDUID) is the fault proxy
(tests/faultproxy.py) in front of a real Dovecot; the target without UIDPLUS is
a second pair whose mail1 does not announce it (port base
$BULK_NO_UIDPLUS_PORT_BASE, default 21000).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from faultproxy import FaultProxy
from imapclient import IMAPClient
from localnode import corpus, mailusers
from localnode.config import ImapServer
from localnode.dapanel import PanelServer
from localnode.imap_pair import Pair, running_pair
from ns8_imapsync.bulk import exitcodes
from ns8_imapsync.bulk.store import AccountStore, encode_component, folder_components
from ns8_imapsync.imap.reads import size_bound

REPO = Path(__file__).resolve().parents[1]
PASSWORDS = {
    "alice@remote.test": "alice-Secret1",
    "bob@remote.test": "bob-Secret2",
    "carol@remote.test": "c a,r\"o'l$`\\;|&<>*?",
    "dave@remote.test": "dave-Secret4",
    "erin@remote.test": "erin-Secret5",
}
DA_USER, DA_PASS = "admin", "da-Panel-Secret7"
LARGE_BYTES = "100000"  # messages above this are streamed in chunks: the corpus has such messages
OUTPUTS: list[str] = []  # everything the CLI printed, checked for secrets at the end
NO_UIDPLUS_PORT_BASE = int(os.environ.get("BULK_NO_UIDPLUS_PORT_BASE", "21000"))


# ---------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------


def cli_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO / "imageroot" / "pypkg")
    env.pop("DA_PASSWORD", None)
    env.update(extra or {})
    return env


def cli_argv(*args: str) -> list[str]:
    return [sys.executable, "-m", "ns8_imapsync.bulk.cli", *args]


def run_cli(cwd: Path, *args: str, env: dict[str, str] | None = None, timeout: float = 120,
            ) -> subprocess.CompletedProcess:
    proc = subprocess.run(cli_argv(*args, "--large-message-bytes", LARGE_BYTES), cwd=cwd, capture_output=True,
                          text=True, env=cli_env(env), timeout=timeout, stdin=subprocess.DEVNULL)
    OUTPUTS.append(proc.stdout + proc.stderr)
    return proc


def write_config(path: Path, server: ImapServer, emails: list[str], port: int | None = None) -> Path:
    data = {"server": {"host": server.host, "port": port or server.imap_port, "ssl": False, "starttls": True},
            "accounts": [{"email": e, "password": PASSWORDS[e]} for e in emails]}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data))
    path.chmod(0o600)
    return path


def write_proxy_config(path: Path, proxy: FaultProxy, emails: list[str]) -> Path:
    """A config that reaches the server through the fault proxy, in clear text."""
    data = {"server": {"host": proxy.host, "port": proxy.port, "ssl": False, "starttls": False},
            "accounts": [{"email": e, "password": PASSWORDS[e]} for e in emails]}
    path.write_text(json.dumps(data))
    path.chmod(0o600)
    return path


def workdir(tmp: Path, pair: Pair, emails: list[str]) -> Path:
    """A directory with export.pass.config.json (remote) and import.pass.config.json (mail1)."""
    write_config(tmp / "export.pass.config.json", pair.cfg.remote, emails)
    write_config(tmp / "import.pass.config.json", pair.cfg.mail1, emails)
    return tmp


def login(server: ImapServer, user: str, password: str) -> IMAPClient:
    client = corpus.connect(server)
    client.login(user, password)
    client.normalise_times = False
    return client


def mailbox(server: ImapServer, email: str) -> dict[str, Counter]:
    """folder ("/"-separated) -> multiset of (sha256, flags, INTERNALDATE), read-only."""
    import hashlib
    client = login(server, email, PASSWORDS[email])
    try:
        out: dict[str, Counter] = {}
        for flags, delim, name in client.list_folders():
            if b"\\Noselect" in flags or name.startswith(("Shared", "Public")):
                continue
            client.select_folder(name, readonly=True)
            uids = client.search(["ALL"])
            items = client.fetch(uids, ["BODY.PEEK[]", "FLAGS", "INTERNALDATE"]) if uids else {}
            key = name.replace(delim.decode(), "/") if delim else name
            out[key] = Counter(
                (hashlib.sha256(v[b"BODY[]"]).hexdigest(),
                 frozenset(f for f in v[b"FLAGS"] if f != b"\\Recent"), v[b"INTERNALDATE"].timestamp())
                for v in items.values())
        return out
    finally:
        client.logout()


def nonempty(box: dict[str, Counter]) -> dict[str, Counter]:
    return {k: v for k, v in box.items() if v}


def append(server: ImapServer, email: str, folder: str, raw: bytes, flags=()) -> None:
    client = login(server, email, PASSWORDS[email])
    try:
        client.append(folder, raw, flags)
    finally:
        client.logout()


def delete_one(server: ImapServer, email: str, folder: str) -> bytes:
    """Expunge the first message of ``folder`` that has a Message-ID; returns its bytes."""
    client = login(server, email, PASSWORDS[email])
    try:
        client.select_folder(folder)
        uid = min(client.search(["HEADER", "Message-ID", "@"]) or client.search(["ALL"]))
        raw = client.fetch([uid], ["BODY.PEEK[]"])[uid][b"BODY[]"]
        client.delete_messages([uid])
        client.expunge()
        return raw
    finally:
        client.logout()


def extra_message(tag: str) -> bytes:
    return (f"From: x@example.com\r\nTo: y@example.com\r\nSubject: {tag}\r\n"
            f"Message-ID: <{tag}@bulk.test>\r\nDate: Mon, 1 Jan 2024 10:00:00 +0000\r\n\r\nbody {tag}\r\n").encode()


# ---------------------------------------------------------------------------
# fixtures
# ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def filled(pair: Pair) -> Pair:
    """alice (varied corpus + a folder with both messages and children), carol (tricky
    password), bob (larger, changed by the tests), dave and erin (small); the target
    accounts alice, bob, carol exist on mail1 (dave and erin are created by the panel)."""
    remote = pair.cfg.remote
    mailusers.add_user(remote, "erin@remote.test", PASSWORDS["erin@remote.test"])
    corpus.fill(remote, "alice@remote.test", PASSWORDS["alice@remote.test"], 11, 80, large=1, large_size=200_000)
    append(remote, "alice@remote.test", "Archive", extra_message("archive-parent"), [b"\\Seen", b"Work"])
    corpus.fill(remote, "carol@remote.test", PASSWORDS["carol@remote.test"], 13, 20, large=0)
    corpus.fill(remote, "bob@remote.test", PASSWORDS["bob@remote.test"], 12, 250, large=1, large_size=150_000)
    for e in ("dave@remote.test", "erin@remote.test"):
        corpus.fill(remote, e, PASSWORDS[e], 14, 10, large=0)
    for e in ("alice@remote.test", "bob@remote.test", "carol@remote.test"):
        mailusers.add_user(pair.cfg.mail1, e, PASSWORDS[e])
    return pair


@pytest.fixture(scope="module")
def exported(filled: Pair, tmp_path_factory) -> Path:
    """alice and carol exported once (the automatic audit included)."""
    w = workdir(tmp_path_factory.mktemp("main"), filled, ["alice@remote.test", "carol@remote.test"])
    (w / "import.pass.config.json").unlink()  # the export writes the template
    before = mailbox(filled.cfg.remote, "alice@remote.test")
    proc = run_cli(w, "--mode", "export", "--ca-file", filled.ca_file)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "audit clean" in proc.stdout
    assert mailbox(filled.cfg.remote, "alice@remote.test") == before, "the export changed the source"
    return w


# ---------------------------------------------------------------------------
# store layout (pure)
# ---------------------------------------------------------------------------


def test_folder_components_are_reversible_and_never_clash_with_our_files() -> None:
    names = ["INBOX", "Old Projects", "..", ".folder.json", "u0000000001.eml", "a/b", "100%", "Документы", "",
             "U12.JSON"]
    encoded = [encode_component(n) for n in names]
    assert len(set(encoded)) == len(names)
    assert encode_component("Old Projects") == "Old Projects" and encode_component("Документы") == "Документы"
    for e in encoded:
        assert "/" not in e and e not in ("", ".", "..") and not e.startswith(".")
        assert not (e.lower().startswith("u") and e.lower().endswith((".eml", ".json")) and e[1:2].isdigit())
    assert folder_components("Archive.2023", ".") == ["Archive", "2023"]
    assert len(encode_component("x" * 400).encode()) <= 220


# ---------------------------------------------------------------------------
# export and audit
# ---------------------------------------------------------------------------


def test_export_keeps_folder_names_hierarchy_and_identity(exported: Path, filled: Pair) -> None:
    store = AccountStore(exported / "exported", "alice@remote.test")
    folders = {meta.name: d for d, meta in store.folders()}
    assert {"INBOX", "Old Projects", "Archive", "Archive.2023", "Clients.ACME.Contracts", "Документы", "日本語",
            "Projets.Réunions", "Empty Folder"} <= set(folders)
    assert folders["Archive.2023"] == store.dir / "Archive" / "2023"
    assert folders["Projets.Réunions"] == store.dir / "Projets" / "Réunions"
    # a folder with messages and a child folder side by side
    archive = folders["Archive"]
    assert (archive / "2023").is_dir() and AccountStore.exported_uids(archive)
    side = AccountStore.sidecars(archive)[0][1]
    assert side.folder == "Archive" and side.flags == ["Work", "\\Seen"]
    assert side.message_id == "<archive-parent@bulk.test>" and side.signature and side.uidvalidity > 0
    # every source message is there once, byte for byte
    source = nonempty(mailbox(filled.cfg.remote, "alice@remote.test"))
    import hashlib
    local = {}
    for d, meta in store.folders():
        hashes = Counter(hashlib.sha256(eml.read_bytes()).hexdigest() for eml, _ in AccountStore.sidecars(d))
        if hashes:
            local[meta.name.replace(".", "/")] = hashes
    assert local == {k: Counter(h for h, _f, _d in v.elements()) for k, v in source.items()}
    # the import template: same accounts, placeholder host, owner-only
    template = exported / "import.pass.config.json"
    assert template.stat().st_mode & 0o777 == 0o600
    data = json.loads(template.read_text())
    assert data["server"]["host"] == "CHANGE_ME.example.com"
    assert [a["email"] for a in data["accounts"]] == ["alice@remote.test", "carol@remote.test"]


def test_audit_catches_tampered_missing_and_leaked_files(exported: Path, filled: Pair, tmp_path: Path) -> None:
    import shutil
    w = tmp_path
    shutil.copy(exported / "export.pass.config.json", w)
    shutil.copytree(exported / "exported", w / "exported")
    assert run_cli(w, "--mode", "audit", "--ca-file", filled.ca_file).returncode == 0
    inbox = w / "exported" / "alice@remote.test" / "INBOX"
    emls = sorted(inbox.glob("u*.eml"))
    with open(emls[0], "ab") as f:
        f.write(b"tampered\r\n")
    emls[1].with_suffix(".json").unlink()
    # a message with a FETCH response glued in front, its sidecar made consistent
    leaked = b"* 3 FETCH (UID 3 FLAGS (\\Seen) BODY[] {120}\r\n" + emls[2].read_bytes()
    emls[2].write_bytes(leaked)
    side = json.loads(emls[2].with_suffix(".json").read_text())
    import hashlib
    side.update(size=len(leaked), sha256=hashlib.sha256(leaked).hexdigest())
    emls[2].with_suffix(".json").write_text(json.dumps(side))
    proc = run_cli(w, "--mode", "audit", "--ca-file", filled.ca_file)
    out = proc.stdout
    assert proc.returncode == exitcodes.AUDIT_FAILED, out
    assert f"INBOX/{emls[0].name}: size" in out and "SHA-256 differs" in out
    assert f"INBOX/{emls[1].name}: its sidecar is missing" in out
    assert f"INBOX/{emls[2].name}: IMAP protocol text leaked" in out
    assert "INBOX: " in out and "exported" in out and "on the source" in out  # counts no longer match
    assert "carol@remote.test: audit clean" in out


# ---------------------------------------------------------------------------
# import and validate
# ---------------------------------------------------------------------------


def test_import_validate_reimport_and_resync(exported: Path, filled: Pair) -> None:
    w = exported
    write_config(w / "import.pass.config.json", filled.cfg.mail1, ["alice@remote.test", "carol@remote.test"])
    proc = run_cli(w, "--mode", "import", "--ca-file", filled.ca_file)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    source = nonempty(mailbox(filled.cfg.remote, "alice@remote.test"))
    assert nonempty(mailbox(filled.cfg.mail1, "alice@remote.test")) == source
    assert nonempty(mailbox(filled.cfg.mail1, "carol@remote.test")) == nonempty(
        mailbox(filled.cfg.remote, "carol@remote.test"))
    # empty folders exist on the target too, with its delimiter
    assert "Empty Folder" in mailbox(filled.cfg.mail1, "alice@remote.test")

    proc = run_cli(w, "--mode", "validate", "--ca-file", filled.ca_file)
    assert proc.returncode == 0 and "alice@remote.test: validate clean" in proc.stdout, proc.stdout

    proc = run_cli(w, "--mode", "import", "--ca-file", filled.ca_file)
    assert proc.returncode == 0
    assert "alice@remote.test: imported 0 message(s)" in proc.stdout, proc.stdout
    assert nonempty(mailbox(filled.cfg.mail1, "alice@remote.test")) == source

    gone = delete_one(filled.cfg.mail1, "alice@remote.test", "Archive/2023")
    mid = next(line for line in gone.split(b"\r\n") if line.lower().startswith(b"message-id:")).split(b":", 1)[1]
    proc = run_cli(w, "--mode", "validate", "--ca-file", filled.ca_file)
    assert proc.returncode == exitcodes.VALIDATION_MISMATCH, proc.stdout
    assert "Archive/2023: MISSING exported" in proc.stdout and mid.strip().decode() in proc.stdout
    assert "1 missing, 0 extra" in proc.stdout

    proc = run_cli(w, "--mode", "validate", "--resync-missing", "--ca-file", filled.ca_file)
    assert proc.returncode == 0 and "re-imported 1 missing message(s)" in proc.stdout, proc.stdout
    assert nonempty(mailbox(filled.cfg.mail1, "alice@remote.test")) == source

    # an extra message on the target is a mismatch too; a deep check agrees otherwise
    append(filled.cfg.mail1, "carol@remote.test", "INBOX", extra_message("stray"))
    proc = run_cli(w, "--mode", "validate", "--verify-content", "--ca-file", filled.ca_file)
    assert proc.returncode == exitcodes.VALIDATION_MISMATCH
    assert "INBOX: EXTRA target UID" in proc.stdout and "<stray@bulk.test>" in proc.stdout
    assert "alice@remote.test: validate clean" in proc.stdout


def test_import_killed_halfway_then_rerun_is_exact(filled: Pair, tmp_path: Path) -> None:
    w = workdir(tmp_path, filled, ["bob@remote.test"])
    assert run_cli(w, "--mode", "export", "--ca-file", filled.ca_file).returncode == 0
    total = sum(sum(c.values()) for c in mailbox(filled.cfg.remote, "bob@remote.test").values())
    mail1 = filled.cfg.mail1
    proc = subprocess.Popen(cli_argv("--mode", "import", "--ca-file", filled.ca_file,
                                     "--large-message-bytes", LARGE_BYTES),
                            cwd=w, env=cli_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    client = login(mail1, "bob@remote.test", PASSWORDS["bob@remote.test"])
    seen = 0
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and proc.poll() is None:
            seen = sum(client.folder_status(name, ["MESSAGES"])[b"MESSAGES"]
                       for flags, _d, name in client.list_folders()
                       if b"\\Noselect" not in flags and not name.startswith(("Shared", "Public")))
            if seen >= 15:
                proc.send_signal(signal.SIGKILL)
                break
            time.sleep(0.02)
    finally:
        client.logout()
    proc.wait(timeout=30)
    OUTPUTS.append(proc.stdout.read().decode(errors="replace"))
    assert proc.returncode == -signal.SIGKILL, "the import finished before it could be killed"
    partial = sum(sum(c.values()) for c in mailbox(mail1, "bob@remote.test").values())
    assert 15 <= partial < total
    rerun = run_cli(w, "--mode", "import", "--ca-file", filled.ca_file)
    assert rerun.returncode == 0, rerun.stdout
    assert nonempty(mailbox(mail1, "bob@remote.test")) == nonempty(mailbox(filled.cfg.remote, "bob@remote.test"))
    assert run_cli(w, "--mode", "validate", "--ca-file", filled.ca_file).returncode == 0


def test_interrupted_export_exits_130_and_resumes(filled: Pair, tmp_path: Path) -> None:
    w = workdir(tmp_path, filled, ["bob@remote.test"])
    proc = subprocess.Popen(cli_argv("--mode", "export", "--ca-file", filled.ca_file), cwd=w, env=cli_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    first = b""
    while b"messages on the source" not in first:  # the account's export has started
        line = proc.stdout.readline()
        assert line, first.decode()
        first += line
    proc.send_signal(signal.SIGINT)
    out = first.decode() + proc.stdout.read().decode(errors="replace")
    OUTPUTS.append(out)
    assert proc.wait(timeout=60) == exitcodes.INTERRUPTED, out
    assert "stopping after the current batch" in out and "bob@remote.test: stopped" in out
    partial = sum(1 for _ in (w / "exported").rglob("u*.eml"))
    proc2 = run_cli(w, "--mode", "export", "--ca-file", filled.ca_file)
    assert proc2.returncode == 0 and f"{partial} already exported" in proc2.stdout, proc2.stdout


def test_incremental_export_fetches_new_and_removes_gone(filled: Pair, tmp_path: Path) -> None:
    w = workdir(tmp_path, filled, ["dave@remote.test"])
    assert run_cli(w, "--mode", "export", "--ca-file", filled.ca_file, "--no-audit-after-export").returncode == 0
    store = AccountStore(w / "exported", "dave@remote.test")
    inbox = store.folder_dir("INBOX", ".")
    before = AccountStore.exported_uids(inbox)
    mtimes = {p: p.stat().st_mtime_ns for p in inbox.glob("u*.eml")}
    delete_one(filled.cfg.remote, "dave@remote.test", "INBOX")
    append(filled.cfg.remote, "dave@remote.test", "INBOX", extra_message("incremental"))
    proc = run_cli(w, "--mode", "export", "--ca-file", filled.ca_file)
    assert proc.returncode == 0, proc.stdout
    assert "exported 1 new message(s)" in proc.stdout and "removed 1" in proc.stdout
    after = AccountStore.exported_uids(inbox)
    assert len(before - after) == 1 and len(after - before) == 1
    assert not any(p.exists() for p in store.folder_dir("INBOX", ".").glob(f"u{min(before - after):010d}.*"))
    new = AccountStore.read_sidecar(inbox / f"u{max(after):010d}.json")
    assert new.message_id == "<incremental@bulk.test>"
    for p, mtime in mtimes.items():  # kept messages were not downloaded again
        if p.exists():
            assert p.stat().st_mtime_ns == mtime


# ---------------------------------------------------------------------------
# test mode, certificates, exit codes
# ---------------------------------------------------------------------------


def test_test_mode_table_and_imapsync_gets_no_password(filled: Pair, tmp_path: Path) -> None:
    w = workdir(tmp_path, filled, ["alice@remote.test", "carol@remote.test"])
    fakebin = tmp_path / "bin"
    fakebin.mkdir()
    record = tmp_path / "imapsync-argv.json"
    (fakebin / "imapsync").write_text(
        f"#!{sys.executable}\nimport json, sys\njson.dump(sys.argv, open({str(record)!r}, 'w'))\n")
    (fakebin / "imapsync").chmod(0o755)
    env = {"PATH": f"{fakebin}:{os.environ['PATH']}"}
    proc = run_cli(w, "--mode", "test", "--ca-file", filled.ca_file, env=env)
    assert proc.returncode == 0, proc.stdout
    lines = proc.stdout.splitlines()
    header = next(i for i, ln in enumerate(lines) if ln.startswith("ACCOUNT"))
    assert lines[header].split() == ["ACCOUNT", "LOGIN", "IMAPSYNC", "DETAIL"]
    assert lines[header + 1].split()[:3] == ["alice@remote.test", "ok", "ok"]
    assert lines[header + 2].split()[:3] == ["carol@remote.test", "ok", "ok"]
    argv = json.loads(record.read_text())
    assert "--justconnect" in argv and not any(p in " ".join(argv) for p in PASSWORDS.values())

    cfg = json.loads((w / "export.pass.config.json").read_text())
    cfg["accounts"][1]["password"] = "wrong-password"
    (w / "export.pass.config.json").write_text(json.dumps(cfg))
    # without any imapsync on PATH (one may be installed beside the project)
    no_imapsync = ":".join(d for d in os.environ["PATH"].split(":") if not (Path(d) / "imapsync").exists())
    proc = run_cli(w, "--mode", "test", "--ca-file", filled.ca_file, env={"PATH": no_imapsync})
    assert proc.returncode == exitcodes.CONNECTIVITY
    row = next(ln for ln in proc.stdout.splitlines() if ln.startswith("carol@remote.test"))
    assert row.split()[1:3] == ["FAILED", "n/a"] and "rejected" in row  # imapsync absent: reported, not fatal
    assert "wrong-password" not in proc.stdout + proc.stderr


def test_certificates_are_verified_by_default(filled: Pair, tmp_path: Path) -> None:
    w = workdir(tmp_path, filled, ["alice@remote.test"])
    proc = run_cli(w, "--mode", "test")
    assert proc.returncode == exitcodes.CONNECTIVITY
    assert "certificate" in proc.stdout and "--insecure" in proc.stdout and "--ca-file" in proc.stdout
    proc = run_cli(w, "--mode", "test", "--insecure")
    assert proc.returncode == 0 and "NOT verified" in proc.stdout
    assert run_cli(w, "--mode", "test", "--ca-file", filled.ca_file).returncode == 0


def test_exit_codes_for_environment_and_connectivity(filled: Pair, tmp_path: Path) -> None:
    w = tmp_path
    assert run_cli(w, "--mode", "export").returncode == exitcodes.ENVIRONMENT  # no config
    (w / "export.pass.config.json").write_text("{not json")
    proc = run_cli(w, "--mode", "audit")
    assert proc.returncode == exitcodes.ENVIRONMENT and "not valid JSON" in proc.stdout
    write_config(w / "export.pass.config.json", filled.cfg.remote, ["alice@remote.test"])
    proc = run_cli(w, "--mode", "export", "--min-free-gb", "1e9")
    assert proc.returncode == exitcodes.ENVIRONMENT and "--min-free-gb" in proc.stdout
    cfg = json.loads((w / "export.pass.config.json").read_text())
    cfg["server"]["host"] = "CHANGE_ME.example.com"
    (w / "import.pass.config.json").write_text(json.dumps(cfg))
    proc = run_cli(w, "--mode", "import")
    assert proc.returncode == exitcodes.ENVIRONMENT and "CHANGE_ME" in proc.stdout
    write_config(w / "refused.json", filled.cfg.remote, ["alice@remote.test", "carol@remote.test"], port=1)
    proc = run_cli(w, "--mode", "export", "--config", "refused.json", "--max-workers", "1")
    assert proc.returncode == exitcodes.CONNECTIVITY and "refused the connection" in proc.stdout
    assert "carol@remote.test: not-started" in proc.stdout  # stopped at the first failure
    proc = run_cli(w, "--mode", "export", "--config", "refused.json", "--max-workers", "1", "--ignore-errors")
    assert proc.returncode == exitcodes.CONNECTIVITY and "carol@remote.test: failed" in proc.stdout
    proc = run_cli(w, "--mode", "validate", "--config", "export.pass.config.json", "--input-dir", "nowhere")
    assert proc.returncode == exitcodes.ENVIRONMENT


# ---------------------------------------------------------------------------
# DirectAdmin provisioning
# ---------------------------------------------------------------------------


def _panel(pair: Pair, existing: list[str]) -> PanelServer:
    return PanelServer(DA_USER, DA_PASS, {"remote.test": existing},
                       on_create=lambda email, password, quota: mailusers.add_user(pair.cfg.mail1, email, password))


def test_da_provisioning_creates_missing_mailbox_then_imports(filled: Pair, tmp_path: Path) -> None:
    w = workdir(tmp_path, filled, ["alice@remote.test", "erin@remote.test"])
    assert run_cli(w, "--mode", "export", "--ca-file", filled.ca_file).returncode == 0
    secret_file = tmp_path / "da.pass"
    secret_file.write_text(DA_PASS + "\n")
    secret_file.chmod(0o600)
    with _panel(filled, ["alice", "bob", "carol"]) as panel:
        da = ["--auto-provision-da", "--da-url", panel.url, "--da-username", DA_USER, "--da-quota-mb", "512"]
        proc = run_cli(w, "--mode", "import", "--ca-file", filled.ca_file, *da, "--da-dry-run",
                       env={"DA_PASSWORD": DA_PASS})
        assert proc.returncode == 0, proc.stdout
        assert "would create mailbox erin@remote.test" in proc.stdout and "nothing imported" in proc.stdout
        assert panel.created == [] and not mailusers.has_user(filled.cfg.mail1, "erin@remote.test")

        proc = run_cli(w, "--mode", "import", "--ca-file", filled.ca_file, *da, "--da-password-file", str(secret_file))
        assert proc.returncode == 0, proc.stdout
        assert panel.created == ["erin@remote.test"]
        assert "created mailbox erin@remote.test on the panel, quota 512 MB" in proc.stdout
        assert all("passwd" not in r.query_keys for r in panel.requests)
    assert nonempty(mailbox(filled.cfg.mail1, "erin@remote.test")) == nonempty(
        mailbox(filled.cfg.remote, "erin@remote.test"))


def test_da_lazy_provisioning_only_on_authentication_failure(filled: Pair, tmp_path: Path) -> None:
    """In process: the panel is asked again only when the target says "wrong user or password"."""
    from ns8_imapsync.bulk.config import Account, ServerConfig, TlsOptions
    from ns8_imapsync.bulk.directadmin import DirectAdminClient, Provisioner
    from ns8_imapsync.bulk.importer import ImportContext, import_account
    from ns8_imapsync.bulk.pool import AccountFailed, AccountResult
    from ns8_imapsync.bulk.progress import ProgressDisplay
    from ns8_imapsync.bulk.runlog import RunLog
    from ns8_imapsync.imap.reads import Limits

    w = workdir(tmp_path, filled, ["dave@remote.test"])
    assert run_cli(w, "--mode", "export", "--ca-file", filled.ca_file).returncode == 0
    mail1 = filled.cfg.mail1
    log = RunLog(None, "import", echo=open(os.devnull, "w"))
    tls = TlsOptions(ca_file=filled.ca_file)
    account = Account("dave@remote.test", PASSWORDS["dave@remote.test"])
    with _panel(filled, ["alice"]) as panel:
        prov = Provisioner(DirectAdminClient(panel.url, DA_USER, DA_PASS), 0, False, log.info)

        def ctx(port: int) -> ImportContext:
            return ImportContext(ServerConfig(mail1.host, port, False, True), tls, w / "exported", log,
                                 ProgressDisplay(log, 1, "imported", tty=False), threading.Event(), Limits(), prov)

        with pytest.raises(AccountFailed, match="refused the connection"):
            import_account(account, AccountResult(account.email), ctx(1))
        assert panel.requests == [] and panel.created == []  # a network failure never reaches the panel

        result = AccountResult(account.email)
        import_account(account, result, ctx(mail1.imap_port))
        assert panel.created == ["dave@remote.test"] and result.counts["appended"] == 10
    assert nonempty(mailbox(mail1, "dave@remote.test")) == nonempty(mailbox(filled.cfg.remote, "dave@remote.test"))


# ---------------------------------------------------------------------------
# servers that lie (through the fault proxy); these change alice's source mailbox
# ---------------------------------------------------------------------------


def exported_files(store: AccountStore, folder: str) -> dict[int, Path]:
    inbox = store.folder_dir(folder, ".")
    return {uid: inbox / f"u{uid:010d}.eml" for uid in AccountStore.exported_uids(inbox)}


def test_export_from_a_lying_server_keeps_files_and_names_each_message(filled: Pair, tmp_path: Path) -> None:
    remote = filled.cfg.remote
    email = "alice@remote.test"
    with FaultProxy(remote.host, remote.imap_port) as proxy:
        w = tmp_path
        write_proxy_config(w / "export.pass.config.json", proxy, [email])
        assert run_cli(w, "--mode", "export", "--no-audit-after-export").returncode == 0
        store = AccountStore(w / "exported", email)
        before = exported_files(store, "INBOX")
        for tag in ("lie-inflated", "lie-undelivered"):
            append(remote, email, "INBOX", extra_message(tag))
        append(remote, email, "INBOX", extra_message("lie-large") + (b"y" * 76 + b"\r\n") * 2000)
        client = login(remote, email, PASSWORDS[email])
        client.select_folder("INBOX", readonly=True)
        inflated, undelivered, large = sorted(client.search(["ALL"]))[-3:]
        client.logout()
        hidden = min(before)
        proxy.drop_fetch(hidden)  # left out of the listing: its files must stay
        proxy.inflate(inflated, 300_000)
        proxy.drop_item("BODY[]", uid=undelivered)
        proxy.ignore_partial()  # the large message is read in chunks
        proc = run_cli(w, "--mode", "export", "--no-audit-after-export")
        out = proc.stdout
        assert proc.returncode == exitcodes.CONNECTIVITY, out
        assert f"INBOX: the server did not list 1 of its messages (UID {hidden})" in out
        assert f"INBOX: message UID {inflated} refused: the server announced" in out
        assert f"INBOX: message UID {undelivered} is listed by the server but was not delivered" in out
        assert f"INBOX: message UID {large} refused:" in out and "partial" in out
        assert "the export is incomplete" in out and "alice@remote.test: failed" in out
        after = exported_files(store, "INBOX")
        assert set(after) == set(before) and all(p.exists() for p in after.values())
        assert not list(store.dir.rglob(".tmp-*"))
        for d, _meta in store.folders():  # nothing larger than announced was ever written
            for eml, side in AccountStore.sidecars(d):
                assert eml.stat().st_size <= size_bound(side.rfc822_size)
        proxy.clear()
        proc = run_cli(w, "--mode", "export", "--no-audit-after-export")
        assert proc.returncode == 0, proc.stdout
        assert set(exported_files(store, "INBOX")) == set(before) | {inflated, undelivered, large}


@pytest.fixture(scope="module")
def no_uidplus() -> Iterator[Pair]:
    """A second pair whose mail1 does not announce UIDPLUS; dave has mail on its remote."""
    with running_pair(NO_UIDPLUS_PORT_BASE, mail1_uidplus=False) as started:
        email = "dave@remote.test"
        corpus.fill(started.cfg.remote, email, PASSWORDS[email], 15, 12, large=1, large_size=150_000)
        mailusers.add_user(started.cfg.mail1, email, PASSWORDS[email])
        yield started


def test_import_into_a_target_without_uidplus_imports_each_message_once(no_uidplus: Pair, tmp_path: Path) -> None:
    email = "dave@remote.test"
    mail1 = no_uidplus.cfg.mail1
    w = workdir(tmp_path, no_uidplus, [email])
    assert run_cli(w, "--mode", "export", "--ca-file", no_uidplus.ca_file).returncode == 0
    target = login(mail1, email, PASSWORDS[email])
    assert not target.has_capability("UIDPLUS")
    target.logout()
    with FaultProxy(mail1.host, mail1.imap_port, source_host=mail1.host) as proxy:
        proxy.strip_appenduid()  # Dovecot sends APPENDUID anyway; a real server without UIDPLUS does not
        write_proxy_config(w / "import.pass.config.json", proxy, [email])
        proc = run_cli(w, "--mode", "import")
        assert proc.returncode == 0, proc.stdout
        assert f"{email}: imported 12 message(s)" in proc.stdout
        source = nonempty(mailbox(no_uidplus.cfg.remote, email))
        assert nonempty(mailbox(mail1, email)) == source
        proc = run_cli(w, "--mode", "import")
        assert proc.returncode == 0 and f"{email}: imported 0 message(s)" in proc.stdout, proc.stdout
        assert nonempty(mailbox(mail1, email)) == source
        assert run_cli(w, "--mode", "validate").returncode == 0


def test_unreadable_target_messages_block_reimport_and_fail_validation(no_uidplus: Pair, tmp_path: Path) -> None:
    """A target message we cannot identify might be the copy of one we would append."""
    email = "dave@remote.test"
    mail1 = no_uidplus.cfg.mail1
    w = workdir(tmp_path, no_uidplus, [email])
    assert run_cli(w, "--mode", "export", "--ca-file", no_uidplus.ca_file).returncode == 0
    with FaultProxy(mail1.host, mail1.imap_port, source_host=mail1.host) as proxy:
        write_proxy_config(w / "import.pass.config.json", proxy, [email])
        assert run_cli(w, "--mode", "import").returncode == 0
        delete_one(mail1, email, "INBOX")  # the next import has one message to append ...
        append(mail1, email, "INBOX", b"From: x@example.com\r\nSubject: keyless\r\n\r\nno identity headers\r\n")
        client = login(mail1, email, PASSWORDS[email])
        client.select_folder("INBOX", readonly=True)
        keyless = max(client.search(["ALL"]))
        count = len(client.search(["ALL"]))
        client.logout()
        proxy.inflate(keyless, 300_000)  # ... but the target does not deliver this one as announced
        proc = run_cli(w, "--mode", "import")
        assert proc.returncode == exitcodes.CONNECTIVITY, proc.stdout
        assert f"INBOX: target message UID {keyless} unreadable" in proc.stdout
        assert "nothing appended to this folder" in proc.stdout
        client = login(mail1, email, PASSWORDS[email])
        assert client.folder_status("INBOX", ["MESSAGES"])[b"MESSAGES"] == count
        client.logout()
        proc = run_cli(w, "--mode", "validate", "--resync-missing")
        assert proc.returncode == exitcodes.VALIDATION_MISMATCH, proc.stdout
        assert f"INBOX: UNREADABLE target UID {keyless}" in proc.stdout and "re-imported" not in proc.stdout
        proxy.clear()
        proc = run_cli(w, "--mode", "import")
        assert proc.returncode == 0 and f"{email}: imported 1 message(s)" in proc.stdout, proc.stdout


def test_run_log_is_owner_only_even_when_the_file_exists(tmp_path: Path, monkeypatch) -> None:
    from ns8_imapsync.bulk import runlog

    class Frozen(datetime):  # the same file name twice
        @classmethod
        def now(cls, tz=None):
            return datetime(2024, 1, 2, 3, 4, 5, tzinfo=UTC)
    monkeypatch.setattr(runlog, "datetime", Frozen)
    log = runlog.RunLog(tmp_path, "export", echo=open(os.devnull, "w"))
    log.info("first")
    log.close()
    assert log.path is not None and log.path.stat().st_mode & 0o777 == 0o600
    log.path.chmod(0o644)
    again = runlog.RunLog(tmp_path, "export", echo=open(os.devnull, "w"))
    again.info("second")
    again.close()
    assert again.path == log.path and log.path.stat().st_mode & 0o777 == 0o600
    assert "first" in log.path.read_text() and "second" in log.path.read_text()


# ---------------------------------------------------------------------------
# secrets
# ---------------------------------------------------------------------------


def test_zz_no_password_in_any_output_or_log(exported: Path, tmp_path_factory) -> None:
    """Runs last in the module: everything the CLI printed or logged, no password in it."""
    secrets = [*PASSWORDS.values(), DA_PASS]
    logs = list(Path(tmp_path_factory.getbasetemp()).rglob("logs/*.log"))
    assert logs and OUTPUTS
    for text in OUTPUTS + [p.read_text(errors="replace") for p in logs]:
        for secret in secrets:
            assert secret not in text


@pytest.mark.parametrize("body", ['{"server": "h\u00e9"}'.encode("utf-16"), b'{"server": "h\xe9"}',
                                  b"[" * 100_000 + b"]" * 100_000])
def test_a_config_that_is_not_utf8_json_is_a_config_error(tmp_path: Path, body: bytes) -> None:
    from ns8_imapsync.bulk.config import ConfigError, load_config
    path = tmp_path / "export.pass.config.json"
    path.write_bytes(body)
    with pytest.raises(ConfigError, match="export.pass.config.json"):
        load_config(path)
