"""The CSV on stdin to numbered rows, or one error that says what is wrong and where.

A migration file comes from spreadsheets, scripts and hand edits, so every
way it can be misread is turned into an error instead of a guess: a value
count that differs from the header (an unquoted `,` in a password), a quote
left open, a NUL byte, bytes that are not UTF-8, a UTF-16 export, a column
name nobody knows (a typo of an optional column would silently be ignored).
What is unambiguous is handled: a UTF-8 byte order mark, CRLF or CR line
ends, empty lines, and a header separated by `;` or a tab (a European Excel
export), used then for every row.

Rows are numbered as the lines of the file, the header being row 1, so the
number is the one a spreadsheet or `sed -n Np` shows.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass, field

REQUIRED = ("localusername", "remoteusername", "remotepassword", "remotehostname", "remoteport", "security")
# the values every row must have (`security` may be empty: no encryption)
MANDATORY = REQUIRED[:5]
OPTIONAL = ("cron", "foldersynchronization", "exclude", "delete_remote", "delete_remote_older", "sieve_enabled",
            "delete_local")
DELIMITERS = {",": "comma", ";": "semicolon", "\t": "tab"}
MAX_INPUT = 32 * 1024 * 1024
MAX_VALUE = 16 * 1024  # far above any schema maxLength; a longer value is a broken file


class CsvFormatError(ValueError):
    """The file cannot be read safely; nothing is imported."""

    def __init__(self, row: int | None, message: str):
        super().__init__(f"row {row}: {message}" if row else message)
        self.row = row


@dataclass
class Row:
    number: int
    values: dict[str, str] = field(repr=False)  # holds the password
    error: str = ""  # a row-level problem found while reading (wrong value count)


@dataclass
class CsvFile:
    columns: list[str]
    delimiter: str
    rows: list[Row]
    empty_lines: int = 0
    notes: list[str] = field(default_factory=list)


def decode(data: bytes) -> tuple[str, list[str]]:
    """UTF-8 text, and notes on what was handled."""
    notes = []
    if len(data) > MAX_INPUT:
        raise CsvFormatError(None, f"the input is larger than {MAX_INPUT // (1024 * 1024)} MiB: "
                                   "this is not a task list")
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        raise CsvFormatError(None, "the file is UTF-16 encoded: save it as \"CSV UTF-8\" and import it again")
    if data.startswith(b"\xef\xbb\xbf"):
        data = data[3:]
        notes.append("UTF-8 byte order mark ignored")
    nul = data.find(b"\0")
    if nul >= 0:
        raise CsvFormatError(_line_of(data, nul), "holds a NUL byte: this is not a CSV text file")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise CsvFormatError(_line_of(data, exc.start),
                             f"is not valid UTF-8 (byte {data[exc.start]:#04x}): save the file as UTF-8") from None
    if not text.strip():
        raise CsvFormatError(None, "the input is empty: give the CSV file on standard input "
                                   "(import-csv-tasks < users.csv)")
    if "\r\n" in text:
        notes.append("Windows (CRLF) line ends read as line ends")
    return text, notes


def _line_of(data: bytes, offset: int) -> int:
    return data.count(b"\n", 0, offset) + data.count(b"\r", 0, offset) - data.count(b"\r\n", 0, offset) + 1


def _header(text: str) -> tuple[list[str], str]:
    """The column names and the delimiter: `,` unless the header only makes
    sense split by `;` or a tab."""
    tried: dict[str, list[str]] = {}
    for delimiter in DELIMITERS:
        try:
            first = next((r for r in csv.reader(io.StringIO(text, newline=""), delimiter=delimiter, strict=True)
                          if any(v.strip() for v in r)), [])
        except csv.Error:
            first = []
        names = [c.strip().lower() for c in first]
        tried[delimiter] = names
        if all(c in names for c in REQUIRED):
            return names, delimiter
    names = tried[","]
    missing = [c for c in REQUIRED if c not in names]
    hint = ""
    if len(names) == 1 and any(d in names[0] for d in (";", "\t")):
        hint = "; the header is not separated by ',' (comma)"
    raise CsvFormatError(1, f"Missing required column(s): {', '.join(missing)}{hint}. "
                            f"The header must name the columns {','.join(REQUIRED)}")


def parse(data: bytes) -> CsvFile:
    text, notes = decode(data)
    columns, delimiter = _header(text)
    known = set(REQUIRED) | set(OPTIONAL)
    unknown = [c for c in columns if c and c not in known]
    if unknown:
        raise CsvFormatError(1, f"unknown column(s): {', '.join(repr(c) for c in unknown)}; "
                                f"the optional columns are {', '.join(OPTIONAL)}")
    dup = sorted({c for c in columns if c and columns.count(c) > 1})
    if dup:
        raise CsvFormatError(1, f"column(s) named twice: {', '.join(dup)}")
    if delimiter != ",":
        notes.append(f"delimiter {DELIMITERS[delimiter]} ('{delimiter}'), as in the header")
    csv.field_size_limit(MAX_VALUE)
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter, strict=True)
    rows: list[Row] = []
    empty = 0
    header_seen = False
    while True:
        start = reader.line_num + 1
        try:
            record = next(reader)
        except StopIteration:
            break
        except csv.Error as exc:
            message = _quoting_error(str(exc), delimiter)
            if reader.line_num > start and "longer than" not in message:
                message = (f"a quote opened on this row is not closed on its line "
                           f"(the next {reader.line_num - start} line(s) were read into the value)")
            raise CsvFormatError(start, message) from None
        if not any(v.strip() for v in record):
            if header_seen:
                empty += 1
            continue
        if not header_seen:
            header_seen = True
            continue
        row = Row(start, {})
        if len(record) != len(columns):
            row.error = (f"has {len(record)} values but the header has {len(columns)} columns: "
                         f"a value holding '{delimiter}' must be quoted (\"...\")")
        else:
            row.values = {c: v for c, v in zip(columns, record, strict=True) if c}
            if any(v.strip() for c, v in zip(columns, record, strict=True) if not c):
                row.error = "has a value under a column without a name"
        rows.append(row)
    return CsvFile(columns=[c for c in columns if c], delimiter=delimiter, rows=rows, empty_lines=empty,
                   notes=notes)


def _quoting_error(message: str, delimiter: str) -> str:
    if "field larger than field limit" in message:
        return f"a value is longer than {MAX_VALUE} characters: this line is not a task"
    if "expected after" in message:
        return (f"a closing quote must be followed by '{delimiter}' or the end of the line "
                "(a quote inside a quoted value is written twice: \"\")")
    if "unexpected end of data" in message or "EOF" in message:
        return "a quoted value is never closed: the file ends inside it"
    return f"the line cannot be read as CSV ({message})"
