"""The task actions: create, delete, start, stop (one or all), list, inspect.

create-task keeps nothing unless the remote login works: the files are
written, the login is checked inside the sync container (where IMAP code
lives), and on refusal the previous files are put back byte for byte.
Runs are started and stopped through `syncctl` in the container; whether a
run is alive is read from its lock (runstate), never from a pid file.

Every action names a task by (localuser, task_id) and acts only on files
that belong to exactly that pair (statedir: `resolve`, `owner`): a request
whose name is another task's changes nothing and is told `task_not_found`
(or, for create-task, `task_id_is_already_used`).
"""

from __future__ import annotations

import json
import os
import sys
from concurrent.futures import ThreadPoolExecutor

from ns8_imapsync import container, errors, ns8, runstate, schedule
from ns8_imapsync.errors import VALIDATION_FAILED
from ns8_imapsync.statedir import StateDir
from ns8_imapsync.task import Task, TaskError
from ns8_imapsync.taskrules import check_request, enabled_mailboxes

LOG_TAIL = 100 * 1024


def _task_error(exc: TaskError) -> None:
    ns8.fail_validation(
        [{"field": exc.field, "parameter": exc.field, "value": exc.value, "error": exc.error}], 3
    )


def _name(request: dict, state: StateDir | None = None) -> str:
    """`<localuser>_<task_id>`, or a validation failure naming the bad field
    (an id with `_` is valid only for the reference-module task holding it)."""
    try:
        return (state or StateDir()).resolve(request["localuser"], request["task_id"])
    except TaskError as exc:
        _task_error(exc)
        raise  # not reached: _task_error exits


def _exists(request: dict, state: StateDir, name: str) -> bool:
    """Whether the requested task has a task file; a validation failure
    `task_not_found` when the file of its name is another task's."""
    owner = state.owner(name)
    if owner is not None and owner != (request["localuser"], request["task_id"]):
        _task_error(TaskError("task_id", "task_not_found", request["task_id"]))
    return owner is not None


def _create_task_error(error: str, exit_code: int) -> None:
    ns8.fail_validation([{"field": "createTask", "parameter": "createTask", "value": error, "error": error}],
                        exit_code)


def validate_create(request: dict) -> Task:
    """create-task/10validate: the values, and a password for a new task."""
    state = StateDir()
    try:
        task = check_request(request, state)
    except TaskError as exc:
        _task_error(exc)
        raise  # not reached
    if not ns8.env_get("MAIL_HOST"):
        _create_task_error("module_is_not_configured", 5)
    if state.owner(task.name) is None:
        _check_local_user(task.localuser)
    return task


def _check_local_user(localuser: str) -> None:
    """A new task's local user is an enabled mailbox of the mail server, the
    rule import-csv-tasks applies: a task for a disabled or unknown user would
    fail at every run. An existing task stays editable whatever its user became."""
    mailboxes, _why = enabled_mailboxes()
    if localuser not in {m["value"] for m in mailboxes}:
        _task_error(TaskError("localuser", "localuser_is_not_an_enabled_mailbox", localuser))


def save_and_check(request: dict) -> None:
    """create-task/20save: write, check the remote login, roll back on refusal.
    The values were validated by step 10."""
    task = Task.from_request(request)
    state = StateDir()
    try:
        state.check_free(task.localuser, task.task_id)  # again: a task may have appeared since step 10
        backup = state.backup(task.name)
        state.save(task, request.get("remotepassword") or None)  # checks the owner once more
    except TaskError as exc:
        _task_error(exc)
        raise  # not reached
    verdicts, stderr = container.validate([task.name], timeout=60)
    verdict = verdicts.get(task.name, container.Verdict(False))
    if not verdict.ok:
        backup.restore()
        error = verdict.error or VALIDATION_FAILED
        reason = verdict.reason or stderr
        ns8.log(f"create-task {task.name} refused: {reason}", ns8.SD_WARNING)
        _create_task_error(error, errors.login_exit_code(error))
    schedule.write(state, task, ns8.env_get("MAIL_HOST") or "")
    # a new or edited task syncs at once, as the reference module does
    container.stop([task.name])
    container.start([task.name], "create")


def delete_task(request: dict) -> None:
    """Stop the run, remove the files; another task's files with the same
    name are neither stopped nor removed (`task_not_found`). Deleting a task
    that does not exist clears what a half-made one may have left."""
    state = StateDir()
    name = _name(request, state)
    _exists(request, state, name)
    if runstate.lock_held(runstate.TaskFiles(state.tasks_dir, name).lock):
        container.stop([name])
    try:
        state.delete(request["localuser"], request["task_id"])
    except TaskError as exc:  # its file changed owner while the run stopped
        _task_error(exc)


def _existing(request: dict) -> str:
    state = StateDir()
    name = _name(request, state)
    if state.load(request["localuser"], request["task_id"]) is None:
        _task_error(TaskError("task_id", "task_not_found", request["task_id"]))
    return name


