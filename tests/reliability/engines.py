"""Engine runs for the reliability suite: a task, run in a child process (``engine_child.py``).

Every run is a process of its own so the suite can measure its peak memory,
tell a crash (traceback, signal, no report) from a failed run, and kill it
at a chosen moment. ``ENGINES`` parametrises a case over the native engine
and, when ``imapsync`` is on PATH (real imapsync 2.229 beside the project:
``PATH=/opt/imapsync-beside:$PATH``), the imapsync engine; without one that
variant skips and says why (CI has none).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import pytest
from ns8_imapsync.errors import ENGINE_ERROR
from ns8_imapsync.imap.connection import Endpoint
from syncplans import write_secret

TESTS = Path(__file__).resolve().parents[1]
PKG = TESTS.parent / "imageroot" / "pypkg"
CHILD = Path(__file__).with_name("engine_child.py")
IMAPSYNC = shutil.which("imapsync")
NO_IMAPSYNC = ("needs the real imapsync 2.229 on PATH (not installable from our registries; run the suite "
               "with PATH=/opt/imapsync-beside:$PATH or wherever it is)")
ENGINES = ["native", pytest.param("imapsync", marks=pytest.mark.skipif(IMAPSYNC is None, reason=NO_IMAPSYNC))]
# the native engine's chunked path on a small corpus (messages above 100 KB read in 64 KB pieces)
NATIVE_KW = {"large_message": 100_000, "chunk_size": 64_000}


@dataclass
class EngineRun:
    """What a child run left: its RESULT (None when it died first), exit code, stderr, time."""

    returncode: int
    result: dict | None
    stderr: str
    seconds: float

    @property
    def report(self) -> dict:
        return (self.result or {}).get("report") or {}

    @property
    def status(self) -> dict:
        return (self.result or {}).get("status") or {}

    @property
    def ok(self) -> bool:
        return bool(self.result and self.result.get("ok"))

    @property
    def errors(self) -> list[str]:
        return list(self.report.get("errors") or [])

    @property
    def log(self) -> list[str]:
        return list((self.result or {}).get("log") or [])

    @property
    def error_class(self) -> str:
        return self.report.get("error_class") or self.status.get("error_class") or ""

    @property
    def crashed(self) -> bool:
        """A traceback or a signal instead of a report, or an engine bug the engine caught."""
        return self.returncode != 0 or self.result is None or self.error_class == ENGINE_ERROR

    @property
    def peak_rss_mb(self) -> float:
        """The larger of the engine process's and its biggest child's (imapsync) peak RSS."""
        r = self.result or {}
        return round(max(r.get("vmhwm_kib", 0), r.get("children_maxrss_kib", 0)) / 1024, 1)

    def explain(self) -> str:
        """For assertion messages: what the run said, its last log lines, its stderr."""
        head = {k: self.report.get(k) for k in ("copied", "error_class", "errors", "exit_code")} \
            if self.report else self.status
        return f"rc={self.returncode} {head}\nlog: {self.log[-25:]}\nstderr: {self.stderr[-3000:]}"


@dataclass
class Task:
    """One task of the suite: its engine, endpoints (often the fault proxies), options, files."""

    engine: str
    name: str
    workdir: Path
    source: Endpoint
    target: Endpoint
    source_password: str
    target_password: str
    options: dict = field(default_factory=dict)
    engine_kw: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        write_secret(self.workdir / f"{self.name}.pwd", self.source_password)
        write_secret(self.workdir / "vmail.pwd", self.target_password)
        if not self.engine_kw and self.engine == "native":
            self.engine_kw = dict(NATIVE_KW)

    def config(self, mode: str) -> dict:
        return {"mode": mode, "engine": self.engine, "task": self.name, "workdir": str(self.workdir),
                "source": asdict(self.source), "target": asdict(self.target), "options": self.options,
                "engine_kw": self.engine_kw}

    def env(self, extra: dict[str, str] | None = None) -> dict[str, str]:
        env = {**os.environ, "PYTHONPATH": f"{TESTS}:{PKG}", "SYNC_ENGINE": self.engine,
               "SYNC_JOURNAL": str(self.workdir / "journal")}
        env.update(extra or {})
        return env

    def start(self, mode: str = "engine", env: dict[str, str] | None = None) -> tuple[subprocess.Popen, float]:
        """The child, in a session of its own (so its whole group can be killed)."""
        proc = subprocess.Popen([sys.executable, str(CHILD), json.dumps(self.config(mode))], env=self.env(env),
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                start_new_session=True, cwd=self.workdir)
        return proc, time.monotonic()

    def run(self, mode: str = "engine", timeout: float = 600, env: dict[str, str] | None = None) -> EngineRun:
        proc, started = self.start(mode, env)
        return finish(proc, started, timeout)


def finish(proc: subprocess.Popen, started: float, timeout: float = 600) -> EngineRun:
    """Wait for a child started by :meth:`Task.start` and read its RESULT."""
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        kill_group(proc)
        out, err = proc.communicate()
        err += f"\n(killed by the suite after {timeout:.0f} s)"
    result = None
    for line in reversed(out.splitlines()):
        if line.startswith("RESULT "):
            result = json.loads(line[len("RESULT "):])
            break
    return EngineRun(proc.returncode, result, err, round(time.monotonic() - started, 2))


def kill_group(proc: subprocess.Popen, sig: int = signal.SIGKILL) -> None:
    """Signal the child's whole session (an imapsync it started has a session of its own)."""
    try:
        os.killpg(proc.pid, sig)
    except ProcessLookupError:
        pass
