r"""A sync task: what the administrator asked for, and how it is stored.

A task file is `KEY=VALUE` lines, one value per line, read by splitting at
the first `=` only: no shell, no xargs, so quotes, spaces, commas and `$`
survive. Values can never hold a newline or another control character
(`validate_text` refuses them before anything is written).

Files written by the reference module (`SECURITY=--tls1`,
`DELETE_REMOTE=--delete1older=N`, `EXCLUDE=,a,b`, ...) are read too, so a task
keeps working after switching modules; `update-module` rewrites them in this
format.

Every file of a task is named `<localuser>_<task_id>`. A local user may hold
`_`, so a task id may not: otherwise (`a_b`, `c`) and (`a`, `b_c`) would share
one set of files, and creating the second would overwrite the first. Ids the
reference module wrote with `_` stay readable (`LEGACY_TASK_ID_RE`); which
requests may name them is the state directory's business (statedir.resolve).

The fields are written once, in the dataclass: the request, the API answer
and the task file are derived from it by each field's type (a port is a
string in the API, as the reference module answers; a flag is `1` or empty in
the file; `exclude` is a comma list, see `exclusion`).
"""


from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field

from ns8_imapsync.errors import TaskError
from ns8_imapsync.exclusion import check_backtracking, check_pattern, join_patterns, split_patterns

FORMAT_VERSION = "2"

LOCALUSER_RE = re.compile(r"^[a-z_][a-z0-9_.-]{0,31}$")
# a new task id: no `_`, the separator of `<localuser>_<task_id>` file names
TASK_ID_RE = re.compile(r"^[a-z0-9][a-z0-9-]{0,63}$")
# any id a task file may hold: the reference module allowed `_`
LEGACY_TASK_ID_RE = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")
CRON_RE = re.compile(r"^(?:(?P<m>[1-9]|[1-5][0-9])m|(?P<h>[1-9]|1[0-9]|2[0-3])h)$")
# C0, DEL, C1 (NEL among them) and the Unicode line/paragraph separators: any of them
# could end a line of the task file for some reader
CONTROL_RE = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029]")
SECURITY_VALUES = ("tls", "ssl", "")
FOLDER_MODES = ("all", "inbox", "exclusion")
API_TEXT = "api_text"  # field metadata: the API answers this number as a string


def validate_text(field: str, value: str) -> str:
    if CONTROL_RE.search(value):
        raise TaskError(field, f"{field}_has_control_characters", value)
    return value


def validate_password(password: str) -> str:
    """A remote password fits on the one line of its .pwd file and in an IMAP
    quoted string: a line break would cut the file and end the string early (a
    command injected into the login check). The error never echoes it."""
    if CONTROL_RE.search(password):
        raise TaskError("remotepassword", "remotepassword_has_control_characters", "")
    return password


