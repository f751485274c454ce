"""Two real Dovecot 2.3 instances for the local node, driven from Python.

`mail1` plays the NS8 mail module (`/` separator, master user, FILTER=SIEVE,
TLS required for non-trusted clients) and `remote` plays a hosting provider
(Maildir++, `.` separator). Both listen on loopback addresses only and keep
everything (config, users, logs, sockets, mail) under `ImapServer.dir`, so
several nodes can run side by side. (When `<dir>/run` is too long for unix
socket paths, it is a symlink to a short dir in the system tmp dir.)

`start(cfg, mail1_uidplus=False)` runs a mail1 that does not announce UIDPLUS
(Dovecot's `imap_capability`), as some target servers. Dovecot still answers
APPEND with `[APPENDUID ...]`, so a test that needs a server which never tells
the new UID also strips it (`tests/faultproxy.py`, `strip_appenduid`).

As root, mail belongs to a dedicated system user (created on demand) and
Dovecot's own users `dovecot`/`dovenull` run the internal and login
processes; as non-root, everything runs as the caller with chroot disabled.
"""

from __future__ import annotations

import errno
import grp
import hashlib
import os
import pwd
import shutil
import signal
import socket
import stat
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from localnode.config import ImapServer, NodeConfig

MAIL_SYSTEM_USER = "localnode-mail"
DOVECOT_BIN = "dovecot"
DOVEADM_BIN = "doveadm"
DOVECONF_BIN = "doveconf"
SYSTEM_DH = Path("/usr/share/dovecot/dh.pem")
FILTER_SIEVE_PLUGIN = Path("/usr/lib/dovecot/modules/lib95_imap_filter_sieve_plugin.so")
LMTP_BIN = Path("/usr/lib/dovecot/lmtp")
# NS8 trusts its VPN; our clients come from 127.0.0.1, which is not trusted.
MAIL1_TRUSTED_NETWORKS = "10.5.4.0/24"
SUN_PATH_MAX = 107
LONGEST_SOCKET = "/token-login/imap-urlauth"
START_TIMEOUT = 15.0
# Dovecot 2.3's built-in post-login CAPABILITY (imap-common.h); an explicit
# `imap_capability` also silences what plugins add, so mail1's are listed too.
CORE_CAPABILITIES = (
    "IMAP4rev1 SASL-IR LOGIN-REFERRALS ID ENABLE IDLE SORT SORT=DISPLAY THREAD=REFERENCES THREAD=REFS "
    "THREAD=ORDEREDSUBJECT MULTIAPPEND URL-PARTIAL CATENATE UNSELECT CHILDREN NAMESPACE UIDPLUS LIST-EXTENDED "
    "I18NLEVEL=1 CONDSTORE QRESYNC ESEARCH ESORT SEARCHRES WITHIN CONTEXT=SEARCH LIST-STATUS BINARY MOVE "
    "SNIPPET=FUZZY PREVIEW=FUZZY PREVIEW STATUS=SIZE SAVEDATE LITERAL+ NOTIFY SPECIAL-USE"
)
MASTER_GRACE = 1.5


class DovecotError(RuntimeError):
    """A Dovecot instance could not be configured, started or driven."""


# ---------------------------------------------------------------------------
# identity
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class _Identity:
    """Who owns mail and who runs Dovecot's unprivileged processes."""

    root: bool
    mail_uid: int
    mail_gid: int
    mail_user: str
    internal_user: str
    internal_group: str
    login_user: str


