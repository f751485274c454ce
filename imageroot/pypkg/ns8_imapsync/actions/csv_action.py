"""import-csv-tasks (the action): the CSV importer behind the UI's Import CSV.

The UI sends the file's text; this runs the landed importer
(`csvimport.importer.run`, the very code of `bin/import-csv-tasks`, with its
rules: every row checked -- values, local mailbox, remote login -- before
anything is written) and answers with one entry per row, taken from the
importer's own `--report` file, which never holds a password. The report
goes to a private temporary directory that is gone when the action ends.

The CSV comes in the field `csv_secret`: NS8 keeps every task's input in
Redis for 8 hours as its "context", masking only keys that end in
`password`, `secret`, `token`, `key` or `pass`; the file holds the remote
passwords, so its key must be one of those.
"""

from __future__ import annotations

import csv
import json
import os
import re
import sys
import tempfile

from ns8_imapsync.csvimport import importer

ROW_LINE_RE = re.compile(r"^row \d+: ")
# importer lines about its terminal and its temporary report, not about the import
HIDDEN_PREFIXES = ("Reading CSV from standard input", "Report written to ", "=====")
SUMMARY_OF = {"created": "created", "would-create": "created", "updated": "updated", "would-update": "updated",
              "skipped": "skipped", "would-skip": "skipped", "failed": "failed"}


def options(request: dict, report: str) -> importer.Options:
    """The importer's options from the request (the CLI's defaults when absent)."""
    return importer.Options(check=bool(request.get("check", False)), update=bool(request.get("update", False)),
                            continue_on_error=bool(request.get("continue_on_error", False)),
                            start=bool(request.get("start", True)), report=report)


def report_rows(path: str) -> list[dict]:
    """The report file's lines as the action's row entries. A line without a
    row number is the file's own error (bad header, not configured)."""
    try:
        with open(path, newline="", encoding="utf-8") as f:
            lines = list(csv.DictReader(f))
    except FileNotFoundError:
        return []
    rows = []
    for line in lines:
        number = line.get("row") or ""
        rows.append({
            "row": int(number) if number.isdigit() else None,
            **{k: line.get(k) or "" for k in ("localusername", "remoteusername", "remotehostname", "remoteport",
                                              "security", "outcome", "task_id", "message")},
        })
    return rows


def summary(rows: list[dict]) -> dict:
    """created / updated / skipped / failed, check mode counting what would be."""
    counts = {"created": 0, "updated": 0, "skipped": 0, "failed": 0}
    for row in rows:
        kind = SUMMARY_OF.get(row["outcome"])
        if kind and (row["row"] is not None or kind == "failed"):
            counts[kind] += 1
    return counts


def general_messages(lines: list[str]) -> list[str]:
    """The importer's lines that are not about one row: notes on the file's
    format, why nothing was imported, whether first syncs were queued."""
    return [ln for ln in lines if not ROW_LINE_RE.match(ln) and not ln.startswith(HIDDEN_PREFIXES)]


def import_csv(request: dict) -> dict:
    """Run one import (or one check) of the request's CSV text."""
    lines: list[str] = []
    with tempfile.TemporaryDirectory(prefix="import-csv-tasks-") as tmp:
        report = os.path.join(tmp, "report.csv")
        exit_code = importer.run(request["csv_secret"].encode("utf-8"), options(request, report),
                                 say=lines.append)
        rows = report_rows(report)
    return {"check": bool(request.get("check", False)), "exit_code": exit_code, "summary": summary(rows),
            "rows": rows, "messages": general_messages(lines)}


def main() -> None:
    """The step: request on stdin, the outcome of every row on stdout."""
    json.dump(import_csv(json.load(sys.stdin)), sys.stdout)
