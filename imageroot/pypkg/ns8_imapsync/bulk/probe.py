"""test mode: can this machine and these accounts run a migration?

Checks the Python version, the free disk where the export goes, a real login
per account (in parallel), and ``imapsync --justconnect`` against the server
when imapsync is installed (no credentials are passed to it: justconnect does
not log in).  imapsync missing is reported, not fatal.  Ends with one table.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from dataclasses import dataclass

from ns8_imapsync.imap.connection import check_login

from . import exitcodes
from .config import Account, ServerConfig, TlsOptions, endpoint
from .pool import AccountResult
from .session import CERT_HINT

MIN_PYTHON = (3, 11)


@dataclass
class ImapsyncCheck:
    available: bool
    ok: bool
    text: str


def imapsync_justconnect(server: ServerConfig, timeout: float = 30) -> ImapsyncCheck:
    exe = shutil.which("imapsync")
    if exe is None:
        return ImapsyncCheck(False, True, "imapsync not installed (optional)")
    argv = [exe, "--host1", server.host, "--port1", str(server.port), "--justconnect", "--nolog"]
    if server.ssl:
        argv.append("--ssl1")
    elif server.starttls:
        argv.append("--tls1")
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return ImapsyncCheck(True, False, f"imapsync --justconnect failed: {exc}")
    if proc.returncode == 0:
        return ImapsyncCheck(True, True, "imapsync --justconnect ok")
    last = (proc.stdout.strip().splitlines() or [""])[-1][:160]
    return ImapsyncCheck(True, False, f"imapsync --justconnect exit {proc.returncode}: {last}")


def python_ok() -> tuple[bool, str]:
    v = sys.version_info
    ok = (v.major, v.minor) >= MIN_PYTHON
    return ok, f"Python {v.major}.{v.minor}.{v.micro}" + ("" if ok else f" (need {MIN_PYTHON[0]}.{MIN_PYTHON[1]}+)")


def probe_account(account: Account, result: AccountResult, server: ServerConfig, tls: TlsOptions) -> None:
    check = check_login(endpoint(server, account.email, tls), account.password)
    result.counts["login_ok"] = int(check.ok)
    if check.ok:
        result.error = check.reason
        return
    text = check.reason
    if check.error == "SSL_encryption_error" and tls.verify and "certificate" in text.lower():
        text = text.rstrip(".") + CERT_HINT
    result.status, result.exit_code, result.error = "failed", exitcodes.CONNECTIVITY, text


def table(results: list[AccountResult], justconnect: ImapsyncCheck) -> str:
    rows = [("ACCOUNT", "LOGIN", "IMAPSYNC", "DETAIL")]
    for r in results:
        login = "ok" if r.status == "ok" else ("FAILED" if r.status == "failed" else r.status)
        ij = "ok" if justconnect.available and justconnect.ok else ("FAILED" if justconnect.available else "n/a")
        rows.append((r.email, login, ij, r.error))
    widths = [max(len(row[i]) for row in rows) for i in range(3)]
    return "\n".join(f"{a:<{widths[0]}}  {b:<{widths[1]}}  {c:<{widths[2]}}  {d}" for a, b, c, d in rows)
