"""Expunging exactly the messages we mean, on any server.

``UID EXPUNGE`` (UIDPLUS) removes only the given UIDs.  Without UIDPLUS the
only tool is a plain ``EXPUNGE``, which removes *every* ``\\Deleted`` message
of the folder -- including ones the user (or another client) marked and may
still want to undelete.  So a plain EXPUNGE is sent only when no message but
ours carries ``\\Deleted``; otherwise ours stay marked and the caller is told.
Both engines, their post-steps and delete_local go through here.
"""

from __future__ import annotations

from collections.abc import Iterable

import imapclient

from .messages import uid_sets

DELETED = "\\Deleted"


def mark_deleted(client: imapclient.IMAPClient, uids: Iterable[int]) -> None:
    """``UID STORE +FLAGS.SILENT (\\Deleted)`` over compact UID sets."""
    for uidset in uid_sets(uids):
        client.add_flags(uidset, [DELETED], silent=True)


def expunge_uids(client: imapclient.IMAPClient, uids: Iterable[int]) -> bool:
    """Mark and expunge exactly ``uids`` in the selected folder.

    True when they are gone; False when the server lacks UIDPLUS and other
    messages of the folder are marked ``\\Deleted`` too, in which case ours are
    left marked (a later run, or the user's client, expunges them)."""
    wanted = sorted(set(uids))
    if not wanted:
        return True
    mark_deleted(client, wanted)
    if client.has_capability("UIDPLUS"):
        for uidset in uid_sets(wanted):
            client.uid_expunge(uidset)
        return True
    if set(client.search(["DELETED"])) <= set(wanted):
        client.expunge()
        return True
    return False
