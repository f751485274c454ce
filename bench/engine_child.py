"""One native-engine run in a process of its own, so its CPU and RSS are its own.

    python bench/engine_child.py SPEC.json

SPEC (written by the bench, no secret in it: the passwords are in 0600 files)::

    {"task": "u1_bench", "workdir": "...", "source": {"host", "port", "security", "user"},
     "target": {...}, "source_password_file": "...", "target_password_file": "..."}

Prints one JSON line: the RunReport (``to_dict``) and the engine's command
counts (``stats``), which show what a re-run cost besides its time.
"""

from __future__ import annotations

import json
import sys
import threading
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO / "imageroot" / "pypkg")]

from ns8_imapsync.imap.connection import Endpoint  # noqa: E402
from ns8_imapsync.sync.native import NativeEngine  # noqa: E402
from ns8_imapsync.sync.plan import SyncPlan  # noqa: E402


def plan_of(spec: dict) -> SyncPlan:
    """The SyncPlan a task with default options would get (folder mode all, no deletion)."""
    return SyncPlan(
        task_name=spec["task"],
        source=Endpoint(**spec["source"]),
        target=Endpoint(**spec["target"]),
        source_password_file=Path(spec["source_password_file"]),
        target_password_file=Path(spec["target_password_file"]),
        workdir=Path(spec["workdir"]),
    )


def main() -> int:
    """One native run from a spec file; its report and command counts as one JSON line on stdout."""
    spec = json.loads(Path(sys.argv[1]).read_text())
    engine = NativeEngine()
    report = engine.run(plan_of(spec), lambda _p: None, threading.Event(), lambda _line: None)
    print(json.dumps({"report": report.to_dict(), "ok": report.ok, "stats": dict(engine.stats)}))
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())
