"""The fault proxy (tests/faultproxy.py) against the real Dovecot pair: it forwards
faithfully when told nothing, and each fault does what other tests rely on.

The remote Dovecot takes plaintext logins; mail1 only from its own address,
which the proxy uses as source (``source_host``).
"""

from __future__ import annotations

import imaplib
import threading
import time
from collections.abc import Iterator

import pytest
from faultproxy import FaultProxy, Unit, fetch_items
from imapclient import IMAPClient
from imapclient.exceptions import ProtocolError
from localnode.imap_pair import REMOTE_OF, Pair

USER = "user02"  # bob on the remote server
BODY = b"".join(b"line %05d of a message body that is long enough\r\n" % i for i in range(2000))  # ~100 KB


def message(tag: str, body: bytes = b"short body\r\n") -> bytes:
    return (f"From: a@example.com\r\nTo: b@example.com\r\nSubject: {tag}\r\n"
            f"Message-ID: <{tag}@proxy.test>\r\n\r\n").encode() + body


def direct(pair: Pair) -> IMAPClient:
    client = IMAPClient(pair.remote_host, pair.remote_imap, ssl=False)
    client.login(REMOTE_OF[USER], pair.password(USER))
    return client


@pytest.fixture(scope="module")
def uids(pair: Pair) -> list[int]:
    """Three messages in bob's INBOX: two short, one of ~100 KB."""
    client = direct(pair)
    for tag, body in (("one", b"first\r\n"), ("two", b"second\r\n"), ("big", BODY)):
        client.append("INBOX", message(tag, body))
    client.select_folder("INBOX")
    found = sorted(client.search(["ALL"]))
    client.logout()
    return found


@pytest.fixture()
def proxy(pair: Pair) -> Iterator[FaultProxy]:
    with FaultProxy(pair.remote_host, pair.remote_imap) as started:
        yield started


def through(proxy: FaultProxy, pair: Pair, timeout: float | None = None) -> IMAPClient:
    client = IMAPClient(proxy.host, proxy.port, ssl=False, timeout=timeout)
    client.login(REMOTE_OF[USER], pair.password(USER))
    client.select_folder("INBOX")
    return client


def bodies(client: IMAPClient, uids: list[int]) -> dict[int, bytes]:
    return {u: v[b"BODY[]"] for u, v in client.fetch(uids, ["BODY.PEEK[]"]).items()}


def test_forwards_faithfully_counts_bytes_and_hides_starttls(proxy: FaultProxy, pair: Pair, uids) -> None:
    plain = IMAPClient(proxy.host, proxy.port, ssl=False)
    assert b"STARTTLS" not in plain.capabilities() and b"IMAP4REV1" in plain.capabilities()
    plain.logout()
    reference = direct(pair)
    reference.select_folder("INBOX")
    expected = bodies(reference, uids)
    reference.logout()
    client = through(proxy, pair)
    up, down = proxy.bytes_up, proxy.bytes_down
    assert bodies(client, uids) == expected
    assert proxy.bytes_down - down > sum(len(b) for b in expected.values())
    assert proxy.bytes_up > up and proxy.connections == 2
    client.logout()


def test_drop_fetch_and_drop_item(proxy: FaultProxy, pair: Pair, uids) -> None:
    client = through(proxy, pair)
    proxy.drop_fetch(uids[1])
    got = client.fetch(uids, ["RFC822.SIZE", "FLAGS"])
    assert sorted(got) == [uids[0], uids[2]]
    proxy.clear()
    proxy.drop_item("RFC822.SIZE", uid=uids[0])
    got = client.fetch(uids, ["RFC822.SIZE", "FLAGS", "BODY.PEEK[]"])
    assert b"RFC822.SIZE" not in got[uids[0]] and b"FLAGS" in got[uids[0]]
    assert got[uids[0]][b"BODY[]"].endswith(b"first\r\n")
    assert got[uids[1]][b"RFC822.SIZE"] > 0
    proxy.clear()
    proxy.drop_item("BODY[]")
    got = client.fetch([uids[2]], ["RFC822.SIZE", "BODY.PEEK[]<0.100>"])
    assert list(got[uids[2]]) == [b"SEQ", b"RFC822.SIZE"]
    client.logout()


def test_inflate_keeps_the_literal_consistent(proxy: FaultProxy, pair: Pair, uids) -> None:
    client = through(proxy, pair)
    before = bodies(client, [uids[0]])[uids[0]]
    proxy.inflate(uids[0], 5000)
    got = client.fetch(uids[:2], ["RFC822.SIZE", "BODY.PEEK[]", "FLAGS"])
    assert got[uids[0]][b"BODY[]"] == before + b"X" * 5000
    assert got[uids[0]][b"RFC822.SIZE"] == len(before)  # the size announced is left as it was
    assert not got[uids[1]][b"BODY[]"].endswith(b"X")
    partial = client.fetch([uids[0]], ["BODY.PEEK[]<0.10>"])[uids[0]][b"BODY[]<0>"]
    assert partial == before[:10] + b"X" * 5000
    client.logout()


@pytest.mark.parametrize("echo_origin", [False, True])
def test_ignore_partial_serves_the_whole_body(proxy: FaultProxy, pair: Pair, uids, echo_origin: bool) -> None:
    client = through(proxy, pair)
    whole = bodies(client, [uids[2]])[uids[2]]
    proxy.ignore_partial(echo_origin=echo_origin)
    got = client.fetch([uids[2]], ["BODY.PEEK[]<4096.100>"])[uids[2]]
    assert got[b"BODY[]<0>" if echo_origin else b"BODY[]"] == whole
    proxy.ignore_partial(False)
    assert client.fetch([uids[2]], ["BODY.PEEK[]<4096.100>"])[uids[2]][b"BODY[]<4096>"] == whole[4096:4196]
    client.logout()


