"""ProgressDisplay: bars per running account and one overall bar on a terminal; on
anything else (a pipe, a log collector) plain lines at most every few seconds.

Workers call :meth:`ProgressDisplay.update`; nothing here talks to IMAP.
"""

from __future__ import annotations

import sys
import threading
import time
from dataclasses import dataclass
from typing import TextIO

from .runlog import RunLog

BAR = 24
REDRAW = 0.2  # seconds between terminal redraws
PLAIN_EVERY = 10.0  # seconds between plain progress lines per account


@dataclass
class AccountProgress:
    email: str
    done: int = 0
    total: int = 0
    bytes: int = 0
    folder: str = ""
    last_plain: float = 0.0


def _bar(done: int, total: int) -> str:
    frac = 1.0 if total <= 0 else min(1.0, done / total)
    fill = int(frac * BAR)
    return "[" + "#" * fill + "-" * (BAR - fill) + f"] {frac * 100:5.1f}%"


def human_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(n) < 1024 or unit == "GiB":
            return f"{n:.1f} {unit}" if unit != "B" else f"{int(n)} B"
        n /= 1024
    return f"{n:.1f} GiB"


class ProgressDisplay:
    def __init__(self, log: RunLog, accounts: int, verb: str, stream: TextIO | None = None,
                 tty: bool | None = None) -> None:
        self.log = log
        self.verb = verb
        self.stream = stream or sys.stderr
        self.tty = self.stream.isatty() if tty is None else tty
        self.accounts_total = accounts
        self.accounts_done = 0
        self.started = time.monotonic()
        self._lock = threading.RLock()
        self._active: dict[str, AccountProgress] = {}
        self._lines = 0
        self._last_draw = 0.0
        self.messages = 0
        self.bytes = 0
        if self.tty:
            log.set_display(self._clear, self._draw_now)

    def start(self, email: str) -> None:
        with self._lock:
            self._active[email] = AccountProgress(email, last_plain=time.monotonic())
            self._maybe_draw()

    def total(self, email: str, messages: int) -> None:
        with self._lock:
            if email in self._active:
                self._active[email].total = messages
            self._maybe_draw()

    def update(self, email: str, messages: int, size: int, folder: str = "") -> None:
        with self._lock:
            p = self._active.get(email)
            self.messages += messages
            self.bytes += size
            if p is None:
                return
            p.done += messages
            p.bytes += size
            p.folder = folder or p.folder
            now = time.monotonic()
            if not self.tty and now - p.last_plain >= PLAIN_EVERY and p.total:
                p.last_plain = now
                self.log.info(f"{email}: {self.verb} {p.done}/{p.total} messages ({human_bytes(p.bytes)})")
            self._maybe_draw()

    def finish(self, email: str) -> None:
        with self._lock:
            self._active.pop(email, None)
            self.accounts_done += 1
            self._maybe_draw(force=True)

    def rate(self) -> str:
        elapsed = max(time.monotonic() - self.started, 1e-6)
        return f"{self.messages / elapsed:.1f} msg/s, {human_bytes(self.bytes / elapsed)}/s"

    def close(self) -> None:
        with self._lock:
            if self.tty:
                self._clear()
                self.log.set_display(None, None)

    # ---- terminal drawing ---------------------------------------------------
    def _maybe_draw(self, force: bool = False) -> None:
        if not self.tty:
            return
        now = time.monotonic()
        if force or now - self._last_draw >= REDRAW:
            self._last_draw = now
            self._clear()
            self._draw_now()

    def _clear(self) -> None:
        if self._lines:
            self.stream.write(f"\x1b[{self._lines}F\x1b[J")
            self._lines = 0

    def _draw_now(self) -> None:
        lines = []
        for p in list(self._active.values()):
            lines.append(f"{p.email[:32]:<32} {_bar(p.done, p.total)} {p.done}/{p.total} {p.folder[:24]}")
        lines.append(f"{'all accounts':<32} {_bar(self.accounts_done, self.accounts_total)} "
                     f"{self.accounts_done}/{self.accounts_total} accounts, {self.messages} messages, {self.rate()}")
        self.stream.write("\n".join(lines) + "\n")
        self.stream.flush()
        self._lines = len(lines)
