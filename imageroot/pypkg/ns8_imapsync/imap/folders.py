"""Folders: listing with raw names, namespace discovery, host1→host2 name mapping,
exclusion rules and size statistics (for ``list-informations``).

Names are handled as imapsync does (spec section 7): the host2 name is the host1
name without the host1 personal-namespace prefix, with separators swapped, plus
the host2 prefix.  Where imapsync's result would break on the NS8 mail server we
deliberately differ; see :func:`map_name`.
"""

from __future__ import annotations

import functools
import imaplib
from collections import Counter
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import imapclient
import regex
from imapclient import imap_utf7
from imapclient.response_parser import parse_fetch_response

_UNSELECTABLE = {b"\\noselect", b"\\nonexistent"}

#: Replaces a host2 hierarchy delimiter found *inside* a host1 folder component, so
#: that "a/b" (one folder on a "."-server) does not become folder "b" under "a".
#: imapsync swaps in the host1 separator instead ("a/b" -> "a.b"), and offers
#: "_" with --fixslash2; "." is refused by NS8's Dovecot (Maildir++ layout with "/"
#: separator: "[CANNOT] Character not allowed in mailbox name: '.'"), so "_" it is.
DEFAULT_REPLACEMENT = "_"

#: Characters NS8's Dovecot refuses inside a folder name component (see above).
NS8_FORBIDDEN = "."

#: Namespaces of the NS8 mail server never migrated (the real module's
#: ``^Shared(/.*)?$|^Public(/.*)?$``, generalised to any delimiter).
ALWAYS_EXCLUDED_ROOTS = ("Shared", "Public")


@dataclass(frozen=True)
class Folder:
    """One selectable folder as LISTed: ``raw`` is the server's bytes (modified UTF-7),
    ``name`` the decoded Unicode name, ``delimiter`` "" when the server says NIL."""

    raw: bytes | str
    name: str
    delimiter: str
    flags: tuple

    @property
    def raw_text(self) -> str:
        """The raw name as text (what imapsync's --folder/--exclude see)."""
        if isinstance(self.raw, bytes):
            return self.raw.decode("utf-8", "replace")
        return self.raw

    @property
    def roundtrips(self) -> bool:
        """True when encoding ``name`` gives back ``raw``, so IMAPClient can address it by name."""
        raw = self.raw if isinstance(self.raw, bytes) else self.raw.encode("utf-8", "replace")
        return imap_utf7.encode(self.name) == raw


@dataclass(frozen=True)
class FolderStat:
    """Message count and total RFC822 size of one folder; ``biggest`` is None when
    the size came from STATUS (no per-message sizes)."""

    name: str
    messages: int
    bytes: int
    biggest: int | None = None
    exists: bool = True


def decode_name(raw: bytes | str | int) -> str:
    """Decode a modified UTF-7 folder name; a malformed one is kept as its raw text."""
    if isinstance(raw, int):
        return str(raw)
    if isinstance(raw, str):
        raw = raw.encode("utf-8", "surrogateescape")
    try:
        return imap_utf7.decode(raw)
    except (ValueError, UnicodeError):
        return raw.decode("utf-8", "replace")


def _text(value: bytes | str | None) -> str:
    if value is None:
        return ""
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return str(value)


@contextmanager
def folder_encoding(client: imapclient.IMAPClient, encode: bool) -> Iterator[None]:
    """IMAPClient's name encoding switched for one command: raw names must be
    sent as the server gave them, or a name that does not round-trip is lost."""
    saved = client.folder_encode
    client.folder_encode = encode
    try:
        yield
    finally:
        client.folder_encode = saved


def list_folders(client: imapclient.IMAPClient) -> list[Folder]:
    """``LIST "" "*"``, keeping raw names, without \\Noselect / \\NonExistent entries."""
    with folder_encoding(client, False):
        rows = client.list_folders("", "*")
    folders: list[Folder] = []
    seen: set[bytes | str] = set()
    for flags, delimiter, raw in rows:
        if isinstance(raw, int):
            raw = str(raw).encode("ascii")
        flags = tuple(flags or ())
        if any(f.lower() in _UNSELECTABLE for f in flags if isinstance(f, bytes)):
            continue
        if raw in seen:
            continue
        seen.add(raw)
        folders.append(Folder(raw=raw, name=decode_name(raw), delimiter=_text(delimiter), flags=flags))
    return folders


