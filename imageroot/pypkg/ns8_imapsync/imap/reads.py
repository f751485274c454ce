"""Batched message reads shared by the native engine, the imapsync engine's
post-steps and the bulk migrator (export, import, validate).

Every read is a ``UID FETCH`` over a compact UID set (hundreds of messages per
round trip) with ``BODY.PEEK`` (no ``\\Seen`` set); messages above
``LARGE_MESSAGE`` are read in partial FETCHes so memory stays bounded.
``count(what)``, when given, is called once per command sent (``fetch_meta``,
``fetch_body``, ``fetch_chunk``): the native engine shows what a run cost.

A server is not trusted to send what it announced.  Given the sizes it
announced (RFC822.SIZE), every read is bounded by :func:`size_bound` (the size
plus a margin for servers whose RFC822.SIZE is an estimate, such as
Exchange): a literal above the bound is drained by :mod:`.wire`, never held
in memory, and the message is *refused* (left out, with a one-line reason)
while the rest of the batch is returned.  A partial read must echo the
offset asked (``BODY[]<offset>``) and be no longer than asked, and a message
read in chunks stops with :class:`UnreadableMessage` at the bound: a server
that ignores partial ranges cannot fill a spool for ever.  Nothing beyond
the bound is ever passed to a caller's sink.

A folder listing (``UID FETCH 1:* (UID FLAGS)``) is checked against the
folder's EXISTS and, when they differ, against ``UID SEARCH ALL``: a listing
that misses messages the server has is *incomplete*, and a caller must not
delete anything in that folder on the strength of it.  :func:`still_listed`
tells "expunged meanwhile" from "listed but not delivered".
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field

import imapclient

from . import wire
from .identity import HEADER_FETCH, header_from_fetch, header_signature, parse_fields
from .messages import (
    ContentHasher,
    chunked,
    clean_flags,
    content_key,
    parse_uid_set,
    uid_fetch,
    uid_search,
    uid_search_all,
    uid_sets,
)

LARGE_MESSAGE = 8 * 1024 * 1024
CHUNK_SIZE = 4 * 1024 * 1024
META_BATCH = 500
BODY_BATCH_MESSAGES = 50
BODY_BATCH_BYTES = 16 * 1024 * 1024
MARGIN_MIN = 64 * 1024  # bytes a message may exceed its RFC822.SIZE by, at least ...
MARGIN_PERCENT = 10  # ... or this share of it, whichever is more
HEADER_LIMIT = 1024 * 1024  # a Message-Id/Received header block above this is not a header
SEARCH_BATCH = 10_000  # UIDs per UID SEARCH UID <set> (keeps a plain SEARCH reply line short)
_PARTIAL_KEY = re.compile(rb"^BODY\[\](?:<(\d+)>)?$", re.I)


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


@dataclass
class Listing:
    """A folder's messages and flags, and whether the server listed all it has.

    ``missing``: UIDs the server has (``UID SEARCH ALL``) whose entry (UID and
    FLAGS) did not come, even when asked again; ``complete`` is False then, and
    nothing may be deleted in the folder on the strength of this listing.
    ``malformed``: those of them whose entry came but could not be parsed, with
    the reason (a caller names them: they are the messages it cannot copy).
    """

    flags: dict[int, tuple[str, ...]]
    complete: bool = True
    missing: set[int] = field(default_factory=set)
    malformed: dict[int, str] = field(default_factory=dict)

    def unlisted(self) -> str:
        """The unparseable entries by UID (a few) and why, for an error line; "" without any."""
        if not self.malformed:
            return ""
        uids = sorted(self.malformed)
        shown = ", ".join(map(str, uids[:5])) + (f" and {len(uids) - 5} more" if len(uids) > 5 else "")
        return f"; message UID {shown}: {self.malformed[uids[0]]}"


class UnreadableMessage(Exception):
    """The server sent something other than the message it announced (a longer chunk
    than asked, no or another origin, more than its RFC822.SIZE allows). The bytes
    were drained or dropped, so the session can go on with the next message."""

    def __init__(self, uid: int, reason: str) -> None:
        super().__init__(f"message UID {uid}: {reason}")
        self.uid = uid
        self.reason = reason


def size_bound(announced: int) -> int:
    """The most bytes accepted for a message announced with ``announced`` bytes."""
    return max(0, announced) + max(MARGIN_MIN, announced * MARGIN_PERCENT // 100)


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
OnChunk = Callable[[int], object]


def _nothing(_what: str) -> None:
    return None


def _oversize(announced: int, sent: int) -> str:
    return (f"the server announced {announced} bytes (RFC822.SIZE) but sent {sent} bytes "
            f"(more than the {size_bound(announced)} accepted); not read")


def fetch_meta(client: imapclient.IMAPClient, uids: Sequence[int], items: str,
               count: Count = _nothing, *, literal_max: int | None = None,
               refused: dict[int, str] | None = None) -> dict[int, dict]:
    """FETCH ``items`` in batches (see :func:`meta_batches`), merged."""
    out: dict[int, dict] = {}
    for got in meta_batches(client, uids, items, count, literal_max=literal_max, refused=refused):
        out.update(got)
    return out


def meta_batches(client: imapclient.IMAPClient, uids: Sequence[int], items: str,
                 count: Count = _nothing, *, literal_max: int | None = None,
                 refused: dict[int, str] | None = None) -> Iterator[dict[int, dict]]:
    """FETCH ``items`` batch by batch, a batch's replies at a time: a caller that
    keeps only a little of each (an identity, not the header block it came
    from) holds one batch of raw replies, not a folder's.  With ``literal_max``,
    a message whose reply carries a longer literal (a header block, say) is left
    out and put in ``refused``; so is, with ``refused``, a message whose
    response cannot be parsed."""
    for batch in chunked(sorted(uids), META_BATCH):
        for uidset in uid_sets(batch):
            count("fetch_meta")
            malformed = refused  # unparseable replies: refused with the rest, or (None) raised
            if literal_max is None:
                yield uid_fetch(client, uidset, items, malformed=malformed)
                continue
            drained: dict[int, wire.RefusedLiteral] = {}
            with wire.literal_limit(client, literal_max):
                got = uid_fetch(client, uidset, items, refused=drained, malformed=malformed)
            for uid, lit in drained.items():
                got.pop(uid, None)
                if refused is not None:
                    refused[uid] = f"the server sent a {lit.size}-byte literal where at most {literal_max} were expected"
            yield got


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


def fetch_bodies(client: imapclient.IMAPClient, uids: Sequence[int], count: Count = _nothing, *,
                 sizes: dict[int, int] | None = None,
                 refused: dict[int, str] | None = None) -> dict[int, bytes]:
    """Whole bodies of (small) messages, in memory.

    With ``sizes`` (the announced RFC822.SIZE of each UID), each literal is limited
    to :func:`size_bound` of its size; a message above it, or sent empty although
    announced with bytes, or without a known size, is left out and described in
    ``refused``.  A message simply missing from the reply is left out too: ask
    :func:`still_listed` whether it was expunged meanwhile.
    """
    if sizes is None:
        out: dict[int, bytes] = {}
        for uidset in uid_sets(uids):
            count("fetch_body")
            for uid, item in uid_fetch(client, uidset, "(UID BODY.PEEK[])").items():
                body = item.get(b"BODY[]")
                if isinstance(body, bytes):
                    out[uid] = body
        return out
    refused = refused if refused is not None else {}
    for uid in uids:
        if uid not in sizes:
            refused[uid] = "the server announced no size (RFC822.SIZE) for it; not read"
    known = [u for u in uids if u in sizes]
    out = {}
    for uidset in uid_sets(known):
        count("fetch_body")
        out.update(_bounded_bodies(client, uidset, sizes, refused))
    return out


def _bounded_bodies(client: imapclient.IMAPClient, uidset: str, sizes: dict[int, int],
                    refused: dict[int, str]) -> dict[int, bytes]:
    bounds = {u: size_bound(sizes[u]) for u in parse_uid_set(uidset.encode())}
    drained: dict[int, wire.RefusedLiteral] = {}
    malformed: dict[int, str] = {}
    with wire.literal_limit(client, max(bounds.values()), per_uid=bounds):
        items = uid_fetch(client, uidset, "(UID BODY.PEEK[])", refused=drained, malformed=malformed)
    refused.update({u: r for u, r in malformed.items() if u in bounds})
    out: dict[int, bytes] = {}
    for uid, item in items.items():
        if uid not in bounds:
            continue  # unsolicited data about another message
        body = item.get(b"BODY[]")
        if uid in drained:
            refused[uid] = _oversize(sizes[uid], drained[uid].size)
        elif not isinstance(body, bytes):
            continue
        elif len(body) > bounds[uid]:
            refused[uid] = _oversize(sizes[uid], len(body))
        elif not body and sizes[uid] > 0:
            refused[uid] = f"the server announced {sizes[uid]} bytes (RFC822.SIZE) but sent an empty body"
        else:
            out[uid] = body
    return out


def read_chunks(client: imapclient.IMAPClient, uid: int, sink: Callable[[bytes], object],
                chunk_size: int, count: Count = _nothing, *, size: int | None = None,
                on_chunk: OnChunk | None = None) -> bool:
    """Feed a message to ``sink`` by partial FETCHes; False if it vanished meanwhile
    (no FETCH data for it).

    Each chunk must start where asked and be at most ``chunk_size`` long (a longer
    literal is drained, not read); with ``size`` (its RFC822.SIZE) no more than
    :func:`size_bound` of it is ever passed to ``sink``.  Anything else raises
    :class:`UnreadableMessage`; the session stays usable.  ``on_chunk(n)`` is
    called after each chunk (progress inside a large message).
    """
    bound = size_bound(size) if size is not None else None
    offset = 0
    while True:
        count("fetch_chunk")
        part = _read_chunk(client, uid, offset, chunk_size)
        if part is None:
            return False
        if bound is not None and offset + len(part) > bound:
            raise UnreadableMessage(uid, f"the server announced {size} bytes (RFC822.SIZE) but kept sending: "
                                         f"{offset + len(part)} bytes, more than the {bound} accepted; not read further")
        if bound is not None and offset == 0 and not part and size:
            raise UnreadableMessage(uid, f"the server announced {size} bytes (RFC822.SIZE) but sent an empty body")
        sink(part)
        if on_chunk is not None:
            on_chunk(len(part))
        offset += len(part)
        if len(part) < chunk_size:
            return True


def _read_chunk(client: imapclient.IMAPClient, uid: int, offset: int, chunk_size: int) -> bytes | None:
    """``BODY[]<offset.chunk_size>`` of one message, checked; None if the message is gone."""
    drained: dict[int, wire.RefusedLiteral] = {}
    malformed: dict[int, str] = {}
    with wire.literal_limit(client, chunk_size):
        got = uid_fetch(client, str(uid), f"(UID BODY.PEEK[]<{offset}.{chunk_size}>)", refused=drained,
                        malformed=malformed).get(uid)
    if uid in malformed:
        raise UnreadableMessage(uid, malformed[uid])
    if got is None:
        return None
    if uid in drained:
        raise UnreadableMessage(uid, f"asked for {chunk_size} bytes at offset {offset}, the server sent "
                                     f"{drained[uid].size} (does it ignore partial ranges?); not read")
    found = [(m, v) for k, v in got.items() if isinstance(k, bytes) and (m := _PARTIAL_KEY.match(k))]
    if not found:
        raise UnreadableMessage(uid, f"the server's reply to a partial read at offset {offset} has no BODY[] data")
    match, part = found[0]
    if match.group(1) is None:
        raise UnreadableMessage(uid, f"the server answered a partial read at offset {offset} with the whole "
                                     "BODY[] (no origin): it ignores partial ranges")
    if int(match.group(1)) != offset:
        raise UnreadableMessage(uid, f"asked for data at offset {offset}, the server sent data from "
                                     f"offset {int(match.group(1))}")
    part = part or b""
    if len(part) > chunk_size:
        raise UnreadableMessage(uid, f"asked for {chunk_size} bytes at offset {offset}, the server sent {len(part)}")
    return part


def content_keys(client: imapclient.IMAPClient, sizes: dict[int, int], limits: Limits,
                 count: Count = _nothing, *, refused: dict[int, str] | None = None) -> dict[int, str]:
    """CRLF-normalised content hashes, batched for small messages, chunked for large ones;
    messages that cannot be read within their announced size are left out (``refused``)."""
    refused = refused if refused is not None else {}
    keys: dict[int, str] = {}
    small = [u for u, s in sorted(sizes.items()) if s <= limits.large_message]
    for batch in body_batches(small, sizes):
        for uid, body in fetch_bodies(client, batch, count, sizes=sizes, refused=refused).items():
            keys[uid] = content_key(body)
    for uid in sorted(u for u, s in sizes.items() if s > limits.large_message):
        hasher = ContentHasher()
        try:
            if read_chunks(client, uid, hasher.update, limits.chunk_size, count, size=sizes[uid]):
                keys[uid] = hasher.key()
        except UnreadableMessage as exc:
            refused[uid] = exc.reason
    return keys


def identify(client: imapclient.IMAPClient, uids: Sequence[int], limits: Limits,
             all_content: bool = False, *, refused: dict[int, str] | None = None) -> dict[int, RemoteMessage]:
    """Identity of messages in the selected folder: header signature and size from one
    batched FETCH; a content hash only for messages with neither header (or all with
    ``all_content``, a deep check that downloads everything).  Messages the server
    does not deliver within their announced size are left out and put in ``refused``."""
    if not uids:
        return {}
    bad: dict[int, str] = {}
    meta = fetch_meta(client, uids, f"(UID RFC822.SIZE {HEADER_FETCH.decode()})",
                      literal_max=HEADER_LIMIT, refused=bad)
    out: dict[int, RemoteMessage] = {}
    need_content: dict[int, int] = {}
    for uid, item in meta.items():
        header = header_from_fetch(item)
        msg = RemoteMessage(
            uid=uid, size=int(item.get(b"RFC822.SIZE", 0)),
            signature=header_signature(header) if header is not None else None,
            message_id=message_id_of(header),
        )
        if header is not None and len(header) > size_bound(msg.size):
            bad[uid] = _oversize(msg.size, len(header)) + " (in its header alone)"
            continue
        out[uid] = msg
        if all_content or not msg.signature:
            need_content[uid] = msg.size
    if need_content:
        for uid, key in content_keys(client, need_content, limits, refused=bad).items():
            out[uid].content_key = key
    if refused is not None:
        refused.update(bad)
    return {u: m for u, m in out.items() if m.identity and u not in bad}


def still_listed(client: imapclient.IMAPClient, uids: Sequence[int] | set[int]) -> set[int]:
    """Which of ``uids`` the selected folder has right now (``UID SEARCH UID <set>``):
    a message missing from a reply but still listed was not delivered, not expunged."""
    wanted = set(uids)
    found: set[int] = set()
    for batch in chunked(sorted(wanted), SEARCH_BATCH):
        for uidset in uid_sets(batch):
            found |= uid_search(client, f"UID {uidset}")
    return found & wanted  # "UID n:m" may answer with the folder's highest UID, even outside


def folder_listing(client: imapclient.IMAPClient, exists: int) -> Listing:
    """UIDs and cleaned flags of the selected folder, checked against its EXISTS.

    When the number of entries differs from ``exists`` (or an entry has no FLAGS),
    ``UID SEARCH ALL`` says which UIDs the server has; those not listed are asked
    for once more (mail delivered meanwhile is then listed) and, still missing,
    make the listing incomplete.
    """
    malformed: dict[int, str] = {}
    items = uid_fetch(client, "1:*", "(UID FLAGS)", malformed=malformed) if exists else {}
    flags = {uid: clean_flags(item[b"FLAGS"]) for uid, item in items.items() if b"FLAGS" in item}
    missing = set(items) - set(flags)
    if len(items) == exists and not missing and not malformed:
        return Listing(flags)
    missing |= uid_search_all(client) - set(items)
    malformed.clear()  # asked again below: only those still unparseable count
    for uidset in uid_sets(missing):
        for uid, item in uid_fetch(client, uidset, "(UID FLAGS)", malformed=malformed).items():
            if uid in missing and b"FLAGS" in item:
                flags[uid] = clean_flags(item[b"FLAGS"])
                missing.discard(uid)
    return Listing(flags, not missing, missing, {u: r for u, r in malformed.items() if u in missing})


def changes_since(client: imapclient.IMAPClient, modseq: int) -> tuple[dict[int, tuple[str, ...]], set[int]] | None:
    """QRESYNC (enabled on the session): flags of the selected folder's messages
    changed or added since ``modseq``, and the UIDs expunged since then; None
    when a changed message came without its FLAGS.  Why: a re-run over a large
    folder where a few messages changed costs those few, not a listing of all."""
    imap = client._imap
    imap.untagged_responses.pop("VANISHED", None)  # left by earlier commands (EXPUNGE replies)
    malformed: dict[int, str] = {}
    items = uid_fetch(client, "1:*", "(UID FLAGS)", f"(CHANGEDSINCE {modseq} VANISHED)", malformed=malformed)
    if malformed:
        return None  # a full listing names them
    vanished: set[int] = set()
    for line in imap.untagged_responses.pop("VANISHED", []):
        text = bytes(line).strip()
        if text.upper().startswith(b"(EARLIER)"):
            vanished.update(parse_uid_set(text[len(b"(EARLIER)"):].strip()))
    if any(b"FLAGS" not in item for item in items.values()):
        return None
    return {uid: clean_flags(item[b"FLAGS"]) for uid, item in items.items()}, vanished


def new_messages(client: imapclient.IMAPClient, above_uid: int, limits: Limits, *,
                 refused: dict[int, str] | None = None) -> dict[int, RemoteMessage]:
    """Identities of the selected folder's messages with a UID above ``above_uid``:
    how to find what an APPEND stored on a server without UIDPLUS (take the
    highest UID before appending)."""
    uids = {u for u in uid_search(client, f"UID {above_uid + 1}:*") if u > above_uid}
    return identify(client, sorted(uids), limits, refused=refused)
