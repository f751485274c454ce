"""get-task-history: the last runs of one task, for the UI's History view.

list-tasks carries only the last finished run; an administrator asking "did
last night's runs work?" needs the ones before it too. The task's history
file keeps the last `runstate.HISTORY_MAX` runs (written by the run itself,
`runstate.append_history`); this turns each record into what the UI shows --
when, how long, the counts, the result -- newest first, and leaves out what
is the container's business only (the run's pid in the container).

The file is written by a process we do not control at read time (an older
image, a run killed mid-write is skipped by `read_history`): every value is
checked for its type, so one odd record cannot break the answer's schema.
"""

from __future__ import annotations

import json
import sys

from ns8_imapsync import ns8, runstate
from ns8_imapsync.statedir import StateDir

TEXT_FIELDS = ("state", "error_class", "reason", "engine", "trigger")
COUNT_FIELDS = ("copied", "skipped")
OPTIONAL_COUNT_FIELDS = ("exit_code", "listed", "found")


def _number(value: object) -> float | None:
    """An epoch or a duration; None for anything else (bool is not a number here)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


def _count(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _short_folder(folder: object) -> dict | None:
    """A folder the run left short of mail: name, remote count, local count."""
    if not isinstance(folder, dict) or not isinstance(folder.get("folder"), str):
        return None
    return {"folder": folder["folder"], "listed": _count(folder.get("listed")) or 0,
            "found": _count(folder.get("found")) or 0}


def history_entry(record: dict) -> dict:
    """One run as the History view shows it."""
    out: dict = {k: str(record.get(k) or "") for k in TEXT_FIELDS}
    out.update({k: _count(record.get(k)) or 0 for k in COUNT_FIELDS})
    out.update({k: _count(record.get(k)) for k in OPTIONAL_COUNT_FIELDS})
    started, ended = _number(record.get("started")), _number(record.get("ended"))
    out["started"], out["ended"] = started, ended
    out["duration_seconds"] = round(ended - started, 1) if started is not None and ended is not None else None
    folders = record.get("folders") if isinstance(record.get("folders"), list) else []
    out["short_folders"] = [f for f in (_short_folder(x) for x in folders) if f is not None]
    return out


def task_history(request: dict, state: StateDir | None = None) -> dict:
    """The runs of (localuser, task_id), newest first. A task that does not
    exist -- or whose file name is another task's -- is `task_not_found`,
    as for start-task: the UI asked about a task it listed, so it is gone."""
    state = state or StateDir()
    if state.load(request["localuser"], request["task_id"]) is None:
        ns8.fail_validation([{"field": "task_id", "parameter": "task_id", "value": request["task_id"],
                              "error": "task_not_found"}], 3)
    name = state.resolve(request["localuser"], request["task_id"])
    records = runstate.read_history(runstate.TaskFiles(state.tasks_dir, name))
    return {"history": [history_entry(r) for r in reversed(records) if isinstance(r, dict)]}


def main() -> None:
    """The step: request on stdin, the answer on stdout."""
    json.dump(task_history(json.load(sys.stdin)), sys.stdout)
