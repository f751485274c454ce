"""The run log: one timestamped file per run under ``--log-dir``, echoed to the
terminal, with every known secret masked on the way out.

Passwords never should reach a log line; masking is the second line of defence
(a server echoing a password in an error text, say).  The file names accounts,
folders and server replies, so it is the owner's only (mode 0600).
"""

from __future__ import annotations

import os
import sys
import threading
import time
from collections.abc import Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import TextIO

MASK = "********"


class RunLog:
    """Thread-safe log: file lines ``<UTC time> <level> <text>``, stdout plain text."""

    def __init__(self, log_dir: Path | None, mode: str, secrets: Iterable[str] = (),
                 echo: TextIO | None = None) -> None:
        self._lock = threading.Lock()
        self._secrets = sorted({s for s in secrets if s and len(s) >= 3}, key=len, reverse=True)
        self.echo = echo if echo is not None else sys.stdout
        self.path: Path | None = None
        self._file: TextIO | None = None
        self._before_echo = None  # progress display hook: clears its lines before we print
        self._after_echo = None
        if log_dir is not None:
            log_dir.mkdir(parents=True, exist_ok=True)
            stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S")
            path = log_dir / f"{mode}-{stamp}-{os.getpid()}.log"
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
            os.fchmod(fd, 0o600)  # an existing file keeps its mode otherwise
            self._file = os.fdopen(fd, "a", encoding="utf-8", buffering=1)
            self.path = path

    def add_secrets(self, secrets: Iterable[str]) -> None:
        with self._lock:
            self._secrets = sorted(set(self._secrets) | {s for s in secrets if s and len(s) >= 3},
                                   key=len, reverse=True)

    def mask(self, text: str) -> str:
        for secret in self._secrets:
            if secret in text:
                text = text.replace(secret, MASK)
        return text

    def set_display(self, before, after) -> None:
        self._before_echo, self._after_echo = before, after

    def _write(self, level: str, text: str, echo: bool) -> None:
        text = self.mask(text)
        stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        with self._lock:
            if self._file is not None:
                for line in text.splitlines() or [""]:
                    self._file.write(f"{stamp} {level:<5} {line}\n")
            if echo:
                if self._before_echo:
                    self._before_echo()
                prefix = "" if level == "INFO" else f"{level.lower()}: "
                self.echo.write(prefix + text + "\n")
                self.echo.flush()
                if self._after_echo:
                    self._after_echo()

    def info(self, text: str) -> None:
        self._write("INFO", text, True)

    def warn(self, text: str) -> None:
        self._write("WARN", text, True)

    def error(self, text: str) -> None:
        self._write("ERROR", text, True)

    def detail(self, text: str) -> None:
        """File only: too chatty for the terminal (per-folder details)."""
        self._write("INFO", text, False)

    def close(self) -> None:
        with self._lock:
            if self._file is not None:
                self._file.close()
                self._file = None