def _identity(create: bool = False) -> _Identity:
    """Root: a dedicated mail user + dovecot/dovenull; else the caller for everything."""
    if os.geteuid() != 0:
        pw = pwd.getpwuid(os.geteuid())
        group = grp.getgrgid(os.getegid()).gr_name
        return _Identity(False, pw.pw_uid, os.getegid(), pw.pw_name, pw.pw_name, group, pw.pw_name)
    try:
        pw = pwd.getpwnam(MAIL_SYSTEM_USER)
    except KeyError:
        if not create:
            raise DovecotError(f"system user {MAIL_SYSTEM_USER} missing (start() creates it)") from None
        proc = subprocess.run(
            ["useradd", "--system", "--no-create-home", "--home-dir", "/nonexistent",
             "--shell", "/usr/sbin/nologin", MAIL_SYSTEM_USER],
            capture_output=True, text=True,
        )
        try:  # another node may have created it meanwhile
            pw = pwd.getpwnam(MAIL_SYSTEM_USER)
        except KeyError:
            raise DovecotError(f"useradd {MAIL_SYSTEM_USER} failed: {proc.stderr.strip()}") from None
    for name in ("dovecot", "dovenull"):
        try:
            pwd.getpwnam(name)
        except KeyError:
            raise DovecotError(f"system user {name} missing (is dovecot-core installed?)") from None
    return _Identity(True, pw.pw_uid, pw.pw_gid, MAIL_SYSTEM_USER, "dovecot", "dovecot", "dovenull")


def _check_binaries() -> None:
    """Fail early with the Debian package names instead of an obscure exec error."""
    missing = [b for b in (DOVECOT_BIN, DOVEADM_BIN, DOVECONF_BIN, "openssl") if shutil.which(b) is None]
    if missing or not FILTER_SIEVE_PLUGIN.exists() or not LMTP_BIN.exists():
        raise DovecotError(
            f"missing {missing or 'dovecot plugins'}; install dovecot-core dovecot-imapd dovecot-sieve "
            "dovecot-lmtpd dovecot-managesieved openssl"
        )


def _check_reachable(path: Path, ident: _Identity) -> None:
    """As root, the mail and dovecot users must be able to traverse to the state dir."""
    if not ident.root:
        return
    for user in (ident.mail_user, ident.internal_user):
        pw = pwd.getpwnam(user)
        groups = {pw.pw_gid} | {g.gr_gid for g in grp.getgrall() if user in g.gr_mem}
        for d in [path, *path.parents]:
            st = d.stat()
            if st.st_uid == pw.pw_uid:
                ok = st.st_mode & 0o100
            elif st.st_gid in groups:
                ok = st.st_mode & 0o010
            else:
                ok = st.st_mode & 0o001
            if not ok:
                raise DovecotError(
                    f"{d} is not searchable by user {user}, so Dovecot cannot reach {path}; "
                    f"use a state dir under world-searchable parents (or chmod o+x {d})"
                )


# ---------------------------------------------------------------------------
# TLS material
# ---------------------------------------------------------------------------


def _ensure_cert(cfg: NodeConfig) -> None:
    """Self-signed cert valid for localhost and the node's loopback addresses."""
    d = cfg.ssl_dir
    d.mkdir(parents=True, exist_ok=True)
    os.chmod(d, 0o755)
    cert, key = d / "cert.pem", d / "key.pem"
    if not (cert.is_file() and cert.stat().st_size and key.is_file() and key.stat().st_size):
        tmp_cert, tmp_key = d / "cert.pem.tmp", d / "key.pem.tmp"
        san = f"subjectAltName=DNS:localhost,IP:127.0.0.1,IP:{cfg.vpn_ip},IP:{cfg.remote_ip}"
        proc = subprocess.run(
            ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "3650",
             "-subj", "/CN=localhost", "-addext", san, "-keyout", str(tmp_key), "-out", str(tmp_cert)],
            capture_output=True, text=True,
        )
        if proc.returncode != 0:
            raise DovecotError(f"openssl req failed: {proc.stderr.strip()}")
        os.chmod(tmp_key, 0o600)
        os.chmod(tmp_cert, 0o644)
        os.replace(tmp_key, key)
        os.replace(tmp_cert, cert)
    os.chmod(key, 0o600)
    dh = d / "dh.pem"
    if not dh.exists() and SYSTEM_DH.is_file():
        shutil.copyfile(SYSTEM_DH, dh)
        os.chmod(dh, 0o644)


# ---------------------------------------------------------------------------
# configuration files
# ---------------------------------------------------------------------------


