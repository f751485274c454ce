"""imapsync's default message key (spec section 6), checked on hand-derived values.

Each expected value is written out as the normalised, sorted, concatenated lines
the spec's rules give, then hashed here with hashlib (md5, base64 without
padding).  The literal keys in ``KNOWN_KEYS`` were also cross-checked by running
imapsync 2.229's ``header_construct``/``header_line_normalize`` and Mail::IMAPClient
3.43's ``parse_headers`` on the same bytes.
"""

from __future__ import annotations

import base64
import hashlib

import pytest
from ns8_imapsync.imap import identity
from ns8_imapsync.imap.identity import HEADER_FETCH, content_hash, header_signature, md5_base64


def expected_key(*lines: bytes) -> str:
    """md5_base64 of the already-normalised lines, sorted and concatenated."""
    digest = hashlib.md5(b"".join(sorted(lines))).digest()
    return base64.b64encode(digest).decode().rstrip("=")


def test_md5_base64_is_perl_format() -> None:
    # Digest::MD5::md5_base64("a") printed by perl
    assert md5_base64(b"a") == "DMF1ucDxtqgxw5niaXcmYQ"
    assert len(md5_base64(b"")) == 22


def test_simple_message_id_and_received() -> None:
    header = b"Message-ID: <abc.1@example.com>\r\nReceived: from mx.example.net by mail.example.com\r\n\r\n"
    assert header_signature(header) == expected_key(
        b"MESSAGE-ID: <ABC.1@EXAMPLE.COM>",
        b"RECEIVED: FROM MX.EXAMPLE.NET BY MAIL.EXAMPLE.COM",
    )


def test_folded_received_is_unfolded_and_blanks_collapse() -> None:
    header = (
        b"Received: from mx2.example.net (mx2.example.net [192.0.2.10])\r\n"
        b"\tby mail.example.com with ESMTPS id c10x9; Sun, 29 Dec 2024 01:58:20 +0000\r\n"
        b"Message-ID: <c10.3.6a11ed6a@corpus.example>\r\n"
        b"\r\n"
    )
    assert header_signature(header) == expected_key(
        b"RECEIVED: FROM MX2.EXAMPLE.NET (MX2.EXAMPLE.NET [192.0.2.10]) BY MAIL.EXAMPLE.COM"
        b" WITH ESMTPS ID C10X9; SUN, 29 DEC 2024 01:58:20 +0000",
        b"MESSAGE-ID: <C10.3.6A11ED6A@CORPUS.EXAMPLE>",
    )


def test_eight_bit_bytes_become_x_tabs_spaces_and_strip() -> None:
    # "é" in UTF-8 is two bytes, each becomes X; Latin-1 "é" is one byte -> one X.
    header = b"Received:\t from  h\xc3\xa9 \t (caf\xe9)\t \r\nMessage-Id:   <Zz@Q>  \r\n\r\n"
    assert header_signature(header) == expected_key(
        b"RECEIVED: FROM HXX (CAFX)",
        b"MESSAGE-ID: <ZZ@Q>",
    )


def test_several_received_are_sorted_after_normalisation() -> None:
    header = b"Received: from b\r\nReceived: from A\r\nReceived: from c\r\n\r\n"
    key = expected_key(b"RECEIVED: FROM A", b"RECEIVED: FROM B", b"RECEIVED: FROM C")
    assert header_signature(header) == key
    # order of the header lines does not matter
    assert header_signature(b"Received: from c\r\nReceived: from b\r\nReceived: from A\r\n\r\n") == key


def test_exact_duplicate_headers_give_same_key_and_reused_message_id_does_not() -> None:
    one = b"Message-ID: <dup@x>\r\nReceived: from a by b; 1 Jan 2024\r\n\r\n"
    two = b"Message-ID: <dup@x>\r\nReceived: from a by b; 2 Jan 2024\r\n\r\n"
    assert header_signature(one) == header_signature(one)
    assert header_signature(one) != header_signature(two)


