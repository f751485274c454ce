"""Running syncctl inside the sync container, from host-side code.

Everything that speaks IMAP runs in the container; actions reach it with
`podman exec`, arguments as a list (never a shell). Task names are validated
before they get here.

syncctl answers the host with one JSON object per task and line
(``{"task": ..., "outcome": ...}`` for start and stop; ``{"task", "ok",
"error", "reason"}`` for validation); this module is the one place that reads
them, so no caller matches text.
"""

from __future__ import annotations

import json
import subprocess
from dataclasses import dataclass

CONTAINER = "imapsync"
SYNCCTL = "/usr/local/bin/syncctl"

# outcomes of `syncctl start --detach` and `syncctl stop` that mean "not done"
START_FAILED = ("no such task",)
STOP_FAILED = ("no such task", "still running")


def syncctl(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(["podman", "exec", CONTAINER, SYNCCTL, *args], capture_output=True, text=True,
                          timeout=timeout)


def running() -> bool:
    proc = subprocess.run(["systemctl", "--user", "is-active", "imapsync.service"], capture_output=True,
                          text=True)
    return proc.stdout.strip() == "active"


def answers(stdout: str) -> dict[str, dict]:
    """syncctl's JSON lines by task; a line that is not one (a warning) is skipped."""
    out: dict[str, dict] = {}
    for line in stdout.splitlines():
        try:
            answer = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(answer, dict) and isinstance(answer.get("task"), str):
            out[answer["task"]] = answer
    return out


@dataclass(frozen=True)
class Verdict:
    """A remote login check: ``error`` is a login class of ``errors`` when refused."""

    ok: bool
    error: str = ""
    reason: str = ""


@dataclass(frozen=True)
class Outcomes:
    """What syncctl did with each task, and what it said on stderr."""

    by_task: dict[str, str]
    stderr: str = ""

    def failed(self, names: list[str], bad: tuple[str, ...]) -> list[str]:
        """The tasks with no answer or a bad one."""
        return [n for n in names if self.by_task.get(n, "") in ("", *bad)]


def validate(names: list[str], *, staging: str | None = None, timeout: float = 60) -> tuple[dict[str, Verdict], str]:
    """The remote login of each task (``staging``: a CSV import's staging directory);
    a task without an answer is missing from the result. Also syncctl's stderr."""
    args = ["validation", *(["--staging", staging] if staging else []), *names]
    proc = syncctl(*args, timeout=timeout)
    verdicts = {
        name: Verdict(bool(a.get("ok")), str(a.get("error") or ""), str(a.get("reason") or ""))
        for name, a in answers(proc.stdout).items()
    }
    return verdicts, proc.stderr.strip()


def start(names: list[str], trigger: str, timeout: float = 120) -> Outcomes:
    """Queue a start of each task (the dispatcher runs them within the caps)."""
    proc = syncctl("start", *names, "--detach", "--trigger", trigger, timeout=timeout)
    return _outcomes(proc)


def stop(names: list[str], timeout: float = 120) -> Outcomes:
    """Stop each task's queued or running sync, and wait until it has exited."""
    return _outcomes(syncctl("stop", *names, timeout=timeout))


def informations(name: str, timeout: float = 300) -> dict:
    """Folders, messages and bytes of both sides of a task (``syncctl list-informations``)."""
    proc = syncctl("list-informations", name, timeout=timeout)
    try:
        result = json.loads(proc.stdout.splitlines()[-1])
    except (json.JSONDecodeError, IndexError):
        return {"status": False, "reason": f"syncctl failed ({proc.returncode})"}
    return result if isinstance(result, dict) else {"status": False, "reason": "syncctl answered no object"}


def _outcomes(proc: subprocess.CompletedProcess) -> Outcomes:
    return Outcomes({name: str(a.get("outcome", "")) for name, a in answers(proc.stdout).items()},
                    proc.stderr.strip())
