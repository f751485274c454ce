"""The migration config file: which server, which accounts.

Format (the seed tool's, kept so existing files work)::

    {"server": {"host": "mail.example.com", "port": 993, "ssl": true, "starttls": false},
     "accounts": [{"email": "a@example.com", "password": "..."}]}

The file holds passwords, so we write it with mode 0600 and warn when an
existing one is readable by others.
"""

from __future__ import annotations

import json
import os
import stat
from dataclasses import dataclass
from pathlib import Path

from ns8_imapsync import files
from ns8_imapsync.imap.connection import Endpoint

PLACEHOLDER_HOST = "CHANGE_ME.example.com"
DEFAULT_EXPORT_CONFIG = "export.pass.config.json"
DEFAULT_IMPORT_CONFIG = "import.pass.config.json"


class ConfigError(ValueError):
    """The config file is missing, unreadable or invalid (exit code 2)."""


@dataclass(frozen=True)
class ServerConfig:
    host: str
    port: int
    ssl: bool
    starttls: bool

    @property
    def security(self) -> str:
        return "ssl" if self.ssl else ("tls" if self.starttls else "")

    @property
    def where(self) -> str:
        return f"{self.host}:{self.port}"


@dataclass(frozen=True)
class Account:
    email: str
    password: str

    def __repr__(self) -> str:  # never show the password in a traceback or debug print
        return f"Account(email={self.email!r})"


@dataclass(frozen=True)
class MigrationConfig:
    path: Path
    server: ServerConfig
    accounts: tuple[Account, ...]
    warnings: tuple[str, ...] = ()


@dataclass(frozen=True)
class TlsOptions:
    """Certificate policy: verified by default (the seed tool did not), a CA file or
    ``insecure`` for self-signed test servers."""

    verify: bool = True
    ca_file: str | None = None
    timeout: float = 60


def endpoint(server: ServerConfig, email: str, tls: TlsOptions) -> Endpoint:
    return Endpoint(server.host, server.port, server.security, email,  # type: ignore[arg-type]
                    verify_cert=tls.verify, ca_file=tls.ca_file, timeout=tls.timeout)


def _server(data: object, path: Path) -> ServerConfig:
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: \"server\" must be an object with host, port, ssl, starttls")
    host = data.get("host")
    if not isinstance(host, str) or not host.strip() or any(c.isspace() for c in host):
        raise ConfigError(f"{path}: server.host must be a host name")
    if host == PLACEHOLDER_HOST:
        raise ConfigError(f"{path}: server.host is still {PLACEHOLDER_HOST}; put the target server's name there")
    ssl = data.get("ssl", True)
    starttls = data.get("starttls", False)
    if not isinstance(ssl, bool) or not isinstance(starttls, bool):
        raise ConfigError(f"{path}: server.ssl and server.starttls must be true or false")
    if ssl and starttls:
        raise ConfigError(f"{path}: server.ssl and server.starttls cannot both be true")
    port = data.get("port", 993 if ssl else 143)
    if isinstance(port, bool) or not isinstance(port, int) or not 1 <= port <= 65535:
        raise ConfigError(f"{path}: server.port must be a number between 1 and 65535")
    return ServerConfig(host, port, ssl, starttls)


def _accounts(data: object, path: Path) -> tuple[Account, ...]:
    if not isinstance(data, list) or not data:
        raise ConfigError(f"{path}: \"accounts\" must be a non-empty list of {{email, password}}")
    out: list[Account] = []
    seen: set[str] = set()
    for i, item in enumerate(data):
        if not isinstance(item, dict):
            raise ConfigError(f"{path}: accounts[{i}] must be an object with email and password")
        email, password = item.get("email"), item.get("password", "")
        if not isinstance(email, str) or not email.strip() or email.strip() != email:
            raise ConfigError(f"{path}: accounts[{i}].email must be a non-empty address without blanks")
        if not isinstance(password, str):
            raise ConfigError(f"{path}: accounts[{i}].password must be a string")
        if email.lower() in seen:
            raise ConfigError(f"{path}: account {email} is listed twice")
        seen.add(email.lower())
        out.append(Account(email, password))
    return tuple(out)


def load_config(path: str | os.PathLike) -> MigrationConfig:
    path = Path(path)
    try:
        st = path.stat()
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"config file {path} not found") from None
    except OSError as exc:
        raise ConfigError(f"config file {path} is unreadable: {exc.strerror}") from None
    except UnicodeDecodeError as exc:  # a UTF-16 export, a stray Latin-1 byte
        raise ConfigError(f"{path} is not UTF-8 (byte {exc.start}): save it as UTF-8") from None
    try:
        data = json.loads(text)
    except ValueError as exc:  # UnicodeDecodeError is handled above
        raise ConfigError(f"{path} is not valid JSON: {exc}") from None
    except RecursionError:
        raise ConfigError(f"{path} is nested too deeply to be a migration config") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be an object with \"server\" and \"accounts\"")
    warnings = []
    if st.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        warnings.append(f"{path} holds passwords and is readable by other users; run: chmod 600 {path}")
    return MigrationConfig(path, _server(data.get("server"), path), _accounts(data.get("accounts"), path),
                           tuple(warnings))


def write_import_template(cfg: MigrationConfig, path: Path) -> bool:
    """After an export: an import config with the same accounts and a placeholder
    host, so the operator only edits the target. Never overwrites; True if written."""
    template = {
        "server": {"host": PLACEHOLDER_HOST, "port": 993, "ssl": True, "starttls": False},
        "accounts": [{"email": a.email, "password": a.password} for a in cfg.accounts],
    }
    try:
        files.write_atomic(path, json.dumps(template, ensure_ascii=False, indent=2) + "\n", 0o600, overwrite=False)
    except FileExistsError:
        return False
    return True
