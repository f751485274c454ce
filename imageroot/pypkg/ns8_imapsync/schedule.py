"""A task's schedule as a crontab file for the sync container's cron.

The container runs cronie on `cron/` (mounted as /etc/cron.d), so each
scheduled task gets one system-crontab file: the mail server address,
`SYNC_START=queue` (a due start is queued, see sync.dispatch), then
`syncctl start <task>` lines. Only `Nm` (1-59) and `Nh` (1-23) exist;
anything else was refused by `Task`. Whether a due run is skipped because the
previous one still runs is syncctl's business, not cron's.

`*/N` in the minute field restarts at every hour: `*/45` runs at :00 and :45,
15 minutes apart (the reference module's schedules did that). So when N does
not divide 60 the minutes are counted from midnight instead, one line per group
of hours with the same minutes: every N minutes all day, with one shorter gap
at midnight. Hours work the same way by nature (`*/5` restarts at midnight).

Files an administrator adds to `cron/` with another suffix (`*.custom`, e.g. a
sync with extra options) are run by the same cron and never touched here.
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
    tab.env["SYNC_START"] = "queue"  # syncctl queues the start instead of waiting for a slot
    if m.group("m"):
        times = minute_times(int(m.group("m")))
    else:
        times = [("0", f"*/{int(m.group('h'))}")]
    for minutes, hours in times:
        job = tab.new(command=f"{SYNCCTL} start {task.name}", user="root")
        job.setall(f"{minutes} {hours} * * *")
    return tab.render()


def minute_times(every: int) -> list[tuple[str, str]]:
    """(minute field, hour field) pairs that fire every `every` minutes from midnight."""
    if 60 % every == 0:
        return [(f"*/{every}", "*")]
    hours_of: dict[str, list[int]] = {}
    for hour in range(24):
        minutes = [m for m in range(60) if (hour * 60 + m) % every == 0]
        if minutes:
            hours_of.setdefault(",".join(map(str, minutes)), []).append(hour)
    return [(minutes, ",".join(map(str, hours))) for minutes, hours in hours_of.items()]


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
