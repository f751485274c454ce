"""The suite's own tools can fail: the comparator sees each kind of difference, the
deletion watch catches a deletion without a local copy, and the proxy's observers
and folder renames do what the cases rely on."""

from __future__ import annotations

from datetime import UTC, datetime

from faultproxy import FaultProxy
from imapclient import IMAPClient

from reliability import comparator as cmp
from reliability.conftest import Mailboxes, message, via

SECTION = "0-suite-tools"


def copy_all(boxes: Mailboxes) -> None:
    """A reference copy made with plain IMAP (no product code): every remote message into
    the local folder of the same path, with its flags and date."""
    src = cmp.connect(boxes.remote, boxes.remote_password)
    dst = cmp.connect(boxes.local, boxes.local_password)
    try:
        for _flags, delim, name in src.list_folders():
            path = cmp.folder_path(name, delim.decode(), "")
            target = "/".join(path)
            if target != "INBOX" and not dst.folder_exists(target):
                dst.create_folder(target)
            src.select_folder(name, readonly=True)
            uids = src.search(["ALL"])
            for item in (src.fetch(uids, ["BODY.PEEK[]", "FLAGS", "INTERNALDATE"]) if uids else {}).values():
                flags = [f for f in item[b"FLAGS"] if f != b"\\Recent"]
                dst.append(target, item[b"BODY[]"], flags, item[b"INTERNALDATE"])
    finally:
        src.logout()
        dst.logout()


def local_client(boxes: Mailboxes, folder: str) -> IMAPClient:
    client = cmp.connect(boxes.local, boxes.local_password)
    client.select_folder(folder)
    return client


def test_the_comparator_matches_across_separators_and_sees_every_difference(mailboxes: Mailboxes) -> None:
    mailboxes.fill(seed=21, count=20, large=0, recent=1)
    copy_all(mailboxes)
    remote, local = mailboxes.remote_snapshot(), mailboxes.local_snapshot()
    assert ("Archive", "2023") in remote.folders and remote.names[("Archive", "2023")] == "Archive.2023"
    assert local.names[("Archive", "2023")] == "Archive/2023"
    same = cmp.compare(remote, local)
    assert same.ok, same.summary()
    assert same.source_messages == same.target_messages == 21

    client = local_client(mailboxes, "INBOX")
    uids = sorted(client.search(["ALL"]))
    data = client.fetch(uids[:2], ["BODY.PEEK[]", "INTERNALDATE"])
    client.append("INBOX", data[uids[0]][b"BODY[]"])  # a duplicate of the first
    client.append("INBOX", message("stranger"))  # extra
    client.add_flags([uids[1]], [b"$Changed"])  # a flag difference
    client.delete_messages([uids[2], uids[3]])
    client.expunge()  # two missing...
    body, flags = remote_inbox(mailboxes)[uids[3]]
    client.append("INBOX", body, flags, datetime(2001, 1, 1, tzinfo=UTC))
    client.logout()  # ...one of them back with another date: one missing, one date difference
    diff = cmp.compare(remote, mailboxes.local_snapshot())
    assert not diff.ok
    counts = diff.counts()
    assert (counts["missing"], counts["extra"], counts["duplicated"], counts["flags"], counts["dates"]) == \
        (1, 1, 1, 1, 1), diff.summary()
    assert diff.folders[("INBOX",)].extra[0][0] == "<stranger@reliability.test>"


def remote_inbox(boxes: Mailboxes) -> dict[int, tuple[bytes, list[bytes]]]:
    """UID -> (raw bytes, flags) of the remote INBOX (the reference copy kept the UIDs' order)."""
    client = cmp.connect(boxes.remote, boxes.remote_password)
    try:
        client.select_folder("INBOX", readonly=True)
        data = client.fetch(client.search(["ALL"]), ["BODY.PEEK[]", "FLAGS"])
        return {u: (d[b"BODY[]"], [f for f in d[b"FLAGS"] if f != b"\\Recent"]) for u, d in data.items()}
    finally:
        client.logout()


