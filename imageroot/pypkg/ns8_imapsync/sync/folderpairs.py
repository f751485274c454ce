"""Which host1 folders a run syncs, where each goes on host2, and which host2
folders no host1 folder maps to.

One rule for both engines and the post-steps: the same exclusions (the
task's regexes and the Shared/Public namespaces), the same name mapping
between delimiters and prefixes (``INBOX.Sent`` on a Courier-style source is
``Sent`` on Dovecot), the same set of local folders delete_local may remove.

A folder whose exclusion check ran out of time (``ExclusionTimeout``) is not
synced, and says so: one sentence in ``Discovery.problems``, which the
engines turn into run errors. Its local name stays in ``kept_targets``, so
delete_local never removes the local copy of a folder nobody could decide on.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import imapclient

from ns8_imapsync.imap.folders import (
    MATCH_TIMEOUT,
    ExclusionTimeout,
    Folder,
    always_excluded,
    is_excluded,
    list_folders,
    map_name,
    namespace_info,
)
from ns8_imapsync.sync.plan import SyncPlan

# host2 folders delete_local never removes: the user's special-use folders
SPECIAL_USE = {b"\\sent", b"\\drafts", b"\\trash", b"\\junk", b"\\archive", b"\\all", b"\\flagged"}


@dataclass(frozen=True)
class FolderPair:
    """A host1 folder to sync and its host2 name."""

    folder: Folder
    target: str


@dataclass
class Discovery:
    pairs: list[FolderPair]  # to sync, INBOX first
    folders1: list[Folder]  # every host1 folder
    folders2: list[Folder]  # every host2 folder before the run
    delim2: str
    kept_targets: set[str] = field(default_factory=set)  # host2 names any host1 folder maps to
    problems: list[str] = field(default_factory=list)  # folders left out for a reason the run must report


def discover(c1: imapclient.IMAPClient, c2: imapclient.IMAPClient, plan: SyncPlan,
             log: Callable[[str], object]) -> Discovery:
    """The host1 folders to sync (by mode and exclusions) and their host2 names."""
    prefix1, delim1 = namespace_info(c1)
    prefix2, delim2 = namespace_info(c2)
    folders1 = list_folders(c1)
    found = Discovery([], folders1, list_folders(c2), delim2)
    inbox_only = plan.folder_mode == "inbox"
    for f in folders1:
        target = map_name(f.name, prefix1, delim1, prefix2, delim2)
        found.kept_targets.add(target)
        if inbox_only and f.name.upper() != "INBOX":
            continue
        try:
            excluded = is_excluded(f.name, plan.exclude, delimiter=f.delimiter or delim1, raw=f.raw_text)
        except ExclusionTimeout as exc:
            found.problems.append(timeout_problem(exc))
            log(found.problems[-1])
            continue
        if excluded:
            log(f"folder {f.name} excluded")
            continue
        if always_excluded(target, delim2 or None):
            log(f"folder {f.name} excluded (its local name {target} is a shared namespace)")
            continue
        found.pairs.append(FolderPair(f, target))
    found.pairs.sort(key=lambda p: (p.folder.name.upper() != "INBOX", p.folder.name))
    return found


def timeout_problem(exc: ExclusionTimeout) -> str:
    """The sentence an administrator reads: which folder, which pattern, what to do."""
    return (f"folder {exc.name} was not synced: the exclusion pattern {exc.pattern!r} took more than "
            f"{MATCH_TIMEOUT} s on its name (simplify the pattern)")


def local_orphans(found: Discovery) -> list[Folder]:
    """host2 folders that no host1 folder maps to and delete_local may remove:
    never INBOX, a shared namespace, a special-use folder, or a folder with children
    (a parent of a kept folder is kept too)."""
    kept = set(found.kept_targets)
    if found.delim2:
        for name in list(kept):
            parts = name.split(found.delim2)
            kept.update(found.delim2.join(parts[:i]) for i in range(1, len(parts)))
    names = [f.name for f in found.folders2]
    out: list[Folder] = []
    for folder in found.folders2:
        name = folder.name
        delim = folder.delimiter or "/"
        if name.upper() == "INBOX" or name in kept or always_excluded(name, folder.delimiter or None):
            continue
        if any(f.lower() in SPECIAL_USE for f in folder.flags if isinstance(f, bytes)):
            continue
        if any(n.startswith(name + delim) for n in names):
            continue
        out.append(folder)
    return out
