"""Copying remote messages into one local folder, batch by batch.

Used by the native engine and by the imapsync engine's completion step, so
both read, bound, APPEND and account for a message the same way:

* small messages are fetched in batches (``reads.body_batches``), each
  literal bounded by the size the server announced; large ones are read in
  partial FETCHes into an unlinked spool file, bounded the same way, and
  APPENDed from it, so neither memory nor disk can be filled by a lying server;
* a copy gets the remote flags (the caller decides which) and INTERNALDATE;
* a message the server announced but did not deliver is looked for again
  (``reads.still_listed``): gone meanwhile is not an error, still there is --
  the message is named in ``errors`` and the caller must not record its folder
  as complete;
* a local server without UIDPLUS stores the message without telling its UID:
  the new UID is found afterwards by identity among the folder's new messages.
"""

from __future__ import annotations

import tempfile
import threading
from collections import defaultdict
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import imapclient

from ns8_imapsync.imap import reads
from ns8_imapsync.imap.identity import HEADER_FETCH, header_from_fetch, header_signature
from ns8_imapsync.imap.messages import AppendRefused, append_message, clean_flags, file_chunks, mailbox_arg

Count = Callable[[str], object]


@dataclass
class Source:
    """A remote message to copy: what its APPEND needs and how it is recognised."""

    uid: int
    flags: tuple[str, ...]
    size: int
    date: datetime | None
    key: str  # identity: header signature or content key


@dataclass
class Placed:
    """A message the local server accepted; ``uid`` None when it could not be found back."""

    msg: Source
    uid: int | None


@dataclass
class Outcome:
    """What one batch did: placed messages (``found_back``: those whose local UID
    was learnt only after the batch, by identity), and the remote UIDs confirmed gone."""

    placed: list[Placed] = field(default_factory=list)
    found_back: list[Placed] = field(default_factory=list)
    gone: list[int] = field(default_factory=list)


def _nothing(_what: str) -> None:
    return None


@dataclass
class Described:
    """The remote messages of a folder, described for placing."""

    sources: list[Source]  # size, date, flags and identity of each readable message
    errors: list[str]  # one line per message listed but not described, or unreadable
    gone: list[int]  # expunged meanwhile: neither placed nor owed


def undelivered(c1: imapclient.IMAPClient, folder: str, uids: Sequence[int]) -> tuple[list[str], list[int]]:
    """Of messages a reply left out: an error line for each one still in the
    folder (listed but not delivered), and the UIDs gone meanwhile."""
    if not uids:
        return [], []
    still = reads.still_listed(c1, uids)
    errors = [f"{folder}/{uid}: the remote server lists this message but did not deliver it"
              for uid in sorted(still)]
    return errors, sorted(set(uids) - still)


def describe_remote(c1: imapclient.IMAPClient, folder: str, uids: Sequence[int], limits: reads.Limits,
             flags: dict[int, tuple[str, ...]] | None = None, count: Count = _nothing) -> Described:
    """Size, INTERNALDATE, flags (from ``flags``, else fetched) and identity of
    remote messages of the selected folder, in batches; a content hash only for
    the messages with neither Message-Id nor Received."""
    items = f"(UID RFC822.SIZE INTERNALDATE {'' if flags is not None else 'FLAGS '}{HEADER_FETCH.decode()})"
    meta = reads.fetch_meta(c1, uids, items, count) if uids else {}
    sources: list[Source] = []
    keyless: dict[int, int] = {}
    for uid in uids:
        item = meta.get(uid)
        if item is None:
            continue
        header = header_from_fetch(item)
        msg_flags = flags.get(uid, ()) if flags is not None else clean_flags(item.get(b"FLAGS", ()))
        src = Source(uid, msg_flags, int(item.get(b"RFC822.SIZE", 0)), item.get(b"INTERNALDATE"),
                     (header_signature(header) if header is not None else None) or "")
        if not src.key:
            keyless[uid] = src.size
        sources.append(src)
    absent = [u for u in uids if u not in meta]
    refused: dict[int, str] = {}
    if keyless:
        keys = reads.content_keys(c1, keyless, limits, count, refused=refused)
        absent += [u for u in keyless if u not in keys and u not in refused]
        for src in sources:
            src.key = src.key or keys.get(src.uid, "")
    errors, gone = undelivered(c1, folder, absent)
    errors += [f"{folder}/{uid} ({keyless[uid]} bytes) could not be read: {refused[uid]}" for uid in sorted(refused)]
    return Described([s for s in sources if s.key], errors, gone)


