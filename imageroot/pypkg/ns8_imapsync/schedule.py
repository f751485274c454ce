"""A task's schedule as a crontab file for the sync container's cron.

The container runs cronie on `cron/` (mounted as /etc/cron.d), so each
scheduled task gets one system-crontab file: the mail server address, then
one line starting `syncctl start <task>`. Only `Nm` (1-59) and `Nh` (1-23)
exist; anything else was refused by `Task`. Whether a due run is skipped
because the previous one still runs is syncctl's business, not cron's.
"""

from __future__ import annotations

from crontab import CronTab

from ns8_imapsync import files
from ns8_imapsync.statedir import StateDir
from ns8_imapsync.task import CRON_RE, Task

SYNCCTL = "/usr/local/bin/syncctl"


def render(task: Task, mail_host: str) -> str | None:
    """The cron file of `task`, or None when it has no schedule."""
    m = CRON_RE.match(task.cron)
    if not task.cron or m is None:
        return None
    tab = CronTab(tab="", user=False)
    tab.env["MAIL_HOST"] = mail_host
    job = tab.new(command=f"{SYNCCTL} start {task.name}", user="root")
    if m.group("m"):
        job.minute.every(int(m.group("m")))
    else:
        job.minute.on(0)
        job.hour.every(int(m.group("h")))
    return tab.render()


def write(state: StateDir, task: Task, mail_host: str) -> None:
    text = render(task, mail_host)
    path = state.cron_path(task.name)
    if text is None:
        path.unlink(missing_ok=True)
    else:
        files.ensure_dir(state.cron_dir)
        files.write_atomic(path, text, 0o644)


def expand(state: StateDir, mail_host: str) -> list[str]:
    """Regenerate every cron file from the task files; drop orphans.

    Returns the names of the tasks that have a schedule."""
    scheduled = []
    wanted = set()
    for task in state.tasks():
        write(state, task, mail_host)
        if task.cron:
            scheduled.append(task.name)
            wanted.add(state.cron_path(task.name).name)
    if state.cron_dir.is_dir():
        for p in state.cron_dir.glob("*.cron"):
            if p.name not in wanted:
                p.unlink()
    return scheduled
