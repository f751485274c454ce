"""`make bench`: every benchmark of issue 13 in one run, written to one results file.

    PATH=/opt/imapsync-beside:$PATH .venv/bin/python bench/run.py [--quick] [--with-100k]
        [--reps N] [--port-base P] [--out bench/results/<date>.json] [--no-readme]
        [--phases single,node,bulk,profile] [--sizes 100000] [--engines-100k native]
        [--merge-into bench/results/<date>.json]   # re-run some phases into an existing file

All ratios are taken within one run (absolute times vary by ±30 % between
runs on this shared machine). Phases, each on servers of its own:

1. one mailbox (a Dovecot pair on port base P): corpora of 2,000 and
   10,000 messages (100,000 with --with-100k); native engine, imapsync (when
   on PATH), doveadm backup and the raw ceiling; first copy, unchanged re-run,
   re-run after 1 % changed (``single``);
2. a throw-away local node (P+2000): 4 and 8 mailboxes at once through
   start-all-tasks (``parallel``), import-csv-tasks of 1,000 rows
   (``csv_import``), then action latency with those 1,000 tasks (``latency``);
3. the bulk migrator, 1 and 8 accounts (a pair on P+4000, ``bulk_migrator``);
4. where list-tasks' time goes with 1,000 tasks, in-process (``profile_actions``).

``--quick``: the 2,000 corpus only, one repetition, no 8-mailbox run: a
smoke check of the whole harness in a few minutes. The results file holds
the machine, the command line, every raw measurement and the medians;
``report.py`` renders bench/README.md from it.
"""

from __future__ import annotations

import argparse
import datetime
import json
import shutil
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
sys.path[:0] = [str(BENCH), str(REPO / "tests"), str(REPO / "imageroot" / "pypkg")]

import bulk_migrator  # noqa: E402
import csv_import  # noqa: E402
import engines  # noqa: E402
import latency  # noqa: E402
import machine  # noqa: E402
import parallel  # noqa: E402
import profile_actions  # noqa: E402
import report  # noqa: E402
import single  # noqa: E402
import stats  # noqa: E402
from fill import Account, fill  # noqa: E402
from localnode import imap_pair, node  # noqa: E402
from nodeapi import Node  # noqa: E402

CORPUS_USERS = {2000: ("alice@remote.test", 1001), 10000: ("bob@remote.test", 1002),
                100000: ("dave@remote.test", 1003)}
CSV_ROWS = 1000
PHASE_NAMES = ("single", "node", "bulk", "profile")


def say(text: str) -> None:
    """Progress on stdout with the time, since a full run takes most of an hour."""
    print(f"[{time.strftime('%H:%M:%S')}] {text}", flush=True)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The options; --quick shrinks the run to a smoke check."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="2,000 messages only, 1 repetition, no 8 in parallel")
    ap.add_argument("--with-100k", action="store_true", help="also the 100,000-message corpus (long)")
    ap.add_argument("--reps", type=int, default=3, help="repetitions (medians are reported)")
    ap.add_argument("--reps-100k", type=int, default=1, help="repetitions on the 100,000 corpus")
    ap.add_argument("--port-base", type=int, default=45000, help="uses P..P+6000")
    ap.add_argument("--out", type=Path, default=None, help="default: bench/results/<date>.json")
    ap.add_argument("--no-readme", action="store_true", help="do not regenerate bench/README.md "
                    "(--quick never does: its figures are a smoke check)")
    ap.add_argument("--keep-tmp", action="store_true", help="keep the run's temp dir (engine logs)")
    ap.add_argument("--sizes", type=lambda v: [int(x) for x in v.split(",")], default=None,
                    help="corpora of phase single, e.g. 100000 (of 2000,10000,100000)")
    ap.add_argument("--engines-100k", type=lambda v: v.split(","), default=None,
                    help="only these engines on the 100,000 corpus, e.g. native,doveadm")
    ap.add_argument("--phases", default="single,node,bulk,profile",
                    help="comma-separated subset of single,node,bulk,profile")
    ap.add_argument("--merge-into", type=Path, default=None, help="re-run only --phases into this results "
                    "file, keeping its other phases (e.g. one that failed); implies --out FILE")
    args = ap.parse_args(argv)
    args.phases = [p for p in args.phases.split(",") if p]
    if unknown := set(args.phases) - set(PHASE_NAMES):
        ap.error(f"unknown phases: {', '.join(sorted(unknown))}")
    if args.merge_into:
        args.out = args.merge_into
    if args.sizes and set(args.sizes) - set(CORPUS_USERS):
        ap.error(f"--sizes: each of {', '.join(map(str, CORPUS_USERS))}")
    if args.quick:
        args.reps, args.with_100k = 1, False
    args.out = args.out or BENCH / "results" / f"{datetime.date.today().isoformat()}{'-quick' if args.quick else ''}.json"
    return args


def phase_single(args: argparse.Namespace, results: dict, tmp: Path) -> None:
    """Phase 1: each corpus in its own remote account of one pair, copied into local u1."""
    sizes = args.sizes or ([2000] if args.quick else [2000, 10000] + ([100000] if args.with_100k else []))
    with imap_pair.running_pair(args.port_base) as pair:
        cfg = pair.cfg
        for count in sizes:
            user, seed = CORPUS_USERS[count]
            account = Account(cfg.remote, user, cfg.remote.users[user])
            say(f"one mailbox: filling {count} messages")
            results["corpora"][str(count)] = fill(account, seed, count)
            say(f"one mailbox: {count} messages, {results['corpora'][str(count)]['bytes'] / 1e6:.1f} MB")
            box = engines.Mailbox(cfg, user, "u1", tmp / f"single-{count}")
            box.tmp.mkdir()
            box.write_password_files()
            reps = args.reps_100k if count == 100000 else args.reps
            only = args.engines_100k if count == 100000 else None
            results["single"][str(count)] = single.run(box, account, reps, box.tmp, say, only)
            save(args, results)


