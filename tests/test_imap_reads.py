"""imap/reads.py and imap/wire.py against a real Dovecot with the fault proxy in front:
a server that lies about a message's size, ignores partial ranges or leaves
messages out of its replies cannot make us hold, spool or trust more than it
announced, and the session goes on after each refusal.

Sessions are opened as the engines open them (``connection.open_session``, no
encryption asked: the proxy hides STARTTLS).  Limits are lowered so the ~300 KB
message takes the chunked path.
"""

from __future__ import annotations

import imaplib
import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from itertools import pairwise
from pathlib import Path

import pytest
from faultproxy import FaultProxy, Unit
from imapclient import IMAPClient
from localnode.imap_pair import LOCAL_OF, REMOTE_OF, Pair
from ns8_imapsync.imap import wire
from ns8_imapsync.imap.connection import Endpoint, close_quietly, open_session
from ns8_imapsync.imap.identity import header_signature
from ns8_imapsync.imap.messages import append_message, mailbox_arg, uid_fetch, uid_search, uid_search_all
from ns8_imapsync.imap.reads import (
    Limits,
    UnreadableMessage,
    fetch_bodies,
    folder_listing,
    identify,
    new_messages,
    read_chunks,
    size_bound,
    still_listed,
)

REPO = Path(__file__).resolve().parents[1]
USER = "user01"  # alice on the remote server
LIMITS = Limits(large_message=100_000, chunk_size=32_768)
BIG_BODY = b"".join(b"%06d the quick brown fox jumps over the lazy dog, again and again\r\n" % i
                    for i in range(4000))  # ~280 KB


def message(tag: str, body: bytes, message_id: bool = True) -> bytes:
    head = f"From: a@example.com\r\nTo: b@example.com\r\nSubject: {tag}\r\n"
    if message_id:
        head += f"Message-ID: <{tag}@reads.test>\r\n"
    return head.encode() + b"\r\n" + body


@pytest.fixture(scope="module")
def folder(pair: Pair) -> dict[str, int]:
    """alice's INBOX: four small messages, one without Message-Id or Received, one large."""
    client = IMAPClient(pair.remote_host, pair.remote_imap, ssl=False)
    client.login(REMOTE_OF[USER], pair.password(USER))
    names = ["s1", "s2", "s3", "s4"]
    for tag in names:
        client.append("INBOX", message(tag, (f"body of {tag}\r\n" * 100).encode()))
    client.append("INBOX", message("keyless", b"no identity headers here\r\n", message_id=False))
    client.append("INBOX", message("big", BIG_BODY))
    client.select_folder("INBOX")
    uids = sorted(client.search(["ALL"]))
    client.logout()
    return dict(zip([*names, "keyless", "big"], uids, strict=True))


@pytest.fixture()
def proxy(pair: Pair) -> Iterator[FaultProxy]:
    with FaultProxy(pair.remote_host, pair.remote_imap) as started:
        yield started


@pytest.fixture()
def session(proxy: FaultProxy, pair: Pair) -> Iterator[IMAPClient]:
    client = open_session(Endpoint(proxy.host, proxy.port, "", REMOTE_OF[USER], timeout=20), pair.password(USER))
    client.select_folder("INBOX", readonly=True)
    yield client
    close_quietly(client)


def sizes_of(client: IMAPClient, uids: list[int]) -> dict[int, int]:
    return {u: v[b"RFC822.SIZE"] for u, v in client.fetch(uids, ["RFC822.SIZE"]).items()}


def bounded_sink(limit: int) -> tuple[list[bytes], Callable[[bytes], None]]:
    """A sink that fails the test (instead of spooling for ever) past ``limit`` bytes."""
    got: list[bytes] = []

    def sink(data: bytes) -> None:
        got.append(data)
        assert sum(map(len, got)) <= limit, f"the sink received {sum(map(len, got))} bytes, more than {limit}"
    return got, sink


def assert_usable(client: IMAPClient, uid: int) -> None:
    client.noop()
    assert client.fetch([uid], ["BODY.PEEK[]"])[uid][b"BODY[]"].startswith(b"From: ")


