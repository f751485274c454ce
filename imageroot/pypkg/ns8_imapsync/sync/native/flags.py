"""Flags: remote flag changes since the last sync reach the local copies;
a baseline moves only once its STORE was acknowledged."""

from __future__ import annotations

import imaplib
from collections import defaultdict

from ns8_imapsync.imap.messages import chunked, uid_sets
from ns8_imapsync.sync import syncstate as ss

from .base import DELETED, FLAG_STORE_BATCH, SEEN, RunBase


class FlagSteps(RunBase):
    def _sync_flags(self, fs: ss.FolderState, h1flags: dict[int, tuple[str, ...]], fresh: set[int]) -> None:
        """Apply to host2 the flag changes host1 made since the last sync (module docstring).

        A message's baseline moves to host1's flags only once every STORE it
        needed was acknowledged: a refused STORE or a dropped connection keeps
        the old baseline, so the change is sent again by the next run."""
        stores: dict[tuple[bool, tuple[str, ...]], list[int]] = defaultdict(list)  # (add?, flags) -> h2 UIDs
        todo: dict[int, tuple[ss.Entry, tuple[str, ...], int]] = {}  # h2 UID -> (entry, new flags, STOREs left)
        for uid, entry in fs.entries.items():
            now = h1flags.get(uid)
            if uid in fresh or entry.h2uid is None or now is None:
                continue
            old = set(entry.flags)
            add = tuple(sorted(set(now) - old - {DELETED}))
            remove = tuple(sorted(old - set(now) - {SEEN, DELETED}))
            if not add and not remove:
                entry.flags = now  # nothing to send: the new baseline holds
                continue
            for is_add, flags in ((True, add), (False, remove)):
                if flags:
                    stores[(is_add, flags)].append(entry.h2uid)
            todo[entry.h2uid] = (entry, now, bool(add) + bool(remove))
        refused = 0
        for (is_add, flags), uids in stores.items():
            store = self.c2.add_flags if is_add else self.c2.remove_flags
            for part in chunked(sorted(uids), FLAG_STORE_BATCH):
                self.stats["h2.store"] += 1
                try:
                    store(next(uid_sets(part)), list(flags), silent=True)
                except imaplib.IMAP4.abort:
                    raise
                except imaplib.IMAP4.error as exc:
                    refused += len(part)
                    self.error(f"flags of {len(part)} local message(s) could not be updated: {exc}")
                    continue
                for h2uid in part:
                    self._flag_store_done(todo, h2uid)
        self.report.flags_updated += len(todo) - sum(1 for _e, _n, left in todo.values() if left)

    def _flag_store_done(self, todo: dict[int, tuple[ss.Entry, tuple[str, ...], int]], h2uid: int) -> None:
        entry, now, left = todo[h2uid]
        todo[h2uid] = (entry, now, left - 1)
        if left - 1 == 0:
            entry.flags = now
