"""Which local messages are copies of which remote ones, and which only look so.

The completion step (see :mod:`.completion`) matches remote messages with local
ones by identity -- the header signature imapsync also uses.  An identity is
not the message: imapsync, after a connection dropped mid-FETCH, reconnects
and appends the partial literal glued to the whole message; a lying server's
message arrives with megabytes it never announced.  Both copies carry the
right headers.  Why this module: a local copy whose RFC822.SIZE equals the
remote's is taken as it is (the cheap, common case); one whose size differs
is compared by content (the CRLF-normalised hash, both sides read within
their announced sizes), so a server that reports estimated sizes costs reads,
never a wrong verdict.  A copy whose content differs is *damaged*: the remote
message is copied again, and the damaged copy is removed only once the new
copy is on the local server -- or at once when it is larger than anything the
remote server announced for that message (it cannot be that message).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field

import imapclient

from ns8_imapsync.imap import reads
from ns8_imapsync.sync.transfer import Source


@dataclass(frozen=True)
class LocalCopy:
    """One local message as the completion step sees it."""

    uid: int
    size: int
    key: tuple  # (identity, INTERNALDATE stamp or None)


@dataclass
class Matching:
    """Remote messages with no local counterpart (``missing``) and pairs whose sizes differ (``suspects``)."""

    missing: list[Source] = field(default_factory=list)
    suspects: list[tuple[Source, LocalCopy]] = field(default_factory=list)


@dataclass
class Damaged:
    """A local copy whose content is not its remote message's (or the remote message
    could not be read within its announced size to tell)."""

    source: Source
    copy: LocalCopy

    @property
    def impossible(self) -> bool:
        """Larger than the remote server allows that message to be: it cannot be a copy of it.
        A remote that announces 0 bytes knows no size: nothing is impossible then."""
        return self.source.size > 0 and self.copy.size > reads.size_bound(self.source.size)


def match(sources: Sequence[Source], copies: Sequence[LocalCopy], key_of) -> Matching:
    """Pair every remote message with a local copy of its identity, as a multiset,
    preferring copies of the same size; ``key_of(source)`` gives its copy key."""
    pool: dict[tuple, list[LocalCopy]] = defaultdict(list)
    for copy in sorted(copies, key=lambda c: c.uid):
        pool[copy.key].append(copy)
    out = Matching()
    unsized: list[Source] = []
    for src in sorted(sources, key=lambda s: s.uid):
        same = pool.get(key_of(src), [])
        exact = next((c for c in same if c.size == src.size), None)
        if exact is not None:
            same.remove(exact)
        else:
            unsized.append(src)
    for src in unsized:  # after every exact pair is taken: a twin's copy is not a suspect
        same = pool.get(key_of(src), [])
        if same:
            out.suspects.append((src, same.pop(0)))
        else:
            out.missing.append(src)
    return out


def damaged(c1: imapclient.IMAPClient, c2: imapclient.IMAPClient, suspects: Sequence[tuple[Source, LocalCopy]],
            limits: reads.Limits) -> list[Damaged]:
    """The suspects whose contents differ (remote folder selected on ``c1``, local on ``c2``)."""
    if not suspects:
        return []
    remote = reads.content_keys(c1, {s.uid: s.size for s, _ in suspects}, limits)
    local = reads.content_keys(c2, {c.uid: c.size for _, c in suspects}, limits)
    out = []
    for src, copy in suspects:
        if src.uid not in remote or remote[src.uid] != local.get(copy.uid):
            out.append(Damaged(src, copy))
    return out
