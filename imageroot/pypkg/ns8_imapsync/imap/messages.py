"""Message-level IMAP commands shared by the native sync engine and the bulk migrator.

Compact UID sets, batched UID FETCH/SEARCH that IMAPClient cannot express,
a streaming APPEND that keeps line endings and memory bounded, the flag
clean-up applied to every copy, and the content hash that identifies a message
with neither Message-Id nor Received.  Both tools copy messages the same way,
so a mailbox moved by one is recognised by the other.

A literal drained by :func:`.wire.literal_limit` never reaches IMAPClient's
parser: :func:`uid_fetch` reports it per UID instead.  An APPEND to a server
without UIDPLUS stores the message without telling its UID: that is a success
(``None``), and ``reads.new_messages`` finds the copy by identity.
"""

from __future__ import annotations

import hashlib
import imaplib
import re
from collections.abc import Iterable, Iterator, Sequence
from datetime import datetime
from functools import lru_cache
from typing import IO

import imapclient
from imapclient import imap_utf7
from imapclient.datetime_util import datetime_to_INTERNALDATE

from .fetchparse import parse as parse_fetch
from .wire import RefusedLiteral, aborted_by_limit, strip_refused

UID_SET_MAX = 4000  # characters of one UID set on a command line
SYSTEM_FLAGS = {f.lower(): f for f in ("\\Seen", "\\Answered", "\\Flagged", "\\Deleted", "\\Draft")}
_KEYWORD = re.compile(r'[^\x00-\x20\x7f-\U0010ffff(){%*"\\\]]+')
_APPENDUID = re.compile(rb"\[APPENDUID (\d+) (\d+)\]", re.I)
_APPENDUID_SET = re.compile(rb"\[APPENDUID (\d+) ([0-9:,]+)\]", re.I)
_ESEARCH_ALL = re.compile(rb"\bALL\s+([0-9:,]+)", re.I)


class AppendRefused(Exception):
    """The server refused one message (APPEND NO/BAD): an error for that message only."""


def as_text(value: bytes | str) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


def uid_sets(uids: Iterable[int], max_len: int = UID_SET_MAX) -> Iterator[str]:
    """Compact UID sets (``1:5,9``), each short enough for one command line."""
    parts: list[str] = []
    length = 0
    ordered = sorted(set(uids))
    i = 0
    while i < len(ordered):
        j = i
        while j + 1 < len(ordered) and ordered[j + 1] == ordered[j] + 1:
            j += 1
        part = str(ordered[i]) if i == j else f"{ordered[i]}:{ordered[j]}"
        if parts and length + len(part) + 1 > max_len:
            yield ",".join(parts)
            parts, length = [], 0
        parts.append(part)
        length += len(part) + 1
        i = j + 1
    if parts:
        yield ",".join(parts)


def parse_uid_set(text: bytes) -> list[int]:
    out: list[int] = []
    for part in text.split(b","):
        if b":" in part:
            lo, hi = sorted(int(x) for x in part.split(b":"))
            out.extend(range(lo, hi + 1))
        elif part.strip():
            out.append(int(part))
    return out


def chunked(items: Sequence, size: int) -> Iterator[Sequence]:
    for i in range(0, len(items), size):
        yield items[i : i + size]




def clean_flags(flags: Iterable[bytes | str]) -> tuple[str, ...]:
    """host1 flags as we copy them: system flags spelled canonically, valid keywords,
    no ``\\Recent`` (set by the server) and no unknown ``\\`` flags; sorted.

    The same flags give the same tuple object: a folder of 100,000 messages has
    a few dozen distinct flag sets, and the listings and states that hold one per
    message then share them instead of holding 100,000 tuples of new strings."""
    return _clean_flags(tuple(flags))


@lru_cache(maxsize=4096)
def _clean_flags(flags: tuple[bytes | str, ...]) -> tuple[str, ...]:
    out: set[str] = set()
    for raw in flags:
        flag = as_text(raw)
        if flag.startswith("\\"):
            canonical = SYSTEM_FLAGS.get(flag.lower())
            if canonical:
                out.add(canonical)
        elif _KEYWORD.fullmatch(flag):
            out.add(flag)
    return tuple(sorted(out))