def guess_delimiter(names: Iterable[str], delimiters: Iterable[str] = ()) -> str:
    """imapsync's guess: the delimiter LIST reports most, else the most frequent of
    ``/ . \\`` in the names, else "/"."""
    reported = Counter(d for d in delimiters if d)
    if reported:
        return reported.most_common(1)[0][0]
    counts = Counter(c for name in names for c in name if c in "/.\\")
    return counts.most_common(1)[0][0] if counts else "/"


def guess_prefix(names: Iterable[str], delimiter: str) -> str:
    """``INBOX<delim>`` when every non-INBOX folder lives under INBOX (Courier style), else ""."""
    others = [n for n in names if n.upper() != "INBOX"]
    if delimiter and others and all(n.upper().startswith("INBOX" + delimiter) for n in others):
        return "INBOX" + delimiter
    return ""


def namespace_info(client: imapclient.IMAPClient) -> tuple[str, str]:
    """(prefix, delimiter) of the personal namespace: from NAMESPACE, else guessed from LIST."""
    if client.has_capability("NAMESPACE"):
        try:
            personal = client.namespace().personal
        except (imaplib.IMAP4.error, ValueError, TypeError, AttributeError):
            personal = None
        if personal:
            prefix, delimiter = personal[0]
            return _text(prefix), _text(delimiter)
    delimiter = ""
    try:
        root = client.list_folders("", "")  # RFC 3501: reply carries the hierarchy delimiter
        if root:
            delimiter = _text(root[0][1])
    except imaplib.IMAP4.error:
        pass
    folders = list_folders(client)
    if not delimiter:
        delimiter = guess_delimiter((f.name for f in folders), (f.delimiter for f in folders))
    return guess_prefix((f.name for f in folders), delimiter), delimiter


def map_name(
    name_on_host1: str,
    src_prefix: str,
    src_delim: str,
    dst_prefix: str,
    dst_delim: str,
    *,
    replacement: str = DEFAULT_REPLACEMENT,
    forbidden: str = NS8_FORBIDDEN,
) -> str:
    """The host2 name of a host1 folder (decoded names in, decoded name out).

    Order as imapsync: an empty name or the bare host1 prefix is INBOX; strip the
    host1 prefix; swap delimiters; add the host2 prefix (never to INBOX itself).
    Differences, on purpose:

    * a ``dst_delim`` (and any ``forbidden`` character) inside a host1 component is
      replaced by ``replacement`` ("_") rather than imapsync's separator swap, so it
      neither creates hierarchy nor trips NS8's "Character not allowed" ('.');
      when the delimiter *is* "." it is the hierarchy and is not replaced;
    * a first component spelled ``Inbox``/``inbox`` becomes ``INBOX`` also for
      subfolders (Dovecot itself files ``inbox/x`` under ``INBOX``), not only for
      the bare name; a host2 prefix ``INBOX<delim>`` is not doubled for them.

    Two host1 folders may thus map to one host2 name ("a/b" and "a_b"); the copy
    then merges them, as imapsync does when names collide.
    """
    if replacement and (replacement == dst_delim or replacement in forbidden):
        raise ValueError(f"replacement {replacement!r} would itself be a delimiter or forbidden")
    name = name_on_host1
    if name == "" or name == src_prefix:
        return "INBOX"
    if src_prefix:
        if name.startswith(src_prefix):
            name = name[len(src_prefix) :]
        elif src_prefix.upper().startswith("INBOX") and name.upper().startswith(src_prefix.upper()):
            name = name[len(src_prefix) :]
    if not name:
        return "INBOX"
    parts = name.split(src_delim) if src_delim else [name]
    bad = {c for c in forbidden if c != dst_delim}
    if dst_delim and dst_delim != src_delim:
        bad.add(dst_delim)
    if bad:
        parts = [_replace_chars(p, bad, replacement) for p in parts]
    if parts[0].upper() == "INBOX":
        parts[0] = "INBOX"
    # a flat (NIL-delimiter) host2 cannot have hierarchy: keep the host1 spelling
    joined = (dst_delim or src_delim or "").join(parts)
    if joined == "INBOX":
        return "INBOX"
    if parts[0] == "INBOX" and dst_prefix and dst_prefix.upper() == ("INBOX" + dst_delim).upper():
        return joined
    return dst_prefix + joined


