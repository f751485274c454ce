"""The per-section results file: tests/outputs/reliability/<section>.json.

The README's Reliability table is generated from these files (the other
sections' files, written by tests/reliability/conftest.py, share the
top-level keys section/updated/machine; these have counts per target instead
of one entry per test, and the long variant writes <section>.long.json), so each one
says what was tried and what happened in numbers, with the date, the
machine and which variant ran (``make test`` or the long one). A test
module keeps one ``Results`` for its run and writes it when the module ends;
a test that did not run leaves its part out (``tests_run`` says which did).

Shape::

    {"section": "3-hostile-input", "title": ..., "variant": "make-test" | "long",
     "updated": ISO-8601, "started": ISO-8601, "duration_seconds": float,
     "machine": {"host", "cpus", "memory_mb", "python", "platform"},
     "tests_run": [names],
     "totals": {"cases", "generated", "fixed", "problems"},
     "targets": {<target>: {"cases": n, "generated": n, "fixed": n,
                            "outcomes": {<outcome>: n}, "by_kind": {<kind>: n}}},
     "problems": [{"target", "case", "problem"}],   # each a failed check (a defect or a regression)
     "notes": {...}}                                 # section-specific (excluded actions, platform holdings)
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

OUTPUT_DIR = Path(__file__).resolve().parents[1] / "outputs" / "reliability"


def machine() -> dict:
    """The machine's description, in the shape the other sections' files use."""
    mem = 0
    with contextlib.suppress(OSError, StopIteration, ValueError):
        mem = int(next(ln for ln in open("/proc/meminfo") if ln.startswith("MemTotal:")).split()[1]) // 1024
    return {"host": platform.node(), "cpus": os.cpu_count(), "memory_mb": mem, "python": platform.python_version(),
            "platform": platform.platform()}


@dataclass
class Target:
    cases: int = 0
    generated: int = 0
    fixed: int = 0
    outcomes: Counter = field(default_factory=Counter)
    by_kind: Counter = field(default_factory=Counter)

    def as_json(self) -> dict:
        return {"cases": self.cases, "generated": self.generated, "fixed": self.fixed,
                "outcomes": dict(sorted(self.outcomes.items())), "by_kind": dict(sorted(self.by_kind.items()))}


@dataclass
class Results:
    section: str
    title: str
    variant: str = "make-test"
    started: float = field(default_factory=time.time)
    targets: dict[str, Target] = field(default_factory=dict)
    problems: list[dict] = field(default_factory=list)
    tests_run: list[str] = field(default_factory=list)
    notes: dict = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def case(self, target: str, *, kind: str, outcome: str, generated: bool) -> None:
        """Count one case tried against `target` (from any thread)."""
        with self.lock:
            self._count(target, kind, outcome, generated)

    def _count(self, target: str, kind: str, outcome: str, generated: bool) -> None:
        t = self.targets.setdefault(target, Target())
        t.cases += 1
        t.generated += generated
        t.fixed += not generated
        t.outcomes[outcome] += 1
        t.by_kind[kind] += 1

    def problem(self, target: str, case: str, problem: str) -> None:
        with self.lock:
            self.problems.append({"target": target, "case": case[:300], "problem": problem[:1000]})

    def as_json(self) -> dict:
        return {
            "section": self.section, "title": self.title, "variant": self.variant,
            "updated": datetime.now(UTC).isoformat(timespec="seconds"),
            "started": datetime.fromtimestamp(self.started, UTC).isoformat(timespec="seconds"),
            "duration_seconds": round(time.time() - self.started, 1),
            "machine": machine(),
            "tests_run": self.tests_run,
            "totals": {"cases": sum(t.cases for t in self.targets.values()),
                       "generated": sum(t.generated for t in self.targets.values()),
                       "fixed": sum(t.fixed for t in self.targets.values()), "problems": len(self.problems)},
            "targets": {k: v.as_json() for k, v in sorted(self.targets.items())},
            "problems": self.problems, "notes": self.notes,
        }

    def write(self) -> Path:
        """Write atomically: a report generator never reads half a file."""
        OUTPUT_DIR.mkdir(parents=True, exist_ok=True)
        name = self.section if self.variant == "make-test" else f"{self.section}.long"
        path = OUTPUT_DIR / f"{name}.json"
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.as_json(), indent=1, ensure_ascii=False) + "\n")
        os.replace(tmp, path)
        return path
