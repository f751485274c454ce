"""Folder names, mapping, exclusion and sizes; unit tests then a real Dovecot pair
(remote with "." separator, local NS8-like with "/" and master login)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from imapclient import IMAPClient
from localnode.imap_pair import Pair
from ns8_imapsync.imap.connection import open_session
from ns8_imapsync.imap.folders import (
    Folder,
    FolderStat,
    always_excluded,
    decode_name,
    folder_stats,
    guess_delimiter,
    guess_prefix,
    is_excluded,
    list_folders,
    map_name,
    namespace_info,
    totals,
)
from ns8_imapsync.imap.identity import HEADER_FETCH, header_from_fetch, header_signature

# --------------------------------------------------------------------------- map_name


@pytest.mark.parametrize(
    ("name", "src_prefix", "src_delim", "expected"),
    [
        # Courier/cPanel: everything under INBOX. with "." separator
        ("INBOX.Sent", "INBOX.", ".", "Sent"),
        ("INBOX.Archive.2023", "INBOX.", ".", "Archive/2023"),
        ("INBOX", "INBOX.", ".", "INBOX"),
        ("INBOX.", "INBOX.", ".", "INBOX"),  # bare prefix
        ("", "", ".", "INBOX"),
        ("Inbox.Sent", "INBOX.", ".", "Sent"),  # prefix case differs
        # Dovecot Maildir++ remote, no prefix
        ("Sent", "", ".", "Sent"),
        ("Clients.ACME.Contracts", "", ".", "Clients/ACME/Contracts"),
        ("Projets.Réunions", "", ".", "Projets/Réunions"),
        ("Документы", "", ".", "Документы"),
        ("Lists.dev list", "", ".", "Lists/dev list"),
        # INBOX spelling fixed, also for children
        ("inbox", "", ".", "INBOX"),
        ("Inbox", "", "/", "INBOX"),
        ("Inbox.Kids", "", ".", "INBOX/Kids"),
        # a "/" inside a "." component must not create hierarchy
        ("a/b", "", ".", "a_b"),
        ("INBOX.x/y.z", "INBOX.", ".", "x_y/z"),
        # "/" source: "." would be refused by NS8 Dovecot (Maildir++ with "/")
        ("Projects/v1.2", "", "/", "Projects/v1_2"),
        ("[Gmail]/Sent Mail", "", "/", "[Gmail]/Sent Mail"),
        # "\\" source (Exchange-like)
        ("Archive\\2023", "", "\\", "Archive/2023"),
        # a name outside the source prefix keeps its path
        ("Other.Box", "INBOX.", ".", "Other/Box"),
    ],
)
def test_map_name_to_ns8(name: str, src_prefix: str, src_delim: str, expected: str) -> None:
    assert map_name(name, src_prefix, src_delim, "", "/") == expected


def test_map_name_to_prefixed_destination() -> None:
    assert map_name("Sent", "", "/", "INBOX.", ".") == "INBOX.Sent"
    assert map_name("INBOX", "", "/", "INBOX.", ".") == "INBOX"
    assert map_name("Inbox/Kids", "", "/", "INBOX.", ".") == "INBOX.Kids"  # not INBOX.INBOX.Kids
    assert map_name("a.b/c", "", "/", "INBOX.", ".") == "INBOX.a_b.c"


def test_map_name_options() -> None:
    # imapsync-like result when "." is acceptable on the destination
    assert map_name("Projects/v1.2", "", "/", "", "/", forbidden="") == "Projects/v1.2"
    assert map_name("a/b", "", ".", "", "/", replacement="-") == "a-b"
    with pytest.raises(ValueError):
        map_name("a", "", ".", "", "/", replacement="/")
    # NIL delimiter on the source: one component
    assert map_name("flat.name", "", "", "", "/") == "flat_name"


# --------------------------------------------------------------------------- exclusion


@pytest.mark.parametrize(
    ("name", "delimiter", "expected"),
    [
        ("Shared", "/", True),
        ("Shared/alice/INBOX", "/", True),
        ("Public/sales", "/", True),
        ("Shared.alice", ".", True),
        ("Public.x.y", ".", True),
        ("Shared.alice", None, True),
        ("Shared\\x", None, True),
        ("SharedStuff", "/", False),
        ("Shared Items", "/", False),
        ("My.Shared", ".", False),
        ("shared/x", "/", False),  # case-sensitive like the real module's regex
        ("Shared.alice", "/", False),  # with "/" known, "Shared.alice" is a plain folder
    ],
)
def test_always_excluded(name: str, delimiter: str | None, expected: bool) -> None:
    assert always_excluded(name, delimiter) is expected
    assert is_excluded(name, [], delimiter=delimiter) is expected


def test_user_patterns_are_unanchored_regexes() -> None:
    assert is_excluded("Sent Items", ["Sent"])
    assert not is_excluded("Sent Items", ["^Sent$"])
    assert is_excluded("Sent", ["^Sent$", "Junk"])
    assert is_excluded("Archive.2023", [r"^Archive\.20(2[0-3])$"])
    assert not is_excluded("INBOX", ["", "Trash"])
    # the raw modified UTF-7 form is matched too (imapsync's --exclude sees it)
    assert is_excluded("Projets.Réunions", ["R&AOk-unions"], raw="Projets.R&AOk-unions")
    assert is_excluded("Projets.Réunions", ["Réunions$"], raw="Projets.R&AOk-unions")
    with pytest.raises(ValueError, match="invalid folder exclusion pattern"):
        is_excluded("x", ["("])


# --------------------------------------------------------------------------- helpers


def test_decode_name_and_guesses() -> None:
    assert decode_name(b"Projets.R&AOk-unions") == "Projets.Réunions"
    assert decode_name(b"x&-y") == "x&y"
    assert decode_name(b"broken&AOk") == "brokené"
    assert decode_name(b"bad&!!!-") == "bad&!!!-"  # malformed: kept raw
    assert decode_name(2024) == "2024"
    assert guess_delimiter(["a.b", "c.d", "e/f"]) == "."
    assert guess_delimiter([], ["/", "/"]) == "/"
    assert guess_delimiter(["INBOX"]) == "/"
    assert guess_prefix(["INBOX", "INBOX.Sent", "INBOX.Trash"], ".") == "INBOX."
    assert guess_prefix(["INBOX", "Sent"], ".") == ""


def test_totals() -> None:
    stats = [
        FolderStat("INBOX", 3, 300),
        FolderStat("Sent", 2, 50, 30),
        FolderStat("Gone", 0, 0, None, exists=False),
    ]
    assert totals(stats) == (2, 5, 350)
    assert totals([]) == (0, 0, 0)


def test_folder_roundtrip_flag() -> None:
    assert Folder(b"Projets.R&AOk-unions", "Projets.Réunions", ".", ()).roundtrips
    assert not Folder(b"R&AOk-unions-extra&AOk", "Réunions-extraé", ".", ()).roundtrips


# --------------------------------------------------------------------------- real Dovecot


def _message(n: int, folder: str, size_pad: int) -> bytes:
    return (
        f"Received: from mx{n}.example.net (mx{n}.example.net [192.0.2.{n}])\r\n"
        f"\tby mail.example.com with ESMTPS id q{n}; Mon, 1 Jan 2024 10:00:{n:02d} +0000\r\n"
        f"Message-ID: <m{n}@{folder.replace(' ', '-')}.example>\r\n"
        f"Subject: message {n}\r\n\r\n" + "x" * size_pad + "\r\n"
    ).encode()


# remote folder (decoded, "." separator) -> number of messages appended
REMOTE_LAYOUT = {
    "INBOX": 3,
    "Sent": 1,
    "Archive.2023": 2,
    "Projets.Réunions": 2,
    "Документы": 1,
    "Lists.dev list": 0,
    "x&y": 1,
}


@pytest.fixture(scope="module")
def remote(pair: Pair) -> Iterator[tuple[IMAPClient, dict[str, list[bytes]]]]:
    client = open_session(pair.remote("user03"), pair.password("user03"))
    appended: dict[str, list[bytes]] = {}
    n = 0
    for folder, count in REMOTE_LAYOUT.items():
        if folder != "INBOX":
            client.create_folder(folder)
        appended[folder] = []
        for _ in range(count):
            n += 1
            msg = _message(n, folder, 100 * n)
            client.append(folder, msg)
            appended[folder].append(msg)
    try:
        yield client, appended
    finally:
        client.logout()


def test_list_folders_remote(remote) -> None:
    client, _ = remote
    folders = {f.name: f for f in list_folders(client)}
    assert set(folders) == set(REMOTE_LAYOUT)  # \Noselect parents (Archive, Projets, Lists) dropped
    reunions = folders["Projets.Réunions"]
    assert reunions.raw == b"Projets.R&AOk-unions"
    assert reunions.raw_text == "Projets.R&AOk-unions"
    assert reunions.delimiter == "."
    assert folders["Документы"].raw == b"&BBQEPgQ6BEMEPAQ1BD0EQgRL-"
    assert folders["x&y"].raw == b"x&-y"
    assert all(f.roundtrips for f in folders.values())
    assert client.folder_encode is True  # restored after listing raw names


def test_namespace_info(pair: Pair, remote) -> None:
    client, _ = remote
    assert namespace_info(client) == ("", ".")
    local = open_session(pair.local("user03"), pair.master_pass)
    try:
        assert namespace_info(local) == ("", "/")
    finally:
        local.logout()


def test_folder_stats_match_appended(remote) -> None:
    client, appended = remote
    folders = list_folders(client)
    before = client.select_folder("INBOX", readonly=True)
    flags_before = client.get_flags(client.search("ALL"))
    via_status = {s.name: s for s in folder_stats(client, folders)}
    via_fetch = {s.name: s for s in folder_stats(client, folders, use_status_size=False)}
    for folder, messages in appended.items():
        expected_bytes = sum(len(m) for m in messages)
        assert (via_status[folder].messages, via_status[folder].bytes) == (len(messages), expected_bytes)
        assert (via_fetch[folder].messages, via_fetch[folder].bytes) == (len(messages), expected_bytes)
        assert via_fetch[folder].biggest == max((len(m) for m in messages), default=0)
    assert totals(via_status.values()) == (
        len(REMOTE_LAYOUT),
        sum(REMOTE_LAYOUT.values()),
        sum(len(m) for ms in appended.values() for m in ms),
    )
    client.select_folder("INBOX", readonly=True)
    assert client.get_flags(client.search("ALL")) == flags_before  # sizing never sets \Seen
    assert before[b"EXISTS"] == REMOTE_LAYOUT["INBOX"]
    missing = folder_stats(client, ["No.Such.Folder"])
    assert missing == [FolderStat("No.Such.Folder", 0, 0, None, exists=False)]
    assert folder_stats(client, ["No.Such.Folder"], use_status_size=False)[0].exists is False


def test_map_between_servers_and_stats_on_local(pair: Pair, remote) -> None:
    client, appended = remote
    src_prefix, src_delim = namespace_info(client)
    local = open_session(pair.local("user03"), pair.master_pass)
    try:
        dst_prefix, dst_delim = namespace_info(local)
        mapping = {
            f.name: map_name(f.name, src_prefix, src_delim, dst_prefix, dst_delim)
            for f in list_folders(client)
        }
        assert mapping == {
            "INBOX": "INBOX",
            "Sent": "Sent",
            "Archive.2023": "Archive/2023",
            "Projets.Réunions": "Projets/Réunions",
            "Документы": "Документы",
            "Lists.dev list": "Lists/dev list",
            "x&y": "x&y",
        }
        for source, target in mapping.items():
            if target != "INBOX":
                local.create_folder(target)
            for msg in appended[source]:
                local.append(target, msg)
        local_folders = {f.name: f for f in list_folders(local)}
        assert set(mapping.values()) <= set(local_folders)
        assert local_folders["Projets/Réunions"].raw == b"Projets/R&AOk-unions"
        assert local_folders["Projets/Réunions"].delimiter == "/"
        assert not any(is_excluded(f.name, [], delimiter=f.delimiter) for f in local_folders.values())
        local_stats = {s.name: s for s in folder_stats(local, [local_folders[t] for t in mapping.values()])}
        remote_stats = {s.name: s for s in folder_stats(client, list_folders(client))}
        for source, target in mapping.items():
            assert (local_stats[target].messages, local_stats[target].bytes) == (
                remote_stats[source].messages,
                remote_stats[source].bytes,
            )
    finally:
        local.logout()


def test_header_fetch_gives_same_signature_as_the_original(remote) -> None:
    client, appended = remote
    client.select_folder("Archive.2023", readonly=True)
    uids = client.search("ALL")
    fetched = client.fetch(uids, [HEADER_FETCH.decode()])
    got = sorted(header_signature(header_from_fetch(data)) for data in fetched.values())
    assert got == sorted(header_signature(m) for m in appended["Archive.2023"])
    assert None not in got
