"""Delivering copies through the user's Sieve script: Dovecot's FILTER=SIEVE.

``UID FILTER SIEVE DELIVERY UID <set>`` (imap_filter_sieve; a bare set would
mean sequence numbers) runs the user's active script on messages of the
selected folder as LMTP would at delivery.  A ``fileinto`` or ``discard``
cancels the implicit keep: Dovecot files the copy where the script says and
marks the original ``\\Deleted`` -- so "what the script filed away (or
discarded)" is "what is ``\\Deleted`` after the filter".  A script that keeps
the message leaves it untouched.  Both engines deliver through here; neither
deletes a remote original on the strength of it (``sync.deletion`` looks for
the copy).

IMAPClient has no FILTER command: it is sent with IMAPClient's raw command
machinery, and the untagged replies it leaves behind are cleared.
"""

from __future__ import annotations

from collections.abc import Iterable

import imapclient

from .messages import as_text, clean_flags, uid_fetch, uid_sets

CAPABILITY = "FILTER=SIEVE"
DELETED = "\\Deleted"
_UNTAGGED = ("FILTERED", "FILTER", "FETCH")


def available(client: imapclient.IMAPClient) -> bool:
    return client.has_capability(CAPABILITY)


def deleted_among(client: imapclient.IMAPClient, uids: Iterable[int]) -> set[int]:
    """The UIDs of the selected folder that carry ``\\Deleted`` now."""
    out: set[int] = set()
    for uidset in uid_sets(uids):
        for uid, item in uid_fetch(client, uidset, "(UID FLAGS)").items():
            if DELETED in clean_flags(item.get(b"FLAGS", ())):
                out.add(uid)
    return out


def deliver(client: imapclient.IMAPClient, uids: Iterable[int]) -> list[str]:
    """Run the user's script on ``uids`` of the selected folder; the refusals'
    texts (e.g. no active script: the messages stay where they are, as LMTP
    would leave them), empty when every FILTER was accepted."""
    refused: list[str] = []
    for uidset in uid_sets(uids):
        typ, data = client._raw_command(b"FILTER", [b"SIEVE", b"DELIVERY", b"UID", uidset.encode()], uid=True)
        for name in _UNTAGGED:
            client._imap.untagged_responses.pop(name, None)
        if typ != "OK":
            refused.append(as_text((data or [b""])[0] or b""))
    return refused

