"""What the imapsync engine's test modules share: the recorded outputs of the
real imapsync 2.229 (``fixtures/imapsync-logs``: INDEX.tsv and one log per
scenario) and a plan whose passwords are known, to check none leaks."""

from __future__ import annotations

from pathlib import Path

from ns8_imapsync.imap.connection import Endpoint
from ns8_imapsync.sync.plan import SyncPlan

LOGS = Path(__file__).parent / "fixtures" / "imapsync-logs"
REMOTE_PASSWORD = "Remote-S3cret pass"
MASTER_PASSWORD = "Master-S3cret pass"


def _index() -> list[tuple[str, int, str]]:
    rows = (LOGS / "INDEX.tsv").read_text().splitlines()[1:]
    return [(name, int(code), cmd) for name, code, cmd in (r.split("\t") for r in rows if r.strip())]


INDEX = _index()


def lines_of(name: str) -> list[str]:
    return (LOGS / f"{name}.log").read_text(encoding="utf-8", errors="replace").splitlines()


def make_plan(tmp_path: Path, **kw) -> SyncPlan:
    src = tmp_path / "u1_abc123.pwd"
    dst = tmp_path / "vmail.pwd"
    src.write_text(REMOTE_PASSWORD + "\n")
    dst.write_text(MASTER_PASSWORD + "\n")
    source = kw.pop("source", Endpoint("imap.example.com", 993, "ssl", "john@example.com"))
    target = kw.pop("target", Endpoint("10.5.4.1", 143, "tls", "u1*vmail"))
    return SyncPlan(task_name="u1_abc123", source=source, target=target, source_password_file=src,
                    target_password_file=dst, workdir=tmp_path, **kw)

# the error class the engine must give each recorded output
EXPECTED_CLASS = {
    "justconnect-ok": "",
    "justlogin-ok": "",
    "justlogin-bad-password-host1": "bad_user_credentials",
    "justlogin-bad-password-host2": "bad_master_credentials",  # host2 = the local master login
    "login-bad-password-both": "bad_user_credentials",  # 161 wins the tie
    "login-unknown-user-host1": "bad_user_credentials",
    "connect-refused-host1": "Check_hostname_or_tcp_port",
    "connect-refused-host2": "Check_hostname_or_tcp_port",
    "connect-unresolvable-host1": "Check_hostname_or_tcp_port",
    "justconnect-refused": "Check_hostname_or_tcp_port",
    "ssl-on-plain-port-host1": "SSL_encryption_error",  # 101, recognised by its SSL text
    "ssl-ok-imaps": "",
    "starttls-refused-host1": "STARTTLS_not_allowed_use_IMAPS",
    "starttls-refused-justconnect": "",
    "tls-forced-no-starttls-host1": "STARTTLS_not_allowed_use_IMAPS",
    "notls-auth-failed-host1": "bad_user_credentials",
    "bad-greeting-host1": "Check_hostname_or_tcp_port",
    "passfile-missing": "engine_error",  # 66
    "delete1-and-delete2": "engine_error",  # 64
    "pidfile-locked": "engine_error",  # 8
    "justfoldersizes": "",
    "dry-run": "",
    "sync-full": "",
    "sync-incremental": "",
    "justfoldersizes-after-sync": "",
    "sync-flags-changed": "",
    "sync-delete2": "",
    "sync-addheader": "",
    "folder-exclude-maxage": "",
    "search1-flagged": "",
    "justfolders-delete2folders-dry": "",
    "version": "",
    "debugimap-tiny-sync": "",
}
