"""One engine run in a process of its own, for the reliability suite (see ``engines.py``).

A process of its own, because what the suite measures is the process: its peak
RSS (``VmHWM``, and ``RUSAGE_CHILDREN`` for the imapsync it starts), whether it
crashed (a traceback, a signal) rather than reporting, and what is left after
it was killed. Two modes, from the JSON config in ``argv[1]``:

* ``engine``: ``engine.run(plan, ...)`` directly, as the engine tests do;
* ``run``: ``runctl.Run(...).execute()``, as ``syncctl start`` does (lock,
  slots, watchdog, status, history, log), so a kill or a full disk hits the
  real run control.

The last stdout line is ``RESULT <json>``: the report (``engine``) or the
recorded status (``run``), the log lines, and the peaks in KiB.
"""

from __future__ import annotations

import json
import resource
import sys
import threading
from pathlib import Path

from ns8_imapsync.imap.connection import Endpoint
from ns8_imapsync.sync.plan import SyncPlan


def vmhwm_kib() -> int:
    """This process's peak resident set, from ``/proc/self/status``."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    return 0


def make_plan(cfg: dict) -> SyncPlan:
    workdir = Path(cfg["workdir"])
    return SyncPlan(cfg["task"], Endpoint(**cfg["source"]), Endpoint(**cfg["target"]),
                    workdir / f"{cfg['task']}.pwd", workdir / "vmail.pwd", workdir=workdir, **cfg["options"])


def make_engine(cfg: dict) -> object:
    """The engine the config names, with its test keyword arguments."""
    if cfg["engine"] == "imapsync":
        from ns8_imapsync.sync.imapsync_engine import ImapsyncEngine

        return ImapsyncEngine(**cfg.get("engine_kw", {}))
    from ns8_imapsync.sync.native import NativeEngine

    return NativeEngine(**cfg.get("engine_kw", {}))


def run_engine(cfg: dict, lines: list[str]) -> dict:
    report = make_engine(cfg).run(make_plan(cfg), lambda _p: None, threading.Event(), lines.append)
    return {"report": report.to_dict(), "ok": report.ok}


def run_control(cfg: dict, lines: list[str]) -> dict:
    from ns8_imapsync.statedir import StateDir
    from ns8_imapsync.sync.runctl import Run

    workdir = Path(cfg["workdir"])
    st = Run(StateDir(workdir, workdir), make_plan(cfg), "manual", engine=make_engine(cfg)).execute()
    log = workdir / f"{cfg['task']}.log"
    if log.exists():
        lines.extend(log.read_text(errors="replace").splitlines())
    return {"status": None if st is None else st.__dict__, "ok": st is not None and st.state == "succeeded"}


def main() -> int:
    cfg = json.loads(sys.argv[1])
    lines: list[str] = []
    result = (run_control if cfg["mode"] == "run" else run_engine)(cfg, lines)
    result.update(log=lines[-400:], vmhwm_kib=vmhwm_kib(),
                  children_maxrss_kib=resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)
    print("RESULT " + json.dumps(result, default=str), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