# ---- large messages: read_chunks ------------------------------------------------------------

@pytest.mark.parametrize("echo_origin", [False, True])
def test_read_chunks_refuses_a_server_that_ignores_partial_ranges(proxy, session, folder, echo_origin) -> None:
    big = folder["big"]
    size = sizes_of(session, [big])[big]
    proxy.ignore_partial(echo_origin=echo_origin)
    got, sink = bounded_sink(size_bound(size))
    with pytest.raises(UnreadableMessage) as caught:
        read_chunks(session, big, sink, LIMITS.chunk_size, size=size)
    assert caught.value.uid == big and "partial" in caught.value.reason
    assert got == []  # the whole body was drained, not handed over
    proxy.clear()
    assert_usable(session, folder["s1"])


def test_read_chunks_refuses_inflated_chunks_within_the_bound(proxy, session, folder) -> None:
    big = folder["big"]
    size = sizes_of(session, [big])[big]
    proxy.inflate(big, 1000)  # every chunk 1000 bytes longer than asked
    got, sink = bounded_sink(size_bound(size))
    with pytest.raises(UnreadableMessage, match="asked for 32768 bytes"):
        read_chunks(session, big, sink, LIMITS.chunk_size, size=size)
    assert sum(map(len, got)) <= size_bound(size)
    proxy.clear()
    assert_usable(session, folder["s2"])


def test_read_chunks_never_passes_more_than_the_announced_size(session, folder) -> None:
    big = folder["big"]
    announced = 100_000  # a server whose RFC822.SIZE says less than it then serves
    got, sink = bounded_sink(size_bound(announced))
    with pytest.raises(UnreadableMessage, match="announced 100000 bytes"):
        read_chunks(session, big, sink, LIMITS.chunk_size, size=announced)
    assert sum(map(len, got)) <= size_bound(announced)
    # the real size reads whole, with progress inside the message
    got, sink = bounded_sink(10**7)
    progress: list[int] = []
    real = sizes_of(session, [big])[big]
    assert read_chunks(session, big, sink, LIMITS.chunk_size, size=real, on_chunk=progress.append)
    assert b"".join(got).endswith(BIG_BODY) and sum(progress) == real and len(progress) == real // 32_768 + 1


def test_read_chunks_checks_the_origin(proxy, session, folder) -> None:
    small = folder["s3"]
    proxy.ignore_partial()  # whole message, named BODY[]: shorter than the chunk, but no origin
    with pytest.raises(UnreadableMessage, match="no origin"):
        read_chunks(session, small, lambda _d: None, 1_000_000, size=sizes_of(session, [small])[small])
    proxy.clear()
    proxy.rewrite(lambda u: Unit([re.sub(rb"BODY\[\]<[1-9]\d*>", b"BODY[]<0>", t) for t in u.texts], u.literals))
    with pytest.raises(UnreadableMessage, match="from offset 0"):
        read_chunks(session, folder["big"], lambda _d: None, LIMITS.chunk_size)
    proxy.clear()
    assert_usable(session, small)


def test_read_chunks_missing_body_is_an_error_and_a_gone_message_is_false(proxy, session, folder) -> None:
    big = folder["big"]
    proxy.drop_item("BODY[]", uid=big)
    with pytest.raises(UnreadableMessage, match="no BODY"):
        read_chunks(session, big, lambda _d: None, LIMITS.chunk_size, size=sizes_of(session, [big])[big])
    proxy.clear()
    proxy.drop_fetch(big)
    assert read_chunks(session, big, lambda _d: None, LIMITS.chunk_size) is False
    assert still_listed(session, [big]) == {big}  # listed, yet not delivered: not "vanished"


# ---- small messages: fetch_bodies and the wire's literal limit ------------------------------