def _replace_chars(text: str, chars: Iterable[str], replacement: str) -> str:
    for c in sorted(chars):
        text = text.replace(c, replacement)
    return text


#: Seconds one exclusion pattern may take on one folder name. A folder name is
#: the remote server's choice and a pattern the administrator's: together they
#: can backtrack for hours (``(a|aa)+$`` on 60 "a"s and a "!"), which would hang
#: the run. Ordinary patterns take microseconds.
MATCH_TIMEOUT = 0.2


class ExclusionTimeout(Exception):
    """Whether folder ``name`` is excluded is unknown: ``pattern`` did not finish
    within :data:`MATCH_TIMEOUT`. The folder must be neither synced nor skipped
    in silence (see ``sync.folderpairs.discover``)."""

    def __init__(self, name: str, pattern: str):
        super().__init__(f"the exclusion pattern {pattern!r} took more than {MATCH_TIMEOUT} s on folder {name!r}")
        self.name = name
        self.pattern = pattern


@functools.lru_cache(maxsize=256)
def compile_pattern(pattern: str) -> regex.Pattern:
    """Compile a user exclusion regex with the ``regex`` module in its
    ``re``-compatible mode (VERSION0), whose matches take a ``timeout``;
    ``ValueError`` says which one is invalid."""
    try:
        return regex.compile(pattern, regex.VERSION0)
    except (regex.error, RecursionError, OverflowError) as exc:
        raise ValueError(f"invalid folder exclusion pattern {pattern!r}: {exc}") from exc


def always_excluded(name: str, delimiter: str | None = None) -> bool:
    """``^Shared(<d>.*)?$`` / ``^Public(<d>.*)?$`` for the given delimiter, or for any of
    ``/ . \\`` when it is unknown."""
    delims = [delimiter] if delimiter else ["/", ".", "\\"]
    for root in ALWAYS_EXCLUDED_ROOTS:
        if name == root:
            return True
        if any(name.startswith(root + d) for d in delims):
            return True
    return False


def is_excluded(
    name: str, patterns: Iterable[str], *, delimiter: str | None = None, raw: str | None = None
) -> bool:
    """True when a host1 folder must not be synced.

    ``patterns`` are unanchored regexes (``re.search``, like imapsync's Perl
    ``--exclude``) tried on the decoded ``name`` and, when given, on the raw
    modified-UTF-7 form too, so both ``Réunions`` and imapsync-style
    ``R&AOk-unions`` work.  Python and Perl regexes agree on the usual syntax
    (anchors, classes, alternation, quantifiers).  Empty patterns are ignored.

    Each match may take :data:`MATCH_TIMEOUT`; when one runs out and no other
    pattern excludes the folder, :class:`ExclusionTimeout` is raised, since
    neither answer would be true.
    """
    if always_excluded(name, delimiter):
        return True
    candidates = [name] if raw is None or raw == name else [name, raw]
    timed_out: str | None = None
    for pattern in patterns:
        if not pattern:
            continue
        compiled = compile_pattern(pattern)
        for candidate in candidates:
            try:
                if compiled.search(candidate, timeout=MATCH_TIMEOUT):
                    return True
            except TimeoutError:
                timed_out = timed_out or pattern
    if timed_out is not None:
        raise ExclusionTimeout(name, timed_out)
    return False


def folder_arg(folder: Folder | str) -> tuple[str, bool]:
    """(name to send, use folder_encode) addressing ``folder`` exactly."""
    if isinstance(folder, str):
        return folder, True
    if folder.roundtrips or not folder.raw_text.isascii():
        return folder.name, True
    return folder.raw_text, False


