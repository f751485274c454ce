"""Digests of one message computed while its bytes stream past, so a large
message is hashed without being held in memory."""

from __future__ import annotations

import hashlib

from ns8_imapsync.imap.messages import ContentHasher


class MessageDigest:
    """sha256 of the bytes as stored, the CRLF-normalised content key (identity of
    a message with neither Message-Id nor Received) and the size the message has
    on an IMAP server (every line ending CRLF, what RFC822.SIZE reports)."""

    def __init__(self) -> None:
        self._raw = hashlib.sha256()
        self._content = ContentHasher()
        self.size = 0
        self._bare_lf = 0
        self._last = b""

    def update(self, data: bytes) -> None:
        if not data:
            return
        self._raw.update(data)
        self._content.update(data)
        self.size += len(data)
        self._bare_lf += data.count(b"\n") - data.count(b"\r\n")
        if data[:1] == b"\n" and self._last == b"\r":
            self._bare_lf -= 1  # a CRLF split across two chunks
        self._last = data[-1:]

    @property
    def sha256(self) -> str:
        return self._raw.hexdigest()

    @property
    def crlf_size(self) -> int:
        return self.size + self._bare_lf

    def content_key(self) -> str:
        return self._content.key()


def digest_of(data: bytes) -> MessageDigest:
    d = MessageDigest()
    d.update(data)
    return d