def test_fetch_bodies_refuses_an_inflated_message_and_returns_the_others(proxy, session, folder) -> None:
    uids = [folder[t] for t in ("s1", "s2", "s3", "s4")]
    sizes = sizes_of(session, uids)
    expected = fetch_bodies(session, uids)
    proxy.inflate(folder["s2"], 4_000_000)
    refused: dict[int, str] = {}
    got = fetch_bodies(session, uids, sizes=sizes, refused=refused)
    assert got == {u: b for u, b in expected.items() if u != folder["s2"]}
    assert list(refused) == [folder["s2"]]
    announced = sizes[folder["s2"]]
    assert f"announced {announced} bytes" in refused[folder["s2"]]
    assert str(announced + 4_000_000) in refused[folder["s2"]]
    assert wire.instrument(session).refused == 1
    # in a process of its own (the proxy's buffers are not the client's): drained, never held
    report = client_process(proxy, uids, sizes)
    assert report["got"] == sorted(got) and report["refused"] == [folder["s2"]]
    assert report["peak"] < 1_000_000, f"{report['peak']} bytes held for a 4 MB literal"
    proxy.clear()
    assert_usable(session, folder["s2"])


CLIENT = """
import json, sys, tracemalloc
from ns8_imapsync.imap.connection import Endpoint, open_session
from ns8_imapsync.imap.reads import fetch_bodies
host, port, user, password, uids, sizes = json.load(sys.stdin)
client = open_session(Endpoint(host, port, "", user), password)
client.select_folder("INBOX", readonly=True)
refused = {}
tracemalloc.start()
got = fetch_bodies(client, uids, sizes={int(k): v for k, v in sizes.items()}, refused=refused)
print(json.dumps({"got": sorted(got), "refused": sorted(refused), "peak": tracemalloc.get_traced_memory()[1]}))
"""


def client_process(proxy: FaultProxy, uids: list[int], sizes: dict[int, int]) -> dict:
    """Run fetch_bodies through the proxy in a fresh interpreter; its result and peak memory."""
    from localnode.config import REMOTE_USERS
    user = REMOTE_OF[USER]
    args = json.dumps([proxy.host, proxy.port, user, REMOTE_USERS[user], uids, sizes])
    env = dict(os.environ, PYTHONPATH=str(REPO / "imageroot" / "pypkg"))
    proc = subprocess.run([sys.executable, "-c", CLIENT], input=args, capture_output=True, text=True,
                          env=env, timeout=60)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def test_fetch_bodies_small_excess_is_refused_and_a_missing_body_left_out(proxy, session, folder) -> None:
    uids = [folder[t] for t in ("s1", "s2", "s3")]
    sizes = sizes_of(session, uids)
    proxy.inflate(folder["s1"], size_bound(sizes[folder["s1"]]) - sizes[folder["s1"]] + 1)  # one byte too many
    proxy.drop_item("BODY[]", uid=folder["s3"])
    refused: dict[int, str] = {}
    got = fetch_bodies(session, uids, sizes=sizes, refused=refused)
    assert list(got) == [folder["s2"]] and list(refused) == [folder["s1"]]
    assert still_listed(session, [folder["s3"]]) == {folder["s3"]}


def test_a_literal_above_the_drain_cap_aborts_the_session(proxy, session, folder) -> None:
    big = folder["big"]
    meter = wire.instrument(session)
    before = meter.bytes_in
    with pytest.raises(wire.LiteralTooLarge) as caught, wire.literal_limit(session, 1000, drain_cap=50_000):
        uid_fetch(session, str(big), "(UID BODY.PEEK[])")
    assert isinstance(caught.value, imaplib.IMAP4.abort)
    assert meter.bytes_in - before < 50_000  # not drained either
    with pytest.raises((imaplib.IMAP4.abort, OSError)):
        session.noop()


