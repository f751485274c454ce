"""list-informations: folders, messages and bytes on both sides of a task.

Host1 counts the folders the task would sync (its folder mode and
exclusions, never Shared/ or Public/); host2 counts the local user's own
folders. Read-only on both sides (STATUS, or EXAMINE + FETCH sizes).
"""

from __future__ import annotations

import imaplib

from ns8_imapsync.errors import VALIDATION_FAILED
from ns8_imapsync.imap import folders as imapfolders
from ns8_imapsync.imap.connection import close_quietly, open_session
from ns8_imapsync.imap.errors import ImapLayerError, classify
from ns8_imapsync.sync.plan import SyncPlan, read_password


def selected(plan: SyncPlan, found: list[imapfolders.Folder]) -> list[imapfolders.Folder]:
    chosen = []
    for f in found:
        if plan.folder_mode == "inbox" and f.name.upper() != "INBOX":
            continue
        if imapfolders.is_excluded(f.name, plan.exclude, delimiter=f.delimiter, raw=f.raw_text):
            continue
        chosen.append(f)
    return chosen


def _side(endpoint, password: str, pick) -> tuple[int, int, int]:
    client = open_session(endpoint, password)
    try:
        return imapfolders.totals(imapfolders.folder_stats(client, pick(imapfolders.list_folders(client))))
    finally:
        close_quietly(client)


def informations(plan: SyncPlan) -> dict:
    try:
        h1 = _side(plan.source, read_password(plan.source_password_file), lambda fs: selected(plan, fs))
        h2 = _side(plan.target, read_password(plan.target_password_file),
                   lambda fs: [f for f in fs if not imapfolders.always_excluded(f.name, f.delimiter)])
    except imapfolders.ExclusionTimeout as exc:  # a pattern that cannot decide: no count would be true
        return {"status": False, "error": VALIDATION_FAILED, "reason": str(exc)}
    except (ImapLayerError, OSError, imaplib.IMAP4.error) as exc:
        return {"status": False, "error": classify(exc), "reason": str(exc)}
    return {
        "status": True,
        "host1Folders": h1[0], "host1Messages": h1[1], "host1Sizes": h1[2],
        "host2Folders": h2[0], "host2Messages": h2[1], "host2Sizes": h2[2],
    }
