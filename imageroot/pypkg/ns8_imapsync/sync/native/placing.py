"""Claim and copy: list a remote folder, reconcile the state with the local
folder, identify the messages not yet placed, claim the local messages that
stand for them (multiset), and copy the rest (``transfer``), recording only
what the local server acknowledged."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path

import imapclient

from ns8_imapsync.imap import reads
from ns8_imapsync.imap.identity import HEADER_FETCH, header_from_fetch, header_signature
from ns8_imapsync.imap.messages import clean_flags, uid_fetch, uid_search_all
from ns8_imapsync.sync import syncstate as ss
from ns8_imapsync.sync.transfer import Copier, Placed, Source, describe_remote

from .base import DELETED, SEEN, Job, RunBase


class PlacingSteps(RunBase):
    def _place(self, job: Job, fs: ss.FolderState, listing: reads.Listing) -> set[int]:
        """Claim or copy every remote message the run is responsible for; returns
        those messages (the folder's, or in inbox mode the unseen and the handled
        ones), without the ones that vanished meanwhile."""
        h1flags = listing.flags
        if not self.inbox:
            for uid in [u for u, e in fs.entries.items() if e.note == ss.GONE]:
                del fs.entries[uid]  # the local copy went away: copy it again (as imapsync does)
        for uid in [u for u in fs.entries if u not in h1flags and u not in listing.missing]:
            del fs.entries[uid]  # expunged on the remote
        responsible = {u for u, flags in h1flags.items()
                       if u in fs.entries or not (self.inbox and SEEN in flags)}
        candidates = sorted(u for u in responsible if u not in fs.entries)
        if not self.inbox:
            self.report.skipped += len(h1flags) - len(candidates)  # placed by an earlier run
        self.fresh = set()
        msgs, gone = self._h1_meta(job, candidates, h1flags)
        to_copy = self._claim(job, fs, msgs, self.fresh)
        gone += self._copy(job, fs, to_copy, self.fresh)
        return responsible - set(gone)

    def _h1_listing(self, job: Job, fs: ss.FolderState, snap1: ss.FolderCounters) -> reads.Listing:
        """host1 UID -> flags of every message; only the changed ones when CONDSTORE allows.

        A full listing that misses messages the folder has (a server dropping
        FETCH items) is kept, but every deletion of the folder's target is
        disabled for this run and the folder is not recorded as synced."""
        prev = fs.h1
        if snap1.messages == 0:
            return reads.Listing({}, True, set())
        if (prev is not None and prev.modseq and snap1.modseq and prev.uidvalidity == snap1.uidvalidity
                and prev.uidnext == snap1.uidnext and prev.messages == snap1.messages):
            # same UIDs as at the last complete sync: only flags changed
            self.stats["h1.fetch_changed"] += 1
            flags = {uid: e.flags for uid, e in fs.entries.items()}
            malformed: dict[int, str] = {}
            changed = uid_fetch(self.c1, "1:*", "(UID FLAGS)", f"(CHANGEDSINCE {prev.modseq})", malformed=malformed)
            if not malformed:  # else a full listing, below, names them
                flags.update({uid: clean_flags(item.get(b"FLAGS", ())) for uid, item in changed.items()})
                return reads.Listing(flags, True, set())
        if (self.qresync and not self.inbox and prev is not None and prev.modseq and snap1.modseq
                and prev.uidvalidity == snap1.uidvalidity and len(fs.entries) == prev.messages):
            changes = self._h1_changes(fs, prev.modseq, snap1)
            if changes is not None:
                return changes
        self.stats["h1.fetch_flags"] += 1
        listing = reads.folder_listing(self.c1, snap1.messages)
        if not listing.complete:
            self.no_deletions.add(job.target)
            self.error(f"folder {job.folder.name}: the remote server listed {len(listing.flags)} of the "
                       f"{len(listing.flags) + len(listing.missing)} messages it has; nothing of this folder "
                       f"is deleted in this run, and it is checked again next run{listing.unlisted()}")
        return listing

    def _h1_changes(self, fs: ss.FolderState, modseq: int, snap1: ss.FolderCounters) -> reads.Listing | None:
        """The listing as the last complete sync left it, brought up to date with
        what changed since (QRESYNC); None when the result does not add up to the
        folder's EXISTS, and the folder is then listed in full."""
        self.stats["h1.fetch_qresync"] += 1
        found = reads.changes_since(self.c1, modseq)
        if found is None:
            return None
        changed, vanished = found
        flags = {uid: e.flags for uid, e in fs.entries.items() if uid not in vanished}
        flags.update(changed)
        if len(flags) != snap1.messages:
            self.stats["h1.qresync_mismatch"] += 1
            return None
        return reads.Listing(flags, True, set())

    def _reconcile(self, job: Job) -> None:
        """SELECT the host2 folder and bring the state's UID -> key map in line with it."""
        assert self.state is not None
        self.touched2.add(job.target)
        info2 = self._select_h2(job)
        uidvalidity = int(info2.get(b"UIDVALIDITY", 0))
        ts = self.state.target_state(job.target)
        if ts.uidvalidity != uidvalidity:
            self.state.forget_target_uids(job.target, uidvalidity)
        present = uid_search_all(self.c2) if int(info2.get(b"EXISTS", 0)) else set()
        for uid in [u for u in ts.keys if u not in present]:
            del ts.keys[uid]
        for fs in self.state.folders_for(job.target):
            for entry in fs.entries.values():
                if entry.h2uid is not None and entry.h2uid not in present:
                    entry.h2uid = None
                    if entry.note in (ss.COPIED, ss.SIEVE_PENDING):
                        entry.note = ss.GONE
                    fs.forget_snapshots()
        unknown = sorted(present - set(ts.keys))
        if unknown:
            self.stats["h2.scanned"] += len(unknown)
            ts.keys.update(self._keys(self.c2, "h2", unknown))

    def _fetch_meta(self, client: imapclient.IMAPClient, side: str, uids: Sequence[int],
                    items: str) -> dict[int, dict]:
        return reads.fetch_meta(client, uids, items, self._counter(side))

    def _keys(self, client: imapclient.IMAPClient, side: str, uids: Sequence[int]) -> dict[int, str]:
        """Identity keys of local messages (header signature, else content hash).

        A local message that cannot be read stays without a key: it is never
        claimed nor deleted, and the remote message it might stand for is copied."""
        meta = self._fetch_meta(client, side, uids, f"(UID RFC822.SIZE {HEADER_FETCH.decode()})")
        keys: dict[int, str] = {}
        keyless: dict[int, int] = {}
        for uid, item in meta.items():
            header = header_from_fetch(item)
            signature = header_signature(header) if header is not None else None
            if signature:
                keys[uid] = signature
            else:
                keyless[uid] = int(item.get(b"RFC822.SIZE", 0))
        keys.update(self._content_keys(client, side, keyless, {}))
        return keys

    def _h1_meta(self, job: Job, uids: Sequence[int],
                 h1flags: dict[int, tuple[str, ...]]) -> tuple[list[Source], list[int]]:
        """Size, date and key of the host1 messages not yet placed on host2, and
        the UIDs that vanished meanwhile. A message the server lists but does not
        describe, or whose content cannot be read, is an error, not "gone"."""
        if not uids:
            return [], []
        found = describe_remote(self.c1, job.folder.name, uids, self.limits, h1flags, self._counter("h1"))
        for line in found.errors:
            self.error(line)
        if found.gone:
            self.log(f"folder {job.folder.name}: {len(found.gone)} message(s) expunged on the remote server meanwhile")
        return found.sources, found.gone

    def _content_keys(self, client: imapclient.IMAPClient, side: str, sizes: dict[int, int],
                      refused: dict[int, str]) -> dict[int, str]:
        return reads.content_keys(client, sizes, self.limits, self._counter(side), refused=refused)

    def _claim(self, job: Job, fs: ss.FolderState, msgs: list[Source], fresh: set[int]) -> list[Source]:
        """Match host1 messages to unclaimed host2 messages with the same key; the rest is to copy."""
        assert self.state is not None
        ts = self.state.target_state(job.target)
        claimed = self.state.claimed(job.target)
        pool: dict[str, list[int]] = defaultdict(list)
        for uid in sorted(ts.keys):
            if uid not in claimed:
                pool[ts.keys[uid]].append(uid)
        to_copy: list[Source] = []
        found: list[int] = []
        for msg in msgs:
            if pool.get(msg.key):
                fs.entries[msg.uid] = ss.Entry(pool[msg.key].pop(0), msg.flags)
                fresh.add(msg.uid)
                found.append(msg.uid)
            else:
                to_copy.append(msg)
        self.report.skipped += len(found)
        if found and self.inbox:
            self._mark_seen(found)
        return to_copy

    def _copy(self, job: Job, fs: ss.FolderState, msgs: list[Source], fresh: set[int]) -> list[int]:
        """APPEND the messages no local message stands for (``transfer``); returns
        the remote UIDs that vanished meanwhile."""
        def placed_now(p: Placed) -> None:
            self._count_copy(p.msg)
            self._record_copy(job, fs, p, fresh)

        copier = Copier(self.c1, self.c2, self.limits, Path(self.plan.workdir), count=self._copy_counter,
                        stop=self.stop, on_chunk=self._chunk_done, on_placed=placed_now)
        gone: list[int] = []
        for outcome in copier.batches(job.folder.name, job.target, msgs, self._copy_flags):
            for p in outcome.found_back:
                self.unsettled -= 1
                self._record_copy(job, fs, p, fresh)
            gone += outcome.gone
            for line in copier.errors:
                self.error(line)
            copier.errors.clear()
            recorded = [p.msg.uid for p in outcome.placed if p.uid is not None]
            if recorded and self.sieve:
                self.save_state(force=True)  # the FILTER must be known to be pending first
                self._filter(job, fs, [fs.entries[u] for u in recorded])
            if outcome.placed and self.inbox:
                self.save_state(force=True)
                with copier.remote_lock:  # the next batch is being read on c1
                    self._mark_seen([p.msg.uid for p in outcome.placed])
            self.save_state()
            self.emit()
        return gone

    def _copy_flags(self, msg: Source) -> list[str]:
        return [f for f in msg.flags if not (self.inbox and f == DELETED)]

    def _chunk_done(self, size: int) -> None:
        """Progress inside a large message (its bytes are not counted again once placed)."""
        self.prog.bytes_done += size
        self.emit()

    def _count_copy(self, msg: Source) -> None:
        self.report.copied += 1
        self.report.copied_bytes += msg.size
        self.prog.messages_done += 1
        if msg.size <= self.limits.large_message:
            self.prog.bytes_done += msg.size
        self.appends += 1
        if self.engine.after_append is not None:
            self.engine.after_append(self.appends)

    def _record_copy(self, job: Job, fs: ss.FolderState, p: Placed, fresh: set[int]) -> None:
        """Remember an acknowledged copy at once (a crash right after loses nothing).

        A copy whose local UID is not known yet (no UIDPLUS) is not recorded
        until it is found back by identity; one never found back is left to the
        next run, which finds it by identity, and the folder is not marked
        complete meanwhile."""
        assert self.state is not None
        if p.uid is None:
            self.unsettled += 1
            return
        fs.entries[p.msg.uid] = ss.Entry(p.uid, p.msg.flags, ss.SIEVE_PENDING if self.sieve else ss.COPIED)
        self.state.target_state(job.target).keys[p.uid] = p.msg.key
        fresh.add(p.msg.uid)
