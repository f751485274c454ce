"""The outcome of each row, for the terminal and for the migration team's file.

Lines name the row, the local user, the task and the remote account
(`user@host:port security`), never the password; the `--report` file is one
CSV line per row with the same facts, so a team can filter and re-import
only what failed.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass

from ns8_imapsync import files
from ns8_imapsync.csvimport.plan import RowPlan

REPORT_COLUMNS = ("row", "localusername", "remoteusername", "remotehostname", "remoteport", "security", "outcome",
                  "task_id", "message")
# outcome of a row: (imported, check mode, valid but held back by other rows' failures)
OUTCOMES = {
    "create": ("created", "would-create", "not-imported"),
    "update": ("updated", "would-update", "not-imported"),
    "skip": ("skipped", "would-skip", "skipped"),
    "fail": ("failed", "failed", "failed"),
}


@dataclass
class Summary:
    created: int = 0
    updated: int = 0
    skipped: int = 0
    failed: int = 0

    def line(self) -> str:
        return f"{self.created} created, {self.updated} updated, {self.skipped} skipped, {self.failed} failed"


def outcome(p: RowPlan, check: bool, held: bool) -> str:
    imported, would, held_back = OUTCOMES[p.action]
    return would if check else held_back if held else imported


def row_line(p: RowPlan, check: bool, held: bool) -> str:
    name = f"{p.localuser}_{p.task_id}"
    if p.action == "fail":
        return f"row {p.row}: Error: {p.message}"
    if p.action == "skip":
        return f"row {p.row}: {'Would be skipped' if check else 'Skipped'}: {p.message}"
    verb = {"create": ("Created", "would create"), "update": ("Updated", "would update")}[p.action]
    if check and p.action == "create":  # its id is drawn when the import really runs
        return f"row {p.row}: OK, would create a task for {p.localuser}: {p.account} (remote login accepted)"
    if check:
        return f"row {p.row}: OK, {verb[1]} task {name}: {p.account} (remote login accepted)"
    if held:
        return f"row {p.row}: not imported (other rows failed): {verb[1]} task {name}: {p.account}"
    return f"row {p.row}: {verb[0]} task {name}: {p.account}"


def summarize(plans: list[RowPlan], check: bool, held: bool) -> Summary:
    s = Summary()
    for p in plans:
        o = outcome(p, check, held)
        if o in ("created", "would-create"):
            s.created += 1
        elif o in ("updated", "would-update"):
            s.updated += 1
        elif o in ("skipped", "would-skip"):
            s.skipped += 1
        elif o == "failed":
            s.failed += 1
    return s


def report_csv(plans: list[RowPlan], check: bool, held: bool, file_error: str = "") -> str:
    out = io.StringIO()
    w = csv.writer(out, lineterminator="\n")
    w.writerow(REPORT_COLUMNS)
    if file_error:
        w.writerow(["", "", "", "", "", "", "failed", "", file_error])
    for p in plans:
        o = outcome(p, check, held)
        message = p.message if not p.detail else f"{p.message} ({p.detail})"
        if o == "not-imported":
            message = "valid, held back: other rows failed (see --continue-on-error)"
        task_id = "" if p.action == "fail" or o == "would-create" else p.task_id
        w.writerow([p.row, p.localuser, p.remoteusername, p.remotehostname, p.remoteport, p.security, o,
                    task_id, message])
    return out.getvalue()


def write_report(path: str, text: str) -> None:
    """0600: it lists users and servers (never passwords)."""
    files.write_atomic(path, text, 0o600)
