"""The module's state directory: the one place that names every file in it.

On the host the actions run in the module state dir, so the task directory is
``imapsync/`` and the schedule directory ``cron/``; the sync container sees the
same directories as ``$IMAPSYNC_DIR`` (``/etc/imapsync``) and ``$CRON_DIR``
(``/etc/cron.d``).  Everything else -- actions, syncctl, run control, the
engines, the CSV importer, delete-task -- asks this module for a path, so a
new task file is declared once, and delete-task removes exactly the set
declared here.

    imapsync/<localuser>_<task_id>.env           the task (task.Task), 0600
    imapsync/<localuser>_<task_id>.pwd           the remote password, first line, 0600
    imapsync/<localuser>_<task_id>.log           the last run's log, 0600
    imapsync/<localuser>_<task_id>.lock          held (flock) by a run and its imapsync
    imapsync/<localuser>_<task_id>.status.json   the last run's record
    imapsync/<localuser>_<task_id>.progress.json while a run goes
    imapsync/<localuser>_<task_id>.history.jsonl the last runs
    imapsync/<localuser>_<task_id>.native.db     the native engine's state (SQLite)
    imapsync/<localuser>_<task_id>.native.db-journal  its rollback journal, during a save
    imapsync/<localuser>_<task_id>.native.json   the engine's former state file (removed when seen)
    imapsync/<localuser>_<task_id>.imapsync.pid  imapsync's pid file while it runs
    imapsync/<localuser>_<task_id>.sieve.json    imapsync engine: copies not yet filtered
    imapsync/vmail.pwd                           the mail module's master password, 0600
    imapsync/.queue/<name>.json                  a start not yet taken (runstate)
    imapsync/.queue/.dispatcher.lock             held by the one dispatcher
    imapsync/.slots/<kind>-<n>.lock              the concurrency slots (runctl.Slots)
    imapsync/.import-<random>/                   a CSV import's staging directory
    imapsync/.import.lock                        one CSV import at a time
    imapsync/.service-settings.json              the sync service's settings, for cron's jobs
    cron/<localuser>_<task_id>.cron              the task's schedule
    cron/*.custom                                the administrator's own cron files

Standard library only: host-side code imports it.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

TASKS_DIR = "imapsync"  # relative to the module state dir, where actions run
CRON_DIR = "cron"
MASTER_PASSWORD = "vmail.pwd"
QUEUE = ".queue"
DISPATCHER_LOCK = ".dispatcher.lock"
SLOTS = ".slots"
STAGING_PREFIX = ".import-"
STAGING_RE = re.compile(r"^\.import-[a-z0-9]{8,32}$")
IMPORT_LOCK = ".import.lock"
SERVICE_SETTINGS = ".service-settings.json"

# every file a task owns in the task directory, by role
TASK_SUFFIXES = {
    "env": ".env",
    "password": ".pwd",
    "log": ".log",
    "lock": ".lock",
    "status": ".status.json",
    "progress": ".progress.json",
    "history": ".history.jsonl",
    "native_state": ".native.db",
    "native_journal": ".native.db-journal",
    "native_state_v1": ".native.json",
    "imapsync_pid": ".imapsync.pid",
    "sieve_pending": ".sieve.json",
}


@dataclass(frozen=True)
class TaskFiles:
    """The files of one task (``<localuser>_<task_id>``) in a task directory."""

    tasks_dir: Path
    name: str

    def _file(self, role: str) -> Path:
        return self.tasks_dir / f"{self.name}{TASK_SUFFIXES[role]}"

    @property
    def env(self) -> Path:
        return self._file("env")

    @property
    def password(self) -> Path:
        return self._file("password")

    @property
    def log(self) -> Path:
        return self._file("log")

    @property
    def lock(self) -> Path:
        return self._file("lock")

    @property
    def status(self) -> Path:
        return self._file("status")

    @property
    def progress(self) -> Path:
        return self._file("progress")

    @property
    def history(self) -> Path:
        return self._file("history")

    @property
    def native_state(self) -> Path:
        return self._file("native_state")

    @property
    def native_state_v1(self) -> Path:
        return self._file("native_state_v1")

    @property
    def imapsync_pid(self) -> Path:
        return self._file("imapsync_pid")

    @property
    def sieve_pending(self) -> Path:
        return self._file("sieve_pending")

    @property
    def queue_entry(self) -> Path:
        return queue_dir(self.tasks_dir) / f"{self.name}.json"

    def owned(self) -> list[Path]:
        """Every file of the task in the task directory, and its queue entry
        (the schedule is in the cron directory: ``Layout.cron``)."""
        return [self._file(role) for role in TASK_SUFFIXES] + [self.queue_entry]


def queue_dir(tasks_dir: Path) -> Path:
    return tasks_dir / QUEUE


def slots_dir(tasks_dir: Path) -> Path:
    return tasks_dir / SLOTS


def task_names(tasks_dir: Path) -> list[str]:
    """The names of the task files (``*.env``) in a task directory, sorted."""
    try:
        entries = os.listdir(tasks_dir)
    except FileNotFoundError:
        return []
    suffix = TASK_SUFFIXES["env"]
    return sorted(e[: -len(suffix)] for e in entries if e.endswith(suffix) and not e.startswith("."))


@dataclass(frozen=True)
class Layout:
    """The task and schedule directories of one module (or of a staging directory)."""

    tasks_dir: Path = Path(TASKS_DIR)
    cron_dir: Path = Path(CRON_DIR)

    def task(self, name: str) -> TaskFiles:
        return TaskFiles(self.tasks_dir, name)

    def cron(self, name: str) -> Path:
        return self.cron_dir / f"{name}.cron"

    @property
    def master_password(self) -> Path:
        return self.tasks_dir / MASTER_PASSWORD

    @property
    def queue(self) -> Path:
        return queue_dir(self.tasks_dir)

    @property
    def import_lock(self) -> Path:
        return self.tasks_dir / IMPORT_LOCK

    def staging(self, token: str) -> Path:
        return self.tasks_dir / f"{STAGING_PREFIX}{token}"

    def owned(self, name: str) -> list[Path]:
        """Every file a task owns, its schedule included: what delete-task removes."""
        return [*self.task(name).owned(), self.cron(name)]