def phase_node(args: argparse.Namespace, results: dict, _tmp: Path) -> None:
    """Phase 2: one throw-away node for parallel runs, the CSV import, then action latency
    (the import's 1,000 tasks are the ones the actions see)."""
    with node.throwaway(args.port_base + 2000, "bench-node-") as cfg:
        n = Node(cfg)
        n.configure()
        names = ["native"] + (["imapsync"] if engines.imapsync_path() else [])
        sizes = [4] if args.quick else [4, 8]
        results["corpora"]["parallel"] = parallel.prepare(n, max(sizes), 2000, say)
        results["parallel"] = parallel.run(n, sizes, names, args.reps, say)
        save(args, results)
        n.configure(engine="native")  # background syncs of the next phases: the lighter engine
        say(f"import-csv-tasks: {CSV_ROWS} local users and remote accounts")
        csv_path = csv_import.write_csv(cfg, csv_import.add_users(cfg, CSV_ROWS))
        results["csv_import"] = csv_import.run_modes(cfg, n.env, csv_path, args.reps)
        say("import-csv-tasks: " + ", ".join(f"{k} {v[-1]['wall_s']:.1f} s" for k, v in results["csv_import"].items()))
        save(args, results)
        # csv_import.add_users gave b0001@remote.test this password
        results["latency"] = latency.run(n, max(args.reps, 5), "b0001@remote.test", "Bench,pw-0001", say)


def phase_bulk(args: argparse.Namespace, results: dict, _tmp: Path) -> None:
    """Phase 3: the bulk migrator on a pair of its own."""
    results["bulk_migrator"] = bulk_migrator.run(args.port_base + 4000, 500, [1, 8], args.reps, say)


def phase_profile(args: argparse.Namespace, results: dict, _tmp: Path) -> None:
    """Phase 4: where list-tasks' time goes with 1,000 tasks (seconds; the README's "why" for it)."""
    results["profile"] = {"list-tasks": profile_actions.profile(CSV_ROWS, max(args.reps, 5), 12)}
    say("profile of list-tasks: " + ", ".join(f"{k} {v}" for k, v in results["profile"]["list-tasks"].items()
                                              if k.endswith("_s")))


PHASES: list[tuple[str, Callable[[argparse.Namespace, dict, Path], None]]] = [
    ("single", phase_single), ("node", phase_node), ("bulk", phase_bulk), ("profile", phase_profile)]


def save(args: argparse.Namespace, results: dict) -> None:
    """Written after every phase, so a run that breaks later keeps what it measured."""
    results["medians"] = stats.medians({k: results[k] for k in ("single", "parallel", "csv_import", "latency",
                                                               "bulk_migrator") if results.get(k)})
    args.out.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.out.with_suffix(".tmp")
    tmp.write_text(json.dumps(results, indent=1, default=str) + "\n")
    tmp.replace(args.out)


def command_line(argv: list[str]) -> str:
    """The command as typed, with the PATH entry that brought imapsync when it is not a system one,
    so that the README's reader can repeat the run exactly."""
    found = engines.imapsync_path()
    where = str(Path(found).parent) if found else ""
    prefix = f"PATH={where}:$PATH " if where and where not in ("/usr/bin", "/usr/local/bin", "/bin") else ""
    return prefix + " ".join([".venv/bin/python", "bench/run.py", *argv])


def start_results(args: argparse.Namespace, command: str) -> dict:
    """A fresh results record, or (--merge-into) the existing one with this run noted in it: its
    other phases' figures stay, and the README says which phases came from which command."""
    now = datetime.datetime.now().astimezone().isoformat(timespec="seconds")
    if args.merge_into:
        results = json.loads(args.merge_into.read_text())
        results.setdefault("merged_runs", []).append({"command": command, "date": now, "phases": args.phases,
                                                      "load_average_at_start": machine.load_average()})
        for name in args.phases:
            results.setdefault("errors", {}).pop(name, None)
        return results
    return {"command": command, "date": now, "quick": args.quick, "reps": args.reps,
            "machine": machine.describe(), "corpora": {}, "single": {}, "errors": {}}


def main(argv: list[str] | None = None) -> int:
    """Every phase, even after one failed (its traceback goes into the results); exit 1 then."""
    args = parse_args(argv)
    started = time.monotonic()
    results = start_results(args, command_line(argv if argv is not None else sys.argv[1:]))
    say(f"results to {args.out}; imapsync: {results['machine']['imapsync_path'] or 'not on PATH'}")
    tmp = Path(tempfile.mkdtemp(prefix="bench-run-", dir="/tmp"))
    tmp.chmod(0o755)
    try:
        for name, phase in PHASES:
            if name not in args.phases:
                continue
            try:
                phase(args, results, tmp)
            except Exception:
                results["errors"][name] = traceback.format_exc()
                say(f"phase {name} failed:\n{results['errors'][name]}")
            # a merged run's own duration and load go with its note; the first run's stay as they were
            where = results["merged_runs"][-1] if args.merge_into else results
            where["duration_s"] = round(time.monotonic() - started)
            (where if args.merge_into else results["machine"])["load_average_at_end"] = machine.load_average()
            save(args, results)
    finally:
        if args.keep_tmp:
            say(f"temp dir kept: {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    if not (args.no_readme or args.quick):
        report.write_readme(args.out, BENCH / "README.md")
        say(f"bench/README.md regenerated from {args.out}")
    say(f"done in {round(time.monotonic() - started)} s")
    return 1 if results["errors"] else 0


if __name__ == "__main__":
    sys.exit(main())
