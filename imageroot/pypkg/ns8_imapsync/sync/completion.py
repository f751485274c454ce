"""The imapsync engine's completion step: what stock imapsync leaves out, copied by us.

imapsync 2.229 skips a message with neither Message-Id nor Received (it prints
``ignored (no wanted headers)``) and copies only one of several identical
messages of a folder, yet ends with exit code 0.  After its run, each synced
folder pair is compared by identity as a multiset -- the native engine's rule:
n remote messages with one identity need n local ones -- and exactly what is
missing is appended, with its flags and INTERNALDATE, by the same copier the
native engine uses.  What cannot be copied is named in the run's errors, and
each folder's tally (remote messages the run answers for, and how many of them
are now on the local server) goes into the report, so a run short of mail is
never ``succeeded``.

The folders and their local names come from ``folderpairs`` (the native
engine's mapping), so both engines end with the same mailbox.  In inbox mode
only the unseen remote INBOX messages are the run's business (imapsync was
given ``--search1=UNSEEN``), and a copy never gets ``\\Deleted``.
"""

from __future__ import annotations

import imaplib
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import imapclient

from ns8_imapsync.imap import reads
from ns8_imapsync.imap.expunge import expunge_uids
from ns8_imapsync.imap.folders import select_folder
from ns8_imapsync.imap.identity import HEADER_FETCH, header_from_fetch, header_signature
from ns8_imapsync.imap.messages import uid_search_all
from ns8_imapsync.sync import copycheck, folderpairs
from ns8_imapsync.sync.folderpairs import FolderPair
from ns8_imapsync.sync.imapsync_output import CopiedMessage
from ns8_imapsync.sync.plan import SyncPlan
from ns8_imapsync.sync.report import FolderTally
from ns8_imapsync.sync.transfer import Copier, Source, describe_remote

Log = Callable[[str], object]
SEEN, DELETED = "\\Seen", "\\Deleted"


@dataclass
class Completion:
    tallies: list[FolderTally] = field(default_factory=list)
    appended: list[CopiedMessage] = field(default_factory=list)  # the Sieve step filters INBOX ones
    copied_bytes: int = 0
    errors: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # what was put right, for the run's log
    incomplete: set[str] = field(default_factory=set)  # remote folders (raw) with a problem: no deletion there
    pairs: list[FolderPair] = field(default_factory=list)


def complete(c1: imapclient.IMAPClient, c2: imapclient.IMAPClient, plan: SyncPlan, log: Log,
             stop: threading.Event, limits: reads.Limits) -> Completion:
    """Compare every synced folder and append what imapsync did not copy."""
    found = folderpairs.discover(c1, c2, plan, lambda _line: None)
    done = Completion(errors=list(found.problems), pairs=found.pairs)
    existing = {f.name for f in found.folders2} | {"INBOX"}
    for pair in found.pairs:
        if stop.is_set():
            break
        errors_before = len(done.errors)
        try:
            _complete_folder(c1, c2, pair, plan, done, limits, stop, existing)
        except imaplib.IMAP4.abort:
            raise
        except imaplib.IMAP4.error as exc:
            done.errors.append(f"folder {pair.folder.name}: the completion check failed: {exc}")
        if len(done.errors) > errors_before:
            done.incomplete.add(pair.folder.raw_text)
    added = len(done.appended)
    if added:
        log(f"completion: {added} message(s) imapsync did not copy were appended "
            f"({done.copied_bytes} bytes)")
    return done


def _complete_folder(c1: imapclient.IMAPClient, c2: imapclient.IMAPClient, pair: FolderPair, plan: SyncPlan,
                     done: Completion, limits: reads.Limits, stop: threading.Event, existing: set[str]) -> None:
    inbox = plan.folder_mode == "inbox"
    sources, trouble = _remote_messages(c1, pair, inbox, limits, done)
    if pair.target not in existing:
        c2.create_folder(pair.target)  # imapsync could not create it: our copies need it
        existing.add(pair.target)
    c2.select_folder(pair.target)
    matching = copycheck.match(sources, _local_copies(c2, sources, limits, inbox), _key_of(inbox))
    bad = copycheck.damaged(c1, c2, matching.suspects, limits)
    missing = matching.missing + [d.source for d in bad]
    copier = Copier(c1, c2, limits, Path(plan.workdir), stop=stop)
    placed: set[int] = set()
    gone: set[int] = set()
    flags_of = (lambda m: [f for f in m.flags if f != DELETED]) if inbox else (lambda m: list(m.flags))
    for outcome in copier.batches(pair.folder.name, pair.target, missing, flags_of):
        for p in outcome.placed:
            done.appended.append(CopiedMessage(pair.folder.raw_text, p.msg.uid, p.msg.size, pair.target, p.uid))
            done.copied_bytes += p.msg.size
            placed.add(p.msg.uid)
        gone.update(outcome.gone)
    done.errors.extend(copier.errors)
    _remove_damaged(c2, pair, bad, placed, gone, done)
    listed = len(sources) + trouble - len(gone)
    done.tallies.append(FolderTally(pair.folder.name, listed, len(sources) - len(missing) + len(placed)))


