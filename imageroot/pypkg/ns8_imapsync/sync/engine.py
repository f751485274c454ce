"""The Engine contract shared by the native (Python) and imapsync engines."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Protocol

from ns8_imapsync.sync.plan import SyncPlan
from ns8_imapsync.sync.report import ProgressFn, RunReport

# heartbeat(n): n bytes just moved on a connection, or 0 for "some activity
# happened" (an imapsync output line); it feeds the run's watchdog, which ends
# a run only when neither progress nor heartbeat came for SYNC_STALL_SECONDS.
HeartbeatFn = Callable[[int], None]


class Engine(Protocol):
    name: str

    def run(self, plan: SyncPlan, progress: ProgressFn, stop: threading.Event, log: Callable[[str], object],
            heartbeat: HeartbeatFn | None = None) -> RunReport:
        """Sync once. `log(line)` writes to the task's log (the caller masks the
        task's passwords in it too). `stop` set means: finish the message in
        hand, leave a consistent state, return a report with error_class
        "stopped". `heartbeat`, when given, is called whenever data moves
        (cheap: it may be called per network read), so that a long transfer
        between two progress events is not taken for a stall. Must not raise
        for server or network problems: they become the report's error_class.

        Child processes must inherit the run's inheritable file descriptors
        (``close_fds=False``): the run's task lock is one, so the task counts
        as running, and a stop can find and end them, until the last child
        has exited (see sync.lockholders)."""
        ...
