"""Discover and plan: which remote folders the run syncs, their local
names, the folders to create, and both sides' STATUS (totals, and the
"unchanged" test)."""

from __future__ import annotations

import imaplib

from ns8_imapsync.imap.folders import folder_arg, folder_encoding
from ns8_imapsync.imap.messages import as_text
from ns8_imapsync.sync import folderpairs
from ns8_imapsync.sync.report import Side

from .base import Job, RunBase


class DiscoverySteps(RunBase):
    def _discover(self) -> list[Job]:
        """The host1 folders to sync (by mode and exclusions) and their host2 names."""
        found = folderpairs.discover(self.c1, self.c2, self.plan, self.log)
        self.found = found
        assert self.state is not None
        self.state.drop_folders_except({f.raw_text for f in found.folders1})
        for problem in found.problems:  # a folder the run could not decide about: not a success
            self.error(problem)
        jobs = [Job(p.folder, p.target, {}) for p in found.pairs]
        self.log(f"{len(jobs)} folder(s) to sync of {len(found.folders1)} on the remote server")
        return jobs

    def _create_targets(self, jobs: list[Job]) -> None:
        """CREATE missing host2 folders, parents first; subscribe them as host1 does."""
        c2 = self.c2
        existing = {f.name for f in self.found.folders2} | {"INBOX"}
        subscribed = self._h1_subscriptions()
        created: set[str] = set()
        for job in sorted(jobs, key=lambda j: j.target):
            if job.target in existing or job.target in created:
                continue
            try:
                c2.create_folder(job.target)
            except imaplib.IMAP4.abort:
                raise
            except imaplib.IMAP4.error as exc:
                if "ALREADYEXISTS" not in str(exc).upper():
                    self.error(f"folder {job.target} could not be created on the local server: {exc}")
                    continue
            created.add(job.target)
            self.report.folders_created += 1
            self.log(f"created folder {job.target}")
            if not subscribed or job.key in subscribed:
                try:
                    c2.subscribe_folder(job.target)
                except imaplib.IMAP4.abort:
                    raise
                except imaplib.IMAP4.error:
                    pass

    def _h1_subscriptions(self) -> set[str]:
        """Raw names of host1's subscribed folders; empty if it keeps none (then subscribe all)."""
        try:
            with folder_encoding(self.c1, False):
                rows = self.c1.list_sub_folders("", "*")
        except imaplib.IMAP4.abort:
            raise
        except imaplib.IMAP4.error:
            return set()
        return {as_text(name) if not isinstance(name, int) else str(name) for _f, _d, name in rows}

    def _status_all(self, jobs: list[Job]) -> None:
        """One STATUS per folder on each side: totals, and the "unchanged" test."""
        items1 = ["MESSAGES", "UIDNEXT", "UIDVALIDITY"]
        if self.modseq:
            items1.append("HIGHESTMODSEQ")
        if self.c1.has_capability("STATUS=SIZE"):
            items1.append("SIZE")
        seen2: dict[str, dict | None] = {}
        for job in list(jobs):
            arg, encode = folder_arg(job.folder)
            try:
                with folder_encoding(self.c1, encode):
                    job.status1 = self.c1.folder_status(arg, items1)
            except imaplib.IMAP4.abort:
                raise
            except imaplib.IMAP4.error as exc:
                self.error(f"folder {job.folder.name} cannot be read on the remote server: {exc}")
                jobs.remove(job)
                continue
            if job.target not in seen2:
                seen2[job.target] = self._status2(job.target)
            job.status2 = seen2[job.target]
        self.report.host1 = Side(len(jobs), sum(j.messages for j in jobs), sum(j.size for j in jobs))
