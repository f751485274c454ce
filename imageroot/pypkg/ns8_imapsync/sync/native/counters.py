"""Folder counters after a run (the "unchanged" test of the next run) and the
local totals of the report."""

from __future__ import annotations

from ns8_imapsync.imap.folders import folder_arg, folder_encoding
from ns8_imapsync.sync import syncstate as ss
from ns8_imapsync.sync.report import Side

from .base import Job, RunBase


class CounterSteps(RunBase):
    def _h1_snapshot_after(self, job: Job, before: ss.FolderCounters | None) -> ss.FolderCounters | None:
        """host1 counters after our own changes (\\Seen, expunges), if nothing else arrived."""
        if not self.h1_modified or before is None:
            return before
        items = ["MESSAGES", "UIDNEXT", "UIDVALIDITY"] + (["HIGHESTMODSEQ"] if self.modseq else [])
        arg, encode = folder_arg(job.folder)
        with folder_encoding(self.c1, encode):
            status = self.c1.folder_status(arg, items)
        after = ss.FolderCounters(int(status.get(b"UIDVALIDITY", 0)), int(status.get(b"UIDNEXT", 0)),
                            int(status.get(b"MESSAGES", 0)), int(status.get(b"HIGHESTMODSEQ", 0)) or None)
        if after.uidvalidity != before.uidvalidity or after.uidnext != before.uidnext:
            return before  # something arrived: let the next run look again
        return after

    def _h2_snapshot(self, job: Job) -> ss.FolderCounters | None:
        status = self._status2(job.target)
        if status is None:
            return None
        return ss.FolderCounters(int(status.get(b"UIDVALIDITY", 0)), int(status.get(b"UIDNEXT", 0)),
                           int(status.get(b"MESSAGES", 0)))

    def _host2_totals(self, jobs: list[Job]) -> None:
        """Messages and bytes on host2 at the end, from the last STATUS of each target."""
        side = Side()
        for target in sorted({j.target for j in jobs}):
            status = self.status2.get(target) if target not in self.touched2 else None
            status = status or self._status2(target)
            if status is None:
                continue
            side.folders += 1
            side.messages += int(status.get(b"MESSAGES", 0))
            side.bytes += int(status.get(b"SIZE", 0))
        self.report.host2 = side
