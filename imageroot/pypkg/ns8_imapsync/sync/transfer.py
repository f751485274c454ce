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
  the new UID is found afterwards by identity among the folder's new messages;
* where the local server has MULTIAPPEND, a batch of small messages is one
  APPEND command (one round trip, one index update); a refused batch stored
  nothing (RFC 3502) and is retried message by message, so the culprit is named;
* the next batch is read from the remote server while this one is APPENDed
  (a thread of its own, holding ``remote_lock`` while it uses ``c1``): both
  servers work at once and at most two batches are held.  Every callback
  (counts, progress, placed) runs in the caller's thread.
"""

from __future__ import annotations

import os
import queue
import tempfile
import threading
from collections import defaultdict
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import IO

import imapclient

from ns8_imapsync.imap import reads
from ns8_imapsync.imap.identity import HEADER_FETCH, header_from_fetch, header_signature
from ns8_imapsync.imap.messages import (
    AppendRefused,
    append_many,
    append_message,
    can_append_many,
    clean_flags,
    file_chunks,
    mailbox_arg,
)

Count = Callable[[str], object]


@dataclass(slots=True)
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
    remote messages of the selected folder, in batches, in UID order; a content
    hash only for the messages with neither Message-Id nor Received.  A message
    whose reply does not parse is named in the errors."""
    items = f"(UID RFC822.SIZE INTERNALDATE {'' if flags is not None else 'FLAGS '}{HEADER_FETCH.decode()})"
    sources: list[Source] = []
    keyless: dict[int, int] = {}
    described: set[int] = set()
    broken: dict[int, str] = {}  # replies that did not parse
    wanted = set(uids)
    for meta in reads.meta_batches(c1, uids, items, count, refused=broken) if uids else ():
        for uid, item in meta.items():  # one batch's header blocks at a time, reduced to identities
            if uid not in wanted or uid in described:
                continue  # unsolicited data about another message
            described.add(uid)
            header = header_from_fetch(item)
            msg_flags = flags.get(uid, ()) if flags is not None else clean_flags(item.get(b"FLAGS", ()))
            src = Source(uid, msg_flags, int(item.get(b"RFC822.SIZE", 0)), item.get(b"INTERNALDATE"),
                         (header_signature(header) if header is not None else None) or "")
            if not src.key:
                keyless[uid] = src.size
            sources.append(src)
    sources.sort(key=lambda s: s.uid)
    absent = [u for u in uids if u not in described and u not in broken]
    refused: dict[int, str] = dict(broken)
    if keyless:
        keys = reads.content_keys(c1, keyless, limits, count, refused=refused)
        absent += [u for u in keyless if u not in keys and u not in refused]
        for src in sources:
            src.key = src.key or keys.get(src.uid, "")
    errors, gone = undelivered(c1, folder, absent)
    errors += [f"{folder}/{uid}{f' ({keyless[uid]} bytes)' if uid in keyless else ''} could not be read: "
               f"{refused[uid]}" for uid in sorted(refused)]
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
        self.remote_lock = threading.Lock()  # held by the reading thread while it uses c1
        self._caller: threading.Thread | None = None

    def batches(self, folder: str, target: str, msgs: Sequence[Source],
                flags_of: Callable[[Source], Sequence[str]]) -> Iterator[Outcome]:
        """Copy ``msgs`` of remote ``folder`` into local ``target``, one Outcome per batch.

        The next batch is read from the remote server while this one is
        APPENDed; a caller using ``c1`` between two batches holds ``remote_lock``."""
        by_uid = {m.uid: m for m in msgs}
        sizes = {m.uid: m.size for m in msgs}
        mailbox = mailbox_arg(target)
        work = [[by_uid[u] for u in b] for b in reads.body_batches([m.uid for m in msgs], sizes)]
        self._caller = threading.current_thread()
        for fetched in _prefetched(work, lambda batch: self._fetch(folder, batch), self.stop):
            try:
                fetched.replay(self.count, self.on_chunk)
                outcome = self._deliver(folder, target, mailbox, fetched, flags_of)
            finally:
                fetched.close()
            yield outcome

    def _fetch(self, folder: str, batch: list[Source]) -> Fetched:
        fetched = Fetched(batch)
        if threading.current_thread() is not self._caller:  # counts and progress wait for the caller
            fetched.count, fetched.on_chunk = fetched.counts.append, fetched.streamed.append
        else:
            fetched.count, fetched.on_chunk = self.count, self.on_chunk
        with self.remote_lock:
            self._read(folder, fetched)
        return fetched

    def _read(self, folder: str, fetched: Fetched) -> None:
        """The remote side of a batch: small bodies in one FETCH, large ones spooled
        to unlinked files in partial FETCHes; what is missing sorted out."""
        large = self.limits.large_message
        batch = fetched.batch
        small = [m for m in batch if m.size <= large]
        refused: dict[int, str] = {}
        bodies = reads.fetch_bodies(self.c1, [m.uid for m in small], fetched.count,
                                    sizes={m.uid: m.size for m in batch}, refused=refused) if small else {}
        missing = []
        for msg in small:
            if msg.uid in refused:
                fetched.errors.append(self._line(folder, msg, refused[msg.uid]))
            elif msg.uid in bodies:
                fetched.bodies[msg.uid] = bodies.pop(msg.uid)
            else:
                missing.append(msg.uid)
        for msg in (m for m in batch if m.size > large):
            if self.stop.is_set():
                break
            try:
                spool = self._spool(msg, fetched)
            except reads.UnreadableMessage as exc:
                fetched.errors.append(self._line(folder, msg, str(exc)))
                continue
            if spool is None:
                missing.append(msg.uid)
            else:
                fetched.spools[msg.uid] = spool
        errors, fetched.gone = undelivered(self.c1, folder, missing)
        fetched.errors += errors

    def _spool(self, msg: Source, fetched: Fetched) -> IO[bytes] | None:
        """A large message in an unlinked temporary file (None: gone meanwhile)."""
        spool = tempfile.TemporaryFile(dir=self.spool_dir)

        def sink(data: bytes) -> None:
            spool.write(data)
            if fetched.on_chunk is not None:
                fetched.on_chunk(len(data))
        try:
            if reads.read_chunks(self.c1, msg.uid, sink, self.limits.chunk_size, fetched.count, size=msg.size):
                spool.seek(0)
                return spool
        except BaseException:
            spool.close()
            raise
        spool.close()
        return None

    def _deliver(self, folder: str, target: str, mailbox: bytes, fetched: Fetched,
                 flags_of: Callable[[Source], Sequence[str]]) -> Outcome:
        """The local side of a batch: one MULTIAPPEND for the small messages where
        the server can, the large ones streamed one by one."""
        uidnext = self._uidnext(target)
        outcome = Outcome(gone=fetched.gone)
        self.errors += fetched.errors
        ready = [(m, fetched.bodies[m.uid]) for m in fetched.batch if m.uid in fetched.bodies]
        if ready and not self.stop.is_set():
            self._append_small(folder, mailbox, ready, flags_of, outcome)
        for msg in (m for m in fetched.batch if m.uid in fetched.spools):
            if self.stop.is_set():
                break
            spool = fetched.spools[msg.uid]
            size = os.fstat(spool.fileno()).st_size
            self.count("append")
            self.count("append_streamed")
            try:
                uid = append_message(self.c2, mailbox, list(flags_of(msg)), msg.date, size,
                                     file_chunks(spool, self.limits.chunk_size))
            except AppendRefused as exc:
                self._error(folder, msg, str(exc))
                continue
            self._placed(outcome, msg, uid)
        outcome.found_back = self._find_back(outcome.placed, uidnext)
        return outcome

    def _append_small(self, folder: str, mailbox: bytes, ready: list[tuple[Source, bytes]],
                      flags_of: Callable[[Source], Sequence[str]], outcome: Outcome) -> None:
        """One MULTIAPPEND for the batch; one APPEND each when the server cannot,
        or refuses the batch (nothing of it was stored: the culprit is found and named)."""
        if len(ready) > 1 and can_append_many(self.c2):
            self.count("append")
            self.count("append_batched")
            try:
                uids = append_many(self.c2, mailbox, [(list(flags_of(m)), m.date, body) for m, body in ready])
            except AppendRefused:
                pass
            else:
                for (msg, _body), uid in zip(ready, uids, strict=True):
                    self._placed(outcome, msg, uid)
                return
        for msg, body in ready:
            try:
                self._placed(outcome, msg, self._append_one(msg, mailbox, flags_of(msg), body))
            except AppendRefused as exc:
                self._error(folder, msg, str(exc))

    def _placed(self, outcome: Outcome, msg: Source, uid: int | None) -> None:
        placed = Placed(msg, uid)
        outcome.placed.append(placed)
        if self.on_placed is not None:
            self.on_placed(placed)

    def _append_one(self, msg: Source, mailbox: bytes, flags: Sequence[str], body: bytes) -> int | None:
        self.count("append")
        return append_message(self.c2, mailbox, list(flags), msg.date, len(body), [body])

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

    @staticmethod
    def _line(folder: str, msg: Source, reason: str) -> str:
        return f"{folder}/{msg.uid} ({msg.size} bytes) could not be copied: {reason}"

    def _error(self, folder: str, msg: Source, reason: str) -> None:
        self.errors.append(self._line(folder, msg, reason))


