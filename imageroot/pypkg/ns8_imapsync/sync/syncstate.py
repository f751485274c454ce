"""Per-task state of the native engine: what is already on host2, and the folder
snapshots that let an unchanged mailbox be skipped with a few STATUS commands.

Stored as JSON in ``<workdir>/<task>.native.json`` (mode 0600, atomic rename).

Crash-safety rules (the engine relies on them):

* The state never claims more than host2 acknowledged.  An entry host1 UID ->
  host2 UID is recorded only after host2 answered OK to the APPEND (with its
  APPENDUID), or after the message was seen on host2 by FETCH.  A crash before
  the state is written loses entries, never invents them; the next run finds the
  unrecorded host2 messages ("unknown" UIDs in the target) by their header
  signature / content hash and claims them, so nothing is copied twice.
* A folder snapshot (UIDVALIDITY, UIDNEXT, MESSAGES, HIGHESTMODSEQ of both sides)
  is written only when the folder was synced to the end without error.  A
  snapshot equal to the servers' STATUS means "nothing to do"; anything else
  (no snapshot, other values) makes the engine look at the folder again.
* A changed UIDVALIDITY drops what depended on it: host1 UIDs of that folder, or
  host2 UIDs of that target.  The engine then falls back to a header scan of both
  sides, which also makes it safe after an imapsync run (same signatures).
* A state written for another remote account or another local user is ignored.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path

from ns8_imapsync.files import write_atomic

STATE_VERSION = 1

# Entry.note values
COPIED = ""  # the host2 copy is (as far as we know) in the target folder at Entry.h2uid
FILED = "filed"  # inbox+sieve: the script filed the copy elsewhere; the INBOX original was expunged
GONE = "gone"  # inbox mode: the host2 copy was deleted by the local user; never copy again
SIEVE_PENDING = "sieve"  # inbox+sieve: copied to INBOX, FILTER not yet known to have run

_log = logging.getLogger(__name__)


@dataclass
class FolderCounters:
    """Folder counters as STATUS/SELECT report them; equal snapshots mean "unchanged"."""

    uidvalidity: int
    uidnext: int
    messages: int
    modseq: int | None = None

    def to_json(self) -> list:
        return [self.uidvalidity, self.uidnext, self.messages, self.modseq]

    @classmethod
    def from_json(cls, raw: object) -> FolderCounters | None:
        if not isinstance(raw, list) or len(raw) != 4:
            return None
        uidvalidity, uidnext, messages, modseq = raw
        if not all(isinstance(v, int) for v in (uidvalidity, uidnext, messages)):
            return None
        return cls(uidvalidity, uidnext, messages, modseq if isinstance(modseq, int) else None)


@dataclass
class Entry:
    """One host1 message the engine has handled.

    ``flags`` is the host1 flag set as last synced: the baseline of the flag rule
    (only changes made on host1 *since then* are applied to host2).
    """

    h2uid: int | None
    flags: tuple[str, ...] = ()
    note: str = COPIED

    def to_json(self) -> list:
        out: list = [self.h2uid, " ".join(self.flags)]
        if self.note:
            out.append(self.note)
        return out

    @classmethod
    def from_json(cls, raw: object) -> Entry | None:
        if not isinstance(raw, list) or len(raw) not in (2, 3):
            return None
        h2uid, flags = raw[0], raw[1]
        note = raw[2] if len(raw) == 3 else COPIED
        if h2uid is not None and not isinstance(h2uid, int):
            return None
        if not isinstance(flags, str) or not isinstance(note, str):
            return None
        return cls(h2uid, tuple(flags.split()), note)


@dataclass
class FolderState:
    """A host1 folder (keyed by its raw name) and what of it is on host2."""

    name: str  # decoded host1 name, for humans reading the file
    target: str  # host2 folder name
    uidvalidity: int = 0  # host1 UIDVALIDITY the UIDs in ``entries`` belong to
    entries: dict[int, Entry] = field(default_factory=dict)  # host1 UID -> Entry
    h1: FolderCounters | None = None  # host1 counters when the folder was last completed
    h2: FolderCounters | None = None  # host2 counters (no modseq) at that moment

    def forget_snapshots(self) -> None:
        self.h1 = None
        self.h2 = None

    def to_json(self) -> dict:
        return {
            "name": self.name,
            "target": self.target,
            "uidvalidity": self.uidvalidity,
            "h1": self.h1.to_json() if self.h1 else None,
            "h2": self.h2.to_json() if self.h2 else None,
            "entries": {str(uid): e.to_json() for uid, e in sorted(self.entries.items())},
        }

    @classmethod
    def from_json(cls, raw: dict) -> FolderState:
        entries: dict[int, Entry] = {}
        for uid, value in (raw.get("entries") or {}).items():
            entry = Entry.from_json(value)
            if entry is not None and str(uid).isdigit():
                entries[int(uid)] = entry
        return cls(
            name=str(raw.get("name", "")),
            target=str(raw.get("target", "")),
            uidvalidity=int(raw.get("uidvalidity") or 0),
            entries=entries,
            h1=FolderCounters.from_json(raw.get("h1")),
            h2=FolderCounters.from_json(raw.get("h2")),
        )


@dataclass
class TargetState:
    """A host2 folder: the identity key of every message UID seen in it.

    Keys are the imapsync header signature, or ``sha256:<hex>`` for messages
    with neither Message-Id nor Received.  A UID whose message vanished is removed
    when the engine next lists the folder.
    """

    uidvalidity: int = 0
    keys: dict[int, str] = field(default_factory=dict)

    def to_json(self) -> dict:
        return {"uidvalidity": self.uidvalidity, "keys": {str(u): k for u, k in sorted(self.keys.items())}}

    @classmethod
    def from_json(cls, raw: dict) -> TargetState:
        keys = {
            int(u): k
            for u, k in (raw.get("keys") or {}).items()
            if str(u).isdigit() and isinstance(k, str)
        }
        return cls(uidvalidity=int(raw.get("uidvalidity") or 0), keys=keys)


@dataclass
class SyncState:
    """Everything the native engine remembers about one task between runs."""

    path: Path
    source: str  # "user@host:port" of host1: another account = another state
    target: str  # same for host2 (the local user)
    folders: dict[str, FolderState] = field(default_factory=dict)  # by host1 raw name
    targets: dict[str, TargetState] = field(default_factory=dict)  # by host2 name

    @classmethod
    def load(cls, path: Path, source: str, target: str) -> SyncState:
        """The stored state, or an empty one when missing, unreadable or for other accounts."""
        empty = cls(path, source, target)
        try:
            raw = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return empty
        except (OSError, ValueError) as exc:
            _log.warning("ignoring unreadable state %s: %s", path, exc)
            return empty
        if not isinstance(raw, dict) or raw.get("version") != STATE_VERSION:
            return empty
        if raw.get("source") != source or raw.get("target") != target:
            return empty
        state = cls(path, source, target)
        try:
            for name, value in (raw.get("folders") or {}).items():
                state.folders[name] = FolderState.from_json(value)
            for name, value in (raw.get("targets") or {}).items():
                state.targets[name] = TargetState.from_json(value)
        except (TypeError, ValueError, AttributeError) as exc:
            _log.warning("ignoring malformed state %s: %s", path, exc)
            return empty
        return state

    def save(self) -> None:
        """Atomic 0600 write: a crash leaves the previous or the new file, never half of one."""
        data = {
            "version": STATE_VERSION,
            "source": self.source,
            "target": self.target,
            "folders": {name: f.to_json() for name, f in sorted(self.folders.items())},
            "targets": {name: t.to_json() for name, t in sorted(self.targets.items())},
        }
        write_atomic(self.path, json.dumps(data, ensure_ascii=False, separators=(",", ":")) + "\n", 0o600)

    # ---- queries the engine needs ------------------------------------------------
    def folder(self, raw_name: str, name: str, target: str) -> FolderState:
        """The state of host1 folder ``raw_name``; a new target forgets the old host2 UIDs."""
        fs = self.folders.get(raw_name)
        if fs is None:
            fs = self.folders[raw_name] = FolderState(name=name, target=target)
        elif fs.target != target:
            # the mapping changed (e.g. another host2 prefix): host2 UIDs refer to another folder
            for entry in fs.entries.values():
                entry.h2uid = None
                if entry.note == COPIED:
                    entry.note = GONE
            fs.target = target
            fs.forget_snapshots()
        fs.name = name
        return fs

    def target_state(self, target: str) -> TargetState:
        ts = self.targets.get(target)
        if ts is None:
            ts = self.targets[target] = TargetState()
        return ts

    def claimed(self, target: str) -> set[int]:
        """host2 UIDs of ``target`` that stand for some host1 message (of any folder mapped there)."""
        return {
            e.h2uid
            for fs in self.folders.values()
            if fs.target == target
            for e in fs.entries.values()
            if e.h2uid is not None
        }

    def folders_for(self, target: str) -> list[FolderState]:
        return [fs for fs in self.folders.values() if fs.target == target]

    def forget_target_uids(self, target: str, uidvalidity: int) -> None:
        """host2 UIDVALIDITY changed: every host2 UID of ``target`` is meaningless now."""
        ts = self.target_state(target)
        ts.uidvalidity = uidvalidity
        ts.keys.clear()
        for fs in self.folders_for(target):
            fs.forget_snapshots()
            for entry in fs.entries.values():
                if entry.h2uid is not None:
                    entry.h2uid = None
                    if entry.note in (COPIED, SIEVE_PENDING):
                        entry.note = GONE

    def drop_folders_except(self, raw_names: set[str]) -> None:
        """Forget host1 folders that no longer exist (their host2 copies become unclaimed)."""
        for name in [n for n in self.folders if n not in raw_names]:
            del self.folders[name]