def start_task(request: dict) -> None:
    """Start a run now (queued behind the concurrency caps); a running task is left alone."""
    name = _existing(request)
    done = container.start([name], "manual")
    if done.failed([name], container.START_FAILED):
        ns8.log(f"start of {name} failed: {done.by_task.get(name) or done.stderr}", ns8.SD_ERR)
        sys.exit(1)


def stop_task(request: dict) -> None:
    """Stop and wait until the run has exited; stopping a stopped task is harmless."""
    name = _existing(request)
    done = container.stop([name])
    if done.failed([name], container.STOP_FAILED):
        ns8.log(f"stop of {name} failed: {done.by_task.get(name) or done.stderr}", ns8.SD_ERR)
        sys.exit(1)


def for_all_tasks(verb: str) -> dict:
    """start-all-tasks / stop-all-tasks: one syncctl call for every task (a
    thousand tasks queue at once, the caps decide what runs); failures are
    reported per task and the rest are still handled."""
    names = [t.name for t in StateDir().tasks()]
    if not names:
        return {"done": [], "failed": []}
    if verb == "start":
        outcomes, bad = container.start(names, "manual", timeout=600), container.START_FAILED
    else:
        outcomes, bad = container.stop(names, timeout=600), container.STOP_FAILED
    failed = outcomes.failed(names, bad)
    for name in failed:
        ns8.log(f"{verb} of {name} failed: {outcomes.by_task.get(name) or outcomes.stderr or 'no answer'}",
                ns8.SD_ERR)
    return {"done": [n for n in names if n not in failed], "failed": failed}


def list_tasks() -> dict:
    """Every task with its last run.  The tasks' files are read in a thread while
    the main thread asks the mail module for its mailboxes (an agent round trip,
    mostly waiting), so the two overlap instead of adding up; that way round, as
    NS8's agent.tasks installs a signal handler, which only the main thread may."""
    with ThreadPoolExecutor(max_workers=1) as pool:
        reading = pool.submit(_task_properties, StateDir())
        mailboxes, reason = enabled_mailboxes()
        props = reading.result()
    result: dict = {"enabled_mailboxes": mailboxes, "user_properties": props}
    if reason:
        result["reason"] = reason
    return result


def _task_properties(state: StateDir) -> list[dict]:
    props = []
    for task in state.tasks():
        item = task.to_api()
        snap = runstate.view(state.tasks_dir, task.name)
        last = snap.status
        finished = last.state not in ("never", *runstate.ACTIVE_STATES)
        item.update({
            "service_running": snap.running,
            "state": last.state,
            "progress": snap.progress,
            "last_sync_timestamp": int(last.started) if finished and last.started else None,
            "last_sync_exit_code": last.exit_code if finished else None,
            "last_sync_state": last.state if finished else None,
            "last_sync_reason": last.reason if finished else "",
            # how many of the remote messages the last run found on the local server
            "last_sync_listed": last.listed if finished else None,
            "last_sync_found": last.found if finished else None,
            "last_sync_short_folders": last.short_folders() if finished else [],
            "has_log": state.files(task.name).log.exists(),
        })
        props.append(item)
    return props


def get_log(request: dict) -> dict:
    """The last LOG_TAIL bytes of the task's log; empty for a task that does
    not exist, `task_not_found` when the name is another task's."""
    state = StateDir()
    name = _name(request, state)
    if not _exists(request, state, name):
        return {"log_content": "", "truncated": False}
    path = state.files(name).log
    try:
        with open(path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            if size <= LOG_TAIL:
                return {"log_content": f.read().decode(errors="replace"), "truncated": False}
            f.seek(size - LOG_TAIL)
            data = f.read()
    except FileNotFoundError:
        return {"log_content": "", "truncated": False}
    # drop the first, partial line
    cut = data.find(b"\n")
    data = data[cut + 1:] if cut >= 0 else data
    return {"log_content": data.decode(errors="replace"), "truncated": True}


def list_informations(request: dict) -> dict:
    """Both sides' totals, counted in the container; never fails the action:
    an unreachable server is `status: false` with a reason to show."""
    state = StateDir()
    name = _name(request, state)
    if state.load(request["localuser"], request["task_id"]) is None:
        return {"status": False, "reason": f"task {name} does not exist"}
    if not container.running():
        return {"status": False, "reason": "the sync service is not running: is the module configured?"}
    result = container.informations(name)
    if not result.get("status"):
        return {"status": False, "reason": result.get("reason", "unknown error")}
    return result


def get_facts() -> dict:
    tasks = StateDir().tasks()
    inbox = [t for t in tasks if t.foldersynchronization == "inbox"]
    return {
        "tasks_total_count": len(tasks),
        "tasks_delete_count": sum(1 for t in tasks if t.delete_remote),
        "tasks_delete_older_count": sum(1 for t in tasks if t.delete_remote and t.delete_remote_older > 0),
        "tasks_inbox_count": len(inbox),
        "tasks_inbox_and_delete_count": sum(1 for t in inbox if t.delete_remote),
        "tasks_cron_enabled_count": sum(1 for t in tasks if t.cron),
        "tasks_sieve_enabled_count": sum(1 for t in tasks if t.sieve_enabled),
    }


def print_json(value: object) -> None:
    json.dump(value, sys.stdout)
