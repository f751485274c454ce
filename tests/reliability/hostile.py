"""What section 3 expects of every hostile input, as checks that return problems.

A case is one input sent once. Whatever the target -- an action through
api-cli, `import-csv-tasks` through runagent, the bulk migrator's config --
the same promises hold: no traceback anywhere (answer, task error, journal),
no file written outside the state directory (the canary stays empty and the
node's directory gains nothing), and no task changed or half-written (the
module state directory is byte for byte what it was, unless the input was
accepted, in which case the task it made says exactly what was asked).

Checks return a list of problems instead of asserting, so that one run of a
test module tries every case and the results file lists them all.
"""

from __future__ import annotations

import json
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from localnode.config import NodeConfig

from reliability import attacks
from reliability.ownnode import TRACEBACK, Journal, NodeCli, diff, node_paths, snapshot, state_dir

ERROR_KEYS = {"field", "parameter", "value", "error"}
# exit codes an action may end with on a refused input (NS8: 2-7 free for actions, 10 validation)
REFUSAL_CODES = {1, 2, 3, 4, 5, 6, 7, 10}
MAX_ERROR_LINES = 3  # "a clear one-line error": a message and perhaps a hint, never a dump


@dataclass(frozen=True)
class Case:
    """One hostile input for one target; `field` is what it attacks (None: the whole input)."""

    target: str
    kind: str
    label: str
    field: str | None
    data: object
    generated: bool = False

    def describe(self) -> str:
        text = self.data if isinstance(self.data, str) else json.dumps(self.data, default=repr) \
            if not isinstance(self.data, bytes) else repr(self.data)
        return f"{self.target} {self.label} field={self.field} data={text[:160]!r}"


@dataclass
class Bench:
    """The node under attack and what "unchanged" means for it."""

    cfg: NodeConfig
    cli: NodeCli
    canary: Path
    journal: Journal = field(init=False)
    info: dict = field(default_factory=dict)  # what the tests learnt at setup (the mail server, ...)
    state0: dict = field(default_factory=dict)
    node0: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.journal = Journal(self.cfg)
        self.rebase()

    def rebase(self) -> None:
        """The current state is the reference (after a setup or an accepted input's clean-up)."""
        self.state0 = snapshot(state_dir(self.cfg))
        self.node0 = node_paths(self.cfg)
        self.journal.new_text()

    def state_changes(self) -> dict[str, list[str]]:
        return {k: v for k, v in diff(self.state0, snapshot(state_dir(self.cfg))).items() if v}

    def outside_writes(self) -> list[str]:
        """Files an input made outside the module state dir: in the canary, in the node's directory."""
        found = [f"canary/{p}" for p in attacks.canary_hits(self.canary)]
        now = node_paths(self.cfg)
        found += [f"node/{p}" for p in sorted(set(now) - set(self.node0))]
        return found


def traceback_problems(*texts: str) -> list[str]:
    return [f"traceback: {t[t.find(TRACEBACK):][:400]!r}" for t in texts if TRACEBACK in t]


def unclear_error(text: str) -> list[str]:
    """A refusal must say what is wrong in a line or two, not dump internals."""
    lines = [ln for ln in text.splitlines() if ln.strip()]
    if not lines:
        return ["refused without a word on stderr"]
    if len(lines) > MAX_ERROR_LINES or any(ln.startswith('  File "') for ln in lines):
        return [f"error is not one clear line: {text[:300]!r}"]
    return []


def error_list(stdout: str) -> list[dict] | None:
    """The validation-failed list an action printed, or None."""
    try:
        out = json.loads(stdout)
    except ValueError:
        return None
    if isinstance(out, list) and all(isinstance(e, dict) for e in out):
        return out
    return None


def shape_problems(errors: list[dict]) -> list[str]:
    bad = [e for e in errors if set(e) != ERROR_KEYS or not isinstance(e.get("error"), str) or not e["error"]]
    return [f"error item not in NS8's shape: {bad[0]}"] if bad or not errors else []


def schema_refusal_problems(case: Case, proc: subprocess.CompletedProcess, predicted: list[dict]) -> list[str]:
    """The agent refused the input: exit 10, the validation-failed list naming the field."""
    if proc.returncode != 10:
        return [f"schema-invalid input not refused with exit 10 (exit {proc.returncode})"]
    errors = error_list(proc.stdout)
    if errors is None:
        return [f"exit 10 without a validation-failed list: {proc.stdout[:200]!r}"]
    problems = shape_problems(errors)
    named = {e.get("parameter") for e in errors}
    if named != {e["parameter"] for e in predicted}:
        problems.append(f"errors name {sorted(map(str, named))}, the schema says {sorted(e['parameter'] for e in predicted)}")
    if case.field is not None and not named & {case.field, "(root)"}:
        problems.append(f"the refusal does not name {case.field}: {sorted(map(str, named))}")
    if "Validation errors" not in proc.stderr:
        problems.append("no 'Validation errors' line on stderr")
    return problems


def module_refusal_problems(case: Case, proc: subprocess.CompletedProcess) -> list[str]:
    """The module's own steps refused: a documented exit code and either the
    validation-failed list naming a field of the input, or one clear line."""
    if proc.returncode not in REFUSAL_CODES:
        return [f"unexpected exit code {proc.returncode}"]
    errors = error_list(proc.stdout)
    if errors is None:
        return unclear_error(proc.stderr)
    problems = shape_problems(errors)
    keys = set(case.data) if isinstance(case.data, dict) else set()
    named = {e.get("parameter") for e in errors}
    if not named & (keys | {"createTask", "(root)"}):
        problems.append(f"the refusal names {sorted(map(str, named))}, no field of the input")
    return problems
