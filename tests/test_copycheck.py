"""sync/copycheck.py: how the completion step pairs remote messages with local copies
(the content checks themselves run against real Dovecot in test_remote_deletion.py
and the reliability suite)."""

from __future__ import annotations

from ns8_imapsync.imap.reads import size_bound
from ns8_imapsync.sync.copycheck import Damaged, LocalCopy, match
from ns8_imapsync.sync.transfer import Source


def src(uid: int, size: int, key: str = "sig-a") -> Source:
    return Source(uid, (), size, None, key)


def copy(uid: int, size: int, key: str = "sig-a") -> LocalCopy:
    return LocalCopy(uid, size, (key, None))


def key_of(s: Source) -> tuple:
    return (s.key, None)


def test_a_copy_of_the_same_size_is_taken_as_it_is() -> None:
    m = match([src(1, 100)], [copy(7, 100)], key_of)
    assert m.missing == [] and m.suspects == []


def test_a_copy_of_another_size_is_a_suspect_and_no_copy_is_missing() -> None:
    m = match([src(1, 100)], [copy(7, 130)], key_of)
    assert m.missing == [] and m.suspects == [(src(1, 100), copy(7, 130))]
    m = match([src(1, 100)], [copy(7, 100, key="sig-b")], key_of)
    assert m.missing == [src(1, 100)] and m.suspects == []


def test_twins_take_the_exact_copies_first() -> None:
    """Two remote twins (same identity, different sizes): each exact copy is taken by its
    own twin, whatever the UID order, so neither is suspected for the other's copy."""
    m = match([src(1, 120), src(2, 100)], [copy(7, 100), copy(8, 120)], key_of)
    assert m.missing == [] and m.suspects == []
    m = match([src(1, 120), src(2, 100)], [copy(7, 100)], key_of)
    assert m.missing == [src(1, 120)] and m.suspects == []
    m = match([src(1, 120), src(2, 100)], [copy(7, 100), copy(8, 999)], key_of)
    assert m.missing == [] and m.suspects == [(src(1, 120), copy(8, 999))]


def test_a_copy_larger_than_the_remote_allows_cannot_be_its_message() -> None:
    assert Damaged(src(1, 200), copy(7, size_bound(200) + 1)).impossible
    assert not Damaged(src(1, 200), copy(7, size_bound(200))).impossible
    assert not Damaged(src(1, 200), copy(7, 150)).impossible
    assert not Damaged(src(1, 0), copy(7, 10_000_000)).impossible  # a server that knows no sizes
