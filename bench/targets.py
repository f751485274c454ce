"""Issue 13's targets beside what one run measured: met, missed (by how much), or not measured.

The targets are ratios within one run on a 2-core machine, or absolute
bounds where the issue gives them; each is computed from the medians of the
results file, never typed in.
"""

from __future__ import annotations

from collections.abc import Callable

from stats import ratio

# The "where we stand" ratios (native / imapsync), before this work.
BEFORE = {"10000 first": 0.66, "10000 rerun": 0.12, "10000 changed": 0.14, "2000 first": 0.45,
          "2000 rerun": 0.15, "4 first": 0.43, "rss": 0.26}


def med(res: dict, *path: str) -> dict:
    """The medians at a path of the results, {} when absent."""
    node = res.get("medians", {})
    for key in path:
        node = node.get(key, {}) if isinstance(node, dict) else {}
    return node if isinstance(node, dict) else {}


def value(res: dict, key: str, *path: str) -> float | None:
    """A number at a path of the medians, None when absent."""
    v = med(res, *path).get(key)
    return v if isinstance(v, int | float) else None


def own_busy(res: dict, m: dict) -> float | None:
    """Share of the machine's cores the run itself kept busy: (client + both servers' CPU) /
    (wall x cores). Machine busy % counts every process, other work on a shared machine too."""
    cpu = [m.get(k) for k in ("client_cpu_s", "remote_server_cpu_s", "local_server_cpu_s")]
    wall, cores = m.get("wall_s"), res["machine"].get("cores") or 1
    if not wall or any(not isinstance(c, int | float) for c in cpu):
        return None
    return round(100 * sum(cpu) / (wall * cores), 1)


def verdict(measured: float | None, bound: float, at_most: bool = True) -> str:
    """met / missed by how much / not measured."""
    if measured is None:
        return "not measured"
    ok = measured <= bound if at_most else measured >= bound
    if ok:
        return "**met**"
    return f"**missed**: {measured / bound:.2f}× the bound" if at_most else f"**missed** by {bound - measured:.0f} points"


def _fmt(v: float | None, unit: str = "", digits: int = 2) -> str:
    """A figure or — when it was not measured."""
    return "—" if v is None else f"{v:.{digits}f}{unit}"


def _first_copy(res: dict) -> list[tuple[str, str, str]]:
    """The first copy of 10,000 against imapsync, busy % and doveadm."""
    n = value(res, "wall_s", "single", "10000", "native", "first")
    i = value(res, "wall_s", "single", "10000", "imapsync", "first")
    d = value(res, "wall_s", "single", "10000", "doveadm", "first")
    busy = value(res, "machine_busy_pct", "single", "10000", "native", "first")
    own = own_busy(res, med(res, "single", "10000", "native", "first"))
    r_i, r_d = ratio(n, i), ratio(n, d)
    return [("10,000 first copy: native ≤ 0.4 × imapsync", f"{_fmt(r_i)} ({_fmt(n, ' s')} / {_fmt(i, ' s')})",
             verdict(r_i, 0.4)),
            ("10,000 first copy: machine ≥ 85 % busy (by the run itself: its client and servers' CPU "
             "over wall × cores)", f"{_fmt(own, ' %', 0)} (whole machine, other work included: {_fmt(busy, ' %', 0)})",
             verdict(own, 85, at_most=False)),
            ("10,000 first copy: native ≤ 1.5 × doveadm backup", f"{_fmt(r_d)} ({_fmt(n, ' s')} / {_fmt(d, ' s')})",
             verdict(r_d, 1.5))]


def _reruns(res: dict) -> list[tuple[str, str, str]]:
    """Re-runs: absolute bounds, growth with the mailbox, and against imapsync."""
    r2 = value(res, "wall_s", "single", "2000", "native", "rerun")
    r10 = value(res, "wall_s", "single", "10000", "native", "rerun")
    r100 = value(res, "wall_s", "single", "100000", "native", "rerun")
    growth, what = (ratio(r100, r10), "100,000 / 10,000") if r100 is not None else (ratio(r10, r2), "10,000 / 2,000")
    rows = [("unchanged re-run of 10,000 ≤ 0.3 s", _fmt(r10, " s"), verdict(r10, 0.3)),
            ("unchanged re-run of 100,000 ≤ 1 s", _fmt(r100, " s"),
             verdict(r100, 1.0) if r100 is not None else "not measured (`--with-100k`)"),
            (f"re-run cost independent of message count ({what}, ≤ 2)", _fmt(growth, "×"), verdict(growth, 2.0))]
    n = value(res, "wall_s", "single", "10000", "native", "changed")
    i = value(res, "wall_s", "single", "10000", "imapsync", "changed")
    rows.append(("10,000 re-run after 1 % changed: native ≤ 0.1 × imapsync",
                 f"{_fmt(ratio(n, i))} ({_fmt(n, ' s')} / {_fmt(i, ' s')})", verdict(ratio(n, i), 0.1)))
    return rows


