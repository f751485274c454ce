"""Bulk migrator throughput and memory on a throw-away pair of the local node's Dovecots.

    .venv/bin/python bench/bulk_migrator.py --messages 500 --accounts 1 8

For each account count N: N remote mailboxes are filled with the bench corpus
(``benchcorpus``: 90 % 2-20 KB, 8 % 20-200 KB, 2 % 200 KB-2 MB), then
``imapsync-bulk-migrator`` runs as a user runs it -- ``--mode export``
(without the automatic audit) into an empty export directory, ``--mode
import`` into empty target accounts on mail1, the same import again (nothing
left to do) and ``--mode validate`` -- and each run gives wall time and the
CLI process's peak RSS (from wait4, so the filler and this script are not
counted). Each repetition starts from an empty export directory and empty
target accounts.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO / "bench"), str(REPO / "tests"), str(REPO / "imageroot" / "pypkg")]

import probes  # noqa: E402
from fill import Account, fill  # noqa: E402
from localnode import dovecot, imap_pair, mailusers  # noqa: E402

PASSWORD = "bench-Secret9"
STEPS = (("export", ("--mode", "export", "--no-audit-after-export")), ("import", ("--mode", "import")),
         ("import again (nothing to do)", ("--mode", "import")), ("validate", ("--mode", "validate")))


def run_cli(cwd: Path, *args: str) -> dict:
    """Wall s and peak RSS of one CLI run; fails loudly on a non-zero exit."""
    env = dict(os.environ, PYTHONPATH=str(REPO / "imageroot" / "pypkg"))
    argv = [sys.executable, "-m", "ns8_imapsync.bulk.cli", *args]
    probe = probes.Probe({}).start()
    child = probes.run_child(argv, env=env, log=cwd / "cli.log", cwd=cwd)
    out = probe.end()
    if child.returncode != 0:
        raise SystemExit(f"{' '.join(args)} exited {child.returncode}: see {cwd / 'cli.log'}")
    return {**out, "wall_s": child.wall_s, "client_cpu_s": child.cpu_s, "peak_rss_mb": child.maxrss_mb}


def config(path: Path, host: str, port: int, emails: list[str]) -> None:
    """The CLI's pass-config file (0600, as the migrator requires), one per side."""
    path.write_text(json.dumps({"server": {"host": host, "port": port, "ssl": False, "starttls": True},
                                "accounts": [{"email": e, "password": PASSWORD} for e in emails]}))
    path.chmod(0o600)


def one_round(cfg, root: Path, emails: list[str], rep: int) -> dict[str, dict]:
    """Export, import, import again, validate, from an empty directory into empty accounts."""
    work = root / f"run-{len(emails)}-{rep}"
    work.mkdir()
    for email in emails:
        dovecot.wipe(cfg.mail1, mailusers.passwd_name(cfg.mail1, email))
    config(work / "export.pass.config.json", cfg.remote.host, cfg.remote.imap_port, emails)
    config(work / "import.pass.config.json", cfg.mail1.host, cfg.mail1.imap_port, emails)
    common = ["--ca-file", cfg.remote.ca_cert, "--max-workers", str(min(len(emails), 8)), "--min-free-gb", "0"]
    out = {}
    for name, args in STEPS:
        out[name] = run_cli(work, *args, *common)
        if name == "export":
            files = list((work / "exported").rglob("*.eml"))
            out[name]["messages"] = len(files)
            out[name]["bytes"] = sum(p.stat().st_size for p in files)
    shutil.rmtree(work, ignore_errors=True)
    return out


def run(port_base: int, messages: int, counts: list[int], reps: int, say) -> dict:
    """{str(n): {step: [one measurement per repetition]}} on a pair of its own."""
    results: dict = {}
    with imap_pair.running_pair(port_base) as pair:
        cfg, root = pair.cfg, pair.state_dir
        for n in counts:
            emails = [f"bulk{n}x{i}@remote.test" for i in range(n)]
            for i, email in enumerate(emails):
                mailusers.add_user(cfg.remote, email, PASSWORD)
                mailusers.add_user(cfg.mail1, email, PASSWORD)
                fill(Account(cfg.remote, email, PASSWORD), 3000 + i, messages)
            results[str(n)] = {name: [] for name, _ in STEPS}
            for rep in range(reps):
                for name, measured in one_round(cfg, root, emails, rep).items():
                    results[str(n)][name].append(measured)
                say(f"  bulk {n} account(s), round {rep + 1}/{reps}: " + ", ".join(
                    f"{k} {v[-1]['wall_s']:.1f} s" for k, v in results[str(n)].items()))
    return results


def main() -> int:
    """Standalone: one table of the runs, without the rest of the bench."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--messages", type=int, default=500, help="messages per account")
    ap.add_argument("--accounts", type=int, nargs="+", default=[1, 8])
    ap.add_argument("--reps", type=int, default=1)
    ap.add_argument("--port-base", type=int, default=36000)
    args = ap.parse_args()
    results = run(args.port_base, args.messages, args.accounts, args.reps, print)
    print("| run | accounts | seconds (median) | peak RSS MB |")
    print("|---|---:|---:|---:|")
    for n, steps in results.items():
        for name, runs in steps.items():
            print(f"| {name} | {n} | {statistics.median(r['wall_s'] for r in runs):.1f} "
                  f"| {max(r['peak_rss_mb'] for r in runs):.0f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
