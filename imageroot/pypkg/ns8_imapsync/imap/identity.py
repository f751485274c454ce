"""Message identity: imapsync 2.229's default header signature, byte for byte.

imapsync decides "already on host2" by comparing, per folder pair, the key
``md5_base64`` of the message's Message-Id and Received lines (spec section 6).
Computing the same key lets a run started by imapsync be continued by us (and the
reverse) without copying anything twice.

How the lines are obtained follows Mail::IMAPClient 3.43 ``parse_headers``:

* the block is split on ``\\r?\\n``; lines with no non-blank character are skipped;
* a line matching ``^(\\S+?):\\s*`` starts a field (name = text before the first
  colon, value = the rest without the blanks after the colon);
* any other line continues the previous field: it is appended **as is**, leading
  blanks included, without the line break (unfolding); lines before any field
  are dropped.  ``Received : x`` (blank before the colon) is therefore a
  continuation, as in Perl.

Then imapsync's ``header_line_normalize`` on the value: bytes 0x80-0xFF -> ``X``,
tab -> space, strip leading and trailing blanks, collapse blank runs to one space;
the line is ``uc("<Name>: <value>")``.  Lines are sorted (bytewise) and
concatenated with no separator; the key is MD5 in base64 without padding.
Only fields named Message-Id or Received (any case) count.  We stop at the first
empty line so a whole message may be passed; Perl would read on, but the
``HEADER.FIELDS`` reply it parses ends there anyway.
"""

from __future__ import annotations

import base64
import hashlib
import re

HEADER_FETCH = b"BODY.PEEK[HEADER.FIELDS (MESSAGE-ID RECEIVED)]"
#: key of the FETCH reply item for :data:`HEADER_FETCH` in IMAPClient's result dict
HEADER_FETCH_KEY = b"BODY[HEADER.FIELDS (MESSAGE-ID RECEIVED)]"

_WANTED = (b"MESSAGE-ID", b"RECEIVED")
_FIELD_START = re.compile(rb"^(\S+?):\s*")
_EIGHT_BIT = re.compile(rb"[\x80-\xff]")
_BLANKS = re.compile(rb"\s+")  # Perl \s on byte strings: space \t \n \r \f \v


def parse_fields(header_bytes: bytes) -> list[tuple[bytes, bytes]]:
    """(name, unfolded raw value) pairs, in order, the way Mail::IMAPClient splits them."""
    fields: list[list[bytes]] = []
    for line in re.split(rb"\r?\n", header_bytes):
        if not line.strip():
            if line == b"" and fields:
                break  # end of the header block
            continue
        match = _FIELD_START.match(line)
        if match:
            fields.append([match.group(1), line[match.end() :]])
        elif fields:
            fields[-1][1] += line
    return [(name, value) for name, value in fields]


def normalize_line(name: bytes, value: bytes) -> bytes:
    """imapsync's ``header_line_normalize`` (without --messageidnodomain)."""
    value = _EIGHT_BIT.sub(b"X", value)
    value = value.replace(b"\t", b" ")
    value = value.strip(b" \t\n\r\f\v")
    value = _BLANKS.sub(b" ", value)
    return (name + b": " + value).upper()


def signature_lines(header_bytes: bytes) -> list[bytes]:
    """The sorted normalised lines whose concatenation is hashed (useful in debug output)."""
    lines = [
        normalize_line(name, value) for name, value in parse_fields(header_bytes) if name.upper() in _WANTED
    ]
    return sorted(lines)


def md5_base64(data: bytes) -> str:
    """Perl Digest::MD5 ``md5_base64``: base64 of the digest, no ``=`` padding."""
    return base64.b64encode(hashlib.md5(data).digest()).decode("ascii").rstrip("=")


def header_signature(header_bytes: bytes) -> str | None:
    """imapsync's default message key, or None when neither header is present."""
    lines = signature_lines(header_bytes)
    if not lines:
        return None
    return md5_base64(b"".join(lines))


def header_from_fetch(item: dict) -> bytes | None:
    """The header bytes in one IMAPClient FETCH result for :data:`HEADER_FETCH`.

    Servers echo the item name differently (field case, quoting), so any
    ``BODY[HEADER...]`` key is accepted; ``None`` when absent.
    """
    if HEADER_FETCH_KEY in item:
        return item[HEADER_FETCH_KEY] or b""
    for key, value in item.items():
        if isinstance(key, bytes) and key.upper().startswith(b"BODY[HEADER"):
            return value or b""
    return None


def content_hash(message_bytes: bytes) -> str:
    """Identity for messages without Message-Id and Received: sha256 of the whole message."""
    return hashlib.sha256(message_bytes).hexdigest()