def test_message_id_only_and_received_only_are_identified() -> None:
    assert header_signature(b"message-id:<x>\r\n\r\n") == expected_key(b"MESSAGE-ID: <X>")
    assert header_signature(b"Received: from x\r\n\r\n") == expected_key(b"RECEIVED: FROM X")


def test_no_wanted_header_gives_none() -> None:
    assert header_signature(b"") is None
    assert header_signature(b"\r\n") is None
    assert header_signature(b"Subject: hello\r\nFrom: a@b\r\n\r\nbody\r\n") is None


def test_whole_message_other_headers_and_body_are_ignored() -> None:
    message = (
        b"From: a@example.com\r\nSubject: x\r\nMessage-ID: <m@x>\r\nTo: b@example.com\r\n\r\n"
        b"Received: from body line is not a header\r\n"
    )
    assert header_signature(message) == expected_key(b"MESSAGE-ID: <M@X>")


def test_empty_value_still_counts() -> None:
    assert header_signature(b"Message-Id:\r\n\r\n") == expected_key(b"MESSAGE-ID: ")


def test_lf_only_line_ends() -> None:
    assert header_signature(b"Received: from a\n\tby b\nMessage-ID: <lf@only>\n\n") == expected_key(
        b"RECEIVED: FROM A BY B", b"MESSAGE-ID: <LF@ONLY>"
    )


def test_blank_before_colon_is_a_continuation_like_perl() -> None:
    # Mail::IMAPClient's /^(\S+?):\s*/ does not match "Received : x": the line is
    # appended to the previous field.
    header = b"Message-ID: <m>\r\nReceived : from weird\r\n\r\n"
    assert header_signature(header) == expected_key(b"MESSAGE-ID: <M>RECEIVED : FROM WEIRD")


def test_continuation_before_any_field_is_dropped() -> None:
    assert header_signature(b"   stray\r\nMessage-ID: <m2>\r\n\r\n") == expected_key(b"MESSAGE-ID: <M2>")


# (header bytes, key printed by the imapsync 2.229 + Mail::IMAPClient 3.43 code path)
KNOWN_KEYS = [
    (b"Message-ID: <a@b>\r\nReceived: from x\r\n\tby y\r\n\r\n", "TYXte/XbFjAvYGJBe/86QA"),
    (
        b"Received: from mx2.example.net (mx2.example.net [192.0.2.10])\r\n"
        b"\tby mail.example.com with ESMTPS id c10x9; Sun, 29 Dec 2024 01:58:20 +0000\r\n"
        b"Message-ID: <c10.3.6a11ed6a@corpus.example>\r\n\r\n",
        "NUy6I/Y6NZweMC7dYabsgQ",
    ),
    (
        b"Received:\t from  h\xc3\xa9 \t (caf\xe9)\t \r\nMessage-Id:   <Zz@Q>  \r\n\r\n",
        "6Mp7JjuYR3D2pDeSyAN6Eg",
    ),
]


@pytest.mark.parametrize(("header", "key"), KNOWN_KEYS)
def test_known_keys(header: bytes, key: str) -> None:
    assert header_signature(header) == key


def test_signature_lines_helper() -> None:
    lines = identity.signature_lines(b"Received: from B\r\nMessage-Id: <q>\r\n\r\n")
    assert lines == [b"MESSAGE-ID: <Q>", b"RECEIVED: FROM B"]


def test_header_from_fetch() -> None:
    assert identity.header_from_fetch({b"BODY[HEADER.FIELDS (MESSAGE-ID RECEIVED)]": b"x", b"SEQ": 1}) == b"x"
    assert identity.header_from_fetch({b'BODY[HEADER.FIELDS ("Message-Id" "Received")]': b"y"}) == b"y"
    assert identity.header_from_fetch({b"BODY[HEADER.FIELDS (MESSAGE-ID RECEIVED)]": None}) == b""
    assert identity.header_from_fetch({b"SEQ": 1}) is None


def test_content_hash_and_fetch_item() -> None:
    assert content_hash(b"abc") == hashlib.sha256(b"abc").hexdigest()
    assert HEADER_FETCH == b"BODY.PEEK[HEADER.FIELDS (MESSAGE-ID RECEIVED)]"
