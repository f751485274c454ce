"""Bulk migrator throughput and memory on a throwaway pair of the local node's Dovecots.

    .venv/bin/python bench/bulk_migrator.py --messages 500 --accounts 1 8

For each account count N: N remote mailboxes are filled with the deterministic
corpus (by another process), then ``imapsync-bulk-migrator`` runs as a user
runs it -- ``--mode export`` (without the automatic audit) into an empty export
directory, then ``--mode import`` into empty target accounts on mail1 -- and one
Markdown row per run gives wall time, messages/s, MB/s and the CLI process's
peak RSS (from wait4, so the filler and this script are not counted).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO / "tests"), str(REPO / "imageroot" / "pypkg")]

from localnode import dovecot, mailusers  # noqa: E402
from localnode.config import NodeConfig  # noqa: E402

PASSWORD = "bench-Secret9"


def fill(root: Path, user: str, seed: int, count: int, large: int) -> None:
    subprocess.run([sys.executable, "-m", "localnode.corpus", "fill", "--state-dir", str(root), "--server", "remote",
                    "--user", user, "--password", PASSWORD, "--seed", str(seed), "--count", str(count),
                    "--large", str(large)],
                   check=True, env=dict(os.environ, PYTHONPATH=str(REPO / "tests")), stdout=subprocess.DEVNULL)


def run_cli(cwd: Path, *args: str) -> tuple[float, int, str]:
    """(seconds, peak RSS in KiB, stdout) of one CLI run; fails loudly on a non-zero exit."""
    env = dict(os.environ, PYTHONPATH=str(REPO / "imageroot" / "pypkg"))
    start = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "ns8_imapsync.bulk.cli", *args], cwd=cwd, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    out = proc.stdout.read().decode(errors="replace")
    _pid, status, usage = os.wait4(proc.pid, 0)
    elapsed = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(args)} exited {proc.returncode}:\n{out}")
    return elapsed, usage.ru_maxrss, out


def config(path: Path, host: str, port: int, emails: list[str]) -> None:
    path.write_text(json.dumps({"server": {"host": host, "port": port, "ssl": False, "starttls": True},
                                "accounts": [{"email": e, "password": PASSWORD} for e in emails]}))
    path.chmod(0o600)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--messages", type=int, default=500, help="messages per account")
    ap.add_argument("--large", type=int, default=2, help="messages per account with a ~3 MB attachment")
    ap.add_argument("--accounts", type=int, nargs="+", default=[1, 8])
    ap.add_argument("--port-base", type=int, default=36000)
    args = ap.parse_args()
    root = Path(tempfile.mkdtemp(prefix="bench-bulk-", dir="/tmp"))
    root.chmod(0o755)
    cfg = NodeConfig(state_dir=root, port_base=args.port_base)
    rows = []
    try:
        dovecot.start(cfg)
        cfg.write_node_json()
        for n in args.accounts:
            emails = [f"bench{n}x{i}@remote.test" for i in range(n)]
            for i, email in enumerate(emails):
                mailusers.add_user(cfg.remote, email, PASSWORD)
                mailusers.add_user(cfg.mail1, email, PASSWORD)
                fill(root, email, 100 + i, args.messages, args.large)
            work = root / f"run-{n}"
            work.mkdir()
            config(work / "export.pass.config.json", cfg.remote.host, cfg.remote.imap_port, emails)
            config(work / "import.pass.config.json", cfg.mail1.host, cfg.mail1.imap_port, emails)
            size = 0
            common = ["--ca-file", cfg.remote.ca_cert, "--max-workers", str(min(n, 8)), "--min-free-gb", "0"]
            t, rss, _ = run_cli(work, "--mode", "export", "--no-audit-after-export", *common)
            size = sum(p.stat().st_size for p in (work / "exported").rglob("*.eml"))
            msgs = sum(1 for _ in (work / "exported").rglob("*.eml"))
            rows.append(("export", n, msgs, size, t, rss))
            t, rss, _ = run_cli(work, "--mode", "import", *common)
            rows.append(("import", n, msgs, size, t, rss))
            t, rss, _ = run_cli(work, "--mode", "import", *common)
            rows.append(("import again (nothing to do)", n, msgs, size, t, rss))
            t, rss, _ = run_cli(work, "--mode", "validate", *common)
            rows.append(("validate", n, msgs, size, t, rss))
        print(f"\n{args.messages} messages per account ({args.large} of ~3 MB), {os.cpu_count()} CPUs\n")
        print("| run | accounts | messages | MB | seconds | messages/s | MB/s | peak RSS MB |")
        print("|---|---:|---:|---:|---:|---:|---:|---:|")
        for name, n, msgs, size, t, rss in rows:
            print(f"| {name} | {n} | {msgs} | {size / 1e6:.1f} | {t:.1f} | {msgs / t:.0f} | {size / 1e6 / t:.1f} "
                  f"| {rss / 1024:.0f} |")
    finally:
        dovecot.stop(cfg)
        shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
