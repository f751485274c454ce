"""The benchmark corpus: deterministic, sized like real mailboxes, filled fast.

``localnode.corpus`` gives every message one or two attachments of up to
160 KB, so about a third of its messages are above 20 KB; real mailboxes (and the
figures measured earlier that the issue quotes) are about
90 % 2–20 KB, 8 % 20–200 KB and 2 % 200 KB–2 MB. This module keeps
corpus.py's pieces (folders with non-ASCII names and hierarchy, headers,
flags, dates, the message kinds that break migrations) and only chooses each
message's size: every message is rendered as a text part plus an attachment
that brings it to its drawn size.

The plan (folders, dates, sizes, flags, kinds) is computed without rendering
a byte, so a 100,000-message corpus never sits in memory: workers render and
MULTIAPPEND their share over several connections (filling is not timed, but
must not dominate a run).
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta

from localnode import corpus

SIZE_CLASSES = ((0.90, 2_000, 20_000), (0.98, 20_000, 200_000), (1.0, 200_000, 2_000_000))
DUPLICATE_SHARE = 500  # one exact duplicate per 500 messages (as measured earlier: 4 per 2,000)
APPEND_BATCH = 100
APPEND_BATCH_BYTES = 8 * 1024 * 1024


@dataclass(frozen=True)
class Render:
    """What decides a message's bytes (an exact duplicate shares its original's)."""

    index: int
    folder: str
    kind: str
    date: datetime
    message_id: str | None
    size: int


@dataclass(frozen=True)
class Planned:
    """One message of the plan: its bytes' recipe and its mailbox attributes."""

    index: int
    folder: str
    render: Render
    flags: tuple[str, ...]
    internaldate: datetime
    duplicate_of: int | None = None


def _size(rng: random.Random) -> int:
    """A size drawn log-uniformly inside a class picked by SIZE_CLASSES' shares."""
    pick = rng.random()
    for upto, low, high in SIZE_CLASSES:
        if pick < upto:
            return int(math.exp(rng.uniform(math.log(low), math.log(high))))
    raise AssertionError("unreachable")


def _folders(rng: random.Random, m: int) -> list[str]:
    """Weighted folder picks, every weighted folder holding at least one message."""
    names, weights = list(corpus.FOLDER_WEIGHTS), list(corpus.FOLDER_WEIGHTS.values())
    folders = rng.choices(names, weights, k=m)
    for pos, name in zip(rng.sample(range(m), k=min(m, len(names))), names, strict=False):
        folders[pos] = name
    return folders


def _kinds(rng: random.Random, m: int, folders: list[str]) -> list[str]:
    """One message without Message-ID nor Received (in INBOX), 2.5 % without
    Message-ID, 1 % reusing an earlier one; the rest carry their own."""
    kinds = [corpus.LARGE] * m
    inbox = [i for i in range(1, m) if folders[i] == "INBOX"] or list(range(1, m))
    special = rng.choice(inbox)
    folders[special] = "INBOX"
    kinds[special] = corpus.NO_MESSAGE_ID_NO_RECEIVED
    free = [i for i in range(1, m) if i != special]
    chosen = rng.sample(free, max(1, m // 40) + max(1, m // 100))
    split = max(1, m // 40)
    for i in chosen[:split]:
        kinds[i] = corpus.NO_MESSAGE_ID
    for i in chosen[split:]:
        kinds[i] = corpus.REUSED_MESSAGE_ID
    return kinds


def _message_ids(rng: random.Random, seed: int, kinds: list[str]) -> list[str | None]:
    """Own ids, none, or an earlier message's own id (linear: 100,000 messages plan fast)."""
    ids: list[str | None] = []
    owners: list[int] = []
    for i, kind in enumerate(kinds):
        if kind in (corpus.NO_MESSAGE_ID, corpus.NO_MESSAGE_ID_NO_RECEIVED):
            ids.append(None)
        elif kind == corpus.REUSED_MESSAGE_ID and owners:
            ids.append(ids[rng.choice(owners)])
        else:
            ids.append(f"<b{seed}.{i}.{rng.getrandbits(32):08x}@bench.example>")
            owners.append(i)
    return ids


def plan(seed: int, count: int) -> list[Planned]:
    """``count`` messages (exact duplicates included, at the end), deterministic in both."""
    if count < corpus.MIN_COUNT:
        raise ValueError(f"count must be >= {corpus.MIN_COUNT}")
    rng = random.Random(f"bench:{seed}:plan")
    n_dup = max(1, count // DUPLICATE_SHARE)
    m = count - n_dup
    folders = _folders(rng, m)
    span = (corpus.LAST_DATE - corpus.FIRST_DATE).total_seconds()
    dates = [corpus.FIRST_DATE + timedelta(seconds=int(span * (i + rng.random()) / m)) for i in range(m)]
    kinds = _kinds(rng, m, folders)
    ids = _message_ids(rng, seed, kinds)
    sizes = [_size(rng) for _ in range(m)]
    out = []
    for i in range(m):
        flags = corpus._flags_for(folders[i], random.Random(f"bench:{seed}:{i}:flags"))
        render = Render(i, folders[i], kinds[i], dates[i], ids[i], sizes[i])
        out.append(Planned(i, folders[i], render, corpus._sorted_flags(flags), dates[i]))
    for k, orig in enumerate(rng.sample(out, n_dup)):
        out.append(Planned(m + k, orig.folder, orig.render, orig.flags,
                           corpus.DUPLICATE_DATE + timedelta(seconds=61 * k), duplicate_of=orig.index))
    return out


def render(seed: int, r: Render) -> bytes:
    """The message's bytes: corpus.py's headers and text part, plus an attachment
    that brings it to about ``r.size`` bytes (a message already larger keeps its size)."""
    if r.kind == corpus.NO_MESSAGE_ID_NO_RECEIVED:  # corpus.py's own shape: only one such message
        return corpus._render(seed, r.index, r.folder, r.kind, r.date, None, 0)
    bare = corpus._render(seed, r.index, r.folder, corpus.LARGE, r.date, r.message_id, 0)
    extra = r.size - len(bare)
    raw = bare if extra <= 0 else corpus._render(seed, r.index, r.folder, corpus.LARGE, r.date,
                                                  r.message_id, extra)
    return raw.replace(b"kind=large", f"kind={r.kind}".encode(), 1)


def batches(seed: int, items: list[Planned]) -> Iterator[list[tuple[tuple[str, ...], datetime, bytes]]]:
    """MULTIAPPEND batches: at most APPEND_BATCH messages or APPEND_BATCH_BYTES each."""
    batch: list[tuple[tuple[str, ...], datetime, bytes]] = []
    size = 0
    for p in items:
        raw = render(seed, p.render)
        if batch and (len(batch) >= APPEND_BATCH or size + len(raw) > APPEND_BATCH_BYTES):
            yield batch
            batch, size = [], 0
        batch.append((p.flags, p.internaldate, raw))
        size += len(raw)
    if batch:
        yield batch