@dataclass
class Task:
    task_id: str
    localuser: str
    remoteusername: str
    remotehostname: str
    remoteport: int = field(metadata={API_TEXT: True})
    security: str = "tls"
    delete_local: bool = False
    delete_remote: bool = False
    delete_remote_older: int = 0
    exclude: list[str] = field(default_factory=list)
    cron: str = ""
    foldersynchronization: str = "all"
    sieve_enabled: bool = False

    def __post_init__(self) -> None:
        """The values any task may hold, also one read from an old file: so a
        legacy id with `_` is fine here (new ids are checked at input time)."""
        if not LOCALUSER_RE.match(self.localuser):
            raise TaskError("localuser", "localuser_is_not_valid", self.localuser)
        if not LEGACY_TASK_ID_RE.match(self.task_id):
            raise TaskError("task_id", "task_id_is_not_valid", self.task_id)
        for name in ("remotehostname", "remoteusername"):
            validate_text(name, getattr(self, name))
        for pattern in self.exclude:
            check_pattern(pattern)
        if split_patterns(join_patterns(self.exclude)) != self.exclude:
            # e.g. ["a,b"]: the task file would give back two patterns
            raise TaskError("exclude", "exclude_is_not_a_valid_list", join_patterns(self.exclude))
        self._check_choices()

    def _check_choices(self) -> None:
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
        """Input (create-task, a CSV row): also refuses the patterns that can
        backtrack for ever. Whether the id may be used is StateDir.resolve's."""
        task = cls(**{f.name: _from_request(f, req) for f in _fields() if f.name in req or _required(f)})
        for pattern in task.exclude:
            check_backtracking(pattern)
        return task

    def to_api(self) -> dict:
        """list-tasks' view of the task: every field, the password never (always "")."""
        out: dict = {}
        for f in _fields():
            out[f.name] = _to_api(f, getattr(self, f.name))
            if f.name == "remoteport":
                out["remotepassword"] = ""
        return out

    # ---- the task file ---------------------------------------------------
    def to_env(self) -> dict[str, str]:
        env = {"FORMAT_VERSION": FORMAT_VERSION}
        env.update({f.name.upper(): _to_env(f, getattr(self, f.name)) for f in _fields()})
        return env

    @classmethod
    def from_env(cls, env: dict[str, str]) -> Task:
        if env.get("FORMAT_VERSION") != FORMAT_VERSION:
            return cls.from_reference_env(env)
        return cls(**{f.name: _from_env(f, env) for f in _fields() if f.name.upper() in env or _required(f)})

    @classmethod
    def from_reference_env(cls, env: dict[str, str]) -> Task:
        """A task file of the reference module: the same keys, its options stored
        as imapsync flags (``SECURITY=--tls1``, ``DELETE_REMOTE=--delete1older=N``,
        ``DELETE_LOCAL=--delete2``, ``FOLDER_INBOX=...``)."""
        plain = {k: v for k, v in env.items()
                 if k not in ("SECURITY", "DELETE_LOCAL", "DELETE_REMOTE", "SIEVE_ENABLED", "FOLDERSYNCHRONIZATION")}
        values = {f.name: _from_env(f, plain) for f in _fields() if f.name.upper() in plain or _required(f)}
        older = re.fullmatch(r"--delete1older=(\d+)", env.get("DELETE_REMOTE", ""))
        values.update(
            security={"--tls1": "tls", "--ssl1": "ssl"}.get(env.get("SECURITY", ""), ""),
            delete_local=env.get("DELETE_LOCAL", "") == "--delete2",
            delete_remote=bool(env.get("DELETE_REMOTE", "")),
            delete_remote_older=int(older.group(1)) if older else 0,
            foldersynchronization=env.get("FOLDERSYNCHRONIZATION") or ("inbox" if env.get("FOLDER_INBOX") else "all"),
            sieve_enabled=bool(env.get("SIEVE_ENABLED")),
        )
        return cls(**values)


# ---- one field, each way ------------------------------------------------------
def _fields() -> tuple[dataclasses.Field, ...]:
    return dataclasses.fields(Task)


def _required(f: dataclasses.Field) -> bool:
    return f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING


def _from_request(f: dataclasses.Field, req: dict) -> object:
    value = req[f.name] if _required(f) else req.get(f.name)
    if f.type == "bool":
        return bool(value)
    if f.type == "int":
        return int(value or 0)  # type: ignore[arg-type]
    if f.type == "list[str]":
        return split_patterns(str(value or ""))
    return value


def _to_api(f: dataclasses.Field, value: object) -> object:
    if f.type == "list[str]":
        return join_patterns(value)  # type: ignore[arg-type]
    if f.metadata.get(API_TEXT):
        return str(value)
    return value


def _to_env(f: dataclasses.Field, value: object) -> str:
    if f.type == "bool":
        return "1" if value else ""
    if f.type == "list[str]":
        return join_patterns(value)  # type: ignore[arg-type]  # split_patterns reads it back
    return str(value)


def _from_env(f: dataclasses.Field, env: dict[str, str]) -> object:
    raw = env.get(f.name.upper(), "")
    if f.type == "bool":
        return raw == "1"
    if _required(f):
        raw = env[f.name.upper()]  # KeyError: not a task file
    if f.type == "int":
        return int(raw or 0)
    if f.type == "list[str]":
        return split_patterns(raw)
    return raw


def parse_env(text: str) -> dict[str, str]:
    """`KEY=VALUE` lines; blank and `#` lines skipped; split at the first `=`.
    Lines end at "\n" only (not str.splitlines' Unicode separators), as the
    shell and systemd read the file."""
    env: dict[str, str] = {}
    for line in text.split("\n"):
        line = line.removesuffix("\r")
        if not line.strip() or line.lstrip().startswith("#") or "=" not in line:
            continue
        key, value = line.split("=", 1)
        env[key.strip()] = value
    return env


def format_env(env: dict[str, str]) -> str:
    for key, value in env.items():
        validate_text(key.lower(), value)
    return "".join(f"{k}={v}\n" for k, v in env.items())
