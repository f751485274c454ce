"""One import, start to end: read, plan, check logins, apply, start, report.

All or nothing by default: every row is checked completely (values, local
mailbox, remote login) before the first task is written, so a file with one
bad row changes nothing and can be fixed and re-run. `--continue-on-error`
imports the good rows anyway. Check mode does every check, the remote logins
included, and changes nothing.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass

from ns8_imapsync import ns8, taskrules
from ns8_imapsync.csvimport import apply, report
from ns8_imapsync.csvimport.parse import MAX_INPUT, REQUIRED, CsvFile, CsvFormatError, parse
from ns8_imapsync.csvimport.plan import RowPlan, plan_rows
from ns8_imapsync.statedir import StateDir


@dataclass
class Options:
    check: bool = False
    update: bool = False
    continue_on_error: bool = False
    start: bool = True
    report: str | None = None


def _say(line: str) -> None:
    print(line, flush=True)


def _describe(csv_file: CsvFile, say: Callable[[str], None]) -> None:
    optional = [c for c in csv_file.columns if c not in REQUIRED]
    say(f"Columns: {', '.join(csv_file.columns)} (mapped by name, in any order)")
    if optional:
        say(f"Optional columns set: {', '.join(optional)}; the other fields take their defaults "
            "(a new task) or keep their values (an updated task)")
    for note in csv_file.notes:
        say(f"Note: {note}")
    skipped = f" ({csv_file.empty_lines} empty line(s) skipped)" if csv_file.empty_lines else ""
    say(f"{len(csv_file.rows)} data row(s){skipped}")


def _abort(message: str, opts: Options, say: Callable[[str], None]) -> int:
    say(f"Error: {message}")
    say("Nothing was imported.")
    if opts.report:
        report.write_report(opts.report, report.report_csv([], opts.check, False, file_error=message))
    return 1


def run(data: bytes, opts: Options, state: StateDir | None = None, say: Callable[[str], None] = _say) -> int:
    state = state or StateDir()
    say("Reading CSV from standard input")
    try:
        csv_file = parse(data)
    except CsvFormatError as exc:
        return _abort(str(exc), opts, say)
    _describe(csv_file, say)
    if not csv_file.rows:
        return _abort("the file has a header but no task row", opts, say)
    mail_host = ns8.env_get("MAIL_HOST") or ""
    if not mail_host:
        return _abort("the module is not configured (module_is_not_configured): choose a mail server in "
                      "Settings (configure-module) first", opts, say)
    mailboxes, why = taskrules.enabled_mailboxes()
    if why:
        return _abort(f"the local users cannot be checked: {why}", opts, say)
    try:
        with apply.import_lock(state):
            return _locked(csv_file, opts, state, [m["value"] for m in mailboxes], mail_host, say)
    except apply.ImportBusy as exc:
        return _abort(str(exc), opts, say)


def _locked(csv_file: CsvFile, opts: Options, state: StateDir, mailboxes: list[str], mail_host: str,
            say: Callable[[str], None]) -> int:
    plans = plan_rows(csv_file.rows, state, mailboxes, opts.update)
    candidates = [p for p in plans if p.action in ("create", "update")]
    with apply.staging_dir(state) as staging:
        if candidates:
            say(f"Checking the remote login of {len(candidates)} row(s)...")
            apply.stage(staging, candidates)
            apply.check_logins(staging, candidates)
            apply.refuse_taken_names(state, candidates)
        accepted = [p for p in candidates if p.action in ("create", "update")]
        failed = [p for p in plans if p.action == "fail"]
        held = bool(failed) and not opts.continue_on_error and not opts.check
        if not opts.check and not held and accepted:
            creating = sum(1 for p in accepted if p.action == "create")
            if creating:
                say(f"Creating {creating} task(s)...")
            if len(accepted) > creating:
                say(f"Updating {len(accepted) - creating} task(s) in place (same task ids)...")
            apply.put_in_place(staging, state, accepted, mail_host)
        accepted_ids = {id(p) for p in accepted}
        for p in plans:
            say(report.row_line(p, opts.check, held and id(p) in accepted_ids))
    return _finish(plans, accepted, opts, state, held, say)


def _finish(plans: list[RowPlan], accepted: list[RowPlan], opts: Options, state: StateDir, held: bool,
            say: Callable[[str], None]) -> int:
    code = 0
    if not opts.check and not held and accepted and opts.start:
        ok, err = apply.start_first_syncs(state, accepted)
        if ok:
            say(f"First sync queued for {len(accepted)} task(s) (the node's limits decide when each runs)")
        else:
            say(f"Warning: the first sync could not be queued ({err[-300:]}): "
                "run start-all-tasks, or start-task for each")
            code = 1
    elif accepted and not opts.start and not opts.check and not held:
        say("No sync started (--no-start): the tasks run on their schedule or with start-task")
    summary = report.summarize(plans, opts.check, held)
    say("=" * 60)
    if opts.check:
        say(f"Check only, nothing was changed. Would be: {summary.line()}")
        if any(p.action == "skip" and "--update" in p.message for p in plans):
            say("Rows already configured are skipped: use --update to apply the file to them")
    else:
        say(summary.line())
    if held:
        say(f"Nothing was imported: {summary.failed} row(s) failed and {len(accepted)} valid row(s) were held "
            "back. Fix the rows above and run again, or use --continue-on-error to import the valid rows.")
    if opts.report:
        report.write_report(opts.report, report.report_csv(plans, opts.check, held))
        say(f"Report written to {opts.report}")
    return 1 if summary.failed else code


def read_stdin() -> bytes:
    """At most one byte past the limit: parse refuses an oversized input in words."""
    return sys.stdin.buffer.read(MAX_INPUT + 1)
