"""delete_remote (the rule of ``sync.deletion``) and delete_local (with the
brake)."""

from __future__ import annotations

import imaplib
from collections import defaultdict

from ns8_imapsync.errors import (
    DELETE_LOCAL_BRAKE,
)
from ns8_imapsync.imap.expunge import expunge_uids
from ns8_imapsync.imap.folders import Folder, list_folders
from ns8_imapsync.sync import deletion, folderpairs
from ns8_imapsync.sync import syncstate as ss
from ns8_imapsync.sync.brake import FolderLoss, brake_reasons

from .base import DELETED, SEEN, Job, RunBase


class DeletionSteps(RunBase):
    def _delete_remote(self, job: Job, fs: ss.FolderState) -> None:
        """Expunge on host1 the messages whose copy is on host2 right now (``deletion``)."""
        candidates = dict(fs.entries)
        if self.plan.delete_remote_older > 0 and candidates:
            self.stats["h1.search"] += 1
            old = deletion.older_than(self.c1, self.plan.delete_remote_older)
            candidates = {u: e for u, e in candidates.items() if u in old}
        if not candidates:
            return
        hints = {u: e.h2uid for u, e in candidates.items() if e.h2uid is not None}
        wanted = self._unchanged_since_synced(job, candidates,
                                              deletion.remote_wanted(self.c1, sorted(candidates), self.limits, hints))
        places = deletion.places_for(job.target, self._local_folders(), self.sieve)
        outcome = deletion.delete_verified(self.c1, self.c2, job.folder, wanted, places, self.limits, self.log)
        if outcome.deleted or outcome.held:
            self.h1_modified = True
        for uid in outcome.uids:
            fs.entries.pop(uid, None)
        self.report.deleted_host1 += outcome.deleted

    def _unchanged_since_synced(self, job: Job, entries: dict[int, ss.Entry],
                                wanted: list[deletion.Wanted]) -> list[deletion.Wanted]:
        """The candidates whose remote flags are still those this run synced: a message
        whose flags changed on the remote after the folder was read (the user working on
        the old server meanwhile) is kept until the next run has carried the change to
        its copy. In inbox mode the engine's own \\Seen is not a change."""
        ignore = {DELETED} | ({SEEN} if self.inbox else set())
        same = [w for w in wanted if set(w.flags) - ignore == set(entries[w.uid].flags) - ignore]
        if len(same) < len(wanted):
            self.log(f"folder {job.folder.name}: {len(wanted) - len(same)} message(s) kept on the remote server: "
                     "their flags changed there during the run; the next run copies the change, then deletes them")
        return same

    def _local_folders(self) -> list[Folder]:
        """host2's folders now (Sieve may have created some during the run), listed once."""
        if self.local_folders is None:
            self.local_folders = list_folders(self.c2) if self.sieve else []
        return self.local_folders

    def _delete_local(self, jobs: list[Job]) -> None:
        """Remove host2 messages and folders absent on host1, unless the brake trips."""
        assert self.state is not None
        if self.inbox:
            self.log("delete_local is ignored in inbox mode")
            return
        if self.report.errors:
            self.log("delete_local skipped: this run had errors")
            return
        losses: list[FolderLoss] = []
        plans: list[tuple[str, list[int]]] = []
        by_target: dict[str, list[Job]] = defaultdict(list)
        for job in jobs:
            by_target[job.target].append(job)
        for target, tjobs in sorted(by_target.items()):
            present = set(self.state.target_state(target).keys)
            gone = sorted(present - self.state.claimed(target))
            if gone:
                losses.append(FolderLoss(target, sum(j.messages for j in tjobs), len(present), len(gone)))
                plans.append((target, gone))
        folders = self._local_folders_to_delete()
        brakes = brake_reasons(losses, [(f.name, n) for f, n in folders], self.plan.delete_local_max_share)
        if brakes:
            self.report.error_class = DELETE_LOCAL_BRAKE
            for line in brakes:
                self.error(f"delete_local brake: {line}")
            return
        for target, uids in plans:
            self._expunge_local(target, uids)
        for folder, _count in folders:
            self._delete_local_folder(folder)

    def _expunge_local(self, target: str, uids: list[int]) -> None:
        assert self.state is not None
        self.stats["h2.select"] += 1
        self.touched2.add(target)
        self.c2.select_folder(target)
        if not expunge_uids(self.c2, uids):
            self.log(f"folder {target}: the local server lacks UIDPLUS and other messages are marked "
                     f"deleted: {len(uids)} local message(s) absent on the remote server were marked \\Deleted")
            return
        ts = self.state.target_state(target)
        for uid in uids:
            ts.keys.pop(uid, None)
        for fs in self.state.folders_for(target):
            fs.forget_snapshots()
        self.report.deleted_host2 += len(uids)
        self.log(f"folder {target}: {len(uids)} local message(s) absent on the remote server deleted")

    def _local_folders_to_delete(self) -> list[tuple[Folder, int]]:
        """host2 folders no host1 folder maps to, with their message counts."""
        out: list[tuple[Folder, int]] = []
        for folder in folderpairs.local_orphans(self.found):
            status = self._status2(folder.name)
            if status is not None:
                out.append((folder, int(status.get(b"MESSAGES", 0))))
        return out

    def _delete_local_folder(self, folder: Folder) -> None:
        try:
            if self.c2.has_capability("UNSELECT"):
                self.c2.unselect_folder()
        except imaplib.IMAP4.abort:
            raise
        except imaplib.IMAP4.error:
            pass
        try:
            try:
                self.c2.unsubscribe_folder(folder.name)
            except imaplib.IMAP4.abort:
                raise
            except imaplib.IMAP4.error:
                pass
            self.c2.delete_folder(folder.name)
        except imaplib.IMAP4.abort:
            raise
        except imaplib.IMAP4.error as exc:
            self.error(f"folder {folder.name} could not be deleted on the local server: {exc}")
            return
        self.report.folders_deleted_host2 += 1
        self.log(f"folder {folder.name} absent on the remote server deleted locally")
