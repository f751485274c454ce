"""Batched message reads shared by the native engine, the imapsync engine's
post-steps and the bulk migrator (export, import, validate).

Every read is a ``UID FETCH`` over a compact UID set (hundreds of messages per
round trip) with ``BODY.PEEK`` (no ``\\Seen`` set); messages above
``LARGE_MESSAGE`` are read in partial FETCHes so memory stays bounded.
``count(what)``, when given, is called once per command sent (``fetch_meta``,
``fetch_body``, ``fetch_chunk``): the native engine shows what a run cost.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import imapclient

from .identity import HEADER_FETCH, header_from_fetch, header_signature, parse_fields
from .messages import ContentHasher, chunked, content_key, uid_fetch, uid_sets

LARGE_MESSAGE = 8 * 1024 * 1024
CHUNK_SIZE = 4 * 1024 * 1024
META_BATCH = 500
BODY_BATCH_MESSAGES = 50
BODY_BATCH_BYTES = 16 * 1024 * 1024


@dataclass
class Limits:
    """Size thresholds; tests lower them to exercise the chunked path on small mail."""

    large_message: int = LARGE_MESSAGE
    chunk_size: int = CHUNK_SIZE


@dataclass
class RemoteMessage:
    """One message on a server, as identified without downloading it (when it has headers)."""

    uid: int
    size: int
    signature: str | None
    message_id: str | None
    content_key: str | None = None

    @property
    def identity(self) -> str:
        return self.signature or self.content_key or ""


def message_id_of(header: bytes | None) -> str | None:
    """The Message-ID value (first one), unfolded, or None."""
    if not header:
        return None
    for name, value in parse_fields(header):
        if name.upper() == b"MESSAGE-ID":
            text = " ".join(value.decode("utf-8", "replace").split())
            return text or None
    return None


Count = Callable[[str], object]


def _nothing(_what: str) -> None:
    return None


def fetch_meta(client: imapclient.IMAPClient, uids: Sequence[int], items: str,
               count: Count = _nothing) -> dict[int, dict]:
    out: dict[int, dict] = {}
    for batch in chunked(sorted(uids), META_BATCH):
        for uidset in uid_sets(batch):
            count("fetch_meta")
            out.update(uid_fetch(client, uidset, items))
    return out


def body_batches(uids: Sequence[int], sizes: dict[int, int]) -> Iterator[list[int]]:
    batch: list[int] = []
    total = 0
    for uid in uids:
        if batch and (len(batch) >= BODY_BATCH_MESSAGES or total + sizes.get(uid, 0) > BODY_BATCH_BYTES):
            yield batch
            batch, total = [], 0
        batch.append(uid)
        total += sizes.get(uid, 0)
    if batch:
        yield batch


def fetch_bodies(client: imapclient.IMAPClient, uids: Sequence[int], count: Count = _nothing) -> dict[int, bytes]:
    out: dict[int, bytes] = {}
    for uidset in uid_sets(uids):
        count("fetch_body")
        for uid, item in uid_fetch(client, uidset, "(UID BODY.PEEK[])").items():
            body = item.get(b"BODY[]")
            if isinstance(body, bytes):
                out[uid] = body
    return out


def read_chunks(client: imapclient.IMAPClient, uid: int, sink: Callable[[bytes], object],
                chunk_size: int, count: Count = _nothing) -> bool:
    """Feed a message to ``sink`` by partial FETCHes; False if it vanished meanwhile."""
    offset = 0
    while True:
        count("fetch_chunk")
        got = uid_fetch(client, str(uid), f"(UID BODY.PEEK[]<{offset}.{chunk_size}>)").get(uid)
        if got is None:
            return False
        part = next((v for k, v in got.items() if isinstance(k, bytes) and k.startswith(b"BODY[")), b"")
        part = part or b""
        sink(part)
        offset += len(part)
        if len(part) < chunk_size:
            return True


def content_keys(client: imapclient.IMAPClient, sizes: dict[int, int], limits: Limits,
                 count: Count = _nothing) -> dict[int, str]:
    """CRLF-normalised content hashes, batched for small messages, chunked for large ones."""
    keys: dict[int, str] = {}
    small = [u for u, s in sorted(sizes.items()) if s <= limits.large_message]
    for batch in body_batches(small, sizes):
        for uid, body in fetch_bodies(client, batch, count).items():
            keys[uid] = content_key(body)
    for uid in sorted(u for u, s in sizes.items() if s > limits.large_message):
        hasher = ContentHasher()
        if read_chunks(client, uid, hasher.update, limits.chunk_size, count):
            keys[uid] = hasher.key()
    return keys


def identify(client: imapclient.IMAPClient, uids: Sequence[int], limits: Limits,
             all_content: bool = False) -> dict[int, RemoteMessage]:
    """Identity of messages in the selected folder: header signature and size from one
    batched FETCH; a content hash only for messages with neither header (or all with
    ``all_content``, a deep check that downloads everything)."""
    if not uids:
        return {}
    meta = fetch_meta(client, uids, f"(UID RFC822.SIZE {HEADER_FETCH.decode()})")
    out: dict[int, RemoteMessage] = {}
    need_content: dict[int, int] = {}
    for uid, item in meta.items():
        header = header_from_fetch(item)
        msg = RemoteMessage(
            uid=uid, size=int(item.get(b"RFC822.SIZE", 0)),
            signature=header_signature(header) if header is not None else None,
            message_id=message_id_of(header),
        )
        out[uid] = msg
        if all_content or not msg.signature:
            need_content[uid] = msg.size
    if need_content:
        for uid, key in content_keys(client, need_content, limits).items():
            out[uid].content_key = key
    return {u: m for u, m in out.items() if m.identity}
