"""The reliability suite's mailbox comparator: one judge for every case, independent of the product.

It reads a mailbox read-only (EXAMINE, ``BODY.PEEK[]``) with its own IMAP code,
so a bug in the product's folder mapping or identity cannot hide itself, and
turns it into a :class:`Snapshot`: folder path -> messages, where

* a folder path is the tuple of its name's components, after the personal
  namespace prefix is removed and the name split on the server's own
  separator (``Archive.2023`` on a Maildir++ remote and ``Archive/2023`` on the
  local server are both ``("Archive", "2023")``; ``INBOX.Sent`` on a
  Courier-style server is ``("Sent",)``); other namespaces (``Shared/``,
  ``Public/``) are left out, as the product never migrates them;
* a message is its key ``(Message-Id, size, SHA-256 of the raw bytes)`` plus
  its flags (``\\Recent`` dropped) and INTERNALDATE (an instant, UTC).

:func:`compare` matches two snapshots folder by folder as multisets of keys
(two identical remote messages need two local ones) and reports what is
missing, extra (a key the source does not have), duplicated (a key the source
has fewer times), and, for each matched message, flag and date differences.
:func:`deleted_since` and :func:`unaccounted_deletions` count what a run
removed from the remote against what the local server holds.
"""

from __future__ import annotations

import hashlib
import re
import ssl
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Protocol

from imapclient import IMAPClient

Key = tuple[str, int, str]  # (Message-Id or "", size in bytes, sha256 hex)
Path = tuple[str, ...]
FETCH_BATCH = 200  # messages per UID FETCH: bounded memory on big folders
IGNORED_FLAGS = frozenset({"\\Recent"})
_MESSAGE_ID = re.compile(rb"^message-id:[ \t]*(.*(?:\r?\n[ \t].*)*)", re.I | re.M)
_NOT_SELECTABLE = {b"\\noselect", b"\\nonexistent"}


class EndpointLike(Protocol):
    """What the comparator needs of an endpoint (``ns8_imapsync.imap.connection.Endpoint`` fits)."""

    host: str
    port: int
    security: str
    user: str


@dataclass(frozen=True)
class Message:
    key: Key
    flags: frozenset[str]
    internaldate: float  # POSIX seconds: the same instant compares equal whatever its offset
    uid: int


@dataclass
class Snapshot:
    """A whole mailbox as the comparator sees it (see the module docstring)."""

    where: str
    delimiter: str
    prefix: str
    folders: dict[Path, list[Message]] = field(default_factory=dict)
    names: dict[Path, str] = field(default_factory=dict)  # path -> the server's (decoded) folder name

    def keys(self, path: Path) -> Counter[Key]:
        return Counter(m.key for m in self.folders.get(path, []))

    @property
    def count(self) -> int:
        return sum(len(v) for v in self.folders.values())

    def nonempty(self) -> set[Path]:
        return {p for p, msgs in self.folders.items() if msgs}


# ---- reading ---------------------------------------------------------------------

def _unverified() -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


def connect(ep: EndpointLike, password: str, timeout: float = 60) -> IMAPClient:
    """A logged-in session of our own: ``tls`` STARTTLS, ``ssl`` IMAPS, ``""`` plain."""
    client = IMAPClient(ep.host, ep.port, ssl=ep.security == "ssl",
                        ssl_context=_unverified() if ep.security == "ssl" else None, timeout=timeout)
    if ep.security == "tls":
        client.starttls(_unverified())
    client.login(ep.user, password)
    client.normalise_times = False
    return client


def message_id(raw: bytes) -> str:
    """The first Message-Id header of the message's header block, unfolded ("" without one)."""
    head = raw.split(b"\r\n\r\n", 1)[0].split(b"\n\n", 1)[0]
    match = _MESSAGE_ID.search(head)
    if not match:
        return ""
    return " ".join(match.group(1).decode("utf-8", "replace").split())


def key_of(raw: bytes) -> Key:
    return (message_id(raw), len(raw), hashlib.sha256(raw).hexdigest())


