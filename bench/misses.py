"""Why a target was missed, in figures of the same run: the README's "where a target is missed".

The issue asks, for every missed target, by how much and why, with the
profile that shows it. The "how much" is in the targets table; this module
writes the "why" from the same results file (CPU split between client and
servers, IMAP command counts, the import's modes, list-tasks' profile), so
the explanation changes with the figures instead of going stale. A target
that is met or not measured gets no line.
"""

from __future__ import annotations

from stats import ratio
from targets import _fmt, list_tasks_inside, med, own_busy, value


def _cpu(m: dict) -> tuple[float, float, float]:
    """(client, remote server, local server) CPU seconds of a median."""
    return tuple(float(m.get(k) or 0) for k in ("client_cpu_s", "remote_server_cpu_s", "local_server_cpu_s"))  # type: ignore[return-value]


def _load(res: dict) -> str:
    """The machine's load: why the wall times are longer than the run's own CPU."""
    m = res["machine"]
    start, end = (" / ".join(f"{x:.1f}" for x in m.get(k) or []) for k in ("load_average_at_start",
                                                                            "load_average_at_end"))
    return f"load average (1/5/15 min) {start} at the start, {end} at the end, on {m.get('cores')} cores"


def first_copy(res: dict) -> list[str]:
    """Machine busy and the gap to doveadm: where the first copy's CPU goes."""
    out = []
    nat = med(res, "single", "10000", "native", "first")
    dov = med(res, "single", "10000", "doveadm", "first")
    raw = med(res, "single", "10000", "raw", "first")
    own = own_busy(res, nat)
    if own is not None and own < 85:
        c, r, lo = _cpu(nat)
        busy = nat.get("machine_busy_pct") or 0
        idle = max(0.0, 100 - busy)
        where = (f"other work took {max(0.0, busy - own):.0f} points more and {idle:.0f} % of the machine "
                 "stayed idle: the copy is bound by waiting (round trips between the client and the two "
                 "servers) more than by CPU" if idle >= 10 else
                 f"the whole machine was {busy:.0f} % busy, the rest taken by other work, so the run's share "
                 "says little about what it would take of an idle machine")
        out.append(f"- **Machine busy, first copy of 10,000.** The run's own CPU (client {c:.1f} s, remote "
                   f"Dovecot {r:.1f} s, local Dovecot {lo:.1f} s) kept {own:.0f} % of the cores busy over its "
                   f"{_fmt(nat.get('wall_s'), ' s')}; {where} ({_load(res)}). Of its own CPU, "
                   f"{100 * lo / max(c + r + lo, 1e-9):.0f} % is the local Dovecot storing the APPENDs.")
    r_d = ratio(nat.get("wall_s"), dov.get("wall_s"))
    if r_d is not None and r_d > 1.5:
        r_raw = ratio(nat.get("wall_s"), raw.get("wall_s"))
        out.append(f"- **Against doveadm backup.** Native is {r_d:.2f}× doveadm's time. doveadm writes the local "
                   f"Maildir itself (its local server CPU is 0, its client CPU {_fmt(dov.get('client_cpu_s'), ' s')}), "
                   f"while every IMAP engine makes the local Dovecot parse and store each message "
                   f"({_fmt(nat.get('local_server_cpu_s'), ' s')} of CPU for native). The raw ceiling, our IMAP "
                   f"layer with no sync logic, took {_fmt(raw.get('wall_s'), ' s')}: native / raw = {_fmt(r_raw)}, "
                   f"so {'the gap is the APPEND path, not the sync logic' if r_raw is not None and r_raw <= 1.3 else 'part of the gap is the engine itself'}.")
    return out


