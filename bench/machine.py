"""What machine and software a results file was measured with.

Absolute figures mean nothing without it: the same bench on a faster or
quieter machine gives other times, which is why the README compares ratios.
"""

from __future__ import annotations

import os
import platform
import re
import subprocess
from pathlib import Path

import engines

REPO = Path(__file__).resolve().parents[1]


def _first(path: str, pattern: str) -> str:
    """The first match in a /proc or /etc file, or "" when absent (not every machine has them)."""
    try:
        match = re.search(pattern, Path(path).read_text(), re.M)
    except OSError:
        return ""
    return match.group(1).strip() if match else ""


def _output(argv: list[str], cwd: Path | None = None) -> str:
    """A command's stdout, or "": a missing tool must not stop the bench."""
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, cwd=cwd, timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        return ""
    return proc.stdout.strip() if proc.returncode == 0 else ""


def _debian() -> str:
    """The Debian point release, since Dovecot and Python come from it."""
    return _first("/etc/debian_version", r"^(.+)$")


def load_average() -> list[float]:
    """The 1, 5 and 15 minute load: how busy other work kept the machine around the run."""
    return [round(x, 2) for x in os.getloadavg()]


def describe() -> dict:
    """CPU, cores, RAM, kernel, Dovecot, imapsync, Python, and the repository's commit."""
    imapsync = engines.imapsync_path()
    dirty = _output(["git", "status", "--porcelain", "--untracked-files=no"], REPO)
    return {
        "cpu": _first("/proc/cpuinfo", r"^model name\s*:\s*(.+)$"),
        "cores": os.cpu_count(),
        "ram_gib": round(int(_first("/proc/meminfo", r"^MemTotal:\s*(\d+)") or 0) / 1024 / 1024, 1),
        "kernel": platform.release(),
        "debian": _debian(),
        "in_container": Path("/.dockerenv").exists(),
        "python": platform.python_version(),
        "dovecot": _output(["dovecot", "--version"]),
        "imapsync": _output([imapsync, "--version"]) if imapsync else None,
        "imapsync_path": imapsync,
        "git_commit": _output(["git", "rev-parse", "HEAD"], REPO),
        "git_worktree_modified": bool(dirty),
        "load_average_at_start": load_average(),
    }
