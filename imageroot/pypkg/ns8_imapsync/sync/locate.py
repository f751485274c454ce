"""Where the local copies of remote messages are, right now.

A remote original may be deleted only while a copy of it is proven to exist
on the local server (``deletion``).  "Proven" means: a local message, not
marked ``\\Deleted``, whose identity (imapsync's header signature, or the
content hash of a message with neither Message-Id nor Received) and
RFC822.SIZE equal the remote message's, found by reading the local server at
that moment -- never taken from an engine's memory or from imapsync's output.
The size matters: a copy with the right headers can still be damaged (imapsync
re-sending a message after a connection dropped mid-FETCH appends the partial
literal with the whole message); such a copy proves nothing, and the original
stays. A server whose RFC822.SIZE is not the message's octet count therefore
keeps its originals (the safe side), and the run log says how many.

Matching is a multiset: one local message proves one remote message, so two
identical remote messages need two local copies.

The search is cheap on purpose.  A hint (the local UID where an engine put
the copy) is checked first with one FETCH; the other candidates are found by
INTERNALDATE, which every copy keeps (both engines APPEND with the remote
INTERNALDATE, and Dovecot's Sieve ``fileinto`` keeps it too), within a day of
the remote message's, and only those are identified.
"""

from __future__ import annotations

import imaplib
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta

import imapclient

from ns8_imapsync.imap import reads
from ns8_imapsync.imap.folders import select_folder
from ns8_imapsync.imap.identity import HEADER_FETCH, header_from_fetch, header_signature
from ns8_imapsync.imap.messages import clean_flags

DELETED = "\\Deleted"
DATE_SLACK = timedelta(hours=26)  # time zones and day-granular SEARCH dates


@dataclass(frozen=True)
class Wanted:
    """A remote message whose local copy is sought."""

    uid: int  # host1 UID
    identity: str  # header signature, or "sha256:..." for a message with neither header
    size: int
    date: datetime | None  # host1 INTERNALDATE
    hint: int | None = None  # host2 UID in the first folder searched, where an engine put it
    flags: tuple[str, ...] = ()  # host1 flags when it was read for the deletion (clean_flags)


@dataclass(frozen=True)
class Located:
    folder: str
    uid: int


def locate(client: imapclient.IMAPClient, wanted: Sequence[Wanted], places: Sequence[str],
           limits: reads.Limits) -> dict[int, Located]:
    """host1 UID -> a local copy proving it, searched in ``places`` in order.

    ``places[0]`` is where hints point.  Leaves the last folder searched
    selected read-only: a caller that needs its own folder selects it again."""
    found: dict[int, Located] = {}
    used: set[Located] = set()
    remaining = list(wanted)
    for index, folder in enumerate(places):
        if not remaining:
            break
        try:
            select_folder(client, folder, readonly=True)
        except imaplib.IMAP4.abort:
            raise
        except imaplib.IMAP4.error:
            continue  # the folder does not exist (any more): no copy there
        if index == 0:
            _check_hints(client, folder, remaining, found, used)
            remaining = [w for w in remaining if w.uid not in found]
        if remaining:
            _scan(client, folder, remaining, found, used, limits)
            remaining = [w for w in remaining if w.uid not in found]
    return found


def _check_hints(client: imapclient.IMAPClient, folder: str, wanted: Sequence[Wanted],
                 found: dict[int, Located], used: set[Located]) -> None:
    """A hinted UID proves its message when it is there, undeleted, with the same identity.

    UIDs are never reused within a UIDVALIDITY, so for a message identified by
    its content the hinted UID and an equal size are proof enough without
    downloading it again."""
    hinted = {w.hint: w for w in wanted if w.hint is not None}
    if not hinted:
        return
    meta = reads.fetch_meta(client, sorted(hinted), f"(UID FLAGS RFC822.SIZE {HEADER_FETCH.decode()})")
    for uid, item in meta.items():
        w = hinted.get(uid)
        if w is None or DELETED in clean_flags(item.get(b"FLAGS", ())):
            continue
        header = header_from_fetch(item)
        signature = header_signature(header) if header is not None else None
        same = int(item.get(b"RFC822.SIZE", -1)) == w.size and (signature == w.identity if signature else True)
        spot = Located(folder, uid)
        if same and spot not in used:
            found[w.uid] = spot
            used.add(spot)


def _scan(client: imapclient.IMAPClient, folder: str, wanted: Sequence[Wanted],
          found: dict[int, Located], used: set[Located], limits: reads.Limits) -> None:
    """Identify the undeleted local messages dated like a wanted one; match them."""
    candidates = _dated_like(client, wanted)
    taken = {spot.uid for spot in used if spot.folder == folder}
    local = reads.identify(client, sorted(candidates - taken), limits)
    pool: dict[tuple[str, int], list[int]] = defaultdict(list)
    for uid in sorted(local):
        pool[(local[uid].identity, local[uid].size)].append(uid)
    for w in sorted(wanted, key=lambda x: x.uid):
        if pool.get((w.identity, w.size)):
            spot = Located(folder, pool[(w.identity, w.size)].pop(0))
            found[w.uid] = spot
            used.add(spot)


def _dated_like(client: imapclient.IMAPClient, wanted: Sequence[Wanted]) -> set[int]:
    """UIDs of undeleted messages of the selected folder that could be a wanted copy."""
    dates = [w.date for w in wanted]
    if any(d is None for d in dates):
        return set(client.search(["UNDELETED"]))
    lo = min(dates) - DATE_SLACK  # type: ignore[type-var]
    hi = max(dates) + DATE_SLACK  # type: ignore[type-var]
    uids = client.search(["UNDELETED", "SINCE", lo.date(), "BEFORE", hi.date() + timedelta(days=1)])
    if not uids:
        return set()
    meta = reads.fetch_meta(client, uids, "(UID INTERNALDATE)")
    days = _days(d for d in dates if d is not None)
    out = set()
    for uid, item in meta.items():
        when = item.get(b"INTERNALDATE")
        if isinstance(when, datetime) and _near(when, days):
            out.add(uid)
    return out


def _days(dates: Iterable[datetime]) -> set[date]:
    return {d.date() for d in dates}


def _near(when: datetime, days: set[date]) -> bool:
    """Within a day or so of a wanted date (INTERNALDATE offsets differ between servers)."""
    return any((when + timedelta(days=k)).date() in days for k in (-1, 0, 1))
