"""The native engine's state file: what a run reads and writes, and what it survives.

The speed rule behind it: loading the state reads the folder rows only, so an
unchanged folder costs the same whatever its size, and a save writes the rows
that changed, not the whole state."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
from ns8_imapsync.sync import syncstate as ss

SOURCE, TARGET = "alice@remote:143", "u1*vmail@mail1:143"


def load(path: Path, source: str = SOURCE) -> ss.SyncState:
    return ss.SyncState.load(path, source, TARGET)


def filled(path: Path, sizes: dict[str, int]) -> None:
    """A saved state with ``sizes[name]`` entries in each folder, and its snapshots."""
    state = load(path)
    for name, n in sizes.items():
        fs = state.folder(name, name, name)
        fs.uidvalidity = 7
        for uid in range(1, n + 1):
            fs.entries[uid] = ss.Entry(uid + 1000, ("\\Seen",) if uid % 2 else ())
        state.target_state(name).uidvalidity = 9
        state.target_state(name).keys.update({uid + 1000: f"key{uid}" for uid in range(1, n + 1)})
        fs.h1 = ss.FolderCounters(7, n + 1, n, 55)
        fs.h2 = ss.FolderCounters(9, n + 1001, n)
    state.save()
    state.close()


def statements_of_load(path: Path) -> list[str]:
    seen: list[str] = []
    real_connect = sqlite3.connect

    def traced(*args, **kw):
        conn = real_connect(*args, **kw)
        conn.set_trace_callback(seen.append)
        return conn
    sqlite3.connect = traced
    try:
        state = load(path)
        state.close()
    finally:
        sqlite3.connect = real_connect
    return seen


def test_loading_reads_folder_rows_only_whatever_their_size(tmp_path: Path) -> None:
    small, big = tmp_path / "small.db", tmp_path / "big.db"
    filled(small, {"INBOX": 3, "Sent": 2})
    filled(big, {"INBOX": 20_000, "Sent": 5_000})
    assert statements_of_load(small) == statements_of_load(big)
    assert not any("entries" in s or "keys" in s for s in statements_of_load(big) if s.startswith("SELECT"))
    state = load(big)
    fs = state.folders["INBOX"]
    assert not fs.loaded and fs.count == 20_000  # "how many" without reading them
    assert fs.h1 == ss.FolderCounters(7, 20_001, 20_000, 55) and fs.h2 == ss.FolderCounters(9, 21_001, 20_000)
    assert len(fs.entries) == 20_000 and fs.entries[3] == ss.Entry(1003, ("\\Seen",))  # read on first use
    state.close()


def test_a_save_writes_only_what_changed(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    filled(path, {"INBOX": 10_000, "Sent": 10})
    state = load(path)
    conn = state._conn
    before = conn.total_changes
    state.save()
    assert conn.total_changes == before  # nothing changed, nothing written
    entries = state.folders["INBOX"].entries
    entries[5].flags = ("\\Flagged",)
    del entries[6]
    entries[10_001] = ss.Entry(None, (), ss.GONE)
    state.target_state("INBOX").keys[99_999] = "new"
    state.save()
    # 3 entry rows, the folder row (its count is unchanged, so not even that), one key row
    assert conn.total_changes - before == 4
    state.close()
    again = load(path)
    got = again.folders["INBOX"].entries
    assert got[5].flags == ("\\Flagged",) and 6 not in got and got[10_001].note == ss.GONE
    assert len(got) == 10_000 and again.target_state("INBOX").keys[99_999] == "new"
    assert len(again.folders["Sent"].entries) == 10
    again.close()


def test_round_trip_of_every_field_and_odd_names(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    state = load(path)
    name = "Réunions/\udcff odd"  # a raw name with a lone surrogate still round-trips
    fs = state.folder(name, "Réunions odd", "Réunions")
    fs.uidvalidity = 3
    fs.entries[1] = ss.Entry(10, ("\\Seen", "$Label1"), ss.SIEVE_PENDING)
    fs.entries[2] = ss.Entry(None, (), ss.FILED)
    state.target_state("Réunions").keys[10] = "sig:\u00e9"
    state.save()
    state.close()
    again = load(path)
    fs2 = again.folders[name]
    assert (fs2.name, fs2.target, fs2.uidvalidity) == ("Réunions odd", "Réunions", 3)
    assert dict(fs2.entries) == {1: ss.Entry(10, ("\\Seen", "$Label1"), ss.SIEVE_PENDING),
                                 2: ss.Entry(None, (), ss.FILED)}
    assert fs2.h1 is None and again.target_state("Réunions").keys == {10: "sig:\u00e9"}
    assert again.claimed("Réunions") == {10}
    again.close()
    assert path.stat().st_mode & 0o777 == 0o600


def test_dropped_folders_are_gone_even_when_recreated_in_the_same_run(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    filled(path, {"INBOX": 5, "Old": 5})
    state = load(path)
    state.drop_folders_except({"INBOX"})
    fresh = state.folder("Old", "Old", "Old")
    assert fresh.count == 0
    fresh.entries[1] = ss.Entry(77)
    state.save()
    state.close()
    again = load(path)
    assert dict(again.folders["Old"].entries) == {1: ss.Entry(77)}  # none of the dropped rows came back
    again.drop_folders_except(set())
    again.save()
    again.close()
    assert load(path).folders == {}


def test_released_folder_reads_back_what_was_saved(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    filled(path, {"INBOX": 50})
    state = load(path)
    state.folders["INBOX"].entries[1].note = ss.GONE
    state.release("INBOX", "INBOX")
    assert state.folders["INBOX"].loaded  # not saved yet: kept
    state.save()
    state.release("INBOX", "INBOX")
    assert not state.folders["INBOX"].loaded and "INBOX" not in state.targets
    assert state.folders["INBOX"].entries[1].note == ss.GONE and state.folders["INBOX"].count == 50
    state.close()


def test_another_account_or_a_broken_file_starts_empty(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "s.db"
    filled(path, {"INBOX": 5})
    other = load(path, source="bob@remote:143")
    assert other.folders == {}
    other.close()
    assert load(path).folders == {}  # emptied for bob: alice's rows did not survive under bob's name
    path.write_bytes(b"this is not a database" * 100)
    broken = load(path)
    assert broken.folders == {} and "unreadable state" in caplog.text
    broken.folder("INBOX", "INBOX", "INBOX").entries[1] = ss.Entry(2)
    broken.save()
    broken.close()
    assert dict(load(path).folders["INBOX"].entries) == {1: ss.Entry(2)}
    assert path.stat().st_mode & 0o777 == 0o600


def test_forgetting_host2_uids_marks_copies_gone(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    filled(path, {"INBOX": 4})
    state = load(path)
    state.forget_target_uids("INBOX", 12)
    state.save()
    state.close()
    again = load(path)
    assert all(e.h2uid is None and e.note == ss.GONE for e in again.folders["INBOX"].entries.values())
    assert again.target_state("INBOX").uidvalidity == 12 and not again.target_state("INBOX").keys
    assert again.folders["INBOX"].h1 is None
    again.close()


def test_a_write_the_disk_refuses_keeps_its_own_error(tmp_path) -> None:
    """The error a run reports is the disk's ("database or disk is full"), not the
    ROLLBACK's that SQLite made pointless by rolling back itself."""
    conn = sqlite3.connect(tmp_path / "x.db", isolation_level=None)
    conn.execute("CREATE TABLE t (v)")
    with pytest.raises(sqlite3.OperationalError, match="boom"):
        with ss._transaction(conn):
            conn.execute("INSERT INTO t VALUES (1)")
            conn.execute("ROLLBACK")  # as SQLite does by itself on SQLITE_FULL
            raise sqlite3.OperationalError("boom")
    assert conn.execute("SELECT count(*) FROM t").fetchone() == (0,)
