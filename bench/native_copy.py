"""Native engine throughput and memory on the local node's two Dovecots.

    .venv/bin/python bench/native_copy.py --messages 2000

Fills a remote mailbox with the deterministic corpus, copies it with the
native engine into an empty local mailbox (first run), then runs again over
the unchanged mailbox (re-run), and prints one Markdown row per run: wall
time, messages/s, MB/s and the process's peak RSS.
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO / "tests"), str(REPO / "imageroot" / "pypkg")]

from localnode import corpus, dovecot  # noqa: E402
from localnode.config import NodeConfig  # noqa: E402
from ns8_imapsync.imap.connection import Endpoint  # noqa: E402
from ns8_imapsync.sync.native import NativeEngine  # noqa: E402
from ns8_imapsync.sync.plan import SyncPlan  # noqa: E402


def run_once(engine: NativeEngine, plan: SyncPlan) -> tuple[float, object]:
    start = time.perf_counter()
    report = engine.run(plan, lambda p: None, threading.Event(), lambda line: None)
    return time.perf_counter() - start, report


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--messages", type=int, default=2000)
    ap.add_argument("--large", type=int, default=2, help="messages with a ~3 MB attachment")
    ap.add_argument("--port-base", type=int, default=31000)
    args = ap.parse_args()
    root = Path(tempfile.mkdtemp(prefix="bench-native-", dir="/tmp"))
    root.chmod(0o755)
    cfg = NodeConfig(state_dir=root, port_base=args.port_base)
    try:
        dovecot.start(cfg)
        cfg.write_node_json()
        user = "alice@remote.test"
        # filled by another process, so the peak RSS below is the engine's alone
        manifest_path = root / "manifest.jsonl"
        subprocess.run([sys.executable, "-m", "localnode.corpus", "fill", "--state-dir", str(root),
                        "--server", "remote", "--user", user, "--seed", "42", "--count", str(args.messages),
                        "--large", str(args.large), "--manifest", str(manifest_path)],
                       check=True, env=dict(os.environ, PYTHONPATH=str(REPO / "tests")),
                       stdout=subprocess.DEVNULL)
        manifest = corpus.read_manifest(manifest_path)
        total_bytes = sum(m["size"] for m in manifest)
        pw1, pw2 = root / "alice.pwd", root / "vmail.pwd"
        for path, secret in ((pw1, cfg.remote.users[user]), (pw2, cfg.mail1.master_password)):
            path.write_text(secret + "\n")
            os.chmod(path, 0o600)
        plan = SyncPlan(
            task_name="u1_bench1",
            source=Endpoint(cfg.remote.host, cfg.remote.imap_port, "tls", user),
            target=Endpoint(cfg.mail1.host, cfg.mail1.imap_port, "tls", "u1*vmail"),
            source_password_file=pw1, target_password_file=pw2, workdir=root,
        )
        print(f"corpus: {len(manifest)} messages, {total_bytes / 1e6:.1f} MB, "
              f"{len({m['folder'] for m in manifest})} folders; {os.cpu_count()} CPUs")
        print("| run | copied | wall s | messages examined/s | MB copied/s | peak RSS MB |")
        print("|---|---|---|---|---|---|")
        engine = NativeEngine()
        for label in ("first run (empty local)", "re-run (nothing changed)"):
            wall, report = run_once(engine, plan)
            assert report.ok, report.reason
            rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
            mb = report.copied_bytes / 1e6
            print(f"| {label} | {report.copied} | {wall:.2f} | {len(manifest) / wall:.0f} | {mb / wall:.1f} "
                  f"| {rss:.0f} |")
    finally:
        dovecot.stop(cfg)
        shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
