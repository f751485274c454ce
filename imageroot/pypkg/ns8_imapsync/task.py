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

`exclude` is one string in the API, the CSV and the task file: a comma list of
folder regexes. A comma inside `()`, `[]` or `{}`, or written `\,`, belongs to
its pattern (`^Archive/[0-9]{4,}$` is one pattern): `split_patterns` is the
only place that splits the list. A pattern whose nested unbounded repeats can
backtrack for ever on a long folder name is refused when it is entered
(`check_backtracking`); the container also bounds every match in time.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from re import _constants as sre_constants  # the stdlib parser's node names
from re import _parser as sre_parser

FORMAT_VERSION = "2"

LOCALUSER_RE = re.compile(r"^[a-z_][a-z0-9_.-]{0,31}$")
# a new task id: no `_`, the separator of `<localuser>_<task_id>` file names
TASK_ID_RE = re.compile(r"^[a-z0-9][a-z0-9-]{0,63}$")
# any id a task file may hold: the reference module allowed `_`
LEGACY_TASK_ID_RE = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")
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


# ---- the exclusion list ------------------------------------------------------
def split_patterns(text: str) -> list[str]:
    r"""The folder regexes of an `exclude` string, split at the commas that
    separate patterns: not inside `(...)`, `{...}` or a character class
    `[...]` (where `]` first, or after `^`, is a literal), not escaped (`\,`
    stays in its pattern: a literal comma in Python and Perl). Empty items
    are dropped. A bracket never closed keeps the rest of the text in its
    pattern, so only the last pattern can end "open" and joining with `,`
    gives the same list back."""
    items: list[str] = []
    start = depth = 0
    class_first = -1  # inside a class: the index where a `]` is still literal; -1 outside
    i = 0
    while i < len(text):
        ch = text[i]
        if ch == "\\":
            i += 2
            continue
        if class_first >= 0:
            if ch == "]" and i != class_first:
                class_first = -1
        elif ch == "[":
            class_first = i + 2 if text[i + 1:i + 2] == "^" else i + 1
        elif ch in "({":
            depth += 1
        elif ch in ")}" and depth:
            depth -= 1
        elif ch == "," and depth == 0:
            items.append(text[start:i])
            start = i + 1
        i += 1
    items.append(text[start:])
    return [p for p in items if p]


def join_patterns(patterns: Iterable[str]) -> str:
    """The `exclude` string of a list of patterns (`split_patterns` undoes it)."""
    return ",".join(patterns)


_REPEATS = (sre_constants.MAX_REPEAT, sre_constants.MIN_REPEAT)  # repeats that backtrack
# constructs whose content is never re-entered by backtracking (atomic group, `a*+`)
_NO_BACKTRACK = (sre_constants.ATOMIC_GROUP, sre_constants.POSSESSIVE_REPEAT)


def _subpatterns(value: object) -> Iterable[sre_parser.SubPattern]:
    """The subpatterns held in a parsed node's argument (a group, a branch's
    alternatives, an assertion's body), at any tuple/list depth."""
    if isinstance(value, sre_parser.SubPattern):
        yield value
    elif isinstance(value, tuple | list):
        for item in value:
            yield from _subpatterns(item)


def _nested_unbounded(pattern: sre_parser.SubPattern, in_repeat: bool) -> bool:
    """True when an unbounded repeat (`*`, `+`, `{n,}`) sits inside a repeat
    that can match more than once (`in_repeat`)."""
    for op, av in pattern:
        if op in _REPEATS:
            _low, high, body = av
            if in_repeat and high == sre_constants.MAXREPEAT:
                return True
            if _nested_unbounded(body, in_repeat or high > 1):
                return True
        elif op in _NO_BACKTRACK:
            if any(_nested_unbounded(sub, False) for sub in _subpatterns(av)):
                return True
        elif any(_nested_unbounded(sub, in_repeat) for sub in _subpatterns(av)):
            return True
    return False


def check_backtracking(pattern: str) -> None:
    """Refuse (TaskError `exclude_backtracks_catastrophically`) a pattern with
    an unbounded repeat inside a repeated group: `(a+)+`, `(a*)*`, `(.*)*`,
    `(x+y)*`, `(a+){2,}`. Matched against a long folder name the remote server
    chose, such a pattern can try exponentially many ways before failing.
    Bounded or single repeats (`[0-9]{4,}`, `(/.*)?`, `(a|b)+`) are accepted;
    whatever slips through is cut off by the container's time limit per match.
    The pattern must already compile (Task checks that)."""
    if _nested_unbounded(sre_parser.parse(pattern), False):
        raise TaskError("exclude", "exclude_backtracks_catastrophically", pattern)


def _check_pattern(pattern: str) -> None:
    """A stored pattern must compile (a file may hold anything: read, never run)."""
    validate_text("exclude", pattern)
    try:
        re.compile(pattern)
    except (re.error, RecursionError, OverflowError):
        raise TaskError("exclude", "exclude_is_not_a_valid_regex", pattern) from None


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
        """The values any task may hold, also one read from an old file: so a
        legacy id with `_` is fine here (new ids are checked at input time)."""
        if not LOCALUSER_RE.match(self.localuser):
            raise TaskError("localuser", "localuser_is_not_valid", self.localuser)
        if not LEGACY_TASK_ID_RE.match(self.task_id):
            raise TaskError("task_id", "task_id_is_not_valid", self.task_id)
        for name in ("remotehostname", "remoteusername"):
            validate_text(name, getattr(self, name))
        for pattern in self.exclude:
            _check_pattern(pattern)
        if split_patterns(join_patterns(self.exclude)) != self.exclude:
            # e.g. ["a,b"]: the task file would give back two patterns
            raise TaskError("exclude", "exclude_is_not_a_valid_list", join_patterns(self.exclude))
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
        task = cls._from_request(req)
        for pattern in task.exclude:
            check_backtracking(pattern)
        return task

    @classmethod
    def _from_request(cls, req: dict) -> Task:
        exclude = split_patterns(str(req.get("exclude", "")))
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
            "exclude": join_patterns(self.exclude),
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
            # the API's (and the reference's) list form: split_patterns reads it back
            "EXCLUDE": join_patterns(self.exclude),
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
                exclude=split_patterns(env.get("EXCLUDE", "")),
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
            exclude=split_patterns(env.get("EXCLUDE", "")),
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
