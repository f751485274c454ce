"""A loopback TCP proxy that misbehaves on request, between an IMAP client and a real Dovecot.

Tests put it in front of one of the local node's Dovecots and point the code
under test at ``proxy.host:proxy.port`` with no encryption (security ``""``):
both legs are plain TCP, and the proxy hides ``STARTTLS`` from the
capabilities so an opportunistic client stays in clear text and every byte
can be seen and changed.  The remote Dovecot accepts plaintext logins from
anywhere; mail1 (``ssl = required``) only from its own address, so in front
of mail1 pass ``source_host=mail1.host``: Dovecot treats a connection whose
source and destination addresses are equal as local, hence secured.

It runs an asyncio loop in a background thread, so synchronous pytest code
uses it as a context manager, and every fault can be switched on or off while
sessions run:

- transport: :meth:`stall` / :meth:`resume` (stop forwarding, keep the
  connection), :meth:`throttle` (bytes per second, both ways),
  :meth:`drop_after` (close once N more bytes went one way),
  :meth:`drop_on_command` (close when the client sends a command matching a
  regex, at once or N bytes later: mid-FETCH, mid-APPEND literal), :meth:`drop_all`;
- server replies, rewritten per response unit (a line and its literals,
  ``{n}\\r\\n`` + n bytes, with literal lengths recomputed): :meth:`drop_fetch`
  (a UID's whole FETCH response), :meth:`drop_item` (``RFC822.SIZE``,
  ``BODY[]``, ``FLAGS``... from FETCH responses), :meth:`inflate` (extra bytes
  appended to a UID's ``BODY[]`` literal), :meth:`ignore_partial` (the client's
  ``BODY[]<o.n>`` is sent as ``BODY[]``: the whole body comes back),
  :meth:`malform` (a UID's FETCH response replaced by broken syntax),
  :meth:`strip_appenduid` (a server without UIDPLUS), :meth:`hide_capability`,
  :meth:`rename_folder` (a folder shown to the client under another name);
- observers: :meth:`on_command` calls a function (in a worker thread, the
  command held until it returns) for each client command matching a regex,
  with the :class:`Session` it came on (which folder is selected there);
- :attr:`bytes_up` / :attr:`bytes_down`: bytes forwarded client->server and
  server->client (after rewriting), :attr:`connections` accepted so far.

Example::

    with FaultProxy(pair.remote_host, pair.remote_imap) as proxy:
        proxy.inflate(uid=3, extra=200_000)
        client = IMAPClient(proxy.host, proxy.port, ssl=False)
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import threading
from collections.abc import Callable
from dataclasses import dataclass, field

LINE_LIMIT = 8 * 1024 * 1024
PIECE = 64 * 1024
_SERVER_LITERAL = re.compile(rb"\{(\d+)\}\r\n$")
_CLIENT_LITERAL = re.compile(rb"\{(\d+)\+?\}\r\n$")
_FETCH = re.compile(rb"^\* (\d+) FETCH \(", re.I)
_UID = re.compile(rb"[( ]UID (\d+)", re.I)
_PLACEHOLDER = re.compile(rb"\x00(\d+)\x00")
_PARTIAL_REQUEST = re.compile(rb"(BODY(?:\.PEEK)?\[[^\]]*\])<\d+\.\d+>", re.I)
_APPENDUID = re.compile(rb"\[APPENDUID \d+ \d+\] ?", re.I)
_CAPABILITIES = re.compile(rb"(\[CAPABILITY |^\* CAPABILITY )([^\]]*)", re.I)
_SELECT = re.compile(rb"^\S+ (?:SELECT|EXAMINE) (\"(?:[^\"\\]|\\.)*\"|\{\d+\+?\}|[^ \r\n]+)", re.I)

UP, DOWN = "up", "down"


class _Dropped(Exception):
    """The proxy closed this connection on purpose."""


@dataclass
class Session:
    """One client connection, as :meth:`FaultProxy.on_command` observers see it."""

    number: int  # 1 for the first connection the proxy accepted
    selected: bytes | None = None  # the mailbox of the last SELECT/EXAMINE as the server got it (quoted)
    command: bytes = b""  # the first line of the command being sent


def _quoted(name: bytes) -> bytes:
    return b'"' + name.replace(b"\\", b"\\\\").replace(b'"', b'\\"') + b'"'


def _rename_pattern(name: bytes) -> re.Pattern:
    """``name`` as a whole mailbox token of a text line: quoted, or a bare atom."""
    quoted = re.escape(_quoted(name))
    return re.compile(rb"(?<=[ (])(?:" + quoted + rb"|" + re.escape(name) + rb"(?=[ )\r]|$))")


@dataclass
class Unit:
    """One server response: text parts (without ``{n}`` markers and the final CRLF) and
    the literals between them, ``parts = [text, literal, text, ..., text]``."""

    texts: list[bytes]
    literals: list[bytes] = field(default_factory=list)

    def encode(self) -> bytes:
        out = [self.texts[0]]
        for lit, text in zip(self.literals, self.texts[1:], strict=True):
            out += [b"{%d}\r\n" % len(lit), lit, text]
        return b"".join(out) + b"\r\n"

    def flat(self) -> bytes:
        """The text with each literal as ``\\x00<index>\\x00`` (NUL never occurs in IMAP text)."""
        out = [self.texts[0]]
        for i, text in enumerate(self.texts[1:]):
            out += [b"\x00%d\x00" % i, text]
        return b"".join(out)

    @classmethod
    def from_flat(cls, flat: bytes, literals: list[bytes]) -> Unit:
        pieces = _PLACEHOLDER.split(flat)
        return cls(pieces[0::2], [literals[int(i)] for i in pieces[1::2]])


# ---- FETCH item syntax -------------------------------------------------------------

def _skip_quoted(flat: bytes, i: int) -> int:
    """Index after the quoted string starting at ``i``."""
    i += 1
    while flat[i:i + 1] not in (b'"', b""):
        i += 2 if flat[i:i + 1] == b"\\" else 1
    return i + 1


def _value_end(flat: bytes, i: int) -> int:
    """Index after the FETCH value starting at ``i`` (list, string, literal or atom)."""
    c = flat[i:i + 1]
    if c == b"~" and flat[i + 1:i + 2] == b"\x00":
        i, c = i + 1, b"\x00"
    if c == b"\x00":
        return flat.index(b"\x00", i + 1) + 1
    if c == b'"':
        return _skip_quoted(flat, i)
    if c != b"(":
        while i < len(flat) and flat[i:i + 1] not in (b" ", b")"):
            i += 1
        return i
    depth = 0
    while i < len(flat):
        c = flat[i:i + 1]
        if c == b'"':
            i = _skip_quoted(flat, i)
            continue
        if c == b"\x00":
            i = flat.index(b"\x00", i + 1) + 1
            continue
        depth += (c == b"(") - (c == b")")
        i += 1
        if depth == 0:
            return i
    return i


def fetch_items(flat: bytes) -> list[tuple[bytes, int, int, int]]:
    """``(NAME, start, value_start, end)`` of each item of a flat FETCH response."""
    match = _FETCH.match(flat)
    if not match:
        return []
    i, items = match.end(), []
    while i < len(flat):
        while flat[i:i + 1] == b" ":
            i += 1
        if flat[i:i + 1] in (b")", b""):
            break
        start = i
        while i < len(flat) and flat[i:i + 1] not in (b" ", b")"):
            i = flat.index(b"]", i) + 1 if flat[i:i + 1] == b"[" else i + 1
        name, value_start = flat[start:i].upper(), i + 1
        i = _value_end(flat, value_start)
        items.append((name, start, value_start, i))
    return items


def _matches(name: bytes, wanted: bytes) -> bool:
    """``BODY[]`` matches ``BODY[]`` and ``BODY[]<0>``, not ``BODY[HEADER]``."""
    return name == wanted or name.startswith(wanted + b"<")


# ---- the proxy ---------------------------------------------------------------------

@dataclass
class _Faults:
    stalled: bool = False
    rate: int | None = None
    drop_in: dict[str, int | None] = field(default_factory=lambda: {UP: None, DOWN: None})
    command: tuple[re.Pattern, str | None, int] | None = None
    drop_uids: set[int] = field(default_factory=set)
    drop_items: list[tuple[bytes, int | None]] = field(default_factory=list)
    inflate: dict[int, bytes] = field(default_factory=dict)
    ignore_partial: bool = False
    echo_origin: bool = False
    malformed: dict[int, bytes | None] = field(default_factory=dict)
    strip_appenduid: bool = False
    hidden: set[bytes] = field(default_factory=set)
    rewriters: list[Callable[[Unit], Unit | None]] = field(default_factory=list)
    renames: list[tuple[bytes, bytes]] = field(default_factory=list)  # (real, shown)


@dataclass(eq=False)
class _Conn:
    client: asyncio.StreamWriter
    server: asyncio.StreamWriter
    session: Session = field(default_factory=lambda: Session(0))
    dropped: bool = False

    def drop(self) -> None:
        self.dropped = True
        for w in (self.client, self.server):
            w.transport.abort()


class FaultProxy:
    """See the module docstring.  ``hide`` lists capabilities removed from every reply."""

    def __init__(self, upstream_host: str, upstream_port: int, *, source_host: str | None = None,
                 listen_host: str = "127.0.0.1", hide: tuple[str, ...] = ("STARTTLS",)) -> None:
        self.upstream = (upstream_host, upstream_port)
        self.source_host = source_host
        self.host = listen_host
        self.port = 0
        self.bytes_up = 0
        self.bytes_down = 0
        self.connections = 0
        self._lock = threading.Lock()
        self._faults = _Faults(hidden={h.upper().encode() for h in hide})
        self._conns: set[_Conn] = set()
        self._handlers: set[asyncio.Task] = set()
        self._hooks: list[tuple[re.Pattern, Callable[[bytes, Session], object], bool]] = []
        self.hook_errors: list[str] = []  # exceptions raised by on_command observers
        self.generation = 0  # clear() calls so far
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._server: asyncio.base_events.Server | None = None

    # ---- life cycle ----
    def __enter__(self) -> FaultProxy:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="faultproxy", daemon=True)
        self._thread.start()
        self._call(self._start())
        return self

    def __exit__(self, *_exc: object) -> None:
        assert self._loop is not None and self._thread is not None
        self._call(self._stop())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()

    def _call(self, coro, timeout: float = 10) -> object:
        assert self._loop is not None
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout)

    async def _start(self) -> None:
        self._server = await asyncio.start_server(self._serve, self.host, 0, limit=LINE_LIMIT)
        self.port = self._server.sockets[0].getsockname()[1]

    async def _stop(self) -> None:
        assert self._server is not None
        self._server.close()
        for conn in list(self._conns):
            conn.drop()
        if self._handlers:
            await asyncio.wait(list(self._handlers), timeout=5)

    # ---- faults (any thread, effective at once) ----
    def _set(self, **values: object) -> None:
        with self._lock:
            for key, value in values.items():
                setattr(self._faults, key, value)

    def stall(self) -> None:
        """Stop forwarding both ways; connections stay open."""
        self._set(stalled=True)

    def resume(self) -> None:
        self._set(stalled=False)

    def throttle(self, bytes_per_s: int | None) -> None:
        """At most ``bytes_per_s`` each way (None: full speed)."""
        self._set(rate=bytes_per_s)

    def drop_after(self, direction: str, nbytes: int) -> None:
        """Close the connection that carries the ``nbytes``-th next byte ``up`` or ``down`` (once)."""
        with self._lock:
            self._faults.drop_in[direction] = nbytes

    def drop_on_command(self, pattern: str, *, up: int | None = None, down: int | None = None) -> None:
        """Once a client command line matches ``pattern``: close at once (the command is not
        forwarded), or forward it and close after ``up`` more client bytes (inside an APPEND
        literal) or ``down`` more server bytes (inside the reply)."""
        direction, n = (UP, up) if up is not None else (DOWN, down) if down is not None else (None, 0)
        self._set(command=(re.compile(pattern.encode(), re.I), direction, n))

    def drop_all(self) -> None:
        """Close every open connection now."""
        assert self._loop is not None
        for conn in list(self._conns):
            self._loop.call_soon_threadsafe(conn.drop)

    def drop_fetch(self, uid: int) -> None:
        """Drop every FETCH response about ``uid`` (the client never hears of it)."""
        with self._lock:
            self._faults.drop_uids.add(uid)

    def drop_item(self, name: str, uid: int | None = None) -> None:
        """Remove item ``name`` (``BODY[]`` also matches ``BODY[]<o>``) from FETCH responses
        (of ``uid`` only, when given)."""
        with self._lock:
            self._faults.drop_items.append((name.upper().encode(), uid))

    def inflate(self, uid: int, extra: int | bytes) -> None:
        """Append ``extra`` bytes (a count: that many ``X``) to every ``BODY[]`` literal of ``uid``."""
        data = b"X" * extra if isinstance(extra, int) else extra
        with self._lock:
            self._faults.inflate[uid] = data

    def ignore_partial(self, on: bool = True, *, echo_origin: bool = False) -> None:
        """Act as a server that ignores partial ranges: ``BODY[]<o.n>`` is asked as ``BODY[]``;
        the reply names ``BODY[]`` (or ``BODY[]<0>`` with ``echo_origin``)."""
        self._set(ignore_partial=on, echo_origin=echo_origin)

    def malform(self, uid: int, raw: bytes | None = None) -> None:
        """Replace ``uid``'s FETCH response by ``raw`` (default: an unterminated string)."""
        with self._lock:
            self._faults.malformed[uid] = raw

    def strip_appenduid(self, on: bool = True) -> None:
        """Remove ``[APPENDUID ...]`` from APPEND replies, as a server without UIDPLUS."""
        self._set(strip_appenduid=on)

    def hide_capability(self, name: str) -> None:
        with self._lock:
            self._faults.hidden.add(name.upper().encode())

    def rename_folder(self, real: str, shown: str) -> None:
        """Show the server's folder ``real`` as ``shown`` (both as on the wire: modified UTF-7):
        in the server's text lines (LIST, LSUB, STATUS...) and, the other way, in the client's
        command lines. A name the client sends as a literal is not renamed; keep ``real`` a
        distinctive leaf name (no children), so no other token can match it."""
        with self._lock:
            self._faults.renames.append((real.encode("ascii"), shown.encode("ascii")))

    def on_command(self, pattern: str, func: Callable[[bytes, Session], object], *,
                   continuations: bool = False) -> None:
        """Call ``func(line, session)`` for every client command line matching ``pattern``
        (a regex, case-insensitive; the line as the server will get it, after
        :meth:`rename_folder`), in a worker thread, before the line is forwarded: the
        command waits until ``func`` returns. ``continuations``: also for the lines that
        follow a literal inside a command (each message of a MULTIAPPEND announces its
        literal on one; ``session.command`` is the command's first line). Exceptions are
        kept in :attr:`hook_errors`. Observers stay until :meth:`clear_observers`
        (``clear`` keeps them)."""
        with self._lock:
            self._hooks.append((re.compile(pattern.encode(), re.I), func, continuations))

    def clear_observers(self) -> None:
        with self._lock:
            self._hooks = []

    def rewrite(self, func: Callable[[Unit], Unit | None]) -> None:
        """A custom rewriter of server response units (None drops the unit)."""
        with self._lock:
            self._faults.rewriters.append(func)

    def clear(self) -> None:
        """No fault any more (hidden capabilities stay); :attr:`generation` moves on, so
        an observer that arms a fault can tell it was armed before (see ``at_command``)."""
        with self._lock:
            self._faults = _Faults(hidden=self._faults.hidden)
            self.generation += 1

    # ---- connections ----
    async def _serve(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._handlers.add(task)
        task.add_done_callback(self._handlers.discard)
        local = (self.source_host, 0) if self.source_host else None
        try:
            server_r, server_w = await asyncio.open_connection(*self.upstream, local_addr=local, limit=LINE_LIMIT)
        except OSError:
            client_w.transport.abort()
            return
        self.connections += 1
        conn = _Conn(client_w, server_w, Session(self.connections))
        self._conns.add(conn)
        tasks = [asyncio.ensure_future(self._pump_up(conn, client_r)),
                 asyncio.ensure_future(self._pump_down(conn, server_r))]
        try:
            await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in tasks:
                task.cancel()
            for w in (client_w, server_w):
                with contextlib.suppress(Exception):
                    w.close()
            self._conns.discard(conn)

    async def _emit(self, conn: _Conn, direction: str, data: bytes) -> None:
        """Forward ``data`` honouring stall, throttle and armed drops."""
        writer = conn.server if direction == UP else conn.client
        pos = 0
        while pos < len(data):
            while self._faults.stalled and not conn.dropped:
                await asyncio.sleep(0.01)
            with self._lock:
                left = self._faults.drop_in[direction]
                rate = self._faults.rate
                n = len(data) - pos
                if rate:
                    n = min(n, max(1, rate // 20))
                if left is not None:
                    n = min(n, left)
                    self._faults.drop_in[direction] = left - n if left - n > 0 else None
            if n == 0 or conn.dropped:
                conn.drop()
                raise _Dropped()
            if direction == UP:  # counted before the peer can see them: a count read after
                self.bytes_up += n  # a completed command includes the whole reply
            else:
                self.bytes_down += n
            writer.write(data[pos:pos + n])
            await writer.drain()
            pos += n
            if left is not None and left - n <= 0:
                conn.drop()
                raise _Dropped()
            if rate:
                await asyncio.sleep(n / rate)

    async def _pump_up(self, conn: _Conn, reader: asyncio.StreamReader) -> None:
        """Client -> server, line by line; literals forwarded as they come (a client waits for
        ``+`` before sending a synchronising literal, so nothing is held back)."""
        command_start = True
        capture = False  # the next literal is the mailbox of a SELECT/EXAMINE
        with contextlib.suppress(asyncio.IncompleteReadError, ConnectionError, _Dropped):
            while True:
                line = await reader.readuntil(b"\n")
                if command_start:
                    line = self._rename_up(line)  # observers see the command as the server will
                    conn.session.command = line
                    capture = self._note_select(conn.session, line)
                await self._observe(line, conn.session, command_start)
                rule = self._command_rule(line) if command_start else None
                if rule is not None and rule[0] is None:
                    conn.drop()
                    return
                if self._faults.ignore_partial:
                    line = _PARTIAL_REQUEST.sub(rb"\1", line)
                await self._emit(conn, UP, line)
                if rule is not None:
                    self.drop_after(*rule)  # type: ignore[arg-type]
                match = _CLIENT_LITERAL.search(line)
                command_start = match is None
                left = int(match.group(1)) if match else 0
                while left:
                    piece = await reader.read(min(left, PIECE))
                    if not piece:
                        return
                    if capture:
                        conn.session.selected = _quoted(piece)
                        capture = False
                    await self._emit(conn, UP, piece)
                    left -= len(piece)

    @staticmethod
    def _note_select(session: Session, line: bytes) -> bool:
        """Remember the mailbox a SELECT/EXAMINE names; True when it comes as a literal."""
        match = _SELECT.match(line)
        if not match:
            return False
        arg = match.group(1)
        if arg.startswith(b"{"):
            return True
        session.selected = arg if arg.startswith(b'"') else _quoted(arg)
        return False

    async def _observe(self, line: bytes, session: Session, command_start: bool) -> None:
        with self._lock:
            hooks = [func for pattern, func, inside in self._hooks
                     if (command_start or inside) and pattern.search(line)]
        for func in hooks:
            loop = asyncio.get_running_loop()
            await loop.run_in_executor(None, self._call_observer, func, line, session)

    def _call_observer(self, func: Callable[[bytes, Session], object], line: bytes, session: Session) -> None:
        try:
            func(line, session)
        except Exception as exc:  # an observer's failure is the test's to report, not the session's
            self.hook_errors.append(f"{type(exc).__name__}: {exc}")

    def _rename_up(self, line: bytes) -> bytes:
        with self._lock:
            renames = list(self._faults.renames)
        for real, shown in renames:
            line = _rename_pattern(shown).sub(lambda _m, real=real: _quoted(real), line)
        return line

    def _command_rule(self, line: bytes) -> tuple[str | None, int] | None:
        """The armed :meth:`drop_on_command` rule when ``line`` matches it (then disarmed):
        ``(None, 0)`` to close now, else ``(direction, bytes)`` to close later."""
        with self._lock:
            rule = self._faults.command
            if rule is None or not rule[0].search(line):
                return None
            self._faults.command = None
        return rule[1], rule[2]

    async def _pump_down(self, conn: _Conn, reader: asyncio.StreamReader) -> None:
        """Server -> client, one whole response unit at a time (rewritten first)."""
        with contextlib.suppress(asyncio.IncompleteReadError, ConnectionError, _Dropped):
            while True:
                unit = await _read_unit(reader)
                out = self._rewrite_unit(unit)
                if out:
                    await self._emit(conn, DOWN, out)

    def _rewrite_unit(self, unit: Unit) -> bytes | None:
        with self._lock:
            faults = self._faults
            rewriters = list(faults.rewriters)
            result: Unit | bytes | None = _rewrite(unit, faults)
        for func in rewriters:
            if isinstance(result, Unit):
                result = func(result)
        if result is None or isinstance(result, bytes):
            return result
        return result.encode()


async def _read_unit(reader: asyncio.StreamReader) -> Unit:
    texts: list[bytes] = []
    literals: list[bytes] = []
    while True:
        line = await reader.readuntil(b"\r\n")
        match = _SERVER_LITERAL.search(line)
        if not match:
            texts.append(line[:-2])
            return Unit(texts, literals)
        texts.append(line[:match.start()])
        literals.append(await reader.readexactly(int(match.group(1))))


def _rewrite(unit: Unit, faults: _Faults) -> Unit | bytes | None:
    """The built-in rewrites of one server response unit."""
    for real, shown in faults.renames:
        pattern = _rename_pattern(real)
        unit.texts = [pattern.sub(lambda _m, shown=shown: _quoted(shown), t) for t in unit.texts]
    first = unit.texts[0]
    if faults.hidden and b"CAPABILITY" in first.upper():
        unit.texts[0] = _hide(first, faults.hidden)
    if faults.strip_appenduid and not first.startswith((b"*", b"+")):
        unit.texts[0] = _APPENDUID.sub(b"", unit.texts[0])
    fetch = _FETCH.match(first)
    if not fetch:
        return unit
    flat = unit.flat()
    uid_match = _UID.search(_PLACEHOLDER.sub(b"", flat))
    uid = int(uid_match.group(1)) if uid_match else None
    if uid in faults.drop_uids:
        return None
    if uid in faults.malformed:
        raw = faults.malformed[uid]
        return raw if raw is not None else b'* %s FETCH (UID %d BODY[] "unterminated\r\n' % (fetch.group(1), uid)
    literals = list(unit.literals)
    flat = _edit_items(flat, literals, uid, faults)
    return Unit.from_flat(flat, literals)


def _hide(text: bytes, hidden: set[bytes]) -> bytes:
    def strip(match: re.Match) -> bytes:
        names = [n for n in match.group(2).split(b" ") if n.upper() not in hidden]
        return match.group(1) + b" ".join(names)
    return _CAPABILITIES.sub(strip, text)


def _edit_items(flat: bytes, literals: list[bytes], uid: int | None, faults: _Faults) -> bytes:
    """Drop, inflate and rename FETCH items (from the end, so offsets stay valid)."""
    for name, start, value_start, end in reversed(fetch_items(flat)):
        if any(_matches(name, n) and (u is None or u == uid) for n, u in faults.drop_items):
            cut_from = start - 1 if flat[start - 1:start] == b" " else start
            flat = flat[:cut_from] + flat[end:]
            continue
        if not _matches(name, b"BODY[]"):
            continue
        if uid in faults.inflate:
            value = flat[value_start:end]
            placeholder = _PLACEHOLDER.fullmatch(value.lstrip(b"~"))
            if placeholder:
                literals[int(placeholder.group(1))] += faults.inflate[uid]
            else:
                literals.append(faults.inflate[uid])
                flat = flat[:value_start] + b"\x00%d\x00" % (len(literals) - 1) + flat[end:]
        if faults.echo_origin and name == b"BODY[]":
            flat = flat[:start] + flat[start:value_start - 1] + b"<0>" + flat[value_start - 1:]
    return flat