def _write(path: Path, text: str, mode: int = 0o644, group: str | None = None) -> None:
    """Atomic write, so a running Dovecot never reads half a file."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.chmod(tmp, mode)
    if group is not None:
        shutil.chown(tmp, group=group)
    os.replace(tmp, path)


def _passwd_line(user: str, password: str, extra: str = "") -> str:
    """A passwd-file line; passwords are stored verbatim ({PLAIN}), only ':' and newlines are impossible."""
    if not user or any(c in user + password for c in ":\r\n"):
        raise DovecotError(f"user {user!r}: ':' and newlines cannot be stored in a passwd-file")
    return f"{user}:{{PLAIN}}{password}::::::{extra}\n"


def _write_users(server: ImapServer, ident: _Identity) -> None:
    d = Path(server.dir)
    group = ident.internal_group if ident.root else None
    disabled = set(server.disabled_users)
    lines = [
        _passwd_line(u, p, "nologin reason=disabled" if u in disabled else "")
        for u, p in server.users.items()
    ]
    _write(d / "users", "".join(lines), 0o640, group)
    if server.master_user:
        _write(d / "master-users", _passwd_line(server.master_user, server.master_password or ""), 0o640, group)
        # As NS8's global-acl: the master user (the ACL identity of `user*vmail` sessions) may do anything.
        _write(d / "global-acl", f"* user={server.master_user} lrwstipekxa\n", 0o644)
    if server.name == "mail1" or server.disabled_users:
        _write(d / "disabled-users", "".join(f"{u}\n" for u in server.disabled_users))


def _special_use_block() -> str:
    return "".join(
        f"  mailbox {name} {{\n    special_use = \\{name}\n  }}\n"
        for name in ("Drafts", "Sent", "Trash", "Junk", "Archive")
    )


def _without_uidplus(server: ImapServer) -> str:
    """mail1's usual CAPABILITY (core, then acl and sieve plugins) minus UIDPLUS."""
    core = [c for c in CORE_CAPABILITIES.split() if c != "UIDPLUS"]
    plugins = [f"IMAPSIEVE=sieve://{server.host}:{server.sieve_port}", "FILTER=SIEVE", "ACL", "RIGHTS=texk"]
    return " ".join(core + plugins)


