"""`make demo` runs to the end: the demo module against its own throw-away node."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

from localnode import node
from localnode.config import REPO_ROOT, NodeConfig


def test_demo_runs_to_the_end() -> None:
    state = Path(tempfile.mkdtemp(prefix="localnode-demo-"))
    state.chmod(0o755)
    env = dict(os.environ, LOCALNODE_DIR=str(state), LOCALNODE_PORT_BASE="29000",
               PYTHONPATH=f"{REPO_ROOT / 'tests'}:{REPO_ROOT / 'imageroot' / 'pypkg'}")
    try:
        proc = subprocess.run([sys.executable, "-m", "localnode.demo"], capture_output=True, text=True,
                              env=env, timeout=600)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        assert "configure-module: binding imapsync1 to mail1 (mail.domain.test)" in proc.stdout
        total = re.search(r"^TOTAL \((\d+) remote, (\d+) local folders\)\s+(\d+)\s+(\d+)", proc.stdout, re.M)
        assert total is not None, proc.stdout
        assert int(total.group(1)) >= 10 and int(total.group(3)) == 120
        # a real migration: every message and folder arrived
        assert "sync finished with exit code 0: succeeded with the " in proc.stdout
        assert "engine, 120 of 120 remote messages on the local server" in proc.stdout
        assert (total.group(2), total.group(4)) == (total.group(1), total.group(3)), total.group(0)
        assert "make down" in proc.stdout
    finally:
        node.down(NodeConfig(state_dir=state, port_base=29000))
