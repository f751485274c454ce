"""A sync run in a process of its own (runctl.Run, as `syncctl start` does), and a
stand-in imapsync to put on its PATH, for the run-control tests that need the
imapsync engine's process handling: stop, watchdog, heartbeat, argv.

The stand-in reads what to do from ``<tasks>/imapsync-mode`` (one word, so
two runs of one test can behave differently), records its argv in
``<tasks>/argv.txt``, and refuses to start while its pid file names a live
process, as imapsync 2.229 does with ``--pidfilelocking`` (exit 8).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

from localnode.imap_pair import Pair
from ns8_imapsync import runstate
from syncplans import write_secret

PKG = Path(__file__).resolve().parents[1] / "imageroot" / "pypkg"

RUNNER = textwrap.dedent('''
    import json, subprocess, sys, time
    from pathlib import Path
    from ns8_imapsync.imap.connection import Endpoint
    from ns8_imapsync.statedir import StateDir
    from ns8_imapsync.sync.plan import SyncPlan
    from ns8_imapsync.sync.report import RunReport
    from ns8_imapsync.sync.runctl import Run

    cfg = json.loads(sys.argv[1])
    tasks = Path(cfg["tasks"])

    class SpawnsAndHangs:
        """Starts imapsync as the imapsync engine does (own session, the run's inheritable
        descriptors passed), then hangs, deaf to stop: only the watchdog's forced exit ends it."""
        name = "test-double"
        def run(self, plan, progress, stop, log, heartbeat=None):
            pidfile = tasks / f"{plan.task_name}.imapsync.pid"
            subprocess.Popen(["imapsync", f"--pidfile={pidfile}"], start_new_session=True, close_fds=False,
                             stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
            time.sleep(600)
            return RunReport()

    engine = SpawnsAndHangs() if cfg["engine"] == "spawns-and-hangs" else None  # None: SYNC_ENGINE
    plan = SyncPlan(cfg["name"], Endpoint(**cfg["source"]), Endpoint(**cfg["target"]),
                    tasks / f"{cfg['name']}.pwd", tasks / "vmail.pwd", folder_mode=cfg.get("mode", "all"),
                    workdir=tasks)
    st = Run(StateDir(tasks, tasks), plan, "manual", engine=engine).execute()
    print("SKIPPED" if st is None else st.state, flush=True)
''')

STANDIN = '''#!{python}
import os, signal, sys, time
opt = dict(a[2:].split("=", 1) for a in sys.argv[1:] if a.startswith("--") and "=" in a)
pidfile = opt["pidfile"]
tasks = os.path.dirname(pidfile)
with open(os.path.join(tasks, "argv.txt"), "w") as f:
    f.write("\\n".join(sys.argv))
def say(line):
    print(line, flush=True)
def alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    return True
if os.path.exists(pidfile):
    first = open(pidfile).read().split()
    if first and first[0].isdigit() and alive(int(first[0])):
        say(f"Another imapsync process {{first[0]}} is running as says pidfile {{pidfile}}")
        say("Exiting with return value 8 (EXIT_PID_FILE_ERROR) 0/50 nb_errors/max_errors PID 1")
        sys.exit(8)
with open(pidfile, "w") as f:
    f.write(f"{{os.getpid()}}\\n")
mode = open(os.path.join(tasks, "imapsync-mode")).read().split()
if mode[0] == "hang":  # deaf to SIGTERM and to the abort file, silent
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    while True:
        time.sleep(1)
if mode[0] == "tick":  # alive but making no progress the parser can see: one line a second
    for i in range(int(mode[1])):
        say(f"Host1: still busy ({{i}})")
        time.sleep(1)
say("Exiting with return value 0 (EX_OK: successful termination) 0/50 nb_errors/max_errors PID 1")
os.unlink(pidfile)
sys.exit(0)
'''


def install_standin(tmp: Path) -> Path:
    """``<tmp>/bin/imapsync``; returns the directory to put first on PATH."""
    bindir = tmp / "bin"
    bindir.mkdir(exist_ok=True)
    path = bindir / "imapsync"
    path.write_text(STANDIN.format(python=sys.executable))
    path.chmod(0o755)
    return bindir


def set_mode(tasks: Path, *words: str) -> None:
    (tasks / "imapsync-mode").write_text(" ".join(words))


def write_passwords(tasks: Path, name: str, remote: str, master: str) -> None:
    write_secret(tasks / f"{name}.pwd", remote)
    write_secret(tasks / "vmail.pwd", master)


def endpoints(pair: Pair, remote_user: str, local_user: str) -> dict:
    remote, local = pair.remote(remote_user), pair.local(local_user)
    return {"source": {"host": remote.host, "port": remote.port, "security": remote.security, "user": remote.user},
            "target": {"host": local.host, "port": local.port, "security": local.security, "user": local.user}}


def start_run(tasks: Path, name: str, ends: dict, engine: str = "imapsync", path: str | None = None,
              **env: str) -> subprocess.Popen:
    """A Run of task ``name`` in its own session, as the dispatcher starts one; prints its final state."""
    cfg = {"tasks": str(tasks), "name": name, "engine": engine, **ends}
    e = {**os.environ, "PYTHONPATH": str(PKG), "SYNC_ENGINE": "imapsync", "SYNC_JOURNAL": str(tasks / "journal"),
         **env}
    if path is not None:
        e["PATH"] = f"{path}:{os.environ['PATH']}"
    return subprocess.Popen([sys.executable, "-c", RUNNER, json.dumps(cfg)], env=e, stdout=subprocess.PIPE,
                            text=True, start_new_session=True)


def wait_state(tasks: Path, name: str, states: tuple[str, ...], timeout: float = 20) -> runstate.RunStatus:
    tf = runstate.TaskFiles(tasks, name)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        st = runstate.read_status(tf)
        if st.state in states:
            return st
        time.sleep(0.05)
    raise AssertionError(f"{name} never reached {states}: {runstate.read_status(tf)}")


def wait_pidfile(path: Path, timeout: float = 20) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            first = path.read_text().split()
        except FileNotFoundError:
            first = []
        if first and first[0].isdigit():
            return int(first[0])
        time.sleep(0.05)
    raise AssertionError(f"no pid in {path}")


def alive(pid: int) -> bool:
    """A live process (a zombie is dead: it only waits for a reaper we do not control)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


def kill_standins(tmp: Path) -> None:
    """SIGKILL the stand-ins started from ``<tmp>/bin`` that are still alive (after a failed test)."""
    marker = os.fsencode(tmp / "bin" / "imapsync")
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if marker in (entry / "cmdline").read_bytes():
                os.kill(int(entry.name), 9)
        except (OSError, ProcessLookupError):
            continue
