"""Where list-tasks' time goes with 1,000 tasks: the profile behind the latency figure.

    .venv/bin/python bench/profile_actions.py [--tasks 1000] [--merge-into bench/results/<date>.json]

The latency benchmark times ``api-cli run module/imapsync1/list-tasks`` end
to end; when that misses its target the issue asks for the profile that
shows why. This script splits the action into its parts, each timed here
in-process (no node needed), on a throw-away state directory holding N
tasks that each ran once (a status record, as after the bench's import):

- ``step start-up``: a fresh ``python3`` importing the action's module, as
  the agent starts the step (``20list``) for every call (and a bare
  interpreter beside it);
- ``task files``: ``tasks.list_tasks()`` reading every task's env and run
  status, with the mail server's mailbox list stubbed out;
- ``output validation``: the local node's agent checking the output against
  ``validate-output.json`` (the emulator validates in Python; NS8's agent
  does it in Go, so this part is the emulator's, not the module's);
- the nested ``list-user-mailboxes`` agent call that ``list_tasks`` makes
  to the mail module is not here: it costs one more agent round trip
  (about the fixed cost the latency table shows for ``get-name``).

With ``--merge-into`` the figures are added to a results file under
``profile`` so that bench/README.md shows them.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import json
import os
import pstats
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PYPKG = REPO / "imageroot" / "pypkg"
AGENT_PKG = REPO / "tests" / "localnode" / "pypkg"  # the local node's `agent` package, as NS8's .pth gives it
HOST_PY = REPO / ".venv-host" / "bin" / "python"  # the agent environment the steps run in
sys.path[:0] = [str(REPO / "tests"), str(PYPKG), str(AGENT_PKG)]

from localnode import validation  # noqa: E402
from ns8_imapsync import runstate  # noqa: E402
from ns8_imapsync.actions import tasks  # noqa: E402
from ns8_imapsync.statedir import StateDir  # noqa: E402
from ns8_imapsync.task import Task  # noqa: E402

SCHEMA = REPO / "imageroot" / "actions" / "list-tasks" / "validate-output.json"
STEP_IMPORT = "from ns8_imapsync.actions import tasks"


def make_state(root: Path, count: int) -> StateDir:
    """count tasks, each with a finished run's status record (what list-tasks reads per task)."""
    state = StateDir(root / "imapsync", root / "cron")
    now = time.time()
    for i in range(1, count + 1):
        task = Task(task_id="t1", localuser=f"b{i:04d}", remoteusername=f"b{i:04d}@remote.test",
                    remotehostname="127.0.0.3", remoteport=143, security="tls")
        state.save(task, f"pw-{i:04d}")
        status = runstate.RunStatus(state="stopped", started=now - 60, ended=now - 30, exit_code=0,
                                    engine="native", trigger="manual", listed=2000, found=2000,
                                    folders=[{"folder": "INBOX", "listed": 2000, "found": 2000}])
        runstate.write_status(state.files(task.name), status)
    return state


def timed(fn: Callable[[], object], reps: int) -> tuple[float, object]:
    """Median wall seconds of reps calls, and the last call's result."""
    walls, result = [], None
    for _ in range(reps):
        start = time.perf_counter()
        result = fn()
        walls.append(time.perf_counter() - start)
    return round(statistics.median(walls), 4), result


def step_startup(reps: int) -> tuple[float, float]:
    """A new interpreter, bare and importing the action module: paid by every agent call of the
    step, the difference being the module's imports."""
    env = dict(os.environ, PYTHONPATH=f"{PYPKG}:{AGENT_PKG}")
    python = str(HOST_PY) if HOST_PY.exists() else "python3"
    bare = timed(lambda: subprocess.run([python, "-c", "pass"], env=env, check=True), reps)[0]
    full = timed(lambda: subprocess.run([python, "-c", STEP_IMPORT], env=env, check=True), reps)[0]
    return bare, full


IMPORTS = ("agent", "redis", "jsonschema", "ns8_imapsync.taskrules", "ns8_imapsync.container")


def import_times() -> dict[str, float]:
    """Cumulative import seconds of the step's heavy imports (``python -X importtime``, one run)."""
    env = dict(os.environ, PYTHONPATH=f"{PYPKG}:{AGENT_PKG}")
    python = str(HOST_PY) if HOST_PY.exists() else "python3"
    proc = subprocess.run([python, "-X", "importtime", "-c", STEP_IMPORT], env=env, capture_output=True,
                          text=True, check=True)
    out: dict[str, float] = {}
    for line in proc.stderr.splitlines():
        parts = [p.strip() for p in line.removeprefix("import time:").split("|")]
        if len(parts) == 3 and parts[2] in IMPORTS and parts[1].isdigit():
            out[parts[2]] = round(int(parts[1]) / 1e6, 3)
    return out


def top_functions(fn: Callable[[], object], limit: int) -> list[dict]:
    """cProfile of one call: the functions with the largest cumulative time."""
    prof = cProfile.Profile()
    prof.runcall(fn)
    stats = pstats.Stats(prof, stream=io.StringIO())
    rows = []
    for (path, line, name), (_cc, calls, _tt, cum, _callers) in stats.stats.items():  # type: ignore[attr-defined]
        rows.append({"function": f"{Path(path).name}:{line}({name})", "calls": calls, "cumulative_s": round(cum, 4)})
    rows.sort(key=lambda r: -r["cumulative_s"])
    return rows[:limit]


def profile(count: int, reps: int, limit: int) -> dict:
    """The parts of one list-tasks call on count tasks, each the median of reps."""
    with tempfile.TemporaryDirectory(prefix="bench-profile-") as tmp:
        make_state(Path(tmp), count)
        cwd = os.getcwd()
        os.chdir(tmp)  # actions run in the module's state directory
        saved = tasks.enabled_mailboxes
        tasks.enabled_mailboxes = lambda: ([{"name": "u1", "label": "u1", "value": "u1"}], "")  # type: ignore[assignment]
        try:
            files_s, output = timed(tasks.list_tasks, reps)
            dumps_s, _ = timed(lambda: json.dumps(output), reps)
            schema = json.loads(SCHEMA.read_text())
            valid_s, errors = timed(lambda: validation.validate(schema, json.loads(json.dumps(output))), reps)
            top = top_functions(tasks.list_tasks, limit)
        finally:
            tasks.enabled_mailboxes = saved  # type: ignore[assignment]
            os.chdir(cwd)
    bare, startup = step_startup(reps)
    return {"tasks": count, "reps": reps, "interpreter_s": bare, "step_startup_s": startup, "task_files_s": files_s,
            "json_output_s": dumps_s, "output_validation_s": valid_s, "validation_errors": len(errors or []),
            "imports": import_times(), "top": top}


def merge(path: Path, result: dict) -> None:
    """Add the profile to a results file (written whole, as run.py writes it)."""
    res = json.loads(path.read_text())
    res["profile"] = {"list-tasks": result}
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(res, indent=1, default=str) + "\n")
    tmp.replace(path)


def main() -> int:
    """Print the parts (and the top functions); merge them into a results file if asked."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tasks", type=int, default=1000)
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--top", type=int, default=12)
    ap.add_argument("--merge-into", type=Path, default=None)
    args = ap.parse_args()
    result = profile(args.tasks, args.reps, args.top)
    print(json.dumps({k: v for k, v in result.items() if k != "top"}))
    for row in result["top"]:
        print(f"{row['cumulative_s']:8.4f} s  {row['calls']:7d}  {row['function']}")
    if args.merge_into:
        merge(args.merge_into, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
