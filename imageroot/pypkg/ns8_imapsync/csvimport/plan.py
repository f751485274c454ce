"""What to do with each row: create, update, skip or fail, and why.

Every row becomes the create-task request the UI would send, checked with
create-task's own rules: its input schema (`actions/create-task/validate-input.json`,
as the agent checks it) and `taskrules.check_request`. The CSV's own
rules come first (mandatory values, numeric ports, security values) so the
messages speak of columns, not JSON fields.

A sync is identified by (local user, remote user, remote host), compared
case-insensitively (Dovecot logs users in lower-cased): a row matching a
configured task is skipped, or with `--update` applied to that task under its
stored id and spelling (the state files are named after them, so a recased
row must not create a second set). A row repeated in the file is reported
once; a repeat with other values is an error, since nobody can tell which
one was meant.
"""

from __future__ import annotations

import secrets
import string
from dataclasses import dataclass, field

import jsonschema

from ns8_imapsync.csvimport.parse import MANDATORY, OPTIONAL, Row
from ns8_imapsync.layout import task_names
from ns8_imapsync.statedir import StateDir
from ns8_imapsync.task import CONTROL_RE, Task, TaskError
from ns8_imapsync.taskrules import check_request, validator

ID_CHARS = string.ascii_lowercase + string.digits
SECURITY = {"tls": "tls", "starttls": "tls", "ssl": "ssl", "imaps": "ssl", "": "", "none": ""}
TRUE = ("true", "yes", "1", "on")
FALSE = ("false", "no", "0", "off")
COLUMN_OF = {"localuser": "localusername"}  # request field -> CSV column, where they differ
DEFAULTS = {"cron": "", "delete_local": False, "delete_remote": False, "delete_remote_older": 0, "exclude": "",
            "foldersynchronization": "all", "sieve_enabled": False}


@dataclass
class RowPlan:
    """One row's fate. `action`: create, update, skip or fail."""

    row: int
    action: str
    localuser: str = ""
    remoteusername: str = ""
    remotehostname: str = ""
    remoteport: str = ""
    security: str = ""
    task_id: str = ""
    message: str = ""
    detail: str = ""  # the login check's own sentence, for the report file
    task: Task | None = None
    password: str = field(default="", repr=False)

    @property
    def account(self) -> str:
        """`user@host:port security`: the account the row logs in to (never the password)."""
        return f"{self.remoteusername}@{self.remotehostname}:{self.remoteport} {self.security or 'no encryption'}"

    def fail(self, message: str) -> RowPlan:
        self.action, self.message = "fail", message
        return self


class RowError(ValueError):
    pass


def sync_key(localuser: str, remoteuser: str, remotehost: str) -> tuple[str, str, str]:
    return (localuser.lower(), remoteuser.lower(), remotehost.lower())


def new_task_id(localuser: str, taken_ids: set[str], taken_names: set[str]) -> str:
    """A random `[a-z0-9]{6}` id, as the UI makes them: never a `_` (it would
    make the file name ambiguous), no task's id, and `<localuser>_<id>` no
    task file's name (a reference-module task (`a`, `b_xyz123`) owns the
    files of (`a_b`, `xyz123`))."""
    while True:
        task_id = "".join(secrets.choice(ID_CHARS) for _ in range(6))
        name = f"{localuser}_{task_id}"
        if task_id not in taken_ids and name not in taken_names:
            taken_ids.add(task_id)
            taken_names.add(name)
            return task_id


def _bool(column: str, value: str) -> bool:
    v = value.strip().lower()
    if v in TRUE:
        return True
    if v in FALSE:
        return False
    raise RowError(f"Invalid {column} {value.strip()!r} (true or false)")


def _port(value: str) -> int:
    v = value.strip()
    if not v.isascii() or not v.isdigit() or not 1 <= int(v) <= 65535:
        raise RowError(f"Invalid port number {v!r} (a number from 1 to 65535)")
    return int(v)


def _optional(values: dict[str, str], base: dict) -> dict:
    """The optional columns present and not empty; the others keep `base`
    (the defaults for a new task, the task's settings for an update)."""
    out = {k: base[k] for k in DEFAULTS}
    for column in OPTIONAL:
        raw = values.get(column, "")
        if not raw.strip():
            continue
        if column in ("delete_remote", "delete_local", "sieve_enabled"):
            out[column] = _bool(column, raw)
        elif column == "delete_remote_older":
            if not raw.strip().isascii() or not raw.strip().isdigit():
                raise RowError(f"Invalid delete_remote_older {raw.strip()!r} (a number of days)")
            out[column] = int(raw.strip())
        elif column == "foldersynchronization":
            out[column] = raw.strip().lower()
        else:  # cron, exclude
            out[column] = raw.strip()
    return out


def _schema_errors(validator: jsonschema.Draft7Validator, request: dict) -> list[str]:
    """create-task's schema errors in words; never a value of the password."""
    messages = []
    for err in sorted(validator.iter_errors(request), key=lambda e: list(e.path)):
        name = ".".join(str(p) for p in err.path) or "(root)"
        name = COLUMN_OF.get(name, name)
        if name == "remotepassword":
            messages.append(f"Invalid remotepassword ({err.validator} {err.validator_value})")
        else:
            messages.append(f"Invalid {name}: {err.message}")
    return messages