def uid_fetch(
    client: imapclient.IMAPClient, uidset: str, items: str, modifiers: str | None = None, *,
    refused: dict[int, RefusedLiteral] | None = None, malformed: dict[int, str] | None = None,
) -> dict[int, dict]:
    """``UID FETCH uidset items [modifiers]`` keyed by UID.

    imaplib's raw command is used because IMAPClient cannot take ``1:*`` nor a
    compact set; unsolicited FETCH data without a UID is dropped.  A literal the
    wire refused (see :mod:`.wire`) is parsed as ``None`` and, with ``refused``,
    recorded there under its message's UID; one above the drain cap raises
    :class:`.wire.LiteralTooLarge` (the session is closed).  With ``malformed``, a
    response that cannot be parsed is left out and its UID recorded there with a
    reason (see :mod:`.fetchparse`); without it, the parse error is raised.
    """
    args = [uidset, items] + ([modifiers] if modifiers else [])
    try:
        typ, data = client._imap.uid("FETCH", *args)
    except imaplib.IMAP4.abort as exc:
        too_large = aborted_by_limit(client)
        if too_large is not None:
            raise too_large from exc
        raise
    if typ != "OK":
        raise imaplib.IMAP4.error(f"UID FETCH failed: {as_text((data or [b''])[0] or b'')}")
    records, refused_by_seq = strip_refused([d for d in data if d is not None])
    parsed = parse_fetch(records, client.normalise_times, malformed)
    out: dict[int, dict] = {}
    for seq, item in parsed.items():
        uid = item.get(b"UID")
        if isinstance(uid, int):
            out.setdefault(uid, {}).update(item)
            if refused is not None and seq in refused_by_seq:
                refused[uid] = refused_by_seq[seq]
    return out


def uid_search(client: imapclient.IMAPClient, criteria: str) -> set[int]:
    """UIDs of the selected folder matching ``criteria`` (raw IMAP search keys);
    ESEARCH keeps the reply compact (one line of ranges)."""
    imap = client._imap
    if client.has_capability("ESEARCH"):
        typ, data = imap.uid("SEARCH", "RETURN", "(ALL)", criteria)
        lines = imap.untagged_responses.pop("ESEARCH", [])
        if typ != "OK":
            raise imaplib.IMAP4.error(f"UID SEARCH failed: {data!r}")
        uids: set[int] = set()
        for line in lines:
            match = _ESEARCH_ALL.search(line if isinstance(line, bytes) else b"")
            if match:
                uids.update(parse_uid_set(match.group(1)))
        return uids
    typ, data = imap.uid("SEARCH", criteria)
    if typ != "OK":
        raise imaplib.IMAP4.error(f"UID SEARCH failed: {data!r}")
    return {int(x) for line in data if isinstance(line, bytes) for x in line.split() if x.isdigit()}


def uid_search_all(client: imapclient.IMAPClient) -> set[int]:
    """Every UID of the selected folder."""
    if client.has_capability("ESEARCH"):
        return uid_search(client, "ALL")
    return set(client.search(["ALL"]))


def mailbox_arg(name: str) -> bytes:
    """A decoded folder name as a quoted modified-UTF-7 IMAP string."""
    raw = imap_utf7.encode(name)
    return b'"' + raw.replace(b"\\", b"\\\\").replace(b'"', b'\\"') + b'"'


def append_message(
    client: imapclient.IMAPClient,
    mailbox: bytes,
    flags: Sequence[str],
    when: datetime | None,
    size: int,
    chunks: Iterable[bytes],
) -> int | None:
    """APPEND one message sent in chunks; returns its new UID (APPENDUID), or None when
    the server stored it without saying (no UIDPLUS: find it with ``reads.new_messages``).

    Written on imaplib's primitives (as IMAPClient's own literal code is) because
    imaplib's APPEND rewrites line endings and wants the whole message in memory.
    Raises :class:`AppendRefused` only when the server refused the message.
    """
    imap = client._imap
    literal_plus = client.has_capability("LITERAL+")
    tag = imap._new_tag()
    parts = [tag, b"APPEND", mailbox, b"(" + " ".join(flags).encode("ascii") + b")"]
    if when is not None:
        parts.append(b'"' + datetime_to_INTERNALDATE(when).encode("ascii") + b'"')
    head = b" ".join(parts) + (b" {%d+}\r\n" if literal_plus else b" {%d}\r\n") % size
    if not literal_plus:
        imap.send(head)
        head = b""
        while imap._get_response():  # None = the continuation request
            if imap.tagged_commands.get(tag):
                _typ, data = imap.tagged_commands.pop(tag)
                raise AppendRefused(as_text((data or [b""])[0] or b""))
    # One write per chunk, the command line glued to the first and CRLF to the last:
    # separate small writes cost a delayed-ACK wait per message on some stacks.
    parts_iter = iter(chunks)
    first = next(parts_iter, b"")
    pending = head + first
    sent = len(first)
    for chunk in parts_iter:
        imap.send(pending)
        pending = chunk
        sent += len(chunk)
    if sent != size:  # the literal is broken: the session cannot go on
        raise imaplib.IMAP4.abort(f"message size changed while sending ({sent} of {size} bytes)")
    imap.send(pending + b"\r\n")
    text = _append_reply(imap, tag)
    match = _APPENDUID.search(text)
    return int(match.group(2)) if match else None


