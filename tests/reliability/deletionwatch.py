r"""The deletion rule checked at the moment it matters: when a remote message is marked \Deleted.

A post-hoc count (what left the remote is on the local server at the end)
cannot tell "deleted after its copy was acknowledged" from "deleted, then
copied": a crash between the two would lose mail. So the watch sits in the
fault proxy in front of the remote server (``FaultProxy.on_command``): every
``STORE ... \Deleted`` a client sends is held while the watch reads, over
sessions of its own straight to both Dovecots, the messages about to be
marked and the local mailbox as it is *now*; each must have a copy there (not
``\Deleted``), in the folder of the same path (with Sieve: in any folder),
counted as a multiset: the k-th deleted remote copy of a message needs k
local copies. Then the command goes on.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

from faultproxy import FaultProxy, Session
from imapclient import imap_utf7

from reliability import comparator as cmp

_STORE = re.compile(rb"^\S+ (UID )?STORE (\S+) ([+-]?)FLAGS(?:\.SILENT)? \(([^)]*)\)", re.I)
WATCHED = r"STORE .*\\Deleted"


def uid_set(text: str) -> list[int]:
    """``1:3,7`` -> [1, 2, 3, 7] (``*`` is not expected from a careful client and is refused)."""
    out: list[int] = []
    for part in text.split(","):
        lo, _, hi = part.partition(":")
        a, b = int(lo), int(hi or lo)
        out.extend(range(min(a, b), max(a, b) + 1))
    return out


def unquote(arg: bytes) -> str:
    """A quoted mailbox argument as the decoded folder name."""
    raw = arg[1:-1].replace(b'\\"', b'"').replace(b"\\\\", b"\\") if arg.startswith(b'"') else arg
    return imap_utf7.decode(raw)


@dataclass
class DeletionWatch:
    """See the module docstring. ``baseline`` is the remote as it was before the run
    (for the multiset count of earlier deletions); ``violations`` name each remote
    message marked \\Deleted without a local copy at that moment."""

    remote: cmp.EndpointLike
    remote_password: str
    local: cmp.EndpointLike
    local_password: str
    anywhere: bool = False
    baseline: cmp.Snapshot | None = None
    checked: int = 0  # remote messages verified at their deletion
    violations: list[str] = field(default_factory=list)
    deleted: dict[cmp.Path, list[cmp.Message]] = field(default_factory=dict)  # as they were when marked
    on_delete: Callable[[int], None] | None = None  # called with ``checked`` after each verified STORE

    def attach(self, proxy: FaultProxy) -> DeletionWatch:
        proxy.on_command(WATCHED, self._check)
        return self

    def _check(self, line: bytes, session: Session) -> None:
        match = _STORE.match(line)
        if match and (match.group(3) == b"-" or b"\\deleted" not in match.group(4).lower()):
            return  # \Deleted taken away, or only named elsewhere on the line
        if not match or not match.group(1):
            self.violations.append(f"\\Deleted set by sequence numbers, not verifiable: {line[:120]!r}")
            return
        if session.selected is None:
            self.violations.append(f"\\Deleted set with no folder selected: {line[:120]!r}")
            return
        folder = unquote(session.selected)
        try:
            self._verify(folder, uid_set(match.group(2).decode()))
        except Exception as exc:  # unverifiable is a violation: the product could not verify either
            self.violations.append(f"{folder}: could not verify a deletion ({type(exc).__name__}: {exc})")
        if self.on_delete is not None:
            self.on_delete(self.checked)

    def _marked(self, folder: str, uids: list[int]) -> tuple[cmp.Path, list[cmp.Message], Counter]:
        """(path, messages about to be marked, keys of the folder not yet \\Deleted) on the remote."""
        client = cmp.connect(self.remote, self.remote_password)
        try:
            prefix, delim, _others = cmp._namespaces(client)
            messages = cmp._read_folder(client, folder)
        finally:
            client.logout()
        alive = [m for m in messages if "\\Deleted" not in m.flags]
        wanted = set(uids)
        return cmp.folder_path(folder, delim, prefix), [m for m in alive if m.uid in wanted], \
            Counter(m.key for m in alive)

    def _verify(self, folder: str, uids: list[int]) -> None:
        path, doomed, alive = self._marked(folder, uids)
        self.deleted.setdefault(path, []).extend(doomed)
        marked = Counter(m.key for m in doomed)
        local = cmp.snapshot(self.local, self.local_password, paths=None if self.anywhere else [path])
        held: Counter = Counter()
        for p, msgs in local.folders.items():
            if self.anywhere or p == path:
                held.update(m.key for m in msgs if "\\Deleted" not in m.flags)
        before = self.baseline.keys(path) if self.baseline is not None else Counter()
        for key, n in marked.items():
            gone_after = max(before[key] - (alive[key] - n), n)  # deleted in all, this STORE included
            if held[key] < gone_after:
                self.violations.append(f"{'/'.join(path)}: {key[0] or key[2][:12]} ({key[1]} bytes) marked "
                                       f"\\Deleted as remote copy #{gone_after} while the local server "
                                       f"holds {held[key]}")
        self.checked += sum(marked.values())