def test_wire_counts_every_byte_and_reports_progress_while_slow(proxy, session, folder) -> None:
    calls: list[tuple[float, int]] = []
    meter = wire.instrument(session, on_bytes=lambda n: calls.append((time.monotonic(), n)))
    assert wire.instrument(session) is meter  # idempotent
    up, down = proxy.bytes_up, proxy.bytes_down
    in0, out0 = meter.bytes_in, meter.bytes_out
    proxy.throttle(150_000)
    big = folder["big"]
    assert read_chunks(session, big, lambda _d: None, LIMITS.chunk_size, size=sizes_of(session, [big])[big])
    proxy.throttle(None)
    deadline = time.monotonic() + 2
    while proxy.bytes_down - down != meter.bytes_in - in0 and time.monotonic() < deadline:
        time.sleep(0.01)  # the proxy counts a piece just after the client got it
    assert meter.bytes_in - in0 == proxy.bytes_down - down > len(BIG_BODY)
    assert meter.bytes_out - out0 == proxy.bytes_up - up > 0
    assert sum(n for _t, n in calls) == meter.bytes_in - in0 + meter.bytes_out - out0
    times = [t for t, _n in calls]
    assert times[-1] - times[0] > 1.2 and max(b - a for a, b in pairwise(times)) < 0.8


# ---- identities ------------------------------------------------------------------------------

def test_identify_leaves_out_and_reports_what_it_cannot_read(proxy, session, folder) -> None:
    uids = sorted(folder.values())
    clean = identify(session, uids, LIMITS)
    assert set(clean) == set(uids) and clean[folder["keyless"]].content_key
    proxy.inflate(folder["keyless"], 200_000)  # its identity is a content hash: the body is read
    proxy.ignore_partial()  # and the large message's deep check is read in chunks
    refused: dict[int, str] = {}
    got = identify(session, uids, LIMITS, all_content=True, refused=refused)
    assert set(refused) == {folder["keyless"], folder["big"]}
    assert set(got) == set(uids) - set(refused)
    assert all(got[u].content_key == clean[u].content_key for u in got if clean[u].content_key)


# ---- listings ----------------------------------------------------------------------------------

def test_folder_listing_is_incomplete_when_the_server_leaves_messages_out(proxy, session, folder, pair) -> None:
    exists = len(uid_search_all(session))
    listing = folder_listing(session, exists)
    assert listing.complete and set(listing.flags) == set(folder.values()) and not listing.missing
    proxy.drop_fetch(folder["s4"])
    listing = folder_listing(session, exists)
    assert not listing.complete and listing.missing == {folder["s4"]}
    assert set(listing.flags) == set(folder.values()) - {folder["s4"]}
    proxy.clear()
    proxy.drop_item("FLAGS", uid=folder["s1"])
    listing = folder_listing(session, exists)
    assert not listing.complete and listing.missing == {folder["s1"]}
    proxy.clear()


def test_folder_listing_and_still_listed_after_an_expunge(pair, session, folder) -> None:
    writer = IMAPClient(pair.remote_host, pair.remote_imap, ssl=False)
    writer.login(REMOTE_OF[USER], pair.password(USER))
    writer.append("INBOX", message("doomed", b"gone soon\r\n"))
    writer.select_folder("INBOX")
    doomed = max(writer.search(["ALL"]))
    session.noop()
    exists = len(uid_search_all(session))
    writer.delete_messages([doomed])
    writer.expunge()
    writer.logout()
    session.noop()  # the session learns of the expunge
    listing = folder_listing(session, exists)  # one entry fewer than EXISTS said: checked, complete
    assert listing.complete and doomed not in listing.flags
    assert still_listed(session, [doomed, folder["s1"]]) == {folder["s1"]}
    top = max(listing.flags)
    assert uid_search(session, f"UID {top + 50}:*") == {top}  # the server's quirk ...
    assert still_listed(session, [top + 50]) == set()  # ... is not taken for a listed message


def test_still_listed_and_listing_without_esearch(proxy, pair, folder) -> None:
    proxy.hide_capability("ESEARCH")
    proxy.drop_fetch(folder["s2"])
    client = open_session(Endpoint(proxy.host, proxy.port, "", REMOTE_OF[USER]), pair.password(USER))
    try:
        assert not client.has_capability("ESEARCH")
        exists = client.select_folder("INBOX", readonly=True)[b"EXISTS"]
        listing = folder_listing(client, exists)
        assert not listing.complete and listing.missing == {folder["s2"]}
        top = max(folder.values())
        assert still_listed(client, [folder["s2"], folder["big"], top + 50]) == {folder["s2"], folder["big"]}
    finally:
        close_quietly(client)