def reruns(res: dict) -> list[str]:
    """Unchanged and 1 %-changed re-runs: fixed costs against what grows with the mailbox."""
    out = []
    nat = med(res, "single", "10000", "native", "rerun")
    wall = nat.get("wall_s")
    if wall is not None and wall > 0.3:
        c, r, lo = _cpu(nat)
        runs = res.get("single", {}).get("10000", {}).get("native", {}).get("rerun") or [{}]
        s = runs[0].get("stats", {})
        out.append(f"- **Unchanged re-run of 10,000: {wall:.2f} s.** It sent {s.get('h1.commands', '?')} IMAP "
                   f"commands to the remote and {s.get('h2.commands', '?')} to the local server (per folder, not "
                   f"per message: {s.get('folders.unchanged', '?')} folders unchanged); its own CPU is "
                   f"{c + r + lo:.2f} s (client {c:.2f} s, which includes the interpreter's start-up and two "
                   "TLS handshakes). The rest of the wall time is waiting: on the round trips (two STARTTLS "
                   "logins, then the folder checks) and, on this machine, for a core (machine "
                   f"{_fmt(nat.get('machine_busy_pct'), ' %', 0)} busy; {_load(res)}). The unchanged re-run of "
                   f"2,000 took {_fmt(value(res, 'wall_s', 'single', '2000', 'native', 'rerun'), ' s')} and of "
                   f"100,000 {_fmt(value(res, 'wall_s', 'single', '100000', 'native', 'rerun'), ' s')}: the cost "
                   "does not follow the message count; it is the fixed part that misses the bound.")
    chg, imp = med(res, "single", "10000", "native", "changed"), med(res, "single", "10000", "imapsync", "changed")
    r_i = ratio(chg.get("wall_s"), imp.get("wall_s"))
    if r_i is not None and r_i > 0.1 and wall is not None:
        out.append(f"- **Re-run after 1 % changed: {r_i:.2f}× imapsync.** Of native's "
                   f"{_fmt(chg.get('wall_s'), ' s')}, {wall:.2f} s is what the unchanged re-run costs too (start-up, "
                   f"logins, folder status); the 1 % itself (50 flag changes, 25 expunges, 25 new messages) "
                   f"adds {chg['wall_s'] - wall:.2f} s. imapsync's unchanged re-run took "
                   f"{_fmt(value(res, 'wall_s', 'single', '10000', 'imapsync', 'rerun'), ' s')} and its changed one "
                   f"{_fmt(imp.get('wall_s'), ' s')}: both sides are mostly their fixed cost, and native's is "
                   "the one the unchanged re-run target is about.")
    return out


def _net_ratio(a: dict, b: dict) -> float | None:
    """Wall ratio once each side's start-all-tasks call is taken off."""
    if not all(isinstance(m.get(k), int | float) for m in (a, b) for k in ("wall_s", "returned_s")):
        return None
    return ratio(a["wall_s"] - a["returned_s"], b["wall_s"] - b["returned_s"])


def parallel(res: dict) -> list[str]:
    """4 mailboxes at once: on 2 cores both engines are CPU-bound, so the ratio is one of CPU."""
    nat, imp = med(res, "parallel", "4", "native", "first"), med(res, "parallel", "4", "imapsync", "first")
    r_i = ratio(nat.get("wall_s"), imp.get("wall_s"))
    if r_i is None or r_i <= 0.3:
        return []
    cpu_n, cpu_i = sum(_cpu(nat)), sum(_cpu(imp))
    r8 = ratio(value(res, "wall_s", "parallel", "8", "native", "first"),
               value(res, "wall_s", "parallel", "8", "imapsync", "first"))
    return [f"- **4 × 2,000 in parallel: {r_i:.2f}× imapsync.** Both engines keep the machine busy here (native's "
            f"runs {_fmt(own_busy(res, nat), ' %', 0)} by their own CPU, imapsync's "
            f"{_fmt(own_busy(res, imp), ' %', 0)}), so the ratio follows the CPU each needs: {cpu_n:.1f} s "
            f"(client and both servers) for native against {cpu_i:.1f} s for imapsync, {cpu_n / max(cpu_i, 1e-9):.2f}×. "
            f"Both wall times include `start-all-tasks` itself ({_fmt(nat.get('returned_s'), ' s')} and "
            f"{_fmt(imp.get('returned_s'), ' s')} until the command returned), a fixed cost that weighs more on "
            f"the shorter runs: without it the ratio would be {_fmt(_net_ratio(nat, imp))}, and with 8 mailboxes "
            f"it is {_fmt(r8)}. Of native's CPU, "
            f"{_fmt(nat.get('local_server_cpu_s'), ' s')} is the local Dovecot storing the messages."]


