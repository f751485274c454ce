"""Per-task state of the native engine: what is already on host2, and the folder
snapshots that let an unchanged mailbox be skipped with a few STATUS commands.

Stored in ``<workdir>/<task>.native.db``, an SQLite file (mode 0600): one row
per folder (its snapshots and how many messages it records), one row per
handled message, one per identified local message.  A run reads the folder
rows only; a folder's messages are read when the folder changed, and a save
writes only the rows that changed, in one transaction.  So an unchanged folder
costs the same whatever its size, and a large copy does not rewrite what it
already recorded (the JSON file this replaces was read and rewritten whole).

Crash-safety rules (the engine relies on them):

* The state never claims more than host2 acknowledged.  An entry host1 UID ->
  host2 UID is recorded only after host2 answered OK to the APPEND (with its
  APPENDUID), or after the message was seen on host2 by FETCH.  A crash before
  the state is written loses entries, never invents them; the next run finds the
  unrecorded host2 messages ("unknown" UIDs in the target) by their header
  signature / content hash and claims them, so nothing is copied twice.  A save
  is one SQLite transaction: a crash leaves the previous or the new state.
* A folder snapshot (UIDVALIDITY, UIDNEXT, MESSAGES, HIGHESTMODSEQ of both sides)
  is written only when the folder was synced to the end without error.  A
  snapshot equal to the servers' STATUS means "nothing to do"; anything else
  (no snapshot, other values) makes the engine look at the folder again.
* A changed UIDVALIDITY drops what depended on it: host1 UIDs of that folder, or
  host2 UIDs of that target.  The engine then falls back to a header scan of both
  sides, which also makes it safe after an imapsync run (same signatures).
* A state written for another remote account or another local user, or one
  that cannot be read, is emptied: the next run rescans by headers.
"""

from __future__ import annotations

import json
import logging
import os
import sqlite3
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

STATE_VERSION = "2"

# Entry.note values
COPIED = ""  # the host2 copy is (as far as we know) in the target folder at Entry.h2uid
FILED = "filed"  # inbox+sieve: the script filed the copy elsewhere; the INBOX original was expunged
GONE = "gone"  # inbox mode: the host2 copy was deleted by the local user; never copy again
SIEVE_PENDING = "sieve"  # inbox+sieve: copied to INBOX, FILTER not yet known to have run

_log = logging.getLogger(__name__)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS folders (raw BLOB PRIMARY KEY, name BLOB NOT NULL, target BLOB NOT NULL,
    uidvalidity INTEGER NOT NULL, count INTEGER NOT NULL, h1 TEXT, h2 TEXT);
