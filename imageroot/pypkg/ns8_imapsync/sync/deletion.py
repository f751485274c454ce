"""delete_remote and delete_remote_older: the one deletion rule of both engines.

A remote original is deleted only while a copy of it is proven to exist on
the local server (``locate``: same identity, not ``\\Deleted``, read from the
local server just before the deletion) -- never because an engine remembers
copying it, nor because imapsync printed that it did.  A message the user's
Sieve script discarded, or whose local copy the user deleted or marked
``\\Deleted``, therefore stays on the remote server, and the run log says how
many were kept and why.

Where copies are looked for: the folder the remote folder maps to, and with
Sieve (which may file a copy anywhere) every local folder but the shared
namespaces.  With ``delete_remote_older`` N only remote messages whose
INTERNALDATE is more than N days old are considered.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime, timedelta

import imapclient

from ns8_imapsync.imap import reads
from ns8_imapsync.imap.expunge import DELETED, expunge_uids
from ns8_imapsync.imap.folders import Folder, always_excluded, select_folder
from ns8_imapsync.imap.identity import HEADER_FETCH, header_from_fetch, header_signature
from ns8_imapsync.imap.messages import clean_flags
from ns8_imapsync.sync.locate import Located, Wanted, locate

Log = Callable[[str], object]


@dataclass
class Deletion:
    """What one folder's deletion pass did."""

    deleted: int = 0  # expunged on the remote: each had a proven local copy
    kept: int = 0  # no copy on the local server right now: left on the remote
    held: int = 0  # proven, but left marked \\Deleted (no UIDPLUS, others marked too)
    uids: list[int] = field(default_factory=list)  # the remote UIDs expunged


def cutoff(days: int, now: datetime | None = None) -> date:
    """The day before which a message is "older than N days" (SEARCH BEFORE)."""
    return ((now or datetime.now(UTC)) - timedelta(days=days)).date()


def older_than(client: imapclient.IMAPClient, days: int) -> set[int]:
    """UIDs of the selected remote folder with an INTERNALDATE before today - ``days``."""
    return set(client.search(["BEFORE", cutoff(days)]))


def places_for(target: str, local_folders: Iterable[Folder], sieve: bool) -> list[str]:
    """Where a copy of a message synced to ``target`` may be: ``target`` first."""
    if not sieve:
        return [target]
    others = sorted(f.name for f in local_folders
                    if f.name != target and not always_excluded(f.name, f.delimiter or None))
    return [target, *others]


def remote_wanted(client: imapclient.IMAPClient, uids: Sequence[int], limits: reads.Limits,
                  hints: dict[int, int] | None = None) -> list[Wanted]:
    """The identity, size and date of remote messages of the selected folder.

    Read from the remote server now, not from a remembered state: the copy is
    compared with what is about to be deleted."""
    if not uids:
        return []
    hints = hints or {}
    meta = reads.fetch_meta(client, uids, f"(UID FLAGS RFC822.SIZE INTERNALDATE {HEADER_FETCH.decode()})")
    keyless: dict[int, int] = {}
    out: dict[int, Wanted] = {}
    for uid, item in meta.items():
        header = header_from_fetch(item)
        signature = header_signature(header) if header is not None else None
        size = int(item.get(b"RFC822.SIZE", 0))
        when = item.get(b"INTERNALDATE")
        out[uid] = Wanted(uid, signature or "", size, when if isinstance(when, datetime) else None,
                          hints.get(uid), clean_flags(item.get(b"FLAGS", ())))
        if not signature:
            keyless[uid] = size
    for uid, key in reads.content_keys(client, keyless, limits).items():
        w = out[uid]
        out[uid] = replace(w, identity=key)
    return [w for w in out.values() if w.identity]  # unreadable: no identity, never deleted


def delete_verified(c1: imapclient.IMAPClient, c2: imapclient.IMAPClient, folder: Folder,
                    wanted: Sequence[Wanted], places: Sequence[str], limits: reads.Limits,
                    log: Log, *, same_flags: bool = False) -> Deletion:
    """Expunge on the remote (``c1``, with ``folder`` selected read-write) each
    wanted message whose copy is found on the local server (``c2``) now.

    ``same_flags``: a copy proves its original only while both have the same
    flags.  Why: an engine that keeps no state of the flags it synced (imapsync)
    cannot tell a flag the user set on the remote after the copy was made;
    deleting that original would lose the change, so it stays until a later
    run has carried it.  ``c2``'s selection is changed by the search; the
    caller selects again."""
    outcome = Deletion()
    if not wanted:
        return outcome
    located = locate(c2, wanted, places, limits)
    changed = _flags_differ(c2, wanted, located) if same_flags else set()
    proven = sorted(set(located) - changed)
    outcome.kept = len(wanted) - len(proven) - len(changed)
    if proven:
        if expunge_uids(c1, proven):
            outcome.deleted = len(proven)
            outcome.uids = proven
            log(f"folder {folder.name}: {len(proven)} message(s) deleted on the remote server, "
                "each with its copy found on the local server")
        else:
            outcome.held = len(proven)
            log(f"folder {folder.name}: the remote server lacks UIDPLUS and other messages are marked "
                f"deleted there: {len(proven)} verified message(s) were marked \\Deleted, not expunged")
    if outcome.kept:
        log(f"folder {folder.name}: {outcome.kept} message(s) kept on the remote server: no copy of them "
            "is on the local server now (discarded by the Sieve script, or deleted locally)")
    if changed:
        log(f"folder {folder.name}: {len(changed)} message(s) kept on the remote server: their flags differ "
            "from their local copy's (changed during the run?); a later run carries them, then deletes")
    return outcome


def _flags_differ(c2: imapclient.IMAPClient, wanted: Sequence[Wanted], located: dict[int, Located]) -> set[int]:
    """The remote UIDs whose located local copy has other flags than the remote message
    (``\\Deleted`` aside: a copy marked so was never located)."""
    flags = {w.uid: w.flags for w in wanted}
    by_folder: dict[str, dict[int, int]] = defaultdict(dict)
    for remote_uid, spot in located.items():
        by_folder[spot.folder][spot.uid] = remote_uid
    out: set[int] = set()
    for name, copies in by_folder.items():
        select_folder(c2, name, readonly=True)
        meta = reads.fetch_meta(c2, sorted(copies), "(UID FLAGS)")
        for local_uid, remote_uid in copies.items():
            local = clean_flags(meta.get(local_uid, {}).get(b"FLAGS", ()))
            if set(local) - {DELETED} != set(flags[remote_uid]) - {DELETED}:
                out.add(remote_uid)
    return out