def _render_conf(cfg: NodeConfig, server: ImapServer, ident: _Identity, uidplus: bool = True) -> str:
    """The whole dovecot.conf of one instance (no include of /etc/dovecot)."""
    d = Path(server.dir)
    ssl = cfg.ssl_dir
    is_mail1 = server.name == "mail1"
    mail_dir = d / "mail"
    layout = ":LAYOUT=fs" if server.separator == "/" else ""
    out: list[str] = [
        f"# generated by tests/localnode/dovecot.py for node {cfg.state_dir}; rewritten on each start",
        f"instance_name = localnode-{cfg.port_base}-{server.name}",
        f"base_dir = {_base_dir(server)}",
        f"state_dir = {d}/state",
        f"log_path = {d}/log/dovecot.log",
        f"info_log_path = {d}/log/dovecot.log",
        f"debug_log_path = {d}/log/dovecot.log",
        f"listen = {server.host}",
        f"protocols = {'imap lmtp sieve' if is_mail1 else 'imap'}",
        f"ssl = {'required' if is_mail1 else 'yes'}",
        f"ssl_cert = <{ssl}/cert.pem",
        f"ssl_key = <{ssl}/key.pem",
    ]
    if (ssl / "dh.pem").exists():
        out.append(f"ssl_dh = <{ssl}/dh.pem")
    out += [
        "ssl_min_protocol = TLSv1.2",
        "disable_plaintext_auth = no",
        "auth_mechanisms = plain login",
        "auth_cache_size = 1M",
        # Tests try wrong passwords on purpose: do not make each failure cost 2 s.
        "auth_failure_delay = 0",
        f"default_internal_user = {ident.internal_user}",
        f"default_internal_group = {ident.internal_group}",
        f"default_login_user = {ident.login_user}",
        f"first_valid_uid = {ident.mail_uid}",
        f"last_valid_uid = {ident.mail_uid}",
        "default_process_limit = 300",
        "default_client_limit = 2000",
        "mail_max_userip_connections = 200",
        f"mail_home = {mail_dir}/%u",
        f"mail_location = maildir:~/Maildir{layout}",
    ]
    if is_mail1:
        out += [
            "auth_username_format = %Ln",
            f"login_trusted_networks = {MAIL1_TRUSTED_NETWORKS}",
            "auth_master_user_separator = *",
            "mail_plugins = acl",
            # imap_sieve reads /shared/imapsieve/script; without attributes every APPEND logs an error.
            "mail_attribute_dict = file:%h/Maildir/dovecot-attributes",
        ]
        if not uidplus:
            out.append(f"imap_capability = {_without_uidplus(server)}")
    else:
        out.append("mail_plugins =")
    out += [
        "namespace inbox {",
        "  type = private",
        "  inbox = yes",
        f"  separator = {server.separator}",
        "  prefix =",
        _special_use_block().rstrip("\n"),
        "}",
    ]
    if is_mail1:
        # As NS8: a public namespace and other users' shared folders, through the acl plugin.
        out += [
            "namespace public {",
            "  type = public",
            "  separator = /",
            "  prefix = Public/",
            f"  location = maildir:{d}/public:LAYOUT=fs:INDEXPVT=~/Maildir/public",
            "  subscriptions = no",
            "  list = children",
            "}",
            "namespace shared {",
            "  type = shared",
            "  separator = /",
            "  prefix = Shared/%%u/",
            f"  location = maildir:{mail_dir}/%%u/Maildir:LAYOUT=fs:INDEXPVT=~/Maildir/shared/%%u",
            "  subscriptions = no",
            "  list = children",
            "}",
        ]
    chroot = "" if ident.root else "  chroot =\n"
    out += [
        "service imap-login {",
        "  inet_listener imap {",
        f"    address = {server.host}",
        f"    port = {server.imap_port}",
        "  }",
        "  inet_listener imaps {",
        f"    address = {server.host}",
        f"    port = {server.imaps_port}",
        "    ssl = yes",
        "  }",
        "  process_limit = 300",
        chroot + "}",
        "service imap {",
        "  process_limit = 300",
        "}",
    ]
    # No growing auth penalty per client IP: tests fail logins on purpose, all from 127.0.0.1.
    out += ["service anvil {", "  unix_listener anvil-auth-penalty {", "    mode = 0", "  }", "}"]
    if not ident.root:
        for svc in ("pop3-login", "submission-login", "managesieve-login", "anvil", "imap-urlauth-login"):
            out += [f"service {svc} {{", "  chroot =", "}"]
    out += [
        "userdb {",
        "  driver = passwd-file",
        f"  args = username_format=%u {d}/users",
        f"  default_fields = uid={ident.mail_uid} gid={ident.mail_gid}",
        f"  override_fields = uid={ident.mail_uid} gid={ident.mail_gid}",
        "}",
    ]
    if is_mail1:
        out += [
            "passdb {",
            "  driver = passwd-file",
            f"  args = scheme=PLAIN username_format=%u {d}/master-users",
            "  master = yes",
            "  pass = yes",
            "}",
        ]
    out += [
        "passdb {",
        "  driver = passwd-file",
        f"  args = scheme=PLAIN username_format=%u {d}/users",
        "}",
    ]
    if is_mail1:
        out += [
            "service managesieve-login {",
            "  inet_listener sieve {",
            f"    address = {server.host}",
            f"    port = {server.sieve_port}",
            "  }",
            "}",
            "service lmtp {",
            "  unix_listener lmtp {",
            "    mode = 0666",
            "  }",
            "}",
            "protocol imap {",
            "  mail_plugins = $mail_plugins imap_acl imap_sieve imap_filter_sieve",
            "}",
            "protocol lmtp {",
            "  mail_plugins = $mail_plugins sieve",
            "  postmaster_address = postmaster@localhost",
            "}",
            "lmtp_save_to_detail_mailbox = no",
            "plugin {",
            f"  acl = vfile:{d}/global-acl",
            f"  acl_shared_dict = file:{d}/shared/shared-mailboxes.db",
            "  sieve = file:~/sieve;active=~/.dovecot.sieve",
            f"  imapsieve_url = sieve://{server.host}:{server.sieve_port}",
            "}",
        ]
    return "\n".join(line for line in out if line != "") + "\n"


