"""A sync task: what the administrator asked for, and how it is stored.

A task file is `KEY=VALUE` lines, one value per line, read by splitting at
the first `=` only: no shell, no xargs, so quotes, spaces, commas and `$`
survive. Values can never hold a newline or another control character
(`validate_text` refuses them before anything is written).

Files written by the reference module (`SECURITY=--tls1`,
`DELETE_REMOTE=--delete1older=N`, `EXCLUDE=,a,b`, ...) are read too, so a task
keeps working after switching modules; `update-module` rewrites them in this
format.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

FORMAT_VERSION = "2"

LOCALUSER_RE = re.compile(r"^[a-z_][a-z0-9_.-]{0,31}$")
TASK_ID_RE = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")
CRON_RE = re.compile(r"^(?:(?P<m>[1-9]|[1-5][0-9])m|(?P<h>[1-9]|1[0-9]|2[0-3])h)$")
CONTROL_RE = re.compile(r"[\x00-\x1f\x7f]")
SECURITY_VALUES = ("tls", "ssl", "")
FOLDER_MODES = ("all", "inbox", "exclusion")


class TaskError(ValueError):
    """A value that cannot be part of a task; `field` names the input field."""

    def __init__(self, field: str, error: str, value: object):
        super().__init__(f"{field}: {error}")
        self.field = field
        self.error = error
        self.value = value


def validate_text(field: str, value: str) -> str:
    if CONTROL_RE.search(value):
        raise TaskError(field, f"{field}_has_control_characters", value)
    return value


@dataclass
class Task:
    localuser: str
    task_id: str
    remotehostname: str
    remoteport: int
    remoteusername: str
    security: str = "tls"
    delete_local: bool = False
    delete_remote: bool = False
    delete_remote_older: int = 0
    exclude: list[str] = field(default_factory=list)
    cron: str = ""
    foldersynchronization: str = "all"
    sieve_enabled: bool = False

    def __post_init__(self) -> None:
        if not LOCALUSER_RE.match(self.localuser):
            raise TaskError("localuser", "localuser_is_not_valid", self.localuser)
        if not TASK_ID_RE.match(self.task_id):
            raise TaskError("task_id", "task_id_is_not_valid", self.task_id)
        for name in ("remotehostname", "remoteusername"):
            validate_text(name, getattr(self, name))
        for pattern in self.exclude:
            validate_text("exclude", pattern)
            try:
                re.compile(pattern)
            except re.error:
                raise TaskError("exclude", "exclude_is_not_a_valid_regex", pattern) from None
        if self.cron and not CRON_RE.match(self.cron):
            raise TaskError("cron", "cron_is_not_valid", self.cron)
        if self.security not in SECURITY_VALUES:
            raise TaskError("security", "security_is_not_valid", self.security)
        if self.foldersynchronization not in FOLDER_MODES:
            raise TaskError("foldersynchronization", "foldersynchronization_is_not_valid",
                            self.foldersynchronization)
        if not 1 <= self.remoteport <= 65535:
            raise TaskError("remoteport", "remoteport_is_not_valid", self.remoteport)
        if self.delete_remote_older < 0:
            raise TaskError("delete_remote_older", "delete_remote_older_is_not_valid", self.delete_remote_older)

    @property
    def name(self) -> str:
        """`<localuser>_<task_id>`: the base name of every file of the task."""
        return f"{self.localuser}_{self.task_id}"

    # ---- the API (create-task input, list-tasks output) -------------------
    @classmethod
    def from_request(cls, req: dict) -> Task:
        exclude = [p for p in str(req.get("exclude", "")).split(",") if p]
        return cls(
            localuser=req["localuser"],
            task_id=req["task_id"],
            remotehostname=req["remotehostname"],
            remoteport=int(req["remoteport"]),
            remoteusername=req["remoteusername"],
            security=req.get("security", "tls"),
            delete_local=bool(req.get("delete_local", False)),
            delete_remote=bool(req.get("delete_remote", False)),
            delete_remote_older=int(req.get("delete_remote_older") or 0),
            exclude=exclude,
            cron=req.get("cron", ""),
            foldersynchronization=req.get("foldersynchronization", "all"),
            sieve_enabled=bool(req.get("sieve_enabled", False)),
        )

    def to_api(self) -> dict:
        return {
            "task_id": self.task_id,
            "localuser": self.localuser,
            "remoteusername": self.remoteusername,
            "remotehostname": self.remotehostname,
            "remoteport": str(self.remoteport),
            "remotepassword": "",
            "security": self.security,
            "delete_local": self.delete_local,
            "delete_remote": self.delete_remote,
            "delete_remote_older": self.delete_remote_older,
            "exclude": ",".join(self.exclude),
            "cron": self.cron,
            "foldersynchronization": self.foldersynchronization,
            "sieve_enabled": self.sieve_enabled,
        }

    # ---- the task file ---------------------------------------------------
    def to_env(self) -> dict[str, str]:
        return {
            "FORMAT_VERSION": FORMAT_VERSION,
            "TASK_ID": self.task_id,
            "LOCALUSER": self.localuser,
            "REMOTEUSERNAME": self.remoteusername,
            "REMOTEHOSTNAME": self.remotehostname,
            "REMOTEPORT": str(self.remoteport),
            "SECURITY": self.security,
            "DELETE_LOCAL": "1" if self.delete_local else "",
            "DELETE_REMOTE": "1" if self.delete_remote else "",
            "DELETE_REMOTE_OLDER": str(self.delete_remote_older),
            # a regex may hold a comma: one per line would be safer, but the
            # API (and the reference's files) use this list form
            "EXCLUDE": ",".join(self.exclude),
            "CRON": self.cron,
            "FOLDERSYNCHRONIZATION": self.foldersynchronization,
            "SIEVE_ENABLED": "1" if self.sieve_enabled else "",
        }

    @classmethod
    def from_env(cls, env: dict[str, str]) -> Task:
        if env.get("FORMAT_VERSION") == FORMAT_VERSION:
            return cls(
                localuser=env["LOCALUSER"],
                task_id=env["TASK_ID"],
                remotehostname=env["REMOTEHOSTNAME"],
                remoteport=int(env["REMOTEPORT"]),
                remoteusername=env["REMOTEUSERNAME"],
                security=env.get("SECURITY", "tls"),
                delete_local=env.get("DELETE_LOCAL") == "1",
                delete_remote=env.get("DELETE_REMOTE") == "1",
                delete_remote_older=int(env.get("DELETE_REMOTE_OLDER") or 0),
                exclude=[p for p in env.get("EXCLUDE", "").split(",") if p],
                cron=env.get("CRON", ""),
                foldersynchronization=env.get("FOLDERSYNCHRONIZATION", "all"),
                sieve_enabled=env.get("SIEVE_ENABLED") == "1",
            )
        return cls.from_reference_env(env)

    @classmethod
    def from_reference_env(cls, env: dict[str, str]) -> Task:
        """A task file of the reference module (its options stored as imapsync flags)."""
        security = {"--tls1": "tls", "--ssl1": "ssl"}.get(env.get("SECURITY", ""), "")
        delete_remote_raw = env.get("DELETE_REMOTE", "")
        older = 0
        m = re.fullmatch(r"--delete1older=(\d+)", delete_remote_raw)
        if m:
            older = int(m.group(1))
        mode = env.get("FOLDERSYNCHRONIZATION") or ("inbox" if env.get("FOLDER_INBOX") else "all")
        return cls(
            localuser=env["LOCALUSER"],
            task_id=env["TASK_ID"],
            remotehostname=env["REMOTEHOSTNAME"],
            remoteport=int(env["REMOTEPORT"]),
            remoteusername=env["REMOTEUSERNAME"],
            security=security,
            delete_local=env.get("DELETE_LOCAL", "") == "--delete2",
            delete_remote=bool(delete_remote_raw),
            delete_remote_older=older,
            exclude=[p for p in env.get("EXCLUDE", "").split(",") if p],
            cron=env.get("CRON", ""),
            foldersynchronization=mode,
            sieve_enabled=bool(env.get("SIEVE_ENABLED")),
        )


def parse_env(text: str) -> dict[str, str]:
    """`KEY=VALUE` lines; blank and `#` lines skipped; split at the first `=`."""
    env: dict[str, str] = {}
    for line in text.splitlines():
        if not line.strip() or line.lstrip().startswith("#") or "=" not in line:
            continue
        key, value = line.split("=", 1)
        env[key.strip()] = value
    return env


def format_env(env: dict[str, str]) -> str:
    for key, value in env.items():
        validate_text(key.lower(), value)
    return "".join(f"{k}={v}\n" for k, v in env.items())
