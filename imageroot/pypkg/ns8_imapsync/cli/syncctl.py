"""syncctl: the sync container's entry point (see the README).

`syncctl {start|stop|status|validation|list-informations} <localuser>_<task_id>`.
Task files are read from $IMAPSYNC_DIR (the image sets /etc/imapsync).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

from ns8_imapsync import __version__, errors, layout
from ns8_imapsync.statedir import StateDir
from ns8_imapsync.task import TaskError

EXIT_NO_TASK = 6


def tasks_dir() -> Path:
    return Path(os.environ.get("IMAPSYNC_DIR", "/etc/imapsync"))


def state() -> StateDir:
    return StateDir(tasks_dir(), os.environ.get("CRON_DIR", "/etc/cron.d"))


VALIDATION_WORKERS = 16


def cmd_validation(names: list[str], staging: str | None = None) -> int:
    """Check the remote login of tasks; prints {task, ok, error, reason} as one
    JSON line per task, in the order given. Many tasks (import-csv-tasks) are
    checked concurrently, identical credentials once; `staging` reads them from
    a staging directory inside the task directory, where an import keeps its
    candidate tasks until they pass. Exit code: one task, the refusal's class;
    many, 1 if any was refused."""
    from concurrent.futures import ThreadPoolExecutor

    from ns8_imapsync.imap.connection import Endpoint, check_login

    st = state()
    if staging is not None:
        if not layout.STAGING_RE.match(staging):
            raise TaskError("staging", "staging_is_not_valid", staging)
        st = StateDir(st.tasks_dir / staging, st.cron_dir)
    tasks = {name: st.load_name(name) for name in names}
    checks: dict[tuple, Endpoint] = {}  # credentials -> endpoint, each checked once
    keys: dict[str, tuple] = {}
    for name, task in tasks.items():
        if task is not None:
            ep = Endpoint(task.remotehostname, task.remoteport, task.security,  # type: ignore[arg-type]
                          task.remoteusername, timeout=10)
            password = st.read_password(task)
            keys[name] = (task.remotehostname.lower(), task.remoteport, task.security, task.remoteusername, password)
            checks.setdefault(keys[name], ep)
    with ThreadPoolExecutor(max_workers=max(1, min(VALIDATION_WORKERS, len(checks)))) as pool:
        results = dict(zip(checks, pool.map(lambda k: check_login(checks[k], k[4]), checks), strict=True))
    codes = []
    for name in names:
        if tasks[name] is None:
            say(name, ok=False, error="task_not_found", reason=f"no task {name}")
            codes.append(EXIT_NO_TASK)
        else:
            result = results[keys[name]]
            say(name, ok=result.ok, error=result.error, reason=result.reason)
            codes.append(0 if result.ok else errors.login_exit_code(result.error or ""))
    if len(names) == 1:
        return codes[0]
    return 0 if not any(codes) else 1


def load_plan(name: str):
    """The SyncPlan of task `name`, against the mail server given by the service."""
    from ns8_imapsync.sync.plan import SyncPlan

    st = state()
    task = st.load_name(name)
    if task is None:
        return None
    return SyncPlan.from_task(task, st.tasks_dir, os.environ.get("MAIL_HOST", ""),
                              int(os.environ.get("MAIL_PORT") or 143))


def cmd_list_informations(name: str) -> int:
    from ns8_imapsync.sync.informations import informations

    plan = load_plan(name)
    if plan is None:
        print(json.dumps({"status": False, "error": "task_not_found", "reason": f"no task {name}"}))
        return EXIT_NO_TASK
    print(json.dumps(informations(plan)))
    return 0


def _enqueue(name: str, trigger: str) -> str:
    """Queue a start of `name` (see sync.dispatch); returns what became of it.

    The task lock is held while the queued status and the entry are written,
    so the dispatcher's run cannot take the entry before its status exists."""
    from ns8_imapsync import runstate

    plan = load_plan(name)
    if plan is None:
        return "no such task"
    tf = runstate.TaskFiles(state().tasks_dir, name)
    fd = runstate.acquire(tf.lock)
    if fd is None:
        return "already running"
    try:
        if runstate.is_queued(tf.tasks_dir, name):
            return "already queued"
        now = time.time()
        st = runstate.RunStatus(state="queued", trigger=trigger, queued_at=now)
        runstate.write_status(tf, st)
        runstate.enqueue(tf.tasks_dir, runstate.QueueEntry(name, now, trigger, plan.source.host, plan.local_user))
        return "queued"
    finally:
        os.close(fd)


def say(name: str, **answer: object) -> None:
    """One answer line, JSON (``container.answers`` reads them on the host)."""
    print(json.dumps({"task": name, **answer}), flush=True)


