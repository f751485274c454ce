"""The server side of RFC 6455, just what the api-server's `/ws` needs.

cluster-admin learns how its tasks go from the api-server's websocket (spec
section 6, UI): text messages out, the client's `authorize` message in, pings
and a close. The standard library has no websocket, and the local node adds
no dependency for it: this is the handshake and the framing, nothing more
(no extensions, no fragmented messages from the client).
"""

from __future__ import annotations

import base64
import hashlib
import struct
import threading
from typing import BinaryIO

GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
OP_CONT, OP_TEXT, OP_BINARY, OP_CLOSE, OP_PING, OP_PONG = 0x0, 0x1, 0x2, 0x8, 0x9, 0xA
MAX_CLIENT_FRAME = 1 << 20  # the client sends a JWT and pongs: a megabyte is plenty


class ConnectionClosed(Exception):
    """The peer closed the connection (or sent a close frame)."""


def accept_key(client_key: str) -> str:
    """Sec-WebSocket-Accept for the client's Sec-WebSocket-Key."""
    return base64.b64encode(hashlib.sha1((client_key + GUID).encode()).digest()).decode()


def encode_frame(opcode: int, payload: bytes) -> bytes:
    """One unmasked, final frame (servers never mask)."""
    head = bytes([0x80 | opcode])
    n = len(payload)
    if n < 126:
        head += bytes([n])
    elif n < 1 << 16:
        head += bytes([126]) + struct.pack("!H", n)
    else:
        head += bytes([127]) + struct.pack("!Q", n)
    return head + payload


def _read_exact(stream: BinaryIO, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = stream.read(n - len(data))
        if not chunk:
            raise ConnectionClosed()
        data += chunk
    return data


def read_frame(stream: BinaryIO) -> tuple[int, bytes]:
    """(opcode, payload) of the next client frame, unmasked."""
    b0, b1 = _read_exact(stream, 2)
    opcode, n = b0 & 0x0F, b1 & 0x7F
    if n == 126:
        n = struct.unpack("!H", _read_exact(stream, 2))[0]
    elif n == 127:
        n = struct.unpack("!Q", _read_exact(stream, 8))[0]
    if n > MAX_CLIENT_FRAME:
        raise ConnectionClosed()
    mask = _read_exact(stream, 4) if b1 & 0x80 else b"\0\0\0\0"
    payload = bytes(c ^ mask[i % 4] for i, c in enumerate(_read_exact(stream, n)))
    return opcode, payload


class WebSocket:
    """An accepted connection: `send_text` from any thread, `receive_text` from one."""

    def __init__(self, rfile: BinaryIO, wfile: BinaryIO):
        self.rfile, self.wfile = rfile, wfile
        self._lock = threading.Lock()
        self.closed = threading.Event()

    def _send(self, opcode: int, payload: bytes) -> None:
        if self.closed.is_set():
            raise ConnectionClosed()
        with self._lock:
            try:
                self.wfile.write(encode_frame(opcode, payload))
                self.wfile.flush()
            except OSError as exc:
                self.closed.set()
                raise ConnectionClosed() from exc

    def send_text(self, text: str) -> None:
        self._send(OP_TEXT, text.encode())

    def close(self, code: int = 1008) -> None:
        """Send a close frame (default: policy violation, e.g. a bad token)."""
        try:
            self._send(OP_CLOSE, struct.pack("!H", code))
        except ConnectionClosed:
            pass
        self.closed.set()

    def receive_text(self) -> str:
        """The next text message; pings are answered, a close ends the connection."""
        while True:
            try:
                opcode, payload = read_frame(self.rfile)
            except OSError as exc:
                self.closed.set()
                raise ConnectionClosed() from exc
            except ConnectionClosed:
                self.closed.set()
                raise
            if opcode == OP_TEXT:
                return payload.decode(errors="replace")
            if opcode == OP_PING:
                self._send(OP_PONG, payload)
            elif opcode == OP_CLOSE:
                try:
                    self._send(OP_CLOSE, payload[:2])
                finally:
                    self.closed.set()
                raise ConnectionClosed()
