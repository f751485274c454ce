"""start-all-tasks on many tasks: how fast they queue, how many processes run, how long all take.

    .venv/bin/python bench/start_all.py --tasks 1000

On a throwaway local node (port base 37000): N tasks over the local users, all
copying one small remote mailbox (so the runs are short and the queue is what
is measured), started with one `start-all-tasks`. Prints the time the action
took to return, the peak number of runs at once and of run processes alive
(queued starts are files, not processes), the peak memory of those processes
together, and the time until every task had finished.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO / "tests"), str(REPO / "imageroot" / "pypkg")]

from localnode import corpus, node  # noqa: E402
from localnode.config import LOCALNODE_SRC  # noqa: E402
from localnode.procs import run_processes  # noqa: E402
from ns8_imapsync.statedir import StateDir  # noqa: E402
from ns8_imapsync.task import Task  # noqa: E402


def rss_kb(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--tasks", type=int, default=1000)
    ap.add_argument("--messages", type=int, default=8, help="messages in the remote mailbox (8 at least)")
    ap.add_argument("--cap", type=int, default=4, help="SYNC_MAX_CONCURRENT")
    ap.add_argument("--port-base", type=int, default=37000)
    args = ap.parse_args()
    with node.throwaway(args.port_base, "bench-start-all-") as cfg:
        env = dict(os.environ, LOCALNODE_DIR=str(cfg.state_dir), PATH=f"{LOCALNODE_SRC / 'bin'}:{os.environ['PATH']}")
        env.pop("PYTHONPATH", None)

        def api(action: str, data: object = None) -> object:
            argv = ["api-cli", "run", f"module/imapsync1/{action}"] + (["--data", json.dumps(data)] if data else [])
            proc = subprocess.run(argv, capture_output=True, text=True, env=env, check=True)
            return json.loads(proc.stdout)

        conf = api("get-configuration")
        uuid, host = conf["mail_server_URL"][0]["value"].split(",", 1)
        api("configure-module", {"mail_server": uuid, "mail_host": host})
        remote, user = cfg.remote, "bob@remote.test"
        corpus.fill(remote, user, remote.users[user], seed=9, count=args.messages, large=0)
        tasks_dir = cfg.module_state_dir("imapsync1") / "imapsync"
        state = StateDir(tasks_dir, tasks_dir.parent / "cron")
        names = []
        for i in range(args.tasks):
            task = Task(localuser=f"u{1 + i % 3}", task_id=f"b{i:05d}", remotehostname=remote.host,
                        remoteport=remote.imap_port, security="tls", remoteusername=user,
                        foldersynchronization="all")
            state.save(task, remote.users[user])
            names.append(task.name)
        environment = cfg.module_state_dir("imapsync1") / "environment"
        environment.write_text(environment.read_text() + f"SYNC_MAX_CONCURRENT={args.cap}\n")
        subprocess.run(["runagent", "-m", "imapsync1", "systemctl", "--user", "restart", "imapsync"], env=env,
                       check=True, capture_output=True)

        peaks = {"running": 0, "processes": 0, "rss_kb": 0}
        done = threading.Event()

        def states() -> list[str]:
            out = []
            for name in names:
                try:
                    out.append(json.loads((tasks_dir / f"{name}.status.json").read_text())["state"])
                except (OSError, ValueError):
                    out.append("never")
            return out

        def sample() -> None:
            while not done.is_set():
                pids = run_processes()
                peaks["processes"] = max(peaks["processes"], len(pids))
                peaks["rss_kb"] = max(peaks["rss_kb"], sum(rss_kb(p) for p in pids))
                time.sleep(0.1)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        t0 = time.perf_counter()
        out = api("start-all-tasks")
        returned = time.perf_counter() - t0
        assert len(out["done"]) == args.tasks, out["failed"][:5]
        while True:
            now = states()
            peaks["running"] = max(peaks["running"], now.count("running"))
            if all(s in ("succeeded", "failed") for s in now):
                break
            time.sleep(0.5)
        finished = time.perf_counter() - t0
        done.set()
        sampler.join()
        print(f"{args.tasks} tasks, cap {args.cap}, {args.messages} messages each, {os.cpu_count()} CPUs")
        print("| tasks | start-all-tasks returned s | all finished s | peak runs | peak run processes "
              "| peak RSS of run processes MB | succeeded |")
        print("|---|---|---|---|---|---|---|")
        print(f"| {args.tasks} | {returned:.1f} | {finished:.0f} | {peaks['running']} | {peaks['processes']} "
              f"| {peaks['rss_kb'] / 1024:.0f} | {now.count('succeeded')} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
