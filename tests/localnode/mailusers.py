"""Mail accounts added to a running Dovecot of the local node, for tools that log
in with an address and its own password (the bulk migrator's import target).

Dovecot re-reads a passwd-file when it changes, so no restart is needed; the
auth cache is flushed so an earlier failed login of the same name is forgotten
(the lazy-provisioning test depends on that).
"""

from __future__ import annotations

import os
from pathlib import Path

from localnode import dovecot
from localnode.config import ImapServer


def passwd_name(server: ImapServer, login: str) -> str:
    """The passwd-file key a login maps to: mail1 uses ``auth_username_format = %Ln``
    (lower-cased local part), the remote server full addresses."""
    return login.split("@", 1)[0].lower() if server.name == "mail1" else login


def _users_file(server: ImapServer) -> Path:
    return Path(server.dir) / "users"


def _rewrite(server: ImapServer, name: str, line: str | None) -> None:
    path = _users_file(server)
    st = path.stat()
    kept = [ln for ln in path.read_text(encoding="utf-8").splitlines(keepends=True) if ln.split(":", 1)[0] != name]
    if line is not None:
        kept.append(line)
    tmp = path.with_name(path.name + ".mailusers.tmp")
    tmp.write_text("".join(kept), encoding="utf-8")
    os.chmod(tmp, st.st_mode & 0o777)
    if os.geteuid() == 0:
        os.chown(tmp, st.st_uid, st.st_gid)
    os.replace(tmp, path)
    dovecot.doveadm(server, "auth", "cache", "flush", check=False)


def add_user(server: ImapServer, login: str, password: str) -> str:
    """Let ``login`` log in to ``server`` with ``password``; returns its passwd-file name."""
    name = passwd_name(server, login)
    _rewrite(server, name, dovecot._passwd_line(name, password))
    return name


def remove_user(server: ImapServer, login: str, wipe_mail: bool = True) -> None:
    """The reverse of :func:`add_user` (and its mail, by default)."""
    name = passwd_name(server, login)
    _rewrite(server, name, None)
    if wipe_mail:
        dovecot.wipe(server, name)


def has_user(server: ImapServer, login: str) -> bool:
    name = passwd_name(server, login)
    return any(ln.split(":", 1)[0] == name for ln in _users_file(server).read_text(encoding="utf-8").splitlines())
