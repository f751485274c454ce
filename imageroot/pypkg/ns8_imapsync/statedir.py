"""The task files under the module state dir, read and written safely.

Where each file is, is ``layout``'s business; this module reads and writes a
task's definition (`.env`), password (`.pwd`) and schedule, and deletes
everything the layout says a task owns.

Every write is atomic (temp file + rename); directories are 0700. Names are
built only from a validated `Task` (or validated localuser/task_id), never
from raw input, so no path can leave these directories.

A name belongs to the (LOCALUSER, TASK_ID) its `.env` holds, and to nobody
else: a request for (`a_b`, `c`) must not read, start, overwrite or delete
the files of a reference-module task (`a`, `b_c`), although both are named
`a_b_c`. New ids have no `_` (task.TASK_ID_RE), so two new tasks never
share a name; an id with `_` is accepted only for the existing task file
that holds exactly it (`resolve`), and every load, save and delete checks
the owner first (`owner`).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

from ns8_imapsync import files, layout
from ns8_imapsync.layout import Layout
from ns8_imapsync.task import (
    LEGACY_TASK_ID_RE,
    LOCALUSER_RE,
    TASK_ID_RE,
    Task,
    TaskError,
    format_env,
    parse_env,
)

NAME_RE = re.compile(r"^[a-z_][a-z0-9_.-]{0,31}_[a-z0-9][a-z0-9_-]{0,63}$")


def task_name(localuser: str, task_id: str) -> str:
    """The file base name of (localuser, task_id): the shape only (legacy
    ids too); whether a request may use it is `StateDir.resolve`'s."""
    if not LOCALUSER_RE.match(localuser):
        raise TaskError("localuser", "localuser_is_not_valid", localuser)
    if not LEGACY_TASK_ID_RE.match(task_id):
        raise TaskError("task_id", "task_id_is_not_valid", task_id)
    return f"{localuser}_{task_id}"


@dataclass
class FilesBackup:
    """The bytes of a task's files before a change, to put back on refusal."""

    contents: dict[Path, bytes | None]

    def restore(self) -> None:
        for path, data in self.contents.items():
            if data is None:
                path.unlink(missing_ok=True)
            else:
                files.write_atomic(path, data, 0o600)


class StateDir:
    def __init__(self, tasks_dir: str | os.PathLike = layout.TASKS_DIR,
                 cron_dir: str | os.PathLike = layout.CRON_DIR):
        self.tasks_dir = Path(tasks_dir)
        self.cron_dir = Path(cron_dir)
        self.layout = Layout(self.tasks_dir, self.cron_dir)

    def ensure(self) -> None:
        files.ensure_dir(self.tasks_dir)
        files.ensure_dir(self.cron_dir)

    # ---- paths -------------------------------------------------------------
    def files(self, name: str) -> layout.TaskFiles:
        """Every file of task ``name`` (``layout``)."""
        return self.layout.task(name)

    def cron_path(self, name: str) -> Path:
        return self.layout.cron(name)

    @property
    def master_password_path(self) -> Path:
        return self.layout.master_password

    # ---- who a name belongs to ------------------------------------------------
    def owner(self, name: str) -> tuple[str, str] | None:
        """(LOCALUSER, TASK_ID) of the task file `name`, None when there is
        none; ("", "") when it names nobody readable (it still is not free)."""
        try:
            env = parse_env(self.files(name).env.read_text(errors="replace"))
        except FileNotFoundError:
            return None
        return env.get("LOCALUSER", ""), env.get("TASK_ID", "")

    def resolve(self, localuser: str, task_id: str) -> str:
        """The name of the task a request names. A new-style id is always
        fine; an id with `_` only when the task file of that name holds
        exactly this LOCALUSER and TASK_ID (a reference-module task), else
        TaskError `task_id_is_not_valid`."""
        name = task_name(localuser, task_id)
        if not TASK_ID_RE.match(task_id) and self.owner(name) != (localuser, task_id):
            raise TaskError("task_id", "task_id_is_not_valid", task_id)
        return name

    def check_free(self, localuser: str, task_id: str) -> str:
        """The name of (localuser, task_id), refused (TaskError
        `task_id_is_already_used`) when its files belong to another task."""
        name = self.resolve(localuser, task_id)
        if self.owner(name) not in (None, (localuser, task_id)):
            raise TaskError("task_id", "task_id_is_already_used", task_id)
        return name

    # ---- tasks ---------------------------------------------------------------
    def load(self, localuser: str, task_id: str) -> Task | None:
        """The task (localuser, task_id); None when missing or when the file
        of its name belongs to another task."""
        p = self.files(task_name(localuser, task_id)).env
        try:
            task = Task.from_env(parse_env(p.read_text()))
        except FileNotFoundError:
            return None
        return task if (task.localuser, task.task_id) == (localuser, task_id) else None

    def load_name(self, name: str) -> Task | None:
        """The task `<localuser>_<task_id>` (how syncctl and cron name it);
        None when missing or when the file's LOCALUSER and TASK_ID do not
        make this name (a copied or renamed file is nobody's task)."""
        if not NAME_RE.match(name):
            raise TaskError("task", "task_name_is_not_valid", name)
        try:
            task = Task.from_env(parse_env(self.files(name).env.read_text()))
        except FileNotFoundError:
            return None
        return task if task.name == name else None

    def tasks(self) -> list[Task]:
        """Every readable task, sorted by name; an unreadable file is skipped
        (it must not hide the other tasks from the administrator), and so is
        a file whose values name another task: acting on it would touch that
        task's files."""
        found = []
        if not self.tasks_dir.is_dir():
            return found
        for name in layout.task_names(self.tasks_dir):
            try:
                task = Task.from_env(parse_env(self.files(name).env.read_text()))
            except (KeyError, ValueError, OSError):
                continue
            if task.name == name:
                found.append(task)
        return found

    def has_password(self, task: Task) -> bool:
        return self.files(task.name).password.exists()

    def read_password(self, task: Task) -> str:
        return self.files(task.name).password.read_text().rstrip("\n")

    def backup(self, name: str) -> FilesBackup:
        """The definition, password and schedule of a task as they are now."""
        contents: dict[Path, bytes | None] = {}
        for p in [self.files(name).env, self.files(name).password, self.cron_path(name)]:
            contents[p] = p.read_bytes() if p.exists() else None
        return FilesBackup(contents)

    def save(self, task: Task, password: str | None) -> None:
        """Write the task; `password=None` keeps the stored one. Files of
        another task with the same name are never overwritten (TaskError)."""
        if self.owner(task.name) not in (None, (task.localuser, task.task_id)):
            raise TaskError("task_id", "task_id_is_already_used", task.task_id)
        self.ensure()
        if password is not None:
            files.write_atomic(self.files(task.name).password, password + "\n", 0o600)
        files.write_atomic(self.files(task.name).env, format_env(task.to_env()), 0o600)

    def delete(self, localuser: str, task_id: str) -> bool:
        """Remove every file of the task (True if it existed). Files of
        another task with the same name are left alone: TaskError
        `task_not_found`, nothing deleted."""
        name = task_name(localuser, task_id)
        if self.owner(name) not in (None, (localuser, task_id)):
            raise TaskError("task_id", "task_not_found", task_id)
        existed = self.files(name).env.exists()
        for path in self.layout.owned(name):  # exactly what the layout says a task owns
            path.unlink(missing_ok=True)
        return existed