def folder_path(name: str, delimiter: str, prefix: str) -> Path:
    """The comparable path of a decoded folder name (see the module docstring)."""
    if prefix and name.startswith(prefix) and name != prefix:
        name = name[len(prefix):]
    parts = tuple(name.split(delimiter)) if delimiter else (name,)
    if parts[0].upper() == "INBOX":
        parts = ("INBOX", *parts[1:])
    return parts


def _namespaces(client: IMAPClient) -> tuple[str, str, tuple[str, ...]]:
    """(personal prefix, personal delimiter, prefixes of the other namespaces)."""
    ns = client.namespace()
    prefix, delim = ns.personal[0] if ns.personal else ("", "")
    others = tuple(p for group in (ns.other or (), ns.shared or ()) for p, _d in group if p)
    return str(prefix or ""), str(delim or ""), others


def _read_folder(client: IMAPClient, name: str) -> list[Message]:
    info = client.select_folder(name, readonly=True)  # EXAMINE: nothing changes, not even \Recent
    if not info.get(b"EXISTS"):
        return []
    out: list[Message] = []
    uids = sorted(client.search(["ALL"]))
    for i in range(0, len(uids), FETCH_BATCH):
        data = client.fetch(uids[i:i + FETCH_BATCH], ["BODY.PEEK[]", "FLAGS", "INTERNALDATE"])
        for uid, item in data.items():
            raw = item[b"BODY[]"]
            flags = frozenset(f.decode() if isinstance(f, bytes) else str(f) for f in item[b"FLAGS"])
            out.append(Message(key_of(raw), flags - IGNORED_FLAGS, item[b"INTERNALDATE"].timestamp(), uid))
    return out


def snapshot(ep: EndpointLike, password: str, *, aliases: Mapping[str, str] | None = None,
             paths: Iterable[Path] | None = None) -> Snapshot:
    """Every selectable folder of the personal namespace and its messages, read-only
    (only the folders of ``paths``, when given).

    ``aliases`` maps a server folder name (decoded) to the name whose path it
    stands for: a test that shows a folder under another name through the fault
    proxy compares it under that name."""
    wanted = set(paths) if paths is not None else None
    client = connect(ep, password)
    try:
        prefix, delim, others = _namespaces(client)
        snap = Snapshot(f"{ep.user}@{ep.host}:{ep.port}", delim, prefix)
        for flags, folder_delim, name in client.list_folders("", "*"):
            if any(f.lower() in _NOT_SELECTABLE for f in flags if isinstance(f, bytes)):
                continue
            name = str(name)
            if any(name.startswith(p) for p in others):
                continue
            shown = (aliases or {}).get(name, name)
            path = folder_path(shown, (folder_delim.decode() if isinstance(folder_delim, bytes)
                                       else folder_delim or delim), prefix)
            if wanted is not None and path not in wanted:
                continue
            snap.folders[path] = _read_folder(client, name)
            snap.names[path] = name
        return snap
    finally:
        client.logout()


# ---- comparing -------------------------------------------------------------------

@dataclass
class FolderDiff:
    missing: list[Key] = field(default_factory=list)  # the source has it more often than the target
    extra: list[Key] = field(default_factory=list)  # the target has it, the source never
    duplicated: list[Key] = field(default_factory=list)  # the target has it more often than the source
    flags: list[tuple[Key, frozenset, frozenset]] = field(default_factory=list)  # (key, source, target)
    dates: list[tuple[Key, float, float]] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.missing or self.extra or self.duplicated or self.flags or self.dates)


@dataclass
class Comparison:
    folders: dict[Path, FolderDiff]
    missing_folders: list[Path]  # source folders the target lacks (empty ones included)
    source_messages: int
    target_messages: int

    def total(self, what: str) -> int:
        return sum(len(getattr(d, what)) for d in self.folders.values())

    @property
    def ok(self) -> bool:
        """No folder missing, no message missing, extra or duplicated, flags and dates right."""
        return not self.missing_folders and not any(self.folders.values())

    def counts(self) -> dict[str, int]:
        """The figures a results file records."""
        return {"source": self.source_messages, "target": self.target_messages,
                **{w: self.total(w) for w in ("missing", "extra", "duplicated", "flags", "dates")},
                "missing_folders": len(self.missing_folders)}

    def summary(self, limit: int = 12) -> str:
        """A readable account of the differences (for assertion messages)."""
        lines = [f"{self.counts()}"]
        for path, diff in sorted(self.folders.items()):
            for what in ("missing", "extra", "duplicated", "flags", "dates"):
                for item in getattr(diff, what)[:limit]:
                    lines.append(f"  {'/'.join(path)}: {what} {item}")
        if self.missing_folders:
            lines.append(f"  folders missing on the target: {['/'.join(p) for p in self.missing_folders]}")
        return "\n".join(lines[:limit * 4])


