"""syncctl: the sync container's entry point (see the README).

`syncctl {start|stop|status|validation|list-informations} <localuser>_<task_id>`.
Task files are read from $IMAPSYNC_DIR (the image sets /etc/imapsync).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

from ns8_imapsync import __version__
from ns8_imapsync.statedir import StateDir
from ns8_imapsync.task import TaskError

EXIT_NO_TASK = 6


def state() -> StateDir:
    tasks = os.environ.get("IMAPSYNC_DIR", "/etc/imapsync")
    return StateDir(tasks, os.environ.get("CRON_DIR", "/etc/cron.d"))


def cmd_validation(name: str) -> int:
    """Check the remote login of a task; prints {ok, error, reason} as JSON."""
    from ns8_imapsync.imap.connection import Endpoint, check_login
    from ns8_imapsync.imap.errors import ACTION_EXIT_CODES

    st = state()
    task = st.load_name(name)
    if task is None:
        print(json.dumps({"ok": False, "error": "task_not_found", "reason": f"no task {name}"}))
        return EXIT_NO_TASK
    ep = Endpoint(task.remotehostname, task.remoteport, task.security, task.remoteusername, timeout=10)  # type: ignore[arg-type]
    result = check_login(ep, st.read_password(task))
    print(json.dumps({"ok": result.ok, "error": result.error, "reason": result.reason}))
    return 0 if result.ok else ACTION_EXIT_CODES.get(result.error or "", 1)


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


def _spawn(name: str, trigger: str) -> str:
    """A detached run of `name`; returns its state once it has queued (or why not)."""
    from ns8_imapsync import runstate

    if load_plan(name) is None:
        return "no such task"
    tf = runstate.TaskFiles(state().tasks_dir, name)
    if runstate.lock_held(tf.lock):
        return "already running"
    child = subprocess.Popen([sys.executable, "-m", "ns8_imapsync.cli.syncctl", "start", name,
                              "--trigger", trigger], start_new_session=True, stdin=subprocess.DEVNULL,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        st = runstate.read_status(tf)
        if st.pid == child.pid and st.state in runstate.ACTIVE_STATES:
            return st.state
        if child.poll() is not None:
            break
        time.sleep(0.05)
    return runstate.read_status(tf).state


def cmd_start(names: list[str], detach: bool, trigger: str) -> int:
    """Foreground: one task, its outcome is the exit code. Detached: any number
    of tasks, one `<name>: <state>` line each; exit 1 if any could not start."""
    from ns8_imapsync.sync.runctl import Run

    if detach:
        failed = False
        for name in names:
            outcome = _spawn(name, trigger)
            failed |= outcome == "no such task"
            print(f"{name}: {outcome}", flush=True)
        return 1 if failed else 0
    if len(names) != 1:
        print("syncctl: a foreground start takes one task", file=sys.stderr)
        return 2
    name = names[0]
    plan = load_plan(name)
    if plan is None:
        print(f"syncctl: no task {name}", file=sys.stderr)
        return EXIT_NO_TASK
    result = Run(state(), plan, trigger).execute()
    if result is None:
        print(f"{name}: already running, this run is skipped")
        return 0
    print(f"{name}: {result.state}: {result.reason}")
    return 0 if result.state == "succeeded" else 1


def cmd_stop(names: list[str]) -> int:
    """Stop runs (in parallel: each waits its grace period) and wait for all."""
    from concurrent.futures import ThreadPoolExecutor

    from ns8_imapsync.sync.runctl import stop_run

    for name in names:
        state().load_name(name)  # validates every name first
    with ThreadPoolExecutor(max_workers=16) as pool:
        outcomes = list(pool.map(lambda n: stop_run(state(), n), names))
    for name, outcome in zip(names, outcomes, strict=True):
        print(f"{name}: {outcome}")
    return 0 if all(o in ("stopped", "not running") for o in outcomes) else 1


def cmd_status(name: str) -> int:
    from dataclasses import asdict

    from ns8_imapsync import runstate

    if state().load_name(name) is None:
        print(f"syncctl: no task {name}", file=sys.stderr)
        return EXIT_NO_TASK
    snap = runstate.snapshot(state().tasks_dir, name)
    print(json.dumps({"running": snap.running, "status": asdict(snap.status), "progress": snap.progress}))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="syncctl", description="Run and inspect mailbox sync tasks")
    parser.add_argument("--version", action="version", version=f"syncctl {__version__}")
    sub = parser.add_subparsers(dest="command")
    sub.add_parser("info", help="print the container's task directory and mail server")
    val = sub.add_parser("validation", help="check the remote login of a task")
    val.add_argument("task", help="<localuser>_<task_id>")
    start = sub.add_parser("start", help="run a task now (skipped if it already runs)")
    start.add_argument("task", nargs="+")
    start.add_argument("--detach", action="store_true", help="return once the run is queued")
    start.add_argument("--trigger", default="schedule", choices=["schedule", "manual", "create"])
    stop = sub.add_parser("stop", help="stop a task's run and wait until it has exited")
    stop.add_argument("task", nargs="+")
    status = sub.add_parser("status", help="the task's run status and progress (JSON)")
    status.add_argument("task")
    info = sub.add_parser("list-informations", help="folders, messages and bytes on both sides (JSON)")
    info.add_argument("task", help="<localuser>_<task_id>")
    args = parser.parse_args(argv)
    try:
        if args.command == "info":
            print(f"tasks: {state().tasks_dir}")
            print(f"mail server: {os.environ.get('MAIL_HOST', '')}:{os.environ.get('MAIL_PORT', '143')}")
            return 0
        if args.command == "validation":
            return cmd_validation(args.task)
        if args.command == "list-informations":
            return cmd_list_informations(args.task)
        if args.command == "start":
            return cmd_start(args.task, args.detach, args.trigger)
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
