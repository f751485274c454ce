"""Check the remote logins of the planned tasks, then put them in place.

A thousand rows must not cost a thousand `podman exec` round trips, and no
candidate may be visible as a task (to cron, list-tasks, start-all) before its
login passed. So the candidates are written to a private staging directory
inside the task directory (`imapsync/.import-<random>/`, 0700, not a task:
task files are `imapsync/*.env`), checked by ONE `syncctl validation
--staging` call (concurrent logins in the container, identical credentials
once), and only then moved into place with `rename` (same file system:
atomic). An update replaces the task's files only once its new login passed,
so a refused update keeps the previous settings and password.

One import runs at a time (a lock file in the task directory); a staging
directory left by a crashed import is removed by the next one.
"""

from __future__ import annotations

import fcntl
import os
import secrets
import shutil
import string
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from ns8_imapsync import container, errors, files, layout, runstate, schedule
from ns8_imapsync.csvimport.plan import RowPlan
from ns8_imapsync.errors import VALIDATION_FAILED
from ns8_imapsync.statedir import StateDir
from ns8_imapsync.task import format_env


class ImportBusy(RuntimeError):
    pass


@contextmanager
def import_lock(state: StateDir) -> Iterator[None]:
    """Only one import at a time: two would both see a sync as new and create it twice."""
    files.ensure_dir(state.tasks_dir)
    fd = os.open(state.layout.import_lock, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise ImportBusy("another import-csv-tasks is running on this module: wait for it to end") from None
        remove_leftovers(state)
        yield
    finally:
        os.close(fd)


def remove_leftovers(state: StateDir) -> list[str]:
    """Staging directories of an import that died (we hold the import lock:
    no live import owns one)."""
    gone = []
    for p in state.tasks_dir.glob(layout.STAGING_PREFIX + "*"):
        if p.is_dir() and not p.is_symlink():
            shutil.rmtree(p, ignore_errors=True)
            gone.append(p.name)
    return gone


@contextmanager
def staging_dir(state: StateDir) -> Iterator[StateDir]:
    token = "".join(secrets.choice(string.ascii_lowercase + string.digits) for _ in range(16))
    path = state.layout.staging(token)
    path.mkdir(mode=0o700)
    try:
        yield StateDir(path, state.cron_dir)
    finally:
        shutil.rmtree(path, ignore_errors=True)


def _write_new(path: Path, text: str) -> None:
    """0600 from the first byte; no fsync per file (a thousand of them cost
    seconds): put_in_place syncs once before the renames."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)


def stage(staging: StateDir, candidates: list[RowPlan]) -> None:
    """The candidates' task files, as StateDir.save writes them, in the staging directory."""
    for p in candidates:
        assert p.task is not None
        _write_new(staging.files(p.task.name).password, p.password + "\n")
        _write_new(staging.files(p.task.name).env, format_env(p.task.to_env()))


def check_logins(staging: StateDir, candidates: list[RowPlan]) -> None:
    """Fail the staged candidates whose remote login is refused (in place)."""
    if not candidates:
        return
    if not container.running():
        for p in candidates:
            p.fail("the remote login cannot be checked: the sync service is not running "
                   "(configure the module first)")
        return
    names = [p.task.name for p in candidates if p.task]
    timeout = 120 + 11 * len(names)  # worst case: every login times out (10 s), 16 at a time
    verdicts, stderr = container.validate(names, staging=staging.tasks_dir.name, timeout=timeout)
    for p in candidates:
        verdict = verdicts.get(p.task.name if p.task else "")
        if verdict is None:
            p.fail(f"the remote login was not checked (syncctl: {stderr[-200:] or 'no answer'})")
        elif not verdict.ok:
            error = verdict.error or VALIDATION_FAILED
            p.fail(f"{errors.login_words(error)} ({error}): {p.account}")
            p.detail = verdict.reason


def refuse_taken_names(state: StateDir, candidates: list[RowPlan]) -> None:
    """Fail the candidates whose files now belong to another task (in place):
    the logins take a while, and create-task does not wait for an import.
    A created task needs a free name, an updated one its own files."""
    for p in candidates:
        if p.task is None or p.action not in ("create", "update"):
            continue
        owner = state.owner(p.task.name)
        usable = owner is None if p.action == "create" else owner == (p.task.localuser, p.task.task_id)
        if not usable:
            p.fail(f"the task files {p.task.name} belong to another task now (created or changed during "
                   "this import): run the import again")


def put_in_place(staging: StateDir, state: StateDir, accepted: list[RowPlan], mail_host: str) -> None:
    """The staged files renamed into place (atomic, same file system), then the schedules."""
    os.sync()  # the staged files reach the disk before they become tasks
    for p in accepted:
        assert p.task is not None
        staged, final = staging.files(p.task.name), state.files(p.task.name)
        os.replace(staged.password, final.password)
        os.replace(staged.env, final.env)  # the .env last: it makes the task exist
    dfd = os.open(state.tasks_dir, os.O_RDONLY)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)
    for p in accepted:
        assert p.task is not None
        schedule.write(state, p.task, mail_host)


def start_first_syncs(state: StateDir, accepted: list[RowPlan]) -> tuple[bool, str]:
    """Like create-task: an edited task's run is stopped, then every created
    or updated task is queued at once (the node's caps decide what runs)."""
    names = [p.task.name for p in accepted if p.task]
    if not names:
        return True, ""
    running = [n for p, n in zip(accepted, names, strict=True)
               if p.action == "update" and runstate.lock_held(runstate.TaskFiles(state.tasks_dir, n).lock)]
    if running:
        container.stop(running, timeout=600)
    outcomes = container.start(names, "import", timeout=600)
    return not outcomes.failed(names, container.START_FAILED), outcomes.stderr