def cmd_start(names: list[str], detach: bool, trigger: str, from_queue: float | None = None) -> int:
    """Foreground: one task, its outcome is the exit code. Detached: any number
    of tasks are queued, one ``{"task", "outcome"}`` line each, and a dispatcher
    starts them within the caps; exit 1 if any could not be queued.

    Cron's starts are detached too (`SYNC_START=queue` in the cron files): a
    due task that is queued or running is skipped, and a thousand due tasks
    are a thousand queue entries, not a thousand waiting processes."""
    from ns8_imapsync.sync.runctl import Run

    if detach or (os.environ.get("SYNC_START") == "queue" and from_queue is None):
        from ns8_imapsync.sync.dispatch import ensure_dispatcher

        failed = False
        for name in names:
            outcome = _enqueue(name, trigger)
            failed |= outcome == "no such task"
            say(name, outcome=outcome)
        ensure_dispatcher(state())
        return 1 if failed else 0
    if len(names) != 1:
        print("syncctl: a foreground start takes one task", file=sys.stderr)
        return 2
    name = names[0]
    plan = load_plan(name)
    if plan is None:
        print(f"syncctl: no task {name}", file=sys.stderr)
        return EXIT_NO_TASK
    result = Run(state(), plan, trigger, queued_at=from_queue, from_queue=from_queue is not None).execute()
    if result is None:
        say(name, outcome="already running", reason="this run is skipped")
        return 0
    say(name, outcome=result.state, reason=result.reason)
    return 0 if result.state == "succeeded" else 1


def cmd_dispatch() -> int:
    from ns8_imapsync.sync.dispatch import Dispatcher

    Dispatcher(state()).run()
    return 0


def cmd_serve() -> int:
    """The image's main process: resume a queue left by a restart, then be cron."""
    from ns8_imapsync import runstate
    from ns8_imapsync.sync.dispatch import ensure_dispatcher

    if runstate.queued(state().tasks_dir):
        ensure_dispatcher(state())
    os.execvp("crond", ["crond", "-f"])
    return 1  # not reached


def cmd_stop(names: list[str]) -> int:
    """Stop runs (in parallel: each waits its grace period) and wait for all."""
    from concurrent.futures import ThreadPoolExecutor

    from ns8_imapsync.sync.runctl import stop_run

    for name in names:
        state().load_name(name)  # validates every name first
    with ThreadPoolExecutor(max_workers=16) as pool:
        outcomes = list(pool.map(lambda n: stop_run(state(), n), names))
    for name, outcome in zip(names, outcomes, strict=True):
        say(name, outcome=outcome)
    return 0 if all(o in ("stopped", "not running") for o in outcomes) else 1


def cmd_status(name: str) -> int:
    from dataclasses import asdict

    from ns8_imapsync import runstate

    if state().load_name(name) is None:
        print(f"syncctl: no task {name}", file=sys.stderr)
        return EXIT_NO_TASK
    snap = runstate.view(state().tasks_dir, name)
    print(json.dumps({"running": snap.running, "status": asdict(snap.status), "progress": snap.progress}))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="syncctl", description="Run and inspect mailbox sync tasks")
    parser.add_argument("--version", action="version", version=f"syncctl {__version__}")
    sub = parser.add_subparsers(dest="command")
    sub.add_parser("info", help="print the container's task directory and mail server")
    val = sub.add_parser("validation", help="check the remote login of tasks (one JSON line each)")
    val.add_argument("task", nargs="+", help="<localuser>_<task_id>")
    val.add_argument("--staging", help="read the tasks from this staging directory of an import")
    start = sub.add_parser("start", help="run a task now (skipped if it already runs)")
    start.add_argument("task", nargs="+")
    start.add_argument("--detach", action="store_true", help="return once the run is queued")
    start.add_argument("--trigger", default="schedule", choices=["schedule", "manual", "create", "import"])
    start.add_argument("--from-queue", type=float, metavar="QUEUED_AT", help=argparse.SUPPRESS)
    sub.add_parser("dispatch", help="start queued runs within the caps until the queue is empty")
    sub.add_parser("serve", help="the container's main process: resume the queue, then run cron")
    stop = sub.add_parser("stop", help="stop a task's run and wait until it has exited")
    stop.add_argument("task", nargs="+")
    status = sub.add_parser("status", help="the task's run status and progress (JSON)")
    status.add_argument("task")
    info = sub.add_parser("list-informations", help="folders, messages and bytes on both sides (JSON)")
    info.add_argument("task", help="<localuser>_<task_id>")
    args = parser.parse_args(argv)
    from ns8_imapsync import servicesettings

    if args.command == "serve":
        try:
            servicesettings.save(tasks_dir())
        except OSError as exc:  # cron's jobs then run with the defaults: say so, serve anyway
            print(f"syncctl: the settings for cron's jobs could not be saved: {exc}", file=sys.stderr)
    else:
        servicesettings.fill_in(tasks_dir())  # a job cron started has none of the service's
    try:
        if args.command == "info":
            print(f"tasks: {state().tasks_dir}")
            print(f"mail server: {os.environ.get('MAIL_HOST', '')}:{os.environ.get('MAIL_PORT', '143')}")
            return 0
        if args.command == "validation":
            return cmd_validation(args.task, args.staging)
        if args.command == "list-informations":
            return cmd_list_informations(args.task)
        if args.command == "start":
            return cmd_start(args.task, args.detach, args.trigger, args.from_queue)
        if args.command == "dispatch":
            return cmd_dispatch()
        if args.command == "serve":
            return cmd_serve()
        if args.command == "stop":
            return cmd_stop(args.task)
        if args.command == "status":
            return cmd_status(args.task)
    except TaskError as exc:
        print(f"syncctl: {exc}", file=sys.stderr)
        return 2
    parser.print_help(sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