def test_malformed_response_breaks_the_parser_not_the_proxy(proxy: FaultProxy, pair: Pair, uids) -> None:
    client = through(proxy, pair)
    proxy.malform(uids[1])
    with pytest.raises(ProtocolError):
        client.fetch([uids[1]], ["FLAGS"])
    proxy.clear()
    assert uids[1] in client.fetch([uids[1]], ["FLAGS"])
    client.logout()


def test_stall_keeps_the_connection_and_resume_goes_on(proxy: FaultProxy, pair: Pair, uids) -> None:
    client = through(proxy, pair)
    proxy.stall()
    done: list[object] = []
    worker = threading.Thread(target=lambda: done.append(client.fetch([uids[2]], ["BODY.PEEK[]"])))
    worker.start()
    down = proxy.bytes_down
    time.sleep(0.6)
    assert worker.is_alive() and not done and proxy.bytes_down == down
    proxy.resume()
    worker.join(10)
    assert done and done[0][uids[2]][b"BODY[]"].endswith(b"long enough\r\n")
    client.logout()


def test_stalled_server_makes_a_client_time_out(proxy: FaultProxy, pair: Pair, uids) -> None:
    client = through(proxy, pair, timeout=0.5)
    proxy.stall()
    with pytest.raises((TimeoutError, OSError, imaplib.IMAP4.abort)):
        client.noop()
    proxy.resume()


def test_throttle_limits_the_rate(proxy: FaultProxy, pair: Pair, uids) -> None:
    client = through(proxy, pair)
    proxy.throttle(200_000)
    started = time.monotonic()
    body = bodies(client, [uids[2]])[uids[2]]
    elapsed = time.monotonic() - started
    assert len(body) > 90_000 and elapsed >= 0.4
    proxy.throttle(None)
    started = time.monotonic()
    bodies(client, [uids[2]])
    assert time.monotonic() - started < elapsed / 2
    client.logout()


def test_drop_after_bytes_down_mid_fetch(proxy: FaultProxy, pair: Pair, uids) -> None:
    client = through(proxy, pair)
    down = proxy.bytes_down
    proxy.drop_after("down", 1000)
    with pytest.raises((imaplib.IMAP4.abort, OSError)):
        client.fetch([uids[2]], ["BODY.PEEK[]"])
    assert proxy.bytes_down - down == 1000
    client = through(proxy, pair)  # the rule was one-shot
    assert bodies(client, [uids[0]])
    client.logout()


def test_drop_on_command_at_once_and_mid_append_literal(proxy: FaultProxy, pair: Pair, uids) -> None:
    client = through(proxy, pair)
    proxy.drop_on_command(r"^\S+ NOOP")
    with pytest.raises((imaplib.IMAP4.abort, OSError)):
        client.noop()
    client = through(proxy, pair)
    up = proxy.bytes_up
    proxy.drop_on_command(r"APPEND", up=500)
    with pytest.raises((imaplib.IMAP4.abort, OSError)):
        client.append("INBOX", message("cut", BODY))
    sent = proxy.bytes_up - up
    assert 500 < sent < 1000  # the APPEND line, then 500 bytes of its literal
    check = direct(pair)
    check.select_folder("INBOX")
    assert not check.search(["HEADER", "Message-ID", "cut@proxy.test"])  # nothing half-stored
    check.logout()


def test_in_front_of_mail1_strip_appenduid_and_uidplus(pair: Pair) -> None:
    mail1 = pair.cfg.mail1
    with FaultProxy(mail1.host, mail1.imap_port, source_host=mail1.host) as proxy:
        client = IMAPClient(proxy.host, proxy.port, ssl=False)
        assert b"LOGINDISABLED" not in client.capabilities()
        client.login(f"u2*{mail1.master_user}", mail1.master_password)
        assert client.has_capability("UIDPLUS")
        assert b"[APPENDUID" in client.append("INBOX", message("with-uid"))
        proxy.strip_appenduid()
        assert client.append("INBOX", message("without-uid")).startswith(b"Append completed")
        client.logout()
        proxy.hide_capability("UIDPLUS")
        client = IMAPClient(proxy.host, proxy.port, ssl=False)
        client.login(f"u2*{mail1.master_user}", mail1.master_password)
        assert not client.has_capability("UIDPLUS") and client.has_capability("ESEARCH")
        client.logout()


def test_custom_rewriter_sees_whole_units(proxy: FaultProxy, pair: Pair, uids) -> None:
    seen: list[Unit] = []

    def keep(unit: Unit) -> Unit:
        seen.append(unit)
        return unit
    proxy.rewrite(keep)
    client = through(proxy, pair)
    client.fetch([uids[2]], ["BODY.PEEK[]"])
    fetches = [u for u in seen if b" FETCH " in u.texts[0]]
    assert fetches and len(fetches[-1].literals) == 1 and fetches[-1].literals[0].endswith(b"long enough\r\n")
    client.logout()


def test_fetch_items_parse_sections_lists_strings_and_literals() -> None:
    unit = Unit([b'* 3 FETCH (UID 7 FLAGS (\\Seen $X) BODY[HEADER.FIELDS (MESSAGE-ID RECEIVED)] ',
                 b' X-STR "a ) \\" b" BODY[]<0> ', b")"], [b"header", b"body"])
    names = [name for name, *_ in fetch_items(unit.flat())]
    assert names == [b"UID", b"FLAGS", b"BODY[HEADER.FIELDS (MESSAGE-ID RECEIVED)]", b"X-STR", b"BODY[]<0>"]
    assert Unit.from_flat(unit.flat(), unit.literals).encode() == unit.encode()