def _append_reply(imap: imaplib.IMAP4, tag: bytes) -> bytes:
    """The tagged OK's text of an APPEND; :class:`AppendRefused` for NO or BAD
    (the session goes on), the abort of a broken session passed through."""
    try:
        typ, data = imap._command_complete("APPEND", tag)
    except imaplib.IMAP4.abort:
        raise
    except imaplib.IMAP4.error as exc:  # BAD
        raise AppendRefused(str(exc)) from exc
    finally:
        imap.untagged_responses.clear()
    text = (data or [b""])[0] or b""
    if typ != "OK":
        raise AppendRefused(as_text(text))
    return text


def can_append_many(client: imapclient.IMAPClient) -> bool:
    """MULTIAPPEND (RFC 3502) with non-synchronizing literals: a batch in one round trip."""
    return client.has_capability("MULTIAPPEND") and client.has_capability("LITERAL+")


def _append_item(flags: Sequence[str], when: datetime | None, body: bytes) -> bytes:
    item = b" (" + " ".join(flags).encode("ascii") + b")"
    if when is not None:
        item += b' "' + datetime_to_INTERNALDATE(when).encode("ascii") + b'"'
    return item + b" {%d+}\r\n" % len(body) + body


def append_many(client: imapclient.IMAPClient, mailbox: bytes,
                messages: Sequence[tuple[Sequence[str], datetime | None, bytes]]) -> list[int | None]:
    """One MULTIAPPEND of in-memory messages: their new UIDs, in order (None each
    when the server gave no APPENDUID for the batch).

    The server stores all of them or none (RFC 3502): :class:`AppendRefused`
    means none was stored, and the caller may retry them one by one to find the
    one it refuses.  Why: the destination server commits one transaction per
    command, so a batch costs it far less than as many APPENDs, and nothing
    waits for a reply between messages (see bench/README.md)."""
    imap = client._imap
    tag = imap._new_tag()
    imap.send(tag + b" APPEND " + mailbox)
    for flags, when, body in messages:
        imap.send(_append_item(flags, when, body))  # one write per message, no wait in between
    imap.send(b"\r\n")
    text = _append_reply(imap, tag)
    match = _APPENDUID_SET.search(text)
    uids = parse_uid_set(match.group(2)) if match else []
    return list(uids) if len(uids) == len(messages) else [None] * len(messages)


class ContentHasher:
    """sha256 over a message with every line ending made CRLF, fed in chunks.

    Equal to ``identity.content_hash`` of a CRLF message; a bare LF (Dovecot
    stores LF, other servers may hand out bare LFs) hashes as CRLF.
    """

    def __init__(self) -> None:
        self._hash = hashlib.sha256()
        self._cr_pending = False

    def update(self, data: bytes) -> None:
        if self._cr_pending:
            data = b"\r" + data
            self._cr_pending = False
        if data.endswith(b"\r"):
            data = data[:-1]
            self._cr_pending = True
        self._hash.update(data.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n"))

    def key(self) -> str:
        if self._cr_pending:
            self._hash.update(b"\r")
            self._cr_pending = False
        return "sha256:" + self._hash.hexdigest()


def content_key(data: bytes) -> str:
    """Identity of a message with neither Message-Id nor Received."""
    hasher = ContentHasher()
    hasher.update(data)
    return hasher.key()


def file_chunks(f: IO[bytes], size: int) -> Iterator[bytes]:
    while True:
        chunk = f.read(size)
        if not chunk:
            return
        yield chunk
