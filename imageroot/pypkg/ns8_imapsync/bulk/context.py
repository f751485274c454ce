"""What every per-account job of a bulk run needs: the server, the certificate
policy, the data directory, the run's log, progress and stop flag, size limits."""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path

from ns8_imapsync.imap.reads import Limits

from .config import ServerConfig, TlsOptions
from .progress import ProgressDisplay
from .runlog import RunLog


@dataclass
class RunContext:
    server: ServerConfig
    tls: TlsOptions
    root: Path
    log: RunLog
    progress: ProgressDisplay
    stop: threading.Event
    limits: Limits