def _base_dir(server: ImapServer) -> Path:
    """Where Dovecot puts its sockets: `<dir>/run`, unless that is too long for a unix socket.

    sun_path holds 107 bytes and base_dir gets sockets such as
    `token-login/imap-urlauth`; pytest tmp dirs easily exceed that. Then the
    sockets go to a short per-instance dir and `<dir>/run` is a symlink to it,
    so `<dir>/run/lmtp` still works.
    """
    run = Path(server.dir) / "run"
    if len(os.fsencode(run)) + len(LONGEST_SOCKET) <= SUN_PATH_MAX:
        return run
    digest = hashlib.sha1(os.fsencode(server.dir)).hexdigest()[:16]
    return Path(tempfile.gettempdir()) / f"localnode-dovecot-{digest}"


def _make_run_dir(server: ImapServer) -> None:
    run = Path(server.dir) / "run"
    base = _base_dir(server)
    if base == run:
        if run.is_symlink():
            run.unlink()
        run.mkdir(exist_ok=True)
        os.chmod(run, 0o755)
        return
    try:
        base.mkdir(mode=0o755)
    except FileExistsError:
        st = base.lstat()
        if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.geteuid():
            raise DovecotError(f"{base} exists and is not our directory") from None
    os.chmod(base, 0o755)
    if run.is_symlink() and os.readlink(run) == str(base):
        return
    if run.is_symlink() or run.is_file():
        run.unlink()
    elif run.is_dir():
        shutil.rmtree(run)  # runtime files of a stopped instance only
    run.symlink_to(base)


def _prepare(cfg: NodeConfig, server: ImapServer, ident: _Identity, uidplus: bool = True) -> None:
    """Directories, users and config of one instance."""
    d = Path(server.dir)
    # Written by mail processes (running as the mail user): mail, public folders, shared-mailbox dict.
    mail_owned = ["mail", "public", "shared"] if server.name == "mail1" else ["mail"]
    for sub in ("state", "log", *mail_owned):
        (d / sub).mkdir(parents=True, exist_ok=True)
    for p in (d, d / "state", d / "log"):
        os.chmod(p, 0o755)
    _make_run_dir(server)
    if ident.root:
        for sub in mail_owned:
            os.chown(d / sub, ident.mail_uid, ident.mail_gid)
    _write_users(server, ident)
    _write(Path(server.config), _render_conf(cfg, server, ident, uidplus))
    proc = subprocess.run([DOVECONF_BIN, "-c", server.config, "-n"], capture_output=True, text=True)
    if proc.returncode != 0:
        raise DovecotError(f"invalid config {server.config}: {proc.stderr.strip()}")


# ---------------------------------------------------------------------------
# processes
# ---------------------------------------------------------------------------


def _servers(cfg: NodeConfig) -> list[ImapServer]:
    return [cfg.mail1, cfg.remote]


def _ports(server: ImapServer) -> list[int]:
    return [p for p in (server.imap_port, server.imaps_port, server.sieve_port) if p]


def _log_file(server: ImapServer) -> Path:
    return Path(server.dir) / "log" / "dovecot.log"


def _master_pid(server: ImapServer) -> int | None:
    """The running master of this instance, checked against /proc so a stale pid file is ignored."""
    pidfile = Path(server.dir) / "run" / "master.pid"
    try:
        pid = int(pidfile.read_text().strip())
    except (OSError, ValueError):
        return None
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return None
    if server.config.encode() in cmdline:
        return pid
    return None


def _is_dovecot_exe(pid: str) -> bool:
    try:
        exe = os.readlink(f"/proc/{pid}/exe")
    except OSError:
        return False
    return exe.startswith("/usr/lib/dovecot/") or os.path.basename(exe).startswith("dove")


