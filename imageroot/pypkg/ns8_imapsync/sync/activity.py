"""When a run last did something: what the watchdog measures.

A run is stalled when nothing moves, not when no batch has finished: one
50 MB message over a slow link takes many minutes between two progress
events while its bytes keep flowing. So every sign of life counts: a
progress event, and the engine's heartbeat (bytes moved on an IMAP
connection for the native engine, an output line for the imapsync engine).
Heartbeats come often (per network read), so recording one is a clock read
and an assignment, thread-safe without a lock.
"""

from __future__ import annotations

import time

MAX_POLL = 5.0  # seconds between two watchdog looks, at most
MIN_POLL = 0.05


class Activity:
    """The monotonic time of the last sign of life."""

    def __init__(self) -> None:
        self.last = time.monotonic()

    def touch(self) -> None:
        """A progress event (or anything else that proves the run is alive)."""
        self.last = time.monotonic()

    def heartbeat(self, nbytes: int = 0) -> None:
        """The engine's heartbeat callback (engine.HeartbeatFn): ``nbytes`` moved, or 0
        for "some activity"; any call is a sign of life, however few bytes."""
        self.last = time.monotonic()

    def idle_seconds(self) -> float:
        return time.monotonic() - self.last


def poll_interval(stall_after: float) -> float:
    """A tenth of the stall limit (a stall is noticed at most 10% late), 5 s at most."""
    return max(MIN_POLL, min(MAX_POLL, stall_after / 10))