CREATE TABLE IF NOT EXISTS entries (folder BLOB NOT NULL, uid INTEGER NOT NULL, h2uid INTEGER,
    flags TEXT NOT NULL, note TEXT NOT NULL, PRIMARY KEY (folder, uid)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS targets (name BLOB PRIMARY KEY, uidvalidity INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS keys (target BLOB NOT NULL, uid INTEGER NOT NULL, key BLOB NOT NULL,
    PRIMARY KEY (target, uid)) WITHOUT ROWID;
"""


def _blob(text: str) -> bytes:
    """Folder names and keys as stored: any str, lone surrogates included."""
    return text.encode("utf-8", "surrogatepass")


def _text(blob: bytes) -> str:
    return bytes(blob).decode("utf-8", "surrogatepass")


@dataclass
class FolderCounters:
    """Folder counters as STATUS/SELECT report them; equal snapshots mean "unchanged"."""

    uidvalidity: int
    uidnext: int
    messages: int
    modseq: int | None = None

    def to_json(self) -> str:
        return json.dumps([self.uidvalidity, self.uidnext, self.messages, self.modseq])

    @classmethod
    def from_json(cls, text: str | None) -> FolderCounters | None:
        try:
            raw = json.loads(text) if text else None
        except ValueError:
            return None
        if not isinstance(raw, list) or len(raw) != 4:
            return None
        uidvalidity, uidnext, messages, modseq = raw
        if not all(isinstance(v, int) for v in (uidvalidity, uidnext, messages)):
            return None
        return cls(uidvalidity, uidnext, messages, modseq if isinstance(modseq, int) else None)


@dataclass(slots=True)
class Entry:
    """One host1 message the engine has handled.

    ``flags`` is the host1 flag set as last synced: the baseline of the flag rule
    (only changes made on host1 *since then* are applied to host2).  ``dirty``
    says the entry changed since it was last saved (any attribute assignment).
    """

    h2uid: int | None
    flags: tuple[str, ...] = ()
    note: str = COPIED
    dirty: bool = field(default=True, compare=False, repr=False)

    def __setattr__(self, name: str, value: object) -> None:
        object.__setattr__(self, name, value)
        if name != "dirty":
            object.__setattr__(self, "dirty", True)

    def row(self) -> tuple[int | None, str, str]:
        return self.h2uid, " ".join(self.flags), self.note


class Tracked(dict):
    """A dict that remembers which keys were assigned or removed since the last save."""

    def __init__(self, items: Iterable = ()) -> None:
        super().__init__(items)
        self.written: set = set()
        self.removed: set = set()

    def __setitem__(self, key: object, value: object) -> None:
        super().__setitem__(key, value)
        self.written.add(key)
        self.removed.discard(key)

    def __delitem__(self, key: object) -> None:
        super().__delitem__(key)
        self.written.discard(key)
        self.removed.add(key)

    def pop(self, key: object, *default: object) -> object:
        if key in self:
            self.written.discard(key)
            self.removed.add(key)
        return super().pop(key, *default)

    def popitem(self) -> tuple:
        key, value = super().popitem()
        self.written.discard(key)
        self.removed.add(key)
        return key, value

    def setdefault(self, key: object, default: object = None) -> object:
        if key not in self:
            self[key] = default
        return self[key]

    def update(self, *args: object, **kw: object) -> None:
        for key, value in dict(*args, **kw).items():
            self[key] = value

    def clear(self) -> None:
        self.removed |= set(self)
        self.written.clear()
        super().clear()

    def saved(self) -> None:
        self.written.clear()
        self.removed.clear()


class FolderState:
    """A host1 folder (keyed by its raw name) and what of it is on host2.

    ``entries`` (host1 UID -> Entry) is read from the file on first use:
    ``count`` answers "how many" without reading them."""

    def __init__(self, name: str, target: str, uidvalidity: int = 0, h1: FolderCounters | None = None,
                 h2: FolderCounters | None = None, *, count: int = 0,
                 loader: Callable[[], Tracked] | None = None, fresh: bool = False) -> None:
        self.name = name  # decoded host1 name, for humans
        self.target = target  # host2 folder name
        self.uidvalidity = uidvalidity  # host1 UIDVALIDITY the UIDs in ``entries`` belong to
        self.h1 = h1  # host1 counters when the folder was last completed
        self.h2 = h2  # host2 counters (no modseq) at that moment
        self._count = count
        self._loader = loader
        self._entries: Tracked | None = Tracked() if loader is None or fresh else None
        self.saved_row: tuple | None = None  # the folder row as last saved

    @property
    def entries(self) -> Tracked:
        if self._entries is None:
            assert self._loader is not None
            self._entries = self._loader()
        return self._entries

    @property
    def loaded(self) -> bool:
        return self._entries is not None

    @property
    def count(self) -> int:
        return len(self._entries) if self._entries is not None else self._count

    def forget_snapshots(self) -> None:
        self.h1 = None
        self.h2 = None

    def release(self) -> None:
        """Let go of the entries once saved (read again if needed): later saves
        of the run do not look at a folder already done."""
        entries = self._entries
        if entries is None or self._loader is None or entries.written or entries.removed:
            return
        if not any(e.dirty for e in entries.values()):
            self._count, self._entries = len(entries), None

    def row(self) -> tuple:
        return (_blob(self.name), _blob(self.target), self.uidvalidity, self.count,
                self.h1.to_json() if self.h1 else None, self.h2.to_json() if self.h2 else None)


@dataclass
class TargetState:
    """A host2 folder: the identity key of every message UID seen in it.

    Keys are the imapsync header signature, or ``sha256:<hex>`` for messages
    with neither Message-Id nor Received.  A UID whose message vanished is removed
    when the engine next lists the folder.
    """

    uidvalidity: int = 0
    keys: Tracked = field(default_factory=Tracked)
    saved_uidvalidity: int | None = None


def _connect(path: Path) -> sqlite3.Connection:
    """The state file, created 0600 (SQLite gives its journal the same mode)."""
    os.close(os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o600))
    os.chmod(path, 0o600)
    conn = sqlite3.connect(path, isolation_level=None, timeout=30)
    conn.execute("PRAGMA journal_mode=DELETE")
    conn.execute("PRAGMA synchronous=FULL")
    conn.executescript(_SCHEMA)
    return conn


def _matches(conn: sqlite3.Connection, source: str, target: str) -> bool:
    meta = dict(conn.execute("SELECT key, value FROM meta"))
    return meta == {"version": STATE_VERSION, "source": source, "target": target}


def _reset(conn: sqlite3.Connection, source: str, target: str) -> None:
    with _transaction(conn):
        for table in ("meta", "folders", "entries", "targets", "keys"):
            conn.execute(f"DELETE FROM {table}")  # noqa: S608 - fixed table names
        conn.executemany("INSERT INTO meta VALUES (?, ?)",
                         [("version", STATE_VERSION), ("source", source), ("target", target)])


class _transaction:
    """BEGIN IMMEDIATE ... COMMIT, ROLLBACK on any exception."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn

    def __enter__(self) -> sqlite3.Connection:
        self.conn.execute("BEGIN IMMEDIATE")
        return self.conn

    def __exit__(self, kind: object, *_rest: object) -> None:
        if kind is None:
            self.conn.execute("COMMIT")
        elif self.conn.in_transaction:
            # SQLite has already rolled back on some errors (SQLITE_FULL: the disk is
            # full); a ROLLBACK then would replace that error with "no transaction is active"
            self.conn.execute("ROLLBACK")


def _open(path: Path, source: str, target: str) -> sqlite3.Connection:
    """The state's connection: emptied when it belongs to other accounts, recreated when unreadable."""
    conn = None
    try:
        conn = _connect(path)
        if not _matches(conn, source, target):
            _reset(conn, source, target)
        return conn
    except sqlite3.DatabaseError as exc:
        _log.warning("ignoring unreadable state %s: %s", path, exc)
        if conn is not None:
            conn.close()
    for stale in (path, path.with_name(path.name + "-journal")):
        stale.unlink(missing_ok=True)
    conn = _connect(path)
    _reset(conn, source, target)
    return conn


class SyncState:
    """Everything the native engine remembers about one task between runs."""

    def __init__(self, path: Path, conn: sqlite3.Connection) -> None:
        self.path = path
        self._conn = conn
        self.folders: dict[str, FolderState] = {}  # by host1 raw name
        self.targets: dict[str, TargetState] = {}  # by host2 name, those read this run
        self._dropped: set[str] = set()

    @classmethod
    def load(cls, path: Path, source: str, target: str) -> SyncState:
        """The stored state of the accounts ``source`` -> ``target``: its folder
        rows only; an empty one when missing, unreadable or for other accounts."""
        state = cls(path, _open(path, source, target))
        rows = state._conn.execute("SELECT raw, name, target, uidvalidity, count, h1, h2 FROM folders")
        for raw, name, tgt, uidvalidity, count, h1, h2 in rows:
            key = _text(raw)
            fs = FolderState(_text(name), _text(tgt), int(uidvalidity), FolderCounters.from_json(h1),
                             FolderCounters.from_json(h2), count=int(count), loader=state._entries_loader(raw))
            fs.saved_row = fs.row()
            state.folders[key] = fs
        return state

    def _entries_loader(self, raw: bytes) -> Callable[[], Tracked]:
        def load() -> Tracked:
            rows = self._conn.execute("SELECT uid, h2uid, flags, note FROM entries WHERE folder = ?", (raw,))
            shared: dict[str, tuple[str, ...]] = {}  # one tuple per distinct flag set, not per message
            out = Tracked((int(uid), Entry(h2uid, shared.get(flags) or shared.setdefault(flags, tuple(flags.split())),
                                           note, dirty=False))
                          for uid, h2uid, flags, note in rows)
            return out
        return load

    def save(self) -> None:
        """Write what changed since the last save, in one transaction (nothing when nothing did)."""
        changes = list(self._changes())
        if not changes:
            return
        with _transaction(self._conn) as conn:
            for sql, rows in changes:
                conn.executemany(sql, rows)
        self._mark_saved()

    def _changes(self) -> Iterable[tuple[str, list]]:
        if self._dropped:
            gone = [(_blob(n),) for n in self._dropped]
            yield "DELETE FROM entries WHERE folder = ?", gone
            yield "DELETE FROM folders WHERE raw = ?", gone
        for key, fs in self.folders.items():
            raw = _blob(key)
            if fs.loaded:
                entries = fs.entries
                if entries.removed:
                    yield "DELETE FROM entries WHERE folder = ? AND uid = ?", [(raw, u) for u in entries.removed]
                dirty = [(raw, uid, *e.row()) for uid, e in entries.items() if e.dirty or uid in entries.written]
                if dirty:
                    yield "INSERT OR REPLACE INTO entries VALUES (?, ?, ?, ?, ?)", dirty
            if fs.row() != fs.saved_row:
                yield "INSERT OR REPLACE INTO folders VALUES (?, ?, ?, ?, ?, ?, ?)", [(raw, *fs.row())]
        for name, ts in self.targets.items():
            raw = _blob(name)
            if ts.keys.removed:
                yield "DELETE FROM keys WHERE target = ? AND uid = ?", [(raw, u) for u in ts.keys.removed]
            if ts.keys.written:
                yield ("INSERT OR REPLACE INTO keys VALUES (?, ?, ?)",
                       [(raw, u, _blob(ts.keys[u])) for u in ts.keys.written])
            if ts.uidvalidity != ts.saved_uidvalidity:
                yield "INSERT OR REPLACE INTO targets VALUES (?, ?)", [(raw, ts.uidvalidity)]

    def _mark_saved(self) -> None:
        self._dropped.clear()
        for fs in self.folders.values():
            if fs.loaded:
                for entry in fs.entries.values():
                    entry.dirty = False
                fs.entries.saved()
            fs.saved_row = fs.row()
        for ts in self.targets.values():
            ts.keys.saved()
            ts.saved_uidvalidity = ts.uidvalidity

    def release(self, raw_name: str, target: str) -> None:
        """Let go of what a finished, saved folder holds in memory (read again if needed)."""
        fs = self.folders.get(raw_name)
        if fs is not None:
            fs.release()
        ts = self.targets.get(target)
        if ts is not None and not ts.keys.written and not ts.keys.removed \
                and ts.uidvalidity == ts.saved_uidvalidity:
            del self.targets[target]

    def close(self) -> None:
        self._conn.close()

    # ---- queries the engine needs ------------------------------------------------
    def folder(self, raw_name: str, name: str, target: str) -> FolderState:
        """The state of host1 folder ``raw_name``; a new target forgets the old host2 UIDs."""
        fs = self.folders.get(raw_name)
        if fs is None:
            # a folder dropped earlier in this run: its rows are deleted before these are written
            fs = self.folders[raw_name] = FolderState(name=name, target=target, fresh=True,
                                                      loader=self._entries_loader(_blob(raw_name)))
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
        """A host2 folder's identified messages, read from the file on first use."""
        ts = self.targets.get(target)
        if ts is None:
            raw = _blob(target)
            row = self._conn.execute("SELECT uidvalidity FROM targets WHERE name = ?", (raw,)).fetchone()
            keys = Tracked((int(u), _text(k)) for u, k in
                           self._conn.execute("SELECT uid, key FROM keys WHERE target = ?", (raw,)))
            saved = int(row[0]) if row else None
            ts = self.targets[target] = TargetState(saved or 0, keys, saved)
        return ts

    def claimed(self, target: str) -> set[int]:
        """host2 UIDs of ``target`` that stand for some host1 message (of any folder mapped there)."""
        return {
            e.h2uid
            for fs in self.folders_for(target)
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
            self._dropped.add(name)
