"""The README's "Reliability" section, rendered from the suite's results files.

    .venv/bin/python -m reliability.report [--readme README.md]

Reads tests/outputs/reliability/*.json (written by the suite: one entry per
case, or counts per target for the input and secrets sections) and replaces
what is between the README's ``<!-- reliability:begin -->`` and
``<!-- reliability:end -->`` markers, so the table is always the last run's,
with its date and machine. ``make reliability`` runs the suite, then this.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter, defaultdict
from pathlib import Path

from reliability.resultsfile import OUTPUT_DIR

BEGIN, END = "<!-- reliability:begin -->", "<!-- reliability:end -->"
TITLES = {"0-suite-tools": "The suite's own tools", "1-faults": "1. Faults during a sync",
          "1-bulk-faults": "1. Faults during a bulk export and import", "2-hostile-servers": "2. Hostile servers",
          "3-hostile-input": "3. Hostile and malformed input", "4-secrets-audit": "4. Secrets audit",
          "5-load": "5. Load"}
SHORT = {"passed": "passed", "failed": "FAILED", "skipped": "skipped", "xfailed (known defect)": "known defect",
         "xpassed": "XPASSED"}


def load(directory: Path) -> list[dict]:
    docs = []
    for path in sorted(directory.glob("*.json")):
        try:
            docs.append(json.loads(path.read_text()))
        except (OSError, ValueError):
            continue
    return docs


def _cell(text: str, limit: int = 160) -> str:
    text = " ".join(str(text).split()).replace("|", "\\|")
    return text if len(text) <= limit else text[: limit - 1] + "…"


def case_rows(cases: list[dict]) -> list[str]:
    """One row per test function: its variants' outcomes, the longest time, peak RSS and a detail."""
    by_case: dict[str, list[dict]] = defaultdict(list)
    for c in cases:
        by_case[c["case"]].append(c)
    rows = []
    for name, runs in sorted(by_case.items()):
        outcomes = Counter(SHORT.get(r["outcome"], r["outcome"]) for r in runs)
        variants = sorted({"-".join(x for x in (r.get("engine"), r.get("variant")) if x) for r in runs} - {""})
        rss = [r["peak_rss_mb"] for r in runs if r.get("peak_rss_mb")]
        detail = next((r["detail"] for r in runs if r.get("detail") and r["outcome"] != "passed"), "") or \
            next((r["detail"] for r in runs if r.get("detail")), "")
        rows.append(f"| {name.removeprefix('test_').replace('_', ' ')} | {', '.join(variants) or '—'} | "
                    f"{', '.join(f'{n} {k}' for k, n in sorted(outcomes.items()))} | "
                    f"{max(r['seconds'] for r in runs):.0f} | {f'{max(rss):.0f}' if rss else '—'} | "
                    f"{_cell(detail)} |")
    defects = sorted({r["defect"].removeprefix("defect: ") for r in cases if r.get("defect")})
    return ["| case | variants | outcomes | s (max) | peak RSS MB | detail |", "|---|---|---|---|---|---|", *rows,
            *([""] if defects else []), *(f"- known defect: {_cell(d, 400)}" for d in defects)]


def target_rows(doc: dict) -> list[str]:
    """Counts per target (inputs tried, secrets scanned), then each problem found."""
    rows = ["| target | cases | generated | fixed | outcomes |", "|---|---|---|---|---|"]
    for name, t in doc.get("targets", {}).items():
        outs = ", ".join(f"{n} {k}" for k, n in t.get("outcomes", {}).items())
        rows.append(f"| {_cell(name, 60)} | {t['cases']} | {t['generated']} | {t['fixed']} | {_cell(outs)} |")
    tot = doc.get("totals", {})
    rows.append(f"| **total** | **{tot.get('cases', 0)}** | {tot.get('generated', 0)} | {tot.get('fixed', 0)} | "
                f"problems: {tot.get('problems', 0)} |")
    rows += [f"- problem: {_cell(p['target'], 40)}: {_cell(p['problem'], 200)}" for p in doc.get("problems", [])]
    return rows


def render(docs: list[dict]) -> str:
    if not docs:
        return "No results yet: run `make reliability`."
    dates = sorted(d.get("updated", "") for d in docs)
    m = docs[-1].get("machine", {})
    out = [f"Last run: {dates[0][:16]} to {dates[-1][:16]} UTC, on {m.get('cpus')} CPUs, "
           f"{round(m.get('memory_mb', 0) / 1024)} GiB, Python {m.get('python')}. Rerun: `make reliability` "
           "(the suite, its long variants, then this table); `make test` runs the short variants and "
           "refreshes their rows. \"known defect\" is a strict xfail naming a defect not fixed yet (listed "
           "below each table); a fixed one turns XPASSED and fails the suite until its mark is removed."]
    cases: dict[str, list[dict]] = defaultdict(list)
    for doc in docs:
        if "cases" in doc:
            cases[doc["section"]].extend(doc["cases"])
    for section in sorted(set(cases) | {d["section"] for d in docs if "targets" in d}):
        out += ["", f"#### {TITLES.get(section, section)}", ""]
        if section in cases:
            out += case_rows(cases[section])
        for doc in (d for d in docs if d["section"] == section and "targets" in d):
            out += [f"*{doc.get('variant', '')} variant, {doc.get('duration_seconds', 0):.0f} s*", "",
                    *target_rows(doc), ""]
    return "\n".join(out).rstrip() + "\n"


def write_readme(readme: Path, body: str) -> None:
    text = readme.read_text()
    if BEGIN not in text or END not in text:
        raise SystemExit(f"{readme}: no {BEGIN} ... {END} markers")
    head, rest = text.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    readme.write_text(f"{head}{BEGIN}\n{body}{END}{tail}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--readme", type=Path, default=Path(__file__).resolve().parents[2] / "README.md")
    ap.add_argument("--results", type=Path, default=OUTPUT_DIR)
    ap.add_argument("--print", action="store_true", help="print the section instead of writing the README")
    args = ap.parse_args(argv)
    body = render(load(args.results))
    if args.print:
        sys.stdout.write(body)
    else:
        write_readme(args.readme, body)
    return 0


if __name__ == "__main__":
    sys.exit(main())
