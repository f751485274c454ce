"""The delete_local safety brake, one rule for both engines.

delete_local mirrors host1 onto host2: a host1 folder emptied by mistake (a
wrong account, a server restored from an old backup, a quota purge) would
empty the user's local folder too.  Before anything is deleted, each folder's
loss is compared with what it holds; one suspicious folder stops the whole
deletion and the run ends with ``delete_local_brake``.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass


@dataclass(frozen=True)
class FolderLoss:
    """What delete_local would do to one host2 folder."""

    target: str  # host2 folder name
    remote_messages: int  # messages in the host1 folder(s) that map to it
    local_messages: int  # messages in the host2 folder
    would_go: int  # host2 messages that would be deleted (exact, or a lower bound)


def brake_reasons(losses: Iterable[FolderLoss], orphans: Iterable[tuple[str, int]], max_share: float) -> list[str]:
    """One line per reason to refuse all deletions; empty when deleting is safe.

    A folder trips the brake when its remote side is empty while the local one
    is not, or when more than ``max_share`` of its messages would go.  A local
    folder absent on the remote (``orphans``: name, message count) would go
    whole (100 %), so it trips the brake when it holds messages, unless
    ``max_share`` is 1.0 (the brake is off).
    """
    reasons: list[str] = []
    for loss in losses:
        if loss.would_go <= 0:
            continue
        if loss.remote_messages == 0:
            reasons.append(f"{loss.target}: the remote folder is empty but the local one has "
                           f"{loss.local_messages} message(s)")
        elif loss.would_go > max_share * loss.local_messages:
            reasons.append(f"{loss.target}: {loss.would_go} of {loss.local_messages} local messages "
                           "would be deleted")
    for name, count in orphans:
        if count and max_share < 1.0:
            reasons.append(f"{name}: the folder is absent on the remote server and holds {count} local message(s)")
    return reasons
