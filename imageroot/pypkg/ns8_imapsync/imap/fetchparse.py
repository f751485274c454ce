"""FETCH responses parsed so that one malformed response costs one message.

IMAPClient parses a whole ``UID FETCH`` reply at once: a single response it
cannot parse (an unterminated string, unbalanced parentheses, a literal
announced as ``{notanumber}``) raises for the whole batch, and a caller
would fail a folder of thousands over one message, naming none.  Why this
module: the reply is parsed whole first (the fast path); only when that fails
is it parsed response by response, and each response that still fails is set
aside under the UID its own line names.  A broken response that names no UID
cannot be told apart from the others: the original error is raised then.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

from imapclient.exceptions import ProtocolError
from imapclient.response_parser import parse_fetch_response

_UID = re.compile(rb"[( ]UID (\d+)[ )]", re.I)
MALFORMED = "the server's FETCH response about it could not be parsed (malformed IMAP syntax); not read"


def units(records: list) -> Iterator[list]:
    """imaplib's FETCH records grouped per response: a literal comes as a
    ``(line ending in {n}, literal)`` tuple, and a plain line ends the response."""
    unit: list = []
    for record in records:
        unit.append(record)
        if not isinstance(record, tuple):
            yield unit
            unit = []
    if unit:
        yield unit


def uid_named(unit: list) -> int | None:
    """The UID a response's own lines name (never inside a literal), or None."""
    text = b" ".join(r[0] if isinstance(r, tuple) else r for r in unit if isinstance(r, (bytes, tuple)))
    match = _UID.search(text + b" ")
    return int(match.group(1)) if match else None


def parse(records: list, normalise_times: bool, malformed: dict[int, str] | None) -> dict[int, dict]:
    """``parse_fetch_response`` keyed by sequence number; with ``malformed``, a
    response that does not parse is left out and recorded there under its UID."""
    try:
        return parse_fetch_response(records, normalise_times, False)
    except (ProtocolError, ValueError, IndexError):
        if malformed is None:
            raise
    out: dict[int, dict] = {}
    for unit in units(records):
        try:
            parsed = parse_fetch_response(unit, normalise_times, False)
        except (ProtocolError, ValueError, IndexError):
            uid = uid_named(unit)
            if uid is None:
                raise
            malformed[uid] = MALFORMED
            continue
        for seq, item in parsed.items():
            out.setdefault(seq, {}).update(item)
    return out