def _parallel_and_memory(res: dict) -> list[tuple[str, str, str]]:
    """4 × 2,000 at once against imapsync, and the peak RSS bound."""
    n = value(res, "wall_s", "parallel", "4", "native", "first")
    i = value(res, "wall_s", "parallel", "4", "imapsync", "first")
    rss100 = value(res, "peak_rss_mb", "single", "100000", "native", "first")
    rss10 = max((v for s in ("first", "rerun", "changed")
                 if (v := value(res, "peak_rss_mb", "single", "10000", "native", s)) is not None), default=None)
    rss_text = _fmt(rss100, " MB", 0) if rss100 is not None else f"not measured at 100,000 ({_fmt(rss10, ' MB', 0)} at 10,000)"
    return [("4 × 2,000 in parallel, first copy: native ≤ 0.3 × imapsync",
             f"{_fmt(ratio(n, i))} ({_fmt(n, ' s')} / {_fmt(i, ' s')})", verdict(ratio(n, i), 0.3)),
            ("peak RSS of one native sync ≤ 60 MB at 100,000 messages", rss_text,
             verdict(rss100, 60) if rss100 is not None else
             (f"not measured (at 10,000: {verdict(rss10, 60)})" if rss10 is not None else "not measured"))]


def list_tasks_inside(res: dict) -> float | None:
    """list-tasks minus the agent's fixed cost: the median of paired differences, or (results from
    before the paired timing) the difference of the medians."""
    inside = value(res, "inside_s", "latency", "list-tasks")
    lt = value(res, "wall_s", "latency", "list-tasks")
    fixed = value(res, "wall_s", "latency", "get-name")
    if inside is None and lt is not None and fixed is not None:
        inside = round(lt - fixed, 3)
    return inside


def _actions(res: dict) -> list[tuple[str, str, str]]:
    """list-tasks and the CSV import against their absolute bounds."""
    lt = value(res, "wall_s", "latency", "list-tasks")
    fixed = value(res, "wall_s", "latency", "get-name")
    inside = list_tasks_inside(res)
    csv = value(res, "wall_s", "csv_import", "import + first syncs queued")
    return [("`list-tasks` with 1,000 tasks ≤ 0.5 s inside the action",
             f"{_fmt(inside, ' s')} (list-tasks {_fmt(lt, ' s')}, the agent's fixed cost {_fmt(fixed, ' s')})",
             verdict(inside, 0.5)),
            ("1,000-row `import-csv-tasks` ≤ 30 s (first syncs queued, as by default)", _fmt(csv, " s", 1),
             verdict(csv, 30))]


SECTIONS: list[Callable[[dict], list[tuple[str, str, str]]]] = [_first_copy, _reruns, _parallel_and_memory, _actions]


def section(res: dict) -> list[str]:
    """The targets table and the before/now summary."""
    lines = ["## Issue 13's targets", "", "| target | measured (medians of this run) | verdict |", "|---|---|---|"]
    for rows in SECTIONS:
        lines += [f"| {t} | {m} | {v} |" for t, m, v in rows(res)]
    return lines + ["", *summary(res), ""]


def summary(res: dict) -> list[str]:
    """The issue's "where we stand" table, re-measured: the ratios before and now."""
    rows = [("10,000 messages, first copy", ("single", "10000"), "first", "10000 first"),
            ("10,000, unchanged re-run", ("single", "10000"), "rerun", "10000 rerun"),
            ("10,000, re-run after 1 % changed", ("single", "10000"), "changed", "10000 changed"),
            ("2,000 messages, first copy", ("single", "2000"), "first", "2000 first"),
            ("2,000, unchanged re-run", ("single", "2000"), "rerun", "2000 rerun"),
            ("4 × 2,000 in parallel, first copy", ("parallel", "4"), "first", "4 first"),
            ("8 × 2,000 in parallel, first copy", ("parallel", "8"), "first", None)]
    if "100000" in res.get("single", {}):
        rows[3:3] = [("100,000 messages, first copy", ("single", "100000"), "first", None),
                     ("100,000, unchanged re-run", ("single", "100000"), "rerun", None),
                     ("100,000, re-run after 1 % changed", ("single", "100000"), "changed", None)]
    lines = ["Summary (wall s, medians; the issue's own table measured before this work gave the last column):",
             "", "| scenario | native | imapsync | doveadm backup | native / imapsync | native / doveadm "
             "| native / imapsync in the issue |", "|---|---:|---:|---:|---:|---:|---:|"]
    for label, where, scenario, before in rows:
        n, i, d = (value(res, "wall_s", *where, e, scenario) for e in ("native", "imapsync", "doveadm"))
        lines.append(f"| {label} | {_fmt(n)} | {_fmt(i)} | {_fmt(d)} | {_fmt(ratio(n, i))} | {_fmt(ratio(n, d))} "
                     f"| {BEFORE.get(before, '—') if before else '—'} |")
    n = value(res, "peak_rss_mb", "single", "10000", "native", "first")
    i = value(res, "peak_rss_mb", "single", "10000", "imapsync", "first")
    d = value(res, "peak_rss_mb", "single", "10000", "doveadm", "first")
    lines.append(f"| peak RSS MB, 10,000 first copy | {_fmt(n, '', 0)} | {_fmt(i, '', 0)} | {_fmt(d, '', 0)} "
                 f"| {_fmt(ratio(n, i))} | {_fmt(ratio(n, d))} | {BEFORE['rss']} |")
    return lines
