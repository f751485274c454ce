"""Inbox mode and Sieve: a delivered message becomes ``\\Seen`` on the remote;
copies in INBOX go through the user's script (``imap.sieve``), the
originals it filed away are expunged."""

from __future__ import annotations

from collections.abc import Sequence

from ns8_imapsync.imap import sieve
from ns8_imapsync.imap.expunge import expunge_uids
from ns8_imapsync.imap.messages import uid_sets
from ns8_imapsync.sync import syncstate as ss

from .base import SEEN, Job, RunBase


class InboxSteps(RunBase):
    def _mark_seen(self, h1uids: Sequence[int]) -> None:
        """Inbox mode: the message is on host2, so it is no longer new on host1."""
        for uidset in uid_sets(h1uids):
            self.stats["h1.store"] += 1
            self.c1.add_flags(uidset, [SEEN], silent=True)
        self.h1_modified = True

    def _filter_pending(self, job: Job, fs: ss.FolderState) -> None:
        """Finish FILTERs a previous run started (or was killed before)."""
        pending = [e for e in fs.entries.values() if e.note == ss.SIEVE_PENDING and e.h2uid is not None]
        if pending:
            self._filter(job, fs, pending)

    def _filter(self, job: Job, fs: ss.FolderState, entries: list[ss.Entry]) -> None:
        """Run the user's Sieve script on copies in INBOX; expunge the originals it filed away.

        An original already ``\\Deleted`` was filed by an earlier FILTER (copies are
        appended without ``\\Deleted`` in inbox mode), so it is not filtered twice.
        Whatever the script did (file, discard, keep), the remote message is
        deleted later only if a copy of it is found (``deletion``).
        """
        assert self.state is not None
        ts = self.state.target_state(job.target)
        by_h2 = {e.h2uid: e for e in entries if e.h2uid is not None}
        if not by_h2:
            return
        filed = sieve.deleted_among(self.c2, by_h2)
        todo = [u for u in by_h2 if u not in filed]
        if todo:
            self.stats["h2.filter"] += 1
            for refusal in sieve.deliver(self.c2, todo):  # e.g. no script: the messages stay in INBOX
                self.log(f"WARNING the Sieve filter failed, messages stay in INBOX: {refusal}")
            # whatever the reply, what the script filed away is what it marked \Deleted
            filed |= sieve.deleted_among(self.c2, todo)
        if filed and not expunge_uids(self.c2, filed):
            self.log("INBOX: the local server lacks UIDPLUS and other messages are marked deleted: "
                     "the originals the Sieve script filed stay marked \\Deleted")
        for h2uid, entry in by_h2.items():
            if h2uid in filed:
                ts.keys.pop(h2uid, None)
                entry.h2uid = None
                entry.note = ss.FILED
            else:
                entry.note = ss.COPIED
        self.save_state(force=True)