def _remove_damaged(c2: imapclient.IMAPClient, pair: FolderPair, bad: Sequence[copycheck.Damaged],
                    placed: set[int], gone: set[int], done: Completion) -> None:
    """Remove the damaged local copies whose message is now copied again, and those
    that cannot be their message (see :mod:`.copycheck`) while the remote one exists."""
    doomed = [d for d in bad if d.source.uid in placed or (d.impossible and d.source.uid not in gone)]
    if not doomed:
        return
    removed = expunge_uids(c2, [d.copy.uid for d in doomed])
    for d in doomed:
        again = "copied again" if d.source.uid in placed else "not copied (see above)"
        what = "removed" if removed else "marked \\Deleted (other messages of the folder are marked too)"
        line = (f"folder {pair.folder.name}: message UID {d.source.uid}: the local copy (UID {d.copy.uid}, "
                f"{d.copy.size} bytes) is not the remote message ({d.source.size} bytes): {again}, the "
                f"damaged copy {what}")
        (done.notes if d.source.uid in placed else done.errors).append(line)


def _remote_messages(c1: imapclient.IMAPClient, pair: FolderPair, inbox: bool, limits: reads.Limits,
                     done: Completion) -> tuple[list[Source], int]:
    """The remote messages the run answers for, identified; and how many more it
    answers for but could not read (each named in ``done.errors``)."""
    info = select_folder(c1, pair.folder, readonly=True)
    exists = int(info.get(b"EXISTS", 0))
    unlisted: set[int] = set()
    if inbox:
        uids = sorted(c1.search(["UNSEEN"])) if exists else []
    else:
        listing = reads.folder_listing(c1, exists) if exists else reads.Listing({}, True, set())
        if not listing.complete:
            unlisted = listing.missing
            done.errors.append(f"folder {pair.folder.name}: the remote server listed {len(listing.flags)} of "
                               f"the {len(listing.flags) + len(listing.missing)} messages it has{listing.unlisted()}")
        uids = sorted(listing.flags)
    found = describe_remote(c1, pair.folder.name, uids, limits)
    done.errors.extend(found.errors)
    return found.sources, len(found.errors) + len(unlisted)


def _key_of(dated: bool) -> Callable[[Source], tuple]:
    """How a remote message is matched with its local copies (see :func:`_local_copies`).

    ``dated`` (inbox mode) also matches the INTERNALDATE, which every copy
    keeps: the local INBOX holds copies of remote messages already delivered
    (now seen, so not among the sources), and one of them must not pass for an
    unseen twin delivered at another moment."""
    return lambda src: (src.key, _stamp(src.date) if dated else None)


def _stamp(when: object) -> int | None:
    return int(when.timestamp()) if isinstance(when, datetime) else None


def _local_copies(c2: imapclient.IMAPClient, sources: Sequence[Source], limits: reads.Limits,
                  dated: bool) -> list[copycheck.LocalCopy]:
    """The selected local folder's messages keyed by (identity, INTERNALDATE or None).

    Content hashes (downloads) are computed only for local messages without
    either header, and only when some remote message has no header either."""
    uids = sorted(uid_search_all(c2))
    if not uids or not sources:
        return []
    meta = reads.fetch_meta(c2, uids, f"(UID RFC822.SIZE INTERNALDATE {HEADER_FETCH.decode()})")
    out: list[copycheck.LocalCopy] = []
    keyless: dict[int, int] = {}

    def copy(uid: int, identity: str) -> copycheck.LocalCopy:
        stamp = _stamp(meta[uid].get(b"INTERNALDATE")) if dated else None
        return copycheck.LocalCopy(uid, int(meta[uid].get(b"RFC822.SIZE", 0)), (identity, stamp))

    for uid, item in meta.items():
        header = header_from_fetch(item)
        signature = header_signature(header) if header is not None else None
        if signature:
            out.append(copy(uid, signature))
        else:
            keyless[uid] = int(item.get(b"RFC822.SIZE", 0))
    if keyless and any(s.key.startswith("sha256:") for s in sources):
        out += [copy(uid, key) for uid, key in reads.content_keys(c2, keyless, limits).items()]
    return out
