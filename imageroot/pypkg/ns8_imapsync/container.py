"""Running syncctl inside the sync container, from host-side code.

Everything that speaks IMAP runs in the container; actions reach it with
`podman exec`, arguments as a list (never a shell). Task names are validated
before they get here.
"""

from __future__ import annotations

import subprocess

CONTAINER = "imapsync"
SYNCCTL = "/usr/local/bin/syncctl"


def syncctl(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(["podman", "exec", CONTAINER, SYNCCTL, *args], capture_output=True, text=True,
                          timeout=timeout)


def running() -> bool:
    proc = subprocess.run(["systemctl", "--user", "is-active", "imapsync.service"], capture_output=True,
                          text=True)
    return proc.stdout.strip() == "active"