# ---- malformed responses: one message, not its batch ------------------------------------------

MALFORMED_SHAPES = {
    "unterminated-string": None,  # the proxy's default
    "unbalanced-parens": b"* 1 FETCH (UID %d FLAGS (\\Seen BODY[] NIL\r\n",
    "bad-literal-size": b"* 1 FETCH (UID %d BODY[] {notanumber}\r\n",
}


@pytest.mark.parametrize("shape", list(MALFORMED_SHAPES))
def test_a_malformed_response_costs_its_message_only(proxy, session, folder, shape) -> None:
    """Every read that takes refusals leaves the broken message out, names it, and
    returns the rest of the batch; the session goes on."""
    victim = folder["s2"]
    raw = MALFORMED_SHAPES[shape]
    smalls = [folder[t] for t in ("s1", "s2", "s3", "s4")]
    sizes = sizes_of(session, smalls)
    expected = fetch_bodies(session, smalls)
    exists = session.select_folder("INBOX", readonly=True)[b"EXISTS"]
    proxy.malform(victim, None if raw is None else raw % victim)
    listing = folder_listing(session, exists)
    assert not listing.complete and listing.missing == {victim}
    assert set(listing.malformed) == {victim} and f"UID {victim}:" in listing.unlisted()
    assert set(listing.flags) == set(folder.values()) - {victim}
    refused: dict[int, str] = {}
    got = fetch_bodies(session, smalls, sizes=sizes, refused=refused)
    assert got == {u: b for u, b in expected.items() if u != victim}
    assert list(refused) == [victim] and "could not be parsed" in refused[victim]
    with pytest.raises(imaplib.IMAP4.error):
        uid_fetch(session, "1:*", "(UID FLAGS)")  # a caller that takes no refusals still fails loudly
    proxy.clear()
    assert_usable(session, victim)


def test_a_malformed_chunk_is_an_unreadable_message(proxy, session, folder) -> None:
    big = folder["big"]
    size = sizes_of(session, [big])[big]
    proxy.malform(big)
    with pytest.raises(UnreadableMessage, match="could not be parsed"):
        read_chunks(session, big, lambda _d: None, LIMITS.chunk_size, size=size)
    proxy.clear()
    assert_usable(session, big)


def test_a_malformed_response_that_names_no_uid_fails_the_batch(proxy, session, folder) -> None:
    """Without its UID the broken response cannot be told from the others: nothing is guessed."""
    proxy.rewrite(lambda u: Unit([b"* 1 FETCH (FLAGS (\\Seen "]) if re.match(rb"\* \d+ FETCH \(", u.texts[0]) else u)
    with pytest.raises(imaplib.IMAP4.error):
        folder_listing(session, len(folder))
    proxy.clear()
    assert_usable(session, folder["s1"])


# ---- APPEND without UIDPLUS --------------------------------------------------------------------

def test_append_without_appenduid_is_stored_and_found_by_identity(pair: Pair) -> None:
    mail1 = pair.cfg.mail1
    raw = message("no-uidplus", b"stored without a UID\r\n")
    with FaultProxy(mail1.host, mail1.imap_port, source_host=mail1.host) as proxy:
        proxy.strip_appenduid()
        proxy.hide_capability("UIDPLUS")
        user = f"{LOCAL_OF['user03']}*{mail1.master_user}"
        client = open_session(Endpoint(proxy.host, proxy.port, "", user), pair.master_pass)
        try:
            assert not client.has_capability("UIDPLUS")
            client.select_folder("INBOX")
            above = max(uid_search_all(client), default=0)
            assert append_message(client, mailbox_arg("INBOX"), ["\\Seen"], None, len(raw), [raw]) is None
            found = new_messages(client, above, LIMITS)
            assert [m.signature for m in found.values()] == [header_signature(raw)]
            assert new_messages(client, max(found), LIMITS) == {}
            proxy.strip_appenduid(False)
            assert isinstance(append_message(client, mailbox_arg("INBOX"), [], None, len(raw), [raw]), int)
        finally:
            close_quietly(client)