def _pair_attributes(src: list[Message], dst: list[Message], diff: FolderDiff, key: Key,
                     ignore: frozenset[str]) -> None:
    """Match the copies of one key (identical pairs first), then report what differs."""
    left = sorted(((m.flags - ignore, m.internaldate) for m in src), key=repr)
    right = sorted(((m.flags - ignore, m.internaldate) for m in dst), key=repr)
    for item in list(left):
        if item in right:
            left.remove(item)
            right.remove(item)
    for (f1, d1), (f2, d2) in zip(left, right, strict=False):
        if f1 != f2:
            diff.flags.append((key, f1, f2))
        if abs(d1 - d2) >= 1:
            diff.dates.append((key, d1, d2))


def compare_folder(src: list[Message], dst: list[Message], ignore: frozenset[str] = frozenset(),
                   allowed: Counter[Key] | None = None) -> FolderDiff:
    """``allowed``: copies the target may hold beyond the source's (a message the test
    expunged from the source after it was copied) without counting as extra or duplicated."""
    diff = FolderDiff()
    want, have = Counter(m.key for m in src), Counter(m.key for m in dst)
    for key in sorted(want | have):
        if want[key] > have[key]:
            diff.missing += [key] * (want[key] - have[key])
        elif have[key] > want[key]:
            excess = max(0, have[key] - want[key] - (allowed or Counter())[key])
            (diff.duplicated if want[key] else diff.extra).extend([key] * excess)
        if want[key] and have[key]:
            _pair_attributes([m for m in src if m.key == key], [m for m in dst if m.key == key], diff, key,
                             ignore)
    return diff


def compare(source: Snapshot, target: Snapshot, *, ignore_flags: Iterable[str] = (),
            folders: Iterable[Path] | None = None,
            allowed: Mapping[Path, Counter[Key]] | None = None) -> Comparison:
    """Folder by folder, ``target`` against ``source`` (only ``folders`` when given);
    ``allowed``: per folder, copies the target may have in excess (see :func:`compare_folder`)."""
    ignore = frozenset(ignore_flags)
    paths = set(folders) if folders is not None else set(source.folders) | target.nonempty()
    allowed = allowed or {}
    result = {p: compare_folder(source.folders.get(p, []), target.folders.get(p, []), ignore, allowed.get(p))
              for p in paths}
    missing = sorted(p for p in source.folders if p in paths and p not in target.folders)
    return Comparison(result, missing, sum(len(source.folders.get(p, [])) for p in paths),
                      sum(len(target.folders.get(p, [])) for p in paths))


def deleted_since(before: Snapshot, after: Snapshot) -> dict[Path, Counter[Key]]:
    """What left each folder between two snapshots of one mailbox (a multiset per folder)."""
    gone: dict[Path, Counter[Key]] = {}
    for path, msgs in before.folders.items():
        left = Counter(m.key for m in msgs) - after.keys(path)
        if left:
            gone[path] = left
    return gone


def unaccounted_deletions(deleted: Mapping[Path, Counter[Key]], local: Snapshot,
                          anywhere: bool = False) -> dict[Path, Counter[Key]]:
    """Deleted remote messages with no copy on the local server: in the folder of the
    same path, or (``anywhere``, a Sieve script may file mail) in any folder."""
    everywhere = sum((local.keys(p) for p in local.folders), Counter())
    lost: dict[Path, Counter[Key]] = {}
    for path, keys in deleted.items():
        held = everywhere if anywhere else local.keys(path)
        short = keys - held
        if short:
            lost[path] = short
    return lost
