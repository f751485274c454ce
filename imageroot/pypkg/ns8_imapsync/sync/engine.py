"""The Engine contract shared by the native (Python) and imapsync engines."""

from __future__ import annotations

import threading
from typing import Protocol

from ns8_imapsync.sync.plan import SyncPlan
from ns8_imapsync.sync.report import ProgressFn, RunReport


class Engine(Protocol):
    name: str

    def run(self, plan: SyncPlan, progress: ProgressFn, stop: threading.Event, log) -> RunReport:
        """Sync once. `log(line)` writes to the task's log (never a password).
        `stop` set means: finish the message in hand, leave a consistent state,
        return a report with error_class "stopped". Must not raise for server
        or network problems: they become the report's error_class."""
        ...