@dataclass
class Fetched:
    """One batch read from the remote server, waiting to be APPENDed."""

    batch: list[Source]
    bodies: dict[int, bytes] = field(default_factory=dict)  # small messages, in memory
    spools: dict[int, IO[bytes]] = field(default_factory=dict)  # large ones, in unlinked files
    errors: list[str] = field(default_factory=list)  # refused, unreadable, listed but not delivered
    gone: list[int] = field(default_factory=list)  # expunged meanwhile
    counts: list[str] = field(default_factory=list)  # read in the background: counted on delivery
    streamed: list[int] = field(default_factory=list)  # likewise, the progress inside large messages
    count: Count = _nothing
    on_chunk: Callable[[int], object] | None = None

    def replay(self, count: Count, on_chunk: Callable[[int], object] | None) -> None:
        """Hand what the reading thread counted to the caller's callbacks, in its thread."""
        for what in self.counts:
            count(what)
        if on_chunk is not None and self.streamed:
            on_chunk(sum(self.streamed))
        self.counts.clear()
        self.streamed.clear()

    def close(self) -> None:
        for spool in self.spools.values():
            spool.close()
        self.spools.clear()
        self.bodies.clear()


_END = object()


def _prefetched(work: list[list[Source]], fetch: Callable[[list[Source]], Fetched],
                stop: threading.Event) -> Iterator[Fetched]:
    """``fetch(batch)`` of every batch, one batch ahead in a thread of its own.

    The thread stops when the consumer does; an exception of the fetch is
    raised in the consumer, where the run handles it as its own."""
    if len(work) < 2:  # nothing to overlap
        for batch in work:
            if stop.is_set():
                return
            yield fetch(batch)
        return
    ready: queue.Queue = queue.Queue(maxsize=1)
    abandon = threading.Event()
    thread = threading.Thread(target=_produce, args=(work, fetch, stop, ready, abandon), name="prefetch",
                              daemon=True)
    thread.start()
    try:
        while (item := ready.get()) is not _END:
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        abandon.set()
        while not ready.empty():
            leftover = ready.get_nowait()
            if isinstance(leftover, Fetched):
                leftover.close()
        thread.join()  # c1 is the caller's again only once the thread is done with it


def _produce(work: list[list[Source]], fetch: Callable[[list[Source]], Fetched], stop: threading.Event,
             ready: queue.Queue, abandon: threading.Event) -> None:
    def put(item: object) -> bool:
        while not abandon.is_set():
            try:
                ready.put(item, timeout=0.2)
                return True
            except queue.Full:
                continue
        if isinstance(item, Fetched):
            item.close()
        return False

    try:
        for batch in work:
            if stop.is_set() or not put(fetch(batch)):
                break
    except BaseException as exc:  # noqa: BLE001 - handed to the consumer, which raises it
        put(exc)
    finally:
        put(_END)