class Planner:
    """Plans rows against the tasks configured now and the mailboxes of the mail server."""

    def __init__(self, state: StateDir, mailboxes: list[str] | None, update: bool):
        self.state = state
        self.mailboxes = set(mailboxes) if mailboxes is not None else None
        self.update = update
        self.validator = validator("create-task")
        # tasks() lists only files named after their own values: an update
        # never writes to files that belong to another task
        self.existing = {sync_key(t.localuser, t.remoteusername, t.remotehostname): t for t in state.tasks()}
        self.taken_ids = {t.task_id for t in self.existing.values()}
        # every task file's name, unreadable ones too: a new task must not take one
        self.taken_names = set(task_names(state.tasks_dir))
        self.seen: dict[tuple[str, str, str], tuple[int, dict]] = {}

    def plan(self, row: Row) -> RowPlan:
        v = row.values
        plan = RowPlan(row.number, "fail", localuser=v.get("localusername", "").strip(),
                       remoteusername=v.get("remoteusername", "").strip(),
                       remotehostname=v.get("remotehostname", "").strip(),
                       remoteport=v.get("remoteport", "").strip(), security=v.get("security", "").strip().lower())
        if row.error:
            return plan.fail(row.error)
        try:
            return self._plan(row, plan)
        except RowError as exc:
            return plan.fail(str(exc))

    def _plan(self, row: Row, plan: RowPlan) -> RowPlan:
        v = row.values
        missing = [c for c in MANDATORY if not v.get(c, "").strip()]
        if missing:
            raise RowError(f"Missing required value(s): {', '.join(missing)}")
        port = _port(v["remoteport"])
        if plan.security not in SECURITY:
            raise RowError(f"Invalid security {plan.security!r} (tls, ssl, or empty for no encryption)")
        plan.security = SECURITY[plan.security]
        # the password is taken as written, spaces included: it is a secret, not a label
        password = v["remotepassword"]
        if CONTROL_RE.search(password):
            raise RowError("Invalid remotepassword: it holds a line break or another control character "
                           "(is a quote left open on the line before?)")
        # NS8 user names are lower case, and Dovecot logs users in lower-cased
        plan.localuser = plan.localuser.lower()
        key = sync_key(plan.localuser, plan.remoteusername, plan.remotehostname)
        existing = self.existing.get(key)
        base = existing.to_api() if existing is not None else DEFAULTS
        request = {
            "localuser": plan.localuser, "task_id": "", "remotehostname": plan.remotehostname, "remoteport": port,
            "security": plan.security, "remoteusername": plan.remoteusername, "remotepassword": password,
            **_optional(v, base),
        }
        if self._repeated(row, plan, key, request):
            return plan
        if existing is not None:
            if not self.update:
                plan.action, plan.task_id = "skip", existing.task_id
                plan.message = (f"{existing.localuser} already syncs {existing.remoteusername}@"
                                f"{existing.remotehostname} (task {existing.task_id}): "
                                "use --update to apply the file to it")
                return plan
            # the stored spelling: the state files are named after it
            request.update(task_id=existing.task_id, localuser=existing.localuser,
                           remoteusername=existing.remoteusername, remotehostname=existing.remotehostname)
            plan.localuser, plan.remoteusername = existing.localuser, existing.remoteusername
            plan.remotehostname = existing.remotehostname
        else:
            request["task_id"] = new_task_id(plan.localuser, self.taken_ids, self.taken_names)
        plan.task_id = request["task_id"]
        errors = _schema_errors(self.validator, request)
        if errors:
            raise RowError("; ".join(errors))
        try:
            task = check_request(request, self.state)
        except TaskError as exc:
            raise RowError(f"Invalid {COLUMN_OF.get(exc.field, exc.field)}: {exc.error}") from None
        if self.mailboxes is not None and task.localuser not in self.mailboxes:
            raise RowError(f"local user {task.localuser!r} is not an enabled mailbox of the mail server")
        plan.task, plan.password = task, password
        if existing is not None:
            if existing == task and self.state.has_password(task) and self.state.read_password(task) == password:
                plan.action, plan.message = "skip", f"task {task.task_id} already has these exact settings"
                plan.task, plan.password = None, ""
                return plan
            plan.action = "update"
        else:
            plan.action = "create"
        return plan

    def _repeated(self, row: Row, plan: RowPlan, key: tuple[str, str, str], request: dict) -> bool:
        """True (plan: skip) when the file had this sync on an earlier row with the
        same values; RowError when with other values; else the row is remembered."""
        first = self.seen.get(key)
        comparable = {**request, "remoteusername": key[1], "remotehostname": key[2]}
        if first is None:
            self.seen[key] = (row.number, comparable)
            return False
        if first[1] == comparable:
            plan.action, plan.message = "skip", f"{plan.remoteusername}@{plan.remotehostname} for " \
                f"{plan.localuser} appears twice in this file (first on row {first[0]})"
            return True
        raise RowError(f"{plan.remoteusername}@{plan.remotehostname} for {plan.localuser} is also on "
                       f"row {first[0]} with other values: keep one of the two rows")


def plan_rows(rows: list[Row], state: StateDir, mailboxes: list[str] | None, update: bool) -> list[RowPlan]:
    planner = Planner(state, mailboxes, update)
    return [planner.plan(row) for row in rows]