def test_deletions_are_counted_against_the_local_mailbox(mailboxes: Mailboxes) -> None:
    mailboxes.fill(seed=22, count=10, large=0, recent=0)
    before = mailboxes.remote_snapshot()
    copy_all(mailboxes)
    client = cmp.connect(mailboxes.remote, mailboxes.remote_password)
    client.select_folder("INBOX")
    client.append("INBOX", message("never-copied"))
    uids = sorted(client.search(["ALL"]))
    client.delete_messages(uids[:1])
    client.expunge()
    after_copy = mailboxes.remote_snapshot()
    client.delete_messages(uids[-1:])  # the one never copied
    client.expunge()
    client.logout()
    gone = cmp.deleted_since(before, mailboxes.remote_snapshot())
    assert sum(sum(c.values()) for c in gone.values()) == 1
    assert cmp.unaccounted_deletions(gone, mailboxes.local_snapshot()) == {}
    lost = cmp.unaccounted_deletions(cmp.deleted_since(after_copy, mailboxes.remote_snapshot()),
                                     mailboxes.local_snapshot())
    assert [k[0] for k in lost[("INBOX",)]] == ["<never-copied@reliability.test>"]


def test_the_deletion_watch_holds_the_store_and_names_an_unsafe_deletion(mailboxes: Mailboxes,
                                                                         remote_proxy: FaultProxy) -> None:
    mailboxes.fill(seed=23, count=10, large=0, recent=2)
    copy_all(mailboxes)
    client = cmp.connect(mailboxes.remote, mailboxes.remote_password)
    client.append("INBOX", message("only-remote"))
    client.logout()
    watch = mailboxes.watch(remote_proxy, mailboxes.remote_snapshot())
    proxied = cmp.connect(via(remote_proxy, mailboxes.remote), mailboxes.remote_password)
    proxied.select_folder("INBOX")
    stranger = proxied.search(["HEADER", "Message-ID", "only-remote"])
    copied = sorted(set(proxied.search(["ALL"])) - set(stranger))
    proxied.delete_messages(copied[:2])  # copied: fine
    assert watch.violations == [] and watch.checked == 2
    proxied.delete_messages(stranger)  # never copied: a violation
    proxied.logout()
    assert watch.checked == 3 and len(watch.violations) == 1, watch.violations
    assert "only-remote@reliability.test" in watch.violations[0] and remote_proxy.hook_errors == []


def test_the_proxy_renames_a_folder_both_ways_and_tracks_the_selected_one(mailboxes: Mailboxes,
                                                                          remote_proxy: FaultProxy) -> None:
    client = cmp.connect(mailboxes.remote, mailboxes.remote_password)
    client.create_folder("zzreal1")
    client.append("zzreal1", message("in-real"))
    client.logout()
    shown = "x..y \x01 1000" + "z" * 20
    from imapclient import imap_utf7
    remote_proxy.rename_folder("zzreal1", imap_utf7.encode(shown).decode())
    selected: list[bytes | None] = []
    remote_proxy.on_command(r"FETCH", lambda _line, session: selected.append(session.selected))
    proxied = cmp.connect(via(remote_proxy, mailboxes.remote), mailboxes.remote_password)
    names = [name for _f, _d, name in proxied.list_folders()]
    assert shown in names and "zzreal1" not in names
    proxied.select_folder(shown, readonly=True)
    data = proxied.fetch(proxied.search(["ALL"]), ["BODY.PEEK[HEADER.FIELDS (SUBJECT)]"])
    proxied.logout()
    assert [d[b"BODY[HEADER.FIELDS (SUBJECT)]"].strip() for d in data.values()] == [b"Subject: in-real"]
    assert selected and selected[-1] == b'"zzreal1"'  # what the server selected
