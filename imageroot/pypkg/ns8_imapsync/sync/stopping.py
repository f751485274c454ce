"""How a stop reaches a run that waits on the network.

The engines look at the stop event between commands; a run blocked inside one
(a server that accepted the connection but never greets, a FETCH that never
answers) would only notice at the socket timeout, and ``stop-task`` would wait
that long.  So: a connection being opened is waited for in a thread of its own
and abandoned on stop; once open, a session still blocked a few seconds after
the stop has its socket shut down, which ends the blocking read as a dropped
connection would (and is safe as one: the next run completes what was cut).
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable, Iterable
from typing import TypeVar

import imapclient

T = TypeVar("T")

BREAK_AFTER = 5.0  # seconds a stopped run may still finish its command normally
POLL = 0.2


class Stopped(Exception):
    """The stop came while the connection was being opened."""


def open_or_stop(open_fn: Callable[[], T], stop: threading.Event, close: Callable[[T], object]) -> T:
    """``open_fn()``, or :class:`Stopped` as soon as ``stop`` is set (the late
    connection, if it still comes, is closed by the abandoned thread)."""
    box: dict[str, object] = {}
    lock = threading.Lock()

    def opener() -> None:
        try:
            result = open_fn()
        except BaseException as exc:  # noqa: BLE001 - handed to the caller
            box["error"] = exc
            return
        with lock:
            if box.get("abandoned"):
                close(result)
            else:
                box["result"] = result

    thread = threading.Thread(target=opener, name="connect", daemon=True)
    thread.start()
    while thread.is_alive():
        if stop.wait(POLL):
            with lock:
                if "result" not in box and "error" not in box:
                    box["abandoned"] = True
                    raise Stopped()
            break
    thread.join()
    if "error" in box:
        raise box["error"]  # type: ignore[misc]
    return box["result"]  # type: ignore[return-value]


class SocketBreaker:
    """Shuts the sessions' sockets down when a stop is not obeyed within ``after`` seconds."""

    def __init__(self, stop: threading.Event, sessions: Callable[[], Iterable[imapclient.IMAPClient | None]],
                 after: float = BREAK_AFTER) -> None:
        self.stop, self.sessions, self.after = stop, sessions, after
        self.done = threading.Event()
        self.broke = False
        self._thread = threading.Thread(target=self._watch, name="stop-breaker", daemon=True)

    def __enter__(self) -> SocketBreaker:
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self.done.set()

    def _watch(self) -> None:
        while not self.done.is_set():
            if self.stop.wait(POLL):
                break
        if self.done.wait(self.after):
            return
        self.broke = True
        for client in self.sessions():
            if client is None:
                continue
            try:
                client.socket().shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
