"""SyncPlan: everything an engine needs for one run, derived from a Task.

Both engines take the same plan and must give options the same meaning, so
an administrator can switch engine without a task changing behaviour.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from ns8_imapsync.imap.connection import Endpoint
from ns8_imapsync.layout import Layout, TaskFiles
from ns8_imapsync.task import Task

# Host2 is always the bound mail server, logged in as <localuser>*vmail.
MASTER_USER = "vmail"
ALWAYS_EXCLUDED = (r"^Shared(/.*)?$", r"^Public(/.*)?$")


@dataclass
class SyncPlan:
    task_name: str
    source: Endpoint  # host1: the remote server
    target: Endpoint  # host2: the local mail server (master login)
    source_password_file: Path  # first line = password; never in argv
    target_password_file: Path
    folder_mode: str = "all"  # all | inbox | exclusion
    exclude: list[str] = field(default_factory=list)  # regexes on host1 folder names (exclusion mode)
    delete_remote: bool = False  # delete on host1 each message verified on host2
    delete_remote_older: int = 0  # with delete_remote: only messages older than N days
    delete_local: bool = False  # delete on host2 what host1 no longer has (with a brake)
    delete_local_max_share: float = 0.5  # the brake: refuse to delete more than this share of a folder
    sieve_enabled: bool = False  # inbox mode: FILTER SIEVE DELIVERY on host2 after the copy
    workdir: Path = Path(".")  # the task directory: the task's engine files (``files``) live here
    gmail: bool = False  # the source is Gmail (imapsync --gmail1)

    @property
    def files(self) -> TaskFiles:
        """The task's files (its engine state among them), as ``layout`` names them."""
        return TaskFiles(Path(self.workdir), self.task_name)

    @property
    def local_user(self) -> str:
        """The local mailbox this run writes to (host2 is logged in as ``<user>*vmail``)."""
        return self.target.user.rsplit("*", 1)[0]

    @classmethod
    def from_task(cls, task: Task, tasks_dir: Path, mail_host: str, mail_port: int) -> SyncPlan:
        source = Endpoint(task.remotehostname, task.remoteport, task.security, task.remoteusername)  # type: ignore[arg-type]
        target = Endpoint(mail_host, mail_port, "tls", f"{task.localuser}*{MASTER_USER}")
        return cls(
            task_name=task.name,
            source=source,
            target=target,
            source_password_file=TaskFiles(tasks_dir, task.name).password,
            target_password_file=Layout(tasks_dir).master_password,
            folder_mode=task.foldersynchronization,
            exclude=list(task.exclude) if task.foldersynchronization == "exclusion" else [],
            delete_remote=task.delete_remote,
            delete_remote_older=task.delete_remote_older if task.delete_remote else 0,
            delete_local=task.delete_local,
            sieve_enabled=task.sieve_enabled and task.foldersynchronization == "inbox",
            workdir=tasks_dir,
            gmail=task.remotehostname.lower() in ("imap.gmail.com", "imap.googlemail.com"),
        )


def read_password(path: Path) -> str:
    """The first line of a password file, without its newline (imapsync's --passfile rule)."""
    with open(path, encoding="utf-8") as f:
        return f.readline().rstrip("\r\n")
