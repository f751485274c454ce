"""import-csv-tasks on 1,000 rows: wall time and peak RSS, on a local node (run.py's, or its own).

    .venv/bin/python bench/csv_import.py --rows 1000 --repeat 3

Adds N local users (mail1) and N remote accounts (the remote Dovecot, each
with its own password, so every row is a real, distinct login), binds the
module, then runs the command exactly as an administrator does
(`runagent -m imapsync1 import-csv-tasks < users.csv`) in these modes:

- check: `-c`, every row checked (remote logins included), nothing written;
- import: `--no-start`, the tasks written (staging, one login check call,
  rename, cron files);
- re-run: the same file again, every row skipped as already configured;
- import+start: a fresh module state, the import with its first syncs queued
  (one `syncctl start` call for every task), timed until the command returns.

Peak RSS is the largest of the command's processes (the host command or the
container's login check), from getrusage(RUSAGE_CHILDREN) of a fresh
measuring process per run. Medians of `--repeat` rounds; each round starts
from a module without tasks (the re-run from the round's own import).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO / "tests")]

from localnode import node  # noqa: E402
from localnode.config import LOCALNODE_SRC, NodeConfig  # noqa: E402

HEADER = "localusername,remoteusername,remotepassword,remotehostname,remoteport,security\n"
# runs the command given after it and prints its wall time and the peak RSS of its process tree
MEASURE = """
import resource, subprocess, sys, time
t = time.perf_counter()
with open(sys.argv[1], "rb") as f:
    rc = subprocess.run(sys.argv[2:], stdin=f, stdout=subprocess.PIPE, stderr=subprocess.STDOUT).returncode
wall = time.perf_counter() - t
print(wall, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss // 1024, rc)
"""


def add_users(cfg: NodeConfig, rows: int) -> list[tuple[str, str, str]]:
    """b0001..bNNNN on mail1, b0001@remote.test.. on the remote, each with its own password
    (Dovecot re-reads a changed passwd-file)."""
    accounts = [(f"b{i:04d}", f"b{i:04d}@remote.test", f"Bench,pw-{i:04d}") for i in range(1, rows + 1)]
    with open(Path(cfg.mail1.dir) / "users", "a") as f:
        f.writelines(f"{local}:{{PLAIN}}local-{local}::::::\n" for local, _, _ in accounts)
    with open(Path(cfg.remote.dir) / "users", "a") as f:
        f.writelines(f"{remote}:{{PLAIN}}{pw}::::::\n" for _, remote, pw in accounts)
    return accounts


def measure(env: dict, csv_path: Path, *args: str) -> tuple[float, int, int]:
    """One import in a fresh measuring process, so RUSAGE_CHILDREN is this import's alone."""
    proc = subprocess.run([sys.executable, "-c", MEASURE, str(csv_path), "runagent", "-m", "imapsync1",
                           "import-csv-tasks", *args], capture_output=True, text=True, env=env, check=True)
    wall, rss, rc = proc.stdout.split()
    return float(wall), int(rss), int(rc)


def wipe_tasks(cfg: NodeConfig) -> None:
    """Every task file gone (not timed), so each round imports into an empty module."""
    state = cfg.module_state_dir("imapsync1")
    for sub in ("imapsync", "cron"):
        for p in (state / sub).iterdir():
            if p.is_file() and p.name != "vmail.pwd" and not p.name.startswith("."):
                p.unlink()


def write_csv(cfg: NodeConfig, accounts: list[tuple[str, str, str]]) -> Path:
    """The CSV an administrator would upload, one row per account pair."""
    r = cfg.remote
    csv_path = cfg.state_dir / "users.csv"
    csv_path.write_text(HEADER + "".join(f'{local},{remote},"{pw}",{r.host},{r.imap_port},tls\n'
                                         for local, remote, pw in accounts))
    return csv_path


MODES = [("check (-c)", ("-c",)), ("import (--no-start)", ("--no-start",)), ("re-run (all skipped)", ()),
         ("import + first syncs queued", ())]


def run_modes(cfg: NodeConfig, env: dict, csv_path: Path, repeat: int, with_start: bool = True
              ) -> dict[str, list[dict]]:
    """{mode: [{wall_s, peak_rss_mb, exit, tasks}]}; each round starts from a module without
    tasks, and every round ends with its syncs stopped, leaving the round's tasks in place."""
    modes = MODES if with_start else MODES[:3]
    runs: dict[str, list[dict]] = {name: [] for name, _ in modes}
    for _ in range(repeat):
        for name, flags in modes:
            if name.startswith("check") or name.startswith("import +"):
                wipe_tasks(cfg)
            wall, rss, rc = measure(env, csv_path, *flags)
            made = len(list((cfg.module_state_dir("imapsync1") / "imapsync").glob("*.env")))
            runs[name].append({"wall_s": round(wall, 3), "peak_rss_mb": rss, "exit": rc, "tasks": made})
        subprocess.run(["api-cli", "run", "module/imapsync1/stop-all-tasks"], env=env, capture_output=True,
                       timeout=1200)
    return runs


def node_env(cfg: NodeConfig) -> dict:
    """The node's commands on PATH and its state dir, without the bench's PYTHONPATH (the agent sets its own)."""
    env = dict(os.environ, LOCALNODE_DIR=str(cfg.state_dir), PATH=f"{LOCALNODE_SRC / 'bin'}:{os.environ['PATH']}")
    env.pop("PYTHONPATH", None)
    return env


def main() -> int:
    """Standalone: a node of its own, one table of the modes."""
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=1000)
    ap.add_argument("--port-base", type=int, default=32000)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--no-start-run", action="store_true", help="skip the import+start mode")
    args = ap.parse_args()
    with node.throwaway(args.port_base, "bench-csv-") as cfg:
        env = node_env(cfg)
        conf = json.loads(subprocess.run(["api-cli", "run", "module/imapsync1/get-configuration"], env=env,
                                         capture_output=True, text=True, check=True).stdout)
        uuid, host = conf["mail_server_URL"][0]["value"].split(",", 1)
        subprocess.run(["api-cli", "run", "module/imapsync1/configure-module", "--data",
                        json.dumps({"mail_server": uuid, "mail_host": host})], env=env, check=True,
                       capture_output=True)
        csv_path = write_csv(cfg, add_users(cfg, args.rows))
        runs = run_modes(cfg, env, csv_path, args.repeat, not args.no_start_run)
        print(f"{args.rows} rows; medians of {args.repeat}")
        print("| mode | wall s (median) | min-max | rows/s | peak RSS MB | exit |")
        print("|---|---|---|---|---|---|")
        for name, results in runs.items():
            walls = sorted(r["wall_s"] for r in results)
            med = statistics.median(walls)
            print(f"| {name} | {med:.2f} | {walls[0]:.2f}-{walls[-1]:.2f} | {args.rows / med:,.0f} | "
                  f"{max(r['peak_rss_mb'] for r in results)} | {','.join(str(r['exit']) for r in results)} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