def pids(server: ImapServer) -> list[int]:
    """Every process of this instance, even orphans whose master died.

    Dovecot overwrites its children's argv and environ with a title, so they
    are recognised by their working or root directory (base_dir, a chroot or a
    mail home, all under `server.dir`); the master by its `-c` argument.
    """
    conf = server.config.encode()
    prefixes = (server.dir.rstrip("/") + "/", f"{_base_dir(server)}/")
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or not _is_dovecot_exe(entry):
            continue
        try:
            cmdline = Path(f"/proc/{entry}/cmdline").read_bytes().split(b"\0")
            dirs = [os.readlink(f"/proc/{entry}/{link}") + "/" for link in ("cwd", "root")]
        except OSError:
            continue
        if conf in cmdline or any(d.startswith(prefixes) for d in dirs):
            found.append(int(entry))
    return sorted(found)


def _port_free(host: str, port: int) -> bool:
    """True if we could listen there (a listener of another process makes bind fail)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError as e:
            if e.errno in (errno.EADDRINUSE, errno.EACCES):
                return False
            raise
    return True


def _port_open(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


def _wait_ports(server: ImapServer, timeout: float) -> None:
    """Wait until every listener accepts; fail fast (naming the log) if the master died."""
    started = time.monotonic()
    for port in _ports(server):
        while not _port_open(server.host, port):
            elapsed = time.monotonic() - started
            if elapsed > 1 and _master_pid(server) is None:
                raise DovecotError(
                    f"dovecot {server.name} exited before opening {server.host}:{port}; see {_log_file(server)}"
                )
            if elapsed > timeout:
                raise DovecotError(
                    f"dovecot {server.name} did not open {server.host}:{port} within {timeout:.0f}s; "
                    f"see {_log_file(server)}"
                )
            time.sleep(0.05)
    # Listeners exist before the daemonised master writes master.pid: wait for it too.
    while _master_pid(server) is None:
        if time.monotonic() - started > timeout:
            raise DovecotError(f"dovecot {server.name} wrote no master.pid; see {_log_file(server)}")
        time.sleep(0.02)


def _start_one(cfg: NodeConfig, server: ImapServer, ident: _Identity, uidplus: bool = True) -> None:
    if _master_pid(server) is not None:
        _wait_ports(server, START_TIMEOUT)
        return
    busy = [p for p in _ports(server) if not _port_free(server.host, p)]
    if busy:
        raise DovecotError(
            f"cannot start dovecot {server.name}: {server.host} port(s) {busy} already in use by another "
            "process (another node with the same port base?)"
        )
    _prepare(cfg, server, ident, uidplus)
    # The daemon inherits stdout/stderr: give it a file, not a pipe we would wait on forever.
    errfile = Path(server.dir) / "log" / "startup.err"
    with open(errfile, "wb") as err:
        rc = subprocess.run(
            [DOVECOT_BIN, "-c", server.config], stdin=subprocess.DEVNULL, stdout=err, stderr=err
        ).returncode
    if rc != 0:
        msg = errfile.read_text(errors="replace").strip()
        raise DovecotError(f"dovecot {server.name} failed to start: {msg}; see {_log_file(server)}")
    _wait_ports(server, START_TIMEOUT)


def start(cfg: NodeConfig, *, mail1_uidplus: bool = True) -> None:
    """Start mail1 and remote (idempotent: running instances are left alone).

    ``mail1_uidplus=False``: mail1 does not announce UIDPLUS (see the module docstring).
    """
    _check_binaries()
    ident = _identity(create=True)
    cfg.state_dir.mkdir(parents=True, exist_ok=True)
    _check_reachable(cfg.state_dir, ident)
    cfg.dovecot_dir.mkdir(parents=True, exist_ok=True)
    os.chmod(cfg.dovecot_dir, 0o755)
    _ensure_cert(cfg)
    started: list[ImapServer] = []
    try:
        for server in _servers(cfg):
            if _master_pid(server) is None:
                started.append(server)
            _start_one(cfg, server, ident, mail1_uidplus or server.name != "mail1")
    except BaseException:
        # Leave nothing half-up: a caller whose start() failed never calls stop().
        _stop_all(started)
        raise


def _signal_all(pids_: list[int], sig: int) -> None:
    for pid in pids_:
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            pass


def _wait_gone(server: ImapServer, timeout: float, master_only: bool = False) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if (_master_pid(server) is None) if master_only else not pids(server):
            return True
        time.sleep(0.05)
    return False


def _stop_all(servers: list[ImapServer]) -> None:
    """TERM the masters (in parallel: each takes ~1 s), then TERM what they left behind, then KILL."""
    masters = [m for m in (_master_pid(s) for s in servers) if m is not None]
    _signal_all(masters, signal.SIGTERM)
    # A master normally exits within ~1 s, but right after start-up it can wait ~6 s
    # for its auth/stats children; sessions (imap, imap-login) may outlive it until
    # their client goes. Give it a moment, then TERM everything that is left.
    deadline = time.monotonic() + MASTER_GRACE
    for server in servers:
        _wait_gone(server, max(0.0, deadline - time.monotonic()), master_only=True)
    _signal_all([p for s in servers for p in pids(s)], signal.SIGTERM)
    if all(_wait_gone(s, 2) for s in servers):
        _remove_short_base_dirs(servers)
        return
    _signal_all([p for s in servers for p in pids(s)], signal.SIGKILL)
    left = [p for s in servers if not _wait_gone(s, 5) for p in pids(s)]
    if left:
        raise DovecotError(f"dovecot processes {left} survived SIGKILL")
    _remove_short_base_dirs(servers)


def _remove_short_base_dirs(servers: list[ImapServer]) -> None:
    """Drop the socket dirs kept outside the state dir (see _base_dir) once nothing runs."""
    for server in servers:
        base = _base_dir(server)
        if base != Path(server.dir) / "run" and base.is_dir() and not base.is_symlink():
            shutil.rmtree(base, ignore_errors=True)


def stop(cfg: NodeConfig) -> None:
    """Stop both instances (idempotent); no process of this node survives."""
    _stop_all(_servers(cfg))


def status(cfg: NodeConfig) -> dict[str, bool]:
    """Whether each instance's master process is running."""
    return {s.name: _master_pid(s) is not None for s in _servers(cfg)}