def memory(res: dict) -> list[str]:
    """Peak RSS: the first copy holds what grows with the mailbox, the re-runs do not."""
    big = "100000" if value(res, "peak_rss_mb", "single", "100000", "native", "first") is not None else "10000"
    rss = value(res, "peak_rss_mb", "single", big, "native", "first")
    if rss is None or rss <= 60:
        return []
    sizes = [c for c in ("2000", "10000", "100000") if c != big]
    others = ", ".join(f"{int(c):,}: {_fmt(value(res, 'peak_rss_mb', 'single', c, 'native', 'first'), ' MB', 0)}"
                       for c in sizes if value(res, "peak_rss_mb", "single", c, "native", "first") is not None)
    reruns = ", ".join(f"{_fmt(value(res, 'peak_rss_mb', 'single', big, 'native', s), ' MB', 0)} {label}"
                       for s, label in (("rerun", "unchanged"), ("changed", "after 1 % changed")))
    text = (f"- **Peak RSS.** The native first copy of {int(big):,} peaked at {rss:.0f} MB ({others}), while "
            f"its re-runs stayed at {reruns}: what grows with the mailbox is held by the first copy only "
            "(which of its structures is not profiled in this run), not by the state a re-run reads.")
    if big != "100000":
        text += " The 100,000 corpus (`--with-100k`) was not measured in this run."
    return [text]


def _imports(prof: dict) -> str:
    """The heaviest imports of the step, from its -X importtime profile."""
    imp = prof.get("imports", {})
    if not imp:
        return "see the profile"
    return (f"the `agent` package (the local node's stand-in for NS8's, which loads redis too) "
            f"{imp.get('agent', 0):.2f} s, of which `redis` {imp.get('redis', 0):.2f} s; "
            f"`jsonschema` {imp.get('jsonschema', 0):.2f} s, imported by `ns8_imapsync.taskrules`")


def actions(res: dict) -> list[str]:
    """list-tasks (with its profile when present) and the CSV import (its modes apart)."""
    out = []
    inside = list_tasks_inside(res)
    prof = res.get("profile", {}).get("list-tasks")
    if inside is not None and inside > 0.5:
        text = f"- **`list-tasks` with 1,000 tasks: {inside:.2f} s inside the action.**"
        if prof:
            text += (f" The profile below splits it: the step's start-up {prof['step_startup_s']:.2f} s (a bare "
                     f"interpreter {prof['interpreter_s']:.2f} s; the rest is imports: {_imports(prof)}), reading {prof['tasks']:,} tasks' files {prof['task_files_s']:.2f} s, the local "
                     f"node's Python output validation {prof['output_validation_s']:.2f} s (NS8's agent does that in "
                     "Go), plus the nested `list-user-mailboxes` agent call to the mail module.")
        out.append(text)
    csv = value(res, "wall_s", "csv_import", "import + first syncs queued")
    check = value(res, "wall_s", "csv_import", "check (-c)")
    skipped = value(res, "wall_s", "csv_import", "re-run (all skipped)")
    if csv is not None and csv > 30:
        out.append(f"- **`import-csv-tasks` of 1,000 rows: {csv:.1f} s.** Checking alone (`-c`, every row's "
                   f"remote login, nothing written) took {_fmt(check, ' s', 1)}, and a re-run whose rows are all "
                   f"skipped {_fmt(skipped, ' s', 1)}: the time is the 1,000 real STARTTLS logins "
                   f"({1000 / check if check else 0:.0f} logins/s here, {_load(res)}), not the writing of the tasks.")
    return out


def section(res: dict) -> list[str]:
    """The bullet list, or nothing when every measured target was met."""
    lines = first_copy(res) + reruns(res) + parallel(res) + memory(res) + actions(res)
    if not lines:
        return []
    return ["### Where a target is missed, and why", "", *lines, ""]
