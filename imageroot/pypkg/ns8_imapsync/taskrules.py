"""The task API's rules, shared by the actions and the CSV importer.

create-task and import-csv-tasks create tasks by the same rules: the action's
input schema (as the agent checks it), the values a task may hold, an id no
other task's files have, the delete pair, a password for a new task, and a
local user among the mail server's enabled mailboxes.  Both call this module;
neither imports the other.

Host side: standard library, jsonschema (NS8's agent environment has it) and
``ns8`` for the mail module's mailboxes.
"""

from __future__ import annotations

import json
import re
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING

from ns8_imapsync import ns8
from ns8_imapsync.statedir import StateDir
from ns8_imapsync.task import Task, TaskError, validate_password

if TYPE_CHECKING:
    import jsonschema

#: imageroot/actions: the package sits in imageroot/pypkg, on NS8 as in this repository
ACTIONS_DIR = Path(__file__).resolve().parents[2] / "actions"

# gojsonschema's `hostname` format (the agent's validator): jsonschema checks it
# only with an extra package NS8 does not have
HOSTNAME_RE = re.compile(r"([a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9\-]{0,61}[a-zA-Z0-9])"
                         r"(\.([a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9\-]{0,61}[a-zA-Z0-9]))*")


def schema_path(action: str, kind: str = "input") -> Path:
    """``actions/<action>/validate-<kind>.json``."""
    return ACTIONS_DIR / action / f"validate-{kind}.json"


def _hostname(value: object) -> bool:
    return not isinstance(value, str) or (bool(HOSTNAME_RE.fullmatch(value)) and len(value) < 256)


@lru_cache(maxsize=8)
def validator(action: str, kind: str = "input") -> jsonschema.Draft7Validator:
    """An action's schema with the formats the agent checks, as the agent applies it.

    jsonschema is imported here, not with the module: list-tasks, which only
    lists, would pay ~0.1 s for it on every call the UI makes."""
    import jsonschema

    checker = jsonschema.FormatChecker(formats=())
    checker.checks("hostname")(_hostname)
    return jsonschema.Draft7Validator(json.loads(schema_path(action, kind).read_text()), format_checker=checker)


def check_request(request: dict, state: StateDir) -> Task:
    """create-task's rules on a schema-valid input: the task's values, an id no
    other task's files have, the delete pair, a password for a new task.
    Raises TaskError naming the field."""
    task = Task.from_request(request)
    state.check_free(task.localuser, task.task_id)
    if task.delete_local and task.delete_remote:
        # once a remote message is deleted, the next delete_local pass would
        # remove its only copy: both engines refuse the pair, so refuse it here
        raise TaskError("delete_local", "delete_local_and_delete_remote_are_exclusive", True)
    password = request.get("remotepassword") or ""
    if not password and not state.has_password(task):
        raise TaskError("remotepassword", "remotepassword_is_required", "")
    validate_password(password)
    return task


def enabled_mailboxes() -> tuple[list[dict], str]:
    """The mail module's enabled users, or [] and why not."""
    module = ns8.env_get("MAIL_MODULE")
    if not ns8.env_get("MAIL_SERVER") or not module:
        return [], "the module is not configured: choose a mail server in Settings"
    try:
        result = ns8.run_task(f"module/{module}", "list-user-mailboxes")
    except Exception as exc:  # the mail module may be gone or stopped
        return [], f"mail server {module} cannot be reached: {type(exc).__name__}"
    output = result.get("output")
    if result.get("exit_code") != 0 or not isinstance(output, dict):
        return [], f"mail server {module} did not list its mailboxes: is it configured?"
    users = [u["user"] for u in output.get("user_mailboxes", []) if u.get("enabled", True)]
    return [{"name": u, "label": u, "value": u} for u in users], ""