# ---------------------------------------------------------------------------
# administration
# ---------------------------------------------------------------------------


def doveadm(
    server: ImapServer, *args: str, input: bytes | None = None, check: bool = True
) -> subprocess.CompletedProcess:
    """Run `doveadm -c <config> ARGS` for this instance, output captured (bytes)."""
    proc = subprocess.run([DOVEADM_BIN, "-c", server.config, *args], input=input, capture_output=True)
    if check and proc.returncode != 0:
        raise DovecotError(
            f"doveadm {' '.join(args)} on {server.name} exited {proc.returncode}: "
            f"{proc.stderr.decode(errors='replace').strip()}"
        )
    return proc


def _user_dir_name(server: ImapServer, user: str) -> str:
    name = user.lower() if server.name == "mail1" else user
    if not name or "/" in name or name in (".", "..") or "\0" in name:
        raise DovecotError(f"bad user name {user!r}")
    return name


def _remove_tree(path: Path, attempts: int = 20) -> None:
    """rmtree while a kicked session may still be finishing: a file it renames or
    creates meanwhile (dovecot-uidvalidity.*) makes rmtree fail; try again briefly."""
    for attempt in range(attempts):
        try:
            shutil.rmtree(path)
            return
        except FileNotFoundError:
            if not path.exists():
                return
        except OSError:  # "Directory not empty": something was written meanwhile
            if attempt == attempts - 1:
                raise
        time.sleep(0.1)
    shutil.rmtree(path)


def wipe(server: ImapServer, user: str | None = None) -> None:
    """Delete a user's home (mail, indexes, sieve scripts), or every user's; sessions are kicked first."""
    mail_dir = Path(server.dir) / "mail"
    running = _master_pid(server) is not None
    users = [_user_dir_name(server, user)] if user is not None else (
        sorted(p.name for p in mail_dir.iterdir()) if mail_dir.is_dir() else []
    )
    for name in users:
        if running:
            doveadm(server, "kick", name, check=False)
        target = mail_dir / name
        if target.is_dir() and not target.is_symlink():
            _remove_tree(target)
        elif target.exists() or target.is_symlink():
            target.unlink()
    if user is None and (Path(server.dir) / "public").is_dir():
        for p in (Path(server.dir) / "public").iterdir():
            shutil.rmtree(p) if p.is_dir() and not p.is_symlink() else p.unlink()