def select_folder(client: imapclient.IMAPClient, folder: Folder | str, readonly: bool = False) -> dict:
    """SELECT (or EXAMINE, read-only) by the server's own bytes when the decoded
    name would not encode back to them."""
    arg, encode = folder_arg(folder)
    with folder_encoding(client, encode):
        return client.select_folder(arg, readonly=readonly)


def _status_size(client: imapclient.IMAPClient, folder: Folder | str) -> FolderStat:
    arg, encode = folder_arg(folder)
    name = folder if isinstance(folder, str) else folder.name
    with folder_encoding(client, encode):
        status = client.folder_status(arg, ["MESSAGES", "SIZE"])
    return FolderStat(name, int(status.get(b"MESSAGES", 0)), int(status.get(b"SIZE", 0)), None)


def _fetch_sizes(client: imapclient.IMAPClient, folder: Folder | str) -> FolderStat:
    """EXAMINE (read-only: no \\Seen, no \\Recent loss) then one ``FETCH 1:* RFC822.SIZE``."""
    arg, encode = folder_arg(folder)
    name = folder if isinstance(folder, str) else folder.name
    with folder_encoding(client, encode):
        info = client.select_folder(arg, readonly=True)
    exists = int(info.get(b"EXISTS", 0))
    if exists == 0:
        return FolderStat(name, 0, 0, 0)
    # IMAPClient.fetch() cannot take "1:*"; imaplib's fetch can, one round trip for all.
    typ, data = client._imap.fetch("1:*", "(RFC822.SIZE)")
    if typ != "OK":
        raise imaplib.IMAP4.error(f"FETCH RFC822.SIZE failed: {data!r}")
    parsed = parse_fetch_response([d for d in data if d is not None], uid_is_key=False)
    sizes = [int(v[b"RFC822.SIZE"]) for v in parsed.values() if b"RFC822.SIZE" in v]
    return FolderStat(name, exists, sum(sizes), max(sizes, default=0))


def folder_stats(
    client: imapclient.IMAPClient,
    folders: Iterable[Folder | str],
    *,
    use_status_size: bool | None = None,
) -> list[FolderStat]:
    """Messages and bytes per folder, never changing flags.

    With ``STATUS=SIZE`` (RFC 8438; Dovecot 2.3 advertises it) one ``STATUS
    (MESSAGES SIZE)`` per folder is enough; otherwise, or with
    ``use_status_size=False`` (e.g. to get ``biggest``), EXAMINE + one batched
    ``FETCH 1:* RFC822.SIZE``, whose count is the EXAMINE's EXISTS so count and
    bytes describe the same messages.  A folder the server refuses (deleted
    meanwhile) is reported with ``exists=False`` and zeros.
    """
    if use_status_size is None:
        use_status_size = client.has_capability("STATUS=SIZE")
    stats: list[FolderStat] = []
    selected = False
    for folder in folders:
        name = folder if isinstance(folder, str) else folder.name
        try:
            if use_status_size:
                stats.append(_status_size(client, folder))
            else:
                selected = True
                stats.append(_fetch_sizes(client, folder))
        except imaplib.IMAP4.abort:
            raise
        except imaplib.IMAP4.error:
            stats.append(FolderStat(name, 0, 0, None, exists=False))
    if selected:
        _unselect(client)
    return stats


def _unselect(client: imapclient.IMAPClient) -> None:
    """Leave the EXAMINEd folder; CLOSE after EXAMINE expunges nothing (RFC 3501)."""
    try:
        if client.has_capability("UNSELECT"):
            client.unselect_folder()
        else:
            client.close_folder()
    except imaplib.IMAP4.error:
        pass


def totals(stats: Iterable[FolderStat]) -> tuple[int, int, int]:
    """(folders, messages, bytes) over existing folders, as list-informations reports them."""
    folders = messages = size = 0
    for stat in stats:
        if not stat.exists:
            continue
        folders += 1
        messages += stat.messages
        size += stat.bytes
    return folders, messages, size
