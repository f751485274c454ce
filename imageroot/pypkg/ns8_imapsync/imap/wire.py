"""What crosses an IMAP session's socket: byte counts, and a bound on literals.

Two jobs that need the same hook, imaplib's own I/O primitives
(``readline``, ``read`` and ``send`` of the ``imaplib.IMAP4`` object under an
IMAPClient; ``_get_response`` reads every literal with ``self.read(size)``):

* **Counting.**  :func:`instrument` counts the bytes moved each way
  (:attr:`Wire.bytes_in`, :attr:`Wire.bytes_out`) and calls ``on_bytes(n)``
  after every read and send, literals included, in pieces of at most
  :data:`READ_PIECE` bytes: a run's watchdog can tell a slow but alive
  transfer (bytes keep coming inside a 50 MB message) from a stalled one.
* **Bounding.**  Inside :func:`literal_limit`, a literal the server announces
  (``{n}``) above the limit is never buffered: it is read and thrown away in
  pieces of :data:`DRAIN_PIECE` bytes, so the session stays in step, and
  ``read`` returns an empty :class:`RefusedLiteral` marker in its place.
  :func:`strip_refused` turns the markers of a FETCH reply into ``NIL`` items
  (IMAPClient's parser would reject an empty literal) and says which
  messages they belonged to.  A literal above the drain cap is not even
  drained: the connection is closed and :class:`LiteralTooLarge` (an
  ``imaplib.IMAP4.abort``) raised, because a server that announces gigabytes
  for a message is not worth waiting for.

A limit can differ per message: the UID is looked up in the lines of the
response unit read so far (``* 5 FETCH (UID 7 ... BODY[] {n}``); servers that
send the UID after the body get the command's default limit.

The instrumentation is per session object and idempotent; it survives
STARTTLS (imaplib swaps the socket, not the methods).
"""

from __future__ import annotations

import imaplib
import re
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field

import imapclient

READ_PIECE = 64 * 1024
DRAIN_PIECE = 64 * 1024
DRAIN_CAP = 512 * 1024 * 1024  # a literal above this closes the connection instead of being drained
_HEAD_MAX = 64 * 1024  # of a response unit's lines kept to find its UID
_UID = re.compile(rb"[( ]UID (\d+)", re.I)
_SEQ = re.compile(rb"^(\d+) \(")  # imaplib keeps "<seq> (..." of "* <seq> FETCH (..."
_LITERAL_END = re.compile(rb"~?\{\d+\}$")

OnBytes = Callable[[int], object]


class LiteralTooLarge(imaplib.IMAP4.abort):
    """The server announced a literal above the drain cap; the connection was closed."""


class RefusedLiteral(bytes):
    """Stands, empty, for a literal that was drained instead of kept.

    ``size``: what the server announced (``{n}``); ``limit``: what we accepted.
    """

    size: int
    limit: int

    def __new__(cls, size: int, limit: int) -> RefusedLiteral:
        obj = super().__new__(cls, b"")
        obj.size = size
        obj.limit = limit
        return obj


@dataclass
class _Limit:
    default: int
    per_uid: Mapping[int, int]
    drain_cap: int