class Copier:
    """Copies messages from the selected remote folder (``c1``) to a local folder
    (``c2``, selected by the caller so APPENDs go to an open mailbox)."""

    def __init__(self, c1: imapclient.IMAPClient, c2: imapclient.IMAPClient, limits: reads.Limits,
                 spool_dir: Path, *, count: Count = _nothing, stop: threading.Event | None = None,
                 on_chunk: Callable[[int], object] | None = None,
                 on_placed: Callable[[Placed], object] | None = None) -> None:
        self.c1, self.c2, self.limits, self.spool_dir = c1, c2, limits, spool_dir
        self.count = count
        self.stop = stop or threading.Event()
        self.on_chunk = on_chunk
        self.on_placed = on_placed  # called right after each acknowledged APPEND
        self.errors: list[str] = []

    def batches(self, folder: str, target: str, msgs: Sequence[Source],
                flags_of: Callable[[Source], Sequence[str]]) -> Iterator[Outcome]:
        """Copy ``msgs`` of remote ``folder`` into local ``target``, one Outcome per batch."""
        by_uid = {m.uid: m for m in msgs}
        sizes = {m.uid: m.size for m in msgs}
        mailbox = mailbox_arg(target)
        for batch in reads.body_batches([m.uid for m in msgs], sizes):
            if self.stop.is_set():
                return
            yield self._batch(folder, target, mailbox, [by_uid[u] for u in batch], flags_of)

    def _batch(self, folder: str, target: str, mailbox: bytes, batch: list[Source],
               flags_of: Callable[[Source], Sequence[str]]) -> Outcome:
        large = self.limits.large_message
        small = [m.uid for m in batch if m.size <= large]
        refused: dict[int, str] = {}
        bodies = reads.fetch_bodies(self.c1, small, self.count, sizes={m.uid: m.size for m in batch},
                                    refused=refused) if small else {}
        uidnext = self._uidnext(target)
        outcome, missing = Outcome(), []
        for msg in batch:
            if self.stop.is_set():
                break
            if msg.uid in refused:
                self._error(folder, msg, refused[msg.uid])
                continue
            try:
                uid = self._append(msg, mailbox, flags_of(msg), bodies.pop(msg.uid, None), msg.size <= large)
            except _Missing:
                missing.append(msg.uid)
                continue
            except (AppendRefused, reads.UnreadableMessage) as exc:
                self._error(folder, msg, str(exc))
                continue
            placed = Placed(msg, uid)
            outcome.placed.append(placed)
            if self.on_placed is not None:
                self.on_placed(placed)
        outcome.found_back = self._find_back(outcome.placed, uidnext)
        errors, outcome.gone = undelivered(self.c1, folder, missing)
        self.errors += errors
        return outcome

    def _append(self, msg: Source, mailbox: bytes, flags: Sequence[str], body: bytes | None,
                small: bool) -> int | None:
        if small:
            if body is None:
                raise _Missing()
            self.count("append")
            return append_message(self.c2, mailbox, list(flags), msg.date, len(body), [body])
        with tempfile.TemporaryFile(dir=self.spool_dir) as spool:
            def sink(data: bytes) -> None:
                spool.write(data)
                if self.on_chunk is not None:
                    self.on_chunk(len(data))
            if not reads.read_chunks(self.c1, msg.uid, sink, self.limits.chunk_size, self.count, size=msg.size):
                raise _Missing()
            size = spool.tell()
            spool.seek(0)
            self.count("append")
            self.count("append_streamed")
            return append_message(self.c2, mailbox, list(flags), msg.date, size,
                                  file_chunks(spool, self.limits.chunk_size))

    def _uidnext(self, target: str) -> int | None:
        """Without UIDPLUS, where this batch's copies will start (to find them back)."""
        if self.c2.has_capability("UIDPLUS"):
            return None
        return int(self.c2.folder_status(target, ["UIDNEXT"]).get(b"UIDNEXT", 0))

    def _find_back(self, placed: list[Placed], uidnext: int | None) -> list[Placed]:
        """Give each copy stored without an APPENDUID its new UID, matched by identity."""
        unknown = [p for p in placed if p.uid is None]
        if not unknown or uidnext is None:
            return []
        fresh = reads.new_messages(self.c2, uidnext - 1, self.limits)
        pool: dict[str, list[int]] = defaultdict(list)
        for uid in sorted(fresh):
            pool[fresh[uid].identity].append(uid)
        for p in unknown:
            if pool.get(p.msg.key):
                p.uid = pool[p.msg.key].pop(0)
        return [p for p in unknown if p.uid is not None]

    def _error(self, folder: str, msg: Source, reason: str) -> None:
        self.errors.append(f"{folder}/{msg.uid} ({msg.size} bytes) could not be copied: {reason}")


class _Missing(Exception):
    """The server sent nothing for a message it listed."""

