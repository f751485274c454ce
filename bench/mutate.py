"""The "1 % changed" scenario: change a remote mailbox, and put it back afterwards.

About 1 % of the messages change between two runs, as between two scheduled
syncs of a live mailbox: flags changed on ~0.5 % (``\\Flagged`` toggled),
~0.25 % expunged, ~0.25 % new mail in INBOX. Every engine's re-run sees the
same kind of change; ``restore`` then re-appends what was expunged (same
bytes, flags and date), removes the new mail and toggles the flags back, so
the next engine copies the same corpus from scratch.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from datetime import datetime

import benchcorpus
import imapclient
from fill import Account, session
from localnode import corpus
from ns8_imapsync.imap.messages import append_many, mailbox_arg

FLAGGED = b"\\Flagged"
NEW_MAIL_SEED = 9_000


@dataclass
class Change:
    """What ``apply`` did, so ``restore`` can undo it exactly."""

    toggled: list[tuple[str, int, bool]] = field(default_factory=list)  # folder, uid, had \Flagged
    expunged: list[tuple[str, tuple[str, ...], datetime, bytes]] = field(default_factory=list)
    appended: list[int] = field(default_factory=list)  # INBOX UIDs of the new mail

    def summary(self) -> dict:
        """How many messages each kind of change touched, for the results file."""
        return {"flags_changed": len(self.toggled), "expunged": len(self.expunged),
                "new": len(self.appended)}


def _messages(client: imapclient.IMAPClient) -> list[tuple[str, int]]:
    """Every (folder, uid) of the account, in a stable order."""
    out = []
    for flags, _sep, name in client.list_folders():
        if b"\\Noselect" in flags or b"\\NonExistent" in flags:
            continue
        client.select_folder(name, readonly=True)
        out += [(name, uid) for uid in sorted(client.search(["ALL"]))]
    return sorted(out)


def _by_folder(items: list[tuple[str, int]]) -> dict[str, list[int]]:
    """UIDs grouped by folder, since STORE and EXPUNGE work on the selected folder."""
    out: dict[str, list[int]] = {}
    for folder, uid in items:
        out.setdefault(folder, []).append(uid)
    return out


def _expunge(client: imapclient.IMAPClient, folder: str, uids: list[int], change: Change) -> None:
    """Delete and expunge some messages, recorded so restore() can put them back."""
    client.select_folder(folder)
    got = client.fetch(uids, [b"BODY.PEEK[]", b"FLAGS", b"INTERNALDATE"])
    for uid in uids:
        flags = tuple(f.decode() for f in got[uid][b"FLAGS"] if f != b"\\Recent")
        change.expunged.append((folder, flags, got[uid][b"INTERNALDATE"], got[uid][b"BODY[]"]))
    client.add_flags(uids, [b"\\Deleted"])
    client.uid_expunge(uids)


def _toggle(client: imapclient.IMAPClient, folder: str, uids: list[int], change: Change) -> None:
    """Flip \\Flagged on some messages, recorded so restore() can flip it back."""
    client.select_folder(folder)
    flags = client.get_flags(uids)
    on = [u for u in uids if FLAGGED in flags[u]]
    off = [u for u in uids if FLAGGED not in flags[u]]
    if on:
        client.remove_flags(on, [FLAGGED])
    if off:
        client.add_flags(off, [FLAGGED])
    change.toggled += [(folder, u, u in on) for u in uids]


def _new_mail(client: imapclient.IMAPClient, count: int, change: Change) -> None:
    """Append new messages to INBOX, recorded so restore() can remove them."""
    # ordinary messages only (own Message-ID): a message imapsync cannot identify would
    # make its count differ for a reason that is not the change
    planned = [p for p in benchcorpus.plan(NEW_MAIL_SEED, max(2 * count, 50))
               if p.duplicate_of is None and p.render.kind == corpus.LARGE][:count]
    items = [(list(f), d, raw) for batch in benchcorpus.batches(NEW_MAIL_SEED, planned) for f, d, raw in batch]
    client.select_folder("INBOX")
    uids = append_many(client, mailbox_arg("INBOX"), items)
    change.appended = [u for u in uids if u is not None]


def apply(account: Account, share: float = 0.01, seed: int = 1) -> Change:
    """Change ``share`` of the account's messages (half flags, a quarter expunged, a quarter new)."""
    client = session(account)
    change = Change()
    try:
        client.normalise_times = False
        everything = _messages(client)
        n = max(4, round(len(everything) * share))
        n_flags, n_exp = n // 2, n // 4
        picked = random.Random(f"mutate:{seed}").sample(everything, n_flags + n_exp)
        for folder, uids in _by_folder(picked[n_flags:]).items():
            _expunge(client, folder, uids, change)
        for folder, uids in _by_folder(picked[:n_flags]).items():
            _toggle(client, folder, uids, change)
        _new_mail(client, n - n_flags - n_exp, change)
    finally:
        client.logout()
    return change


def restore(account: Account, change: Change) -> None:
    """Undo ``change``: the account holds the same messages and flags as before (new UIDs aside)."""
    client = session(account)
    try:
        client.select_folder("INBOX")
        if change.appended:
            client.add_flags(change.appended, [b"\\Deleted"])
            client.uid_expunge(change.appended)
        for folder, uid, had in change.toggled:
            client.select_folder(folder)
            (client.add_flags if had else client.remove_flags)([uid], [FLAGGED])
        for folder, flags, when, raw in change.expunged:
            append_many(client, mailbox_arg(folder), [(list(flags), when, raw)])
    finally:
        client.logout()