@dataclass
class Wire:
    """Byte counters and the literal bound of one session (see the module docstring)."""

    imap: imaplib.IMAP4
    on_bytes: OnBytes | None = None
    bytes_in: int = 0
    bytes_out: int = 0
    refused: int = 0  # literals drained instead of kept, over the session's life
    too_large: LiteralTooLarge | None = None  # why the session was closed, if it was
    limit: _Limit | None = field(default=None, repr=False)
    _head: bytes = field(default=b"", repr=False)
    _continues: bool = field(default=False, repr=False)

    def _moved_in(self, n: int) -> None:
        self.bytes_in += n
        if self.on_bytes is not None and n:
            self.on_bytes(n)

    def readline(self) -> bytes:
        line = type(self.imap).readline(self.imap)
        self._moved_in(len(line))
        self._head = (self._head + line)[:_HEAD_MAX] if self._continues else line[:_HEAD_MAX]
        self._continues = False
        return line

    def read(self, size: int) -> bytes:
        self._continues = True  # the next line is the rest of this response unit
        bound = self._bound()
        if bound is not None and size > bound:
            return self._refuse(size, bound)
        pieces: list[bytes] = []
        left = size
        while left > 0:
            piece = type(self.imap).read(self.imap, min(left, READ_PIECE))
            if not piece:
                break  # EOF: imaplib's parser reports the short literal
            self._moved_in(len(piece))
            pieces.append(piece)
            left -= len(piece)
        return pieces[0] if len(pieces) == 1 else b"".join(pieces)

    def send(self, data: bytes) -> None:
        type(self.imap).send(self.imap, data)
        self.bytes_out += len(data)
        if self.on_bytes is not None and data:
            self.on_bytes(len(data))

    def _bound(self) -> int | None:
        if self.limit is None:
            return None
        match = _UID.search(self._head)
        if match:
            return self.limit.per_uid.get(int(match.group(1)), self.limit.default)
        return self.limit.default

    def _refuse(self, size: int, bound: int) -> RefusedLiteral:
        assert self.limit is not None
        if size > self.limit.drain_cap:
            _close(self.imap)
            self.too_large = LiteralTooLarge(
                f"the server announced a {size}-byte literal where at most {bound} bytes were expected; "
                "the connection was closed rather than reading it")
            raise self.too_large
        left = size
        while left > 0:
            piece = type(self.imap).read(self.imap, min(left, DRAIN_PIECE))
            if not piece:
                raise imaplib.IMAP4.abort(f"the connection closed inside a {size}-byte literal")
            self._moved_in(len(piece))
            left -= len(piece)
        self.refused += 1
        return RefusedLiteral(size, bound)


def _close(imap: imaplib.IMAP4) -> None:
    try:
        imap.shutdown()
    except OSError:
        pass


def instrument(client: imapclient.IMAPClient, on_bytes: OnBytes | None = None) -> Wire:
    """The session's :class:`Wire`, hooking it in on first call; ``on_bytes`` (when given)
    replaces the callback of an earlier call."""
    imap = client._imap
    wire = imap.__dict__.get("_ns8_wire")
    if wire is None:
        wire = Wire(imap)
        imap.readline = wire.readline  # type: ignore[method-assign]
        imap.read = wire.read  # type: ignore[method-assign]
        imap.send = wire.send  # type: ignore[method-assign]
        imap._ns8_wire = wire  # type: ignore[attr-defined]
    if on_bytes is not None:
        wire.on_bytes = on_bytes
    return wire


@contextmanager
def literal_limit(client: imapclient.IMAPClient, max_bytes: int, *, per_uid: Mapping[int, int] | None = None,
                  drain_cap: int = DRAIN_CAP) -> Iterator[Wire]:
    """While inside, literals above ``max_bytes`` (or ``per_uid[uid]`` for a message whose
    UID came before the literal) are drained and replaced by :class:`RefusedLiteral`;
    those above ``drain_cap`` abort the session (:class:`LiteralTooLarge`)."""
    wire = instrument(client)
    previous = wire.limit
    wire.limit = _Limit(max_bytes, dict(per_uid or {}), max(drain_cap, max_bytes))
    try:
        yield wire
    finally:
        wire.limit = previous


def aborted_by_limit(client: imapclient.IMAPClient) -> LiteralTooLarge | None:
    """The :class:`LiteralTooLarge` that closed this session, if any: imaplib re-raises
    every abort of a command as a plain ``IMAP4.abort``, so callers ask here."""
    wire = client._imap.__dict__.get("_ns8_wire")
    return wire.too_large if wire is not None else None


def strip_refused(data: list) -> tuple[list, dict[int, RefusedLiteral]]:
    """imaplib FETCH data with every refused literal made ``NIL``, and the refused
    literal of each message sequence number (the first one, when several).

    imaplib gives one record per literal, ``(line ending in {n}, literal)``, and a
    plain ``line`` for the end of each response, so a unit starts after a plain record.
    """
    out: list = []
    refused: dict[int, RefusedLiteral] = {}
    seq: int | None = None
    starts = True
    for record in data:
        literal = isinstance(record, tuple)
        head = record[0] if literal else record
        if starts:
            match = _SEQ.match(head) if isinstance(head, bytes) else None
            seq = int(match.group(1)) if match else None
        if literal and isinstance(record[1], RefusedLiteral):
            if seq is not None:
                refused.setdefault(seq, record[1])
            record = _LITERAL_END.sub(b"NIL", record[0])
        out.append(record)
        starts = not literal
    return out, refused
