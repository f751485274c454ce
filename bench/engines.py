"""One measured run of each engine on one mailbox: native, imapsync, doveadm backup, raw.

Every engine runs as a child process of its own, measured the same way
(``probes``), between the same remote account and the same local user, with
STARTTLS on both sides. Passwords live in 0600 files (imapsync:
``--passfile1``/``--passfile2``); doveadm backup is the exception: it takes
the remote password only as ``-o imapc_password=...``, so it is in its argv
for the length of its run (loopback test credentials only).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

import probes
from localnode import dovecot
from localnode.config import ImapServer, NodeConfig

BENCH = Path(__file__).resolve().parent
IMAPSYNC_COUNTS = re.compile(r"^(Messages transferred|Messages skipped)\s*:\s*(\d+)", re.M)


@dataclass
class Mailbox:
    """One remote account and the local user it is copied into, with their password files."""

    cfg: NodeConfig
    remote_user: str
    local_user: str
    tmp: Path

    @property
    def remote_password_file(self) -> Path:
        """The remote account's password, from a 0600 file."""
        return self.tmp / f"{self.remote_user}.pwd"

    @property
    def master_password_file(self) -> Path:
        """Every engine logs into the local side as u1*vmail, with this file."""
        return self.tmp / "vmail.pwd"

    def write_password_files(self) -> None:
        """0600 files, so no password appears in an engine's argv (doveadm aside)."""
        for path, secret in ((self.remote_password_file, self.cfg.remote.users[self.remote_user]),
                             (self.master_password_file, self.cfg.mail1.master_password or "")):
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w") as f:
                f.write(secret + "\n")

    @property
    def target_login(self) -> str:
        """The master-user login (user*vmail), as the module logs in on a real node."""
        m = self.cfg.mail1
        return f"{self.local_user}{m.master_separator}{m.master_user}"

    def servers(self) -> dict:
        """Both Dovecots whose CPU a measurement adds up."""
        return {"remote": self.cfg.remote, "local": self.cfg.mail1}


def wipe_local(box: Mailbox) -> None:
    """The local user's mail, indexes and all, gone (not timed)."""
    dovecot.wipe(box.cfg.mail1, box.local_user)


def count_messages(server: ImapServer, user: str) -> int:
    """Messages in a mailbox now (all folders), as doveadm counts them (imapsync leaves
    exact duplicates out, so the counts of two engines may differ)."""
    proc = dovecot.doveadm(server, "mailbox", "status", "-u", user, "-t", "messages", "*")
    match = re.search(rb"messages=(\d+)", proc.stdout)
    return int(match.group(1)) if match else 0


def local_count(box: Mailbox) -> int:
    """What the engine left on the local side, to compare engines that skip duplicates."""
    return count_messages(box.cfg.mail1, box.local_user)


def _measure(box: Mailbox, argv: list[str], log: Path, env: dict | None = None) -> tuple[dict, probes.ChildResult]:
    """Every engine measured alike: server CPU and machine busy around the child, rusage from wait4."""
    probe = probes.Probe(box.servers()).start()
    child = probes.run_child(argv, env=env, log=log)
    out = probe.end()  # its window is the launcher's, a few ms wider than the command's own wall time
    out.update({"wall_s": child.wall_s, "exit": child.returncode, "client_cpu_s": child.cpu_s,
                "peak_rss_mb": child.maxrss_mb})
    out["dest_messages"] = local_count(box)
    return out, child


def _spec(box: Mailbox, workdir: Path) -> Path:
    """The engine child's input: endpoints and password files, never passwords."""
    r, m = box.cfg.remote, box.cfg.mail1
    spec = {"task": f"{box.local_user}_bench", "workdir": str(workdir),
            "source": {"host": r.host, "port": r.imap_port, "security": "tls", "user": box.remote_user},
            "target": {"host": m.host, "port": m.imap_port, "security": "tls", "user": box.target_login},
            "source_password_file": str(box.remote_password_file),
            "target_password_file": str(box.master_password_file)}
    path = box.tmp / "spec.json"
    path.write_text(json.dumps(spec))
    return path


def native(box: Mailbox, workdir: Path, log: Path) -> dict:
    """The native engine; ``workdir`` holds its state (a fresh one means a first run)."""
    workdir.mkdir(parents=True, exist_ok=True)
    out, child = _measure(box, [sys.executable, str(BENCH / "engine_child.py"), str(_spec(box, workdir))], log)
    try:
        result = json.loads(child.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        return {**out, "error": "no report (see the log)"}
    report = result["report"]
    out.update({"copied": report["copied"], "skipped": report["skipped"], "flags_updated": report["flags_updated"],
                "ok": result["ok"], "stats": result["stats"]})
    if not result["ok"]:
        out["error"] = report.get("reason", "")
    return out


def raw(box: Mailbox, log: Path) -> dict:
    """The raw ceiling (raw_copy.py) into an empty local mailbox."""
    out, child = _measure(box, [sys.executable, str(BENCH / "raw_copy.py"), str(_spec(box, box.tmp))], log)
    try:
        out.update(json.loads(child.stdout.strip().splitlines()[-1]))
    except (ValueError, IndexError):
        out["error"] = "no result (see the log)"
    return out


def imapsync_path() -> str | None:
    """The imapsync on PATH, or None: its rows then say so instead of failing the run."""
    return shutil.which("imapsync")


def imapsync(box: Mailbox, log: Path) -> dict:
    """imapsync with its defaults, as measured earlier (passwords from files)."""
    r, m = box.cfg.remote, box.cfg.mail1
    argv = [imapsync_path() or "imapsync", "--host1", r.host, "--port1", str(r.imap_port), "--user1", box.remote_user,
            "--passfile1", str(box.remote_password_file), "--host2", m.host, "--port2", str(m.imap_port),
            "--user2", box.target_login, "--passfile2", str(box.master_password_file),
            "--nolog", "--noreleasecheck", "--pidfile", str(box.tmp / "imapsync.pid")]
    out, child = _measure(box, argv, log)
    counts = dict(IMAPSYNC_COUNTS.findall(child.stdout))
    out.update({"copied": int(counts.get("Messages transferred", 0)),
                "skipped": int(counts.get("Messages skipped", 0))})
    (log.parent / (log.name + ".out")).write_text(child.stdout)
    return out


def doveadm_backup(box: Mailbox, log: Path) -> dict:
    """dsync over imapc (the options measured earlier): writes the local Maildir itself, no APPEND."""
    r = box.cfg.remote
    argv = ["doveadm", "-c", box.cfg.mail1.config, "-o", f"imapc_host={r.host}", "-o", f"imapc_port={r.imap_port}",
            "-o", "imapc_ssl=starttls", "-o", "imapc_ssl_verify=no", "-o", f"imapc_user={box.remote_user}",
            "-o", f"imapc_password={r.users[box.remote_user]}", "-o", "imapc_features=rfc822.size fetch-headers",
            "-o", "mail_prefetch_count=20", "backup", "-R", "-u", box.local_user, "imapc:"]
    out, _child = _measure(box, argv, log)
    return out
