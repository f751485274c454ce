"""Whole-mailbox snapshots for comparing two servers in tests.

A snapshot maps every folder (as a "/" path, the shared namespaces left out)
to the multiset of its messages as (sha256 of the bytes, flags, INTERNALDATE
in UTC): "every message exactly once, with its folder, flags and date" is
then an equality of snapshots, not a count.  Read-only (EXAMINE, BODY.PEEK).
"""

from __future__ import annotations

import hashlib
from collections import Counter
from datetime import UTC, datetime

from ns8_imapsync.imap.connection import Endpoint, open_session
from ns8_imapsync.imap.folders import always_excluded, list_folders

Key = tuple[str, frozenset, datetime]


def mailbox(ep: Endpoint, password: str) -> dict[str, Counter[Key]]:
    """Every folder (as a "/" path) -> multiset of (sha256, flags, INTERNALDATE in UTC)."""
    client = open_session(ep, password)
    client.normalise_times = False
    out: dict[str, Counter[Key]] = {}
    try:
        for folder in list_folders(client):
            if always_excluded(folder.name, folder.delimiter):
                continue
            info = client.select_folder(folder.name, readonly=True)
            items: Counter[Key] = Counter()
            if info[b"EXISTS"]:
                for data in client.fetch(client.search(["ALL"]), ["BODY.PEEK[]", "FLAGS", "INTERNALDATE"]).values():
                    flags = frozenset(f.decode() for f in data[b"FLAGS"] if f.lower() != b"\\recent")
                    items[(hashlib.sha256(data[b"BODY[]"]).hexdigest(), flags,
                           data[b"INTERNALDATE"].astimezone(UTC))] += 1
            out[folder.name.replace(folder.delimiter, "/") if folder.delimiter else folder.name] = items
    finally:
        client.logout()
    return out
