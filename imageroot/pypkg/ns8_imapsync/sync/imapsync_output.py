"""Streaming parser of imapsync 2.229's output (stdout == log, spec sections 2-5).

Feed it the lines as they come: ``feed`` returns a Progress snapshot whenever
the run moved (folder loop marker, copy line, ETA counter), and ``finish``
turns what was seen (statistics block, folder-size totals, error listing,
``Exiting with return value N``) into a RunReport with an error class.

Only line starts are trusted (``Folder``, ``msg``, ``Host1 Nb``, ``Err k/N:``,
...): a server's text appears only inside lines that start with imapsync's own
words, and the last ``Exiting`` line and statistics block win, so a message
body dumped by ``--debugimap`` cannot fake the result. The engine's process
exit code beats the ``Exiting`` line anyway.
"""

from __future__ import annotations

import re
import signal
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field, replace

from ns8_imapsync.errors import (
    BAD_MASTER_CREDENTIALS,
    CONNECTION_LOST,
    ENGINE_ERROR,
    MESSAGE_ERRORS,
    VALIDATION_FAILED,
)
from ns8_imapsync.imap.errors import classify_imapsync_exit
from ns8_imapsync.sync.report import Progress, RunReport, Side

# --------------------------------------------------------------------------- line shapes

_LOOP_START = re.compile(r"^\+\+\+\+ Looping on each one of (\d+) folders to sync")
_LOOP_END = re.compile(r"^\+\+\+\+ End looping on each folder")
_FOLDER = re.compile(r"^Folder\s+(\d+)/(\d+) (.*?)\s* -> \[")
_JUX = re.compile(r"^\[(.*)\] = \[(.*)\]$|^\[(.*)\]$")
_CONSIDERING = re.compile(r"^Host1: folder \[.*\] considering (\d+) messages$")
# "msg %s/%-19s copied to %s/%-10s %.2f msgs/s ..." with "<uid1> {<bytes>}" as the first %-19s
_COPIED = re.compile(
    r"^msg (?P<f1>.+)/(?P<uid1>\d+) \{(?P<size>\d+)\}\s+copied to (?P<f2>.+)/(?P<uid2>\S*)\s+[\d.]+ msgs/s"
)
_MSGS_LEFT = re.compile(r"\b(\d+)/(\d+) msgs left\s*$")
_SIZES_START = re.compile(r"^Folders sizes before the synchronization")
_SIZES_END = re.compile(r"^Folders sizes after the synchronization")
_SIZE_ROW = re.compile(r"^Host([12]) folder\s+(\d+)/(\d+) .*Size:\s+(\d+) Messages:\s+(\d+) Biggest:\s+\d+\s*$")
_TOTAL = re.compile(r"^Host([12]) (Nb folders|Nb messages|Total size):\s+(-?\d+) ")
_CREATED = re.compile(r"^Created folder \[.*\] on host2\s*$")
_DELETED_FOLDER = re.compile(r"^Deleted \S")
_STATS_START = re.compile(r"^\+\+\+\+ Statistics\s*$")
_STAT = re.compile(r"^(?P<label>[A-Za-z0-9][^:]*?)\s*: (?P<value>.*)$")
_DETECTED = re.compile(r"^Detected (\d+) errors")
_ERR_LISTING = re.compile(r"^\+\+\+\+ Listing (\d+) errors encountered")
_ERR = re.compile(r"^Err \d+/\d+: (.*)$")
_MOST_FREQUENT = re.compile(r"^The most frequent error is (ERR_\w+)\.")
_EXIT = re.compile(r"^Exiting with return value (\d+) ")

# Lines that report a failure as it happens (before, or without, the final listing).
_LIVE_ERROR = re.compile(
    r"^(?:Host[12] failure: |Failure: |Host[12]: Can not open imap connection"
    r"|Warning: using --delete1 and --delete2"
    r"|- msg .* could not |Host[12]: .*(?:could not|Could not) "
    r"|Could not create folder|Maximum number of errors|Maximum bytes transferred reached"
    r"|Another imapsync process \d+ is running|.* another imapsync may be curently running"
    r"|Asked to terminate by file|Got a signal \w+ .*Asked to terminate)"
)
# Words of Mail::IMAPClient / imapsync when a session died under a running sync.
_CONNECTION_LOST = re.compile(
    r"lost connection|socket closed|Unconnected|Broken pipe|Connection reset|timeout waiting"
    r"|timed out|Connection refused|EOF",
    re.IGNORECASE,
)

_SIGNAL_NUMBERS = frozenset({signal.SIGHUP, signal.SIGINT, signal.SIGQUIT, signal.SIGKILL, signal.SIGTERM})

MAX_ERRORS_KEPT = 50  # a RunReport carries a summary, not a dump

# imapsync exit codes (spec section 5)
EXIT_BY_SIGNAL = 6
EXIT_BY_FILE = 7
EXIT_PID_FILE_ERROR = 8
EXIT_TLS_FAILURE = 12
EXIT_AUTHENTICATION_FAILURE_USER2 = 162
_MESSAGE_ERROR_CODES = frozenset({1, 111, 112, 113, 114, 115, 116, 117, 118, 119, 120})
_ENGINE_ERROR_TEXT = {
    8: "another imapsync run of this task is still running (pidfile locked)",
    64: "imapsync refused its command line",
    66: "imapsync could not read a password file",
    70: "imapsync internal software error",
}


@dataclass
class CopiedMessage:
    """One successful APPEND: what the inbox/Sieve post-steps need to find it again."""

    folder1: str  # raw host1 name (modified UTF-7, host1 separator)
    uid1: int
    size: int
    folder2: str  # raw host2 name
    uid2: int | None  # from APPENDUID; None when host2 gave none


@dataclass
class _Sizes:
    """One "Folders sizes" section: per-folder host1 sizes and the totals."""

    folder_bytes: dict[int, int] = field(default_factory=dict)  # host1, by loop index
    totals: dict[tuple[str, str], int] = field(default_factory=dict)  # ("1", "Nb messages") -> n


def _unjux(text: str) -> str:
    """``[raw] = [utf8]`` -> utf8, ``[raw]`` -> raw (imapsync's jux_utf8 display)."""
    m = _JUX.match(text.strip())
    if not m:
        return text.strip()
    return m.group(2) if m.group(2) is not None else m.group(3)


def _first_int(text: str) -> int:
    m = re.match(r"\s*(-?\d+)", text)
    return int(m.group(1)) if m else 0


class ImapsyncOutputParser:
    """Feed lines, read Progress; then ``finish`` for the RunReport."""

    def __init__(self) -> None:
        self.progress = Progress()
        self.copied: list[CopiedMessage] = []
        self.exit_line: int | None = None  # value of the last "Exiting with return value" line
        self.stats: dict[str, str] = {}  # label -> raw value, last statistics block
        self.errors: list[str] = []  # live failure lines
        self.listed_errors: list[str] | None = None  # the final "Err k/N:" listing, when printed
        self.most_frequent: str = ""
        self.detected_errors: int | None = None
        self.folders_created = 0
        self.folders_deleted = 0
        self._in_stats = False
        self._sizes: list[_Sizes] = []  # [start, end]
        self._sizes_open: _Sizes | None = None
        self._folder_index = 0  # loop index of the folder in hand (1-based)
        self._base_done = 0  # messages of the folders already finished
        self._considering = 0  # host1 messages of the folder in hand
        self._copied_in_folder = 0

    # ------------------------------------------------------------------ streaming

    def feed(self, line: str) -> Progress | None:
        """Take one output line; a Progress copy when it moved the run forward."""
        line = line.rstrip("\r\n")
        before = replace(self.progress)
        self._feed(line)
        return replace(self.progress) if self.progress != before else None

    def feed_all(self, lines: Iterable[str]) -> Iterator[Progress]:
        for line in lines:
            update = self.feed(line)
            if update is not None:
                yield update

    def _feed(self, line: str) -> None:
        if self._in_stats:
            if self._stat_line(line):
                return
        for handler in (self._loop_line, self._copy_line, self._sizes_line, self._summary_line):
            if handler(line):
                return
        if _LIVE_ERROR.match(line) and len(self.errors) < MAX_ERRORS_KEPT:
            self.errors.append(line.strip())

    def _loop_line(self, line: str) -> bool:
        p = self.progress
        if m := _LOOP_START.match(line):
            p.folders_total = int(m.group(1))
            return True
        if m := _FOLDER.match(line):
            self._end_folder()
            self._folder_index = int(m.group(1))
            p.folders_total = int(m.group(2))
            p.folders_done = self._folder_index - 1
            p.folder = _unjux(m.group(3))
            self._bytes_baseline()
            return True
        if m := _CONSIDERING.match(line):
            self._considering = int(m.group(1))
            return True
        if _LOOP_END.match(line):
            self._end_folder()
            # every selected message was examined, including the ones a --dry run
            # or an empty folder never mentions
            p.folders_done = p.folders_total
            p.messages_done = max(p.messages_done, p.messages_total)
            p.bytes_done = max(p.bytes_done, p.bytes_total)
            return True
        if _CREATED.match(line):
            self.folders_created += 1
            return True
        if _DELETED_FOLDER.match(line) and "not really since --dry mode" not in line:
            self.folders_deleted += 1
            return True
        return False

    def _end_folder(self) -> None:
        self._base_done += max(self._considering, self._copied_in_folder)
        self._considering = self._copied_in_folder = 0
        self.progress.messages_done = max(self.progress.messages_done, self._base_done)

    def _bytes_baseline(self) -> None:
        """Bytes of the folders before the one in hand, from the start sizes."""
        if self._sizes:
            start = self._sizes[0].folder_bytes
            done = sum(size for i, size in start.items() if i < self._folder_index)
            self.progress.bytes_done = max(self.progress.bytes_done, done)

    def _copy_line(self, line: str) -> bool:
        if not line.startswith("msg "):
            return False
        p = self.progress
        if m := _COPIED.match(line):
            size = int(m.group("size"))
            uid2 = m.group("uid2")
            self.copied.append(
                CopiedMessage(m.group("f1"), int(m.group("uid1")), size, m.group("f2"),
                              int(uid2) if uid2.isdigit() else None)
            )
            self._copied_in_folder += 1
            p.bytes_done += size
            p.messages_done = max(p.messages_done, self._base_done + self._copied_in_folder)
        self._msgs_left(line)
        return True

    def _msgs_left(self, line: str) -> None:
        if m := _MSGS_LEFT.search(line):
            left, total = int(m.group(1)), int(m.group(2))
            self.progress.messages_total = max(self.progress.messages_total, total)
            self.progress.messages_done = max(self.progress.messages_done, total - left)

    def _sizes_line(self, line: str) -> bool:
        if _SIZES_START.match(line) or _SIZES_END.match(line):
            self._sizes_open = _Sizes()
            self._sizes.append(self._sizes_open)
            return True
        if line.startswith("ETA: "):
            self._msgs_left(line)
            return True
        current = self._sizes_open
        if current is None:
            return False
        if m := _SIZE_ROW.match(line):
            if m.group(1) == "1":
                current.folder_bytes[int(m.group(2))] = int(m.group(4))
            return True
        if m := _TOTAL.match(line):
            current.totals[(m.group(1), m.group(2))] = int(m.group(3))
            if len(self._sizes) == 1 and m.group(1) == "1":
                self._start_totals(m.group(2), int(m.group(3)))
            return True
        return False

    def _start_totals(self, what: str, value: int) -> None:
        p = self.progress
        if what == "Nb messages":
            p.messages_total = max(p.messages_total, value)
        elif what == "Total size":
            p.bytes_total = max(p.bytes_total, value)
        elif what == "Nb folders":
            p.folders_total = max(p.folders_total, value)

    def _summary_line(self, line: str) -> bool:
        if _STATS_START.match(line):
            self._in_stats = True
            self.stats = {}
            self._sizes_open = None
            return True
        if _ERR_LISTING.match(line):
            self.listed_errors = []
            return True
        if m := _ERR.match(line):
            if self.listed_errors is not None and len(self.listed_errors) < MAX_ERRORS_KEPT:
                self.listed_errors.append(m.group(1).strip())
            return True
        if m := _MOST_FREQUENT.match(line):
            self.most_frequent = m.group(1)
            return True
        if m := _EXIT.match(line):
            self.exit_line = int(m.group(1))
            self._in_stats = False
            return True
        return False

    def _stat_line(self, line: str) -> bool:
        if m := _DETECTED.match(line):
            self.detected_errors = int(m.group(1))
            self._in_stats = False
            return True
        if m := _STAT.match(line):
            self.stats[m.group("label").strip()] = m.group("value")
            return True
        return False

    # ------------------------------------------------------------------ the end

    def _stat(self, label: str) -> int:
        return _first_int(self.stats.get(label, ""))

    def _sides(self, report: RunReport) -> None:
        """host1 as found at start (--delete1 empties it by the end), host2 as found at the end."""
        start = self._sizes[0].totals if self._sizes else {}
        end = self._sizes[-1].totals if len(self._sizes) > 1 else {}
        synced = re.match(r"\s*(\d+)/(\d+)", self.stats.get("Folders synced", ""))
        report.host1 = Side(
            start.get(("1", "Nb folders"), int(synced.group(2)) if synced else 0),
            start.get(("1", "Nb messages"), 0),
            start.get(("1", "Total size"), 0),
        )
        if end:
            report.host2 = Side(end.get(("2", "Nb folders"), 0), end.get(("2", "Nb messages"), 0),
                                end.get(("2", "Total size"), 0))
        elif start:  # no end sizes: what was there plus what this run did
            report.host2 = Side(
                start.get(("2", "Nb folders"), 0),
                max(0, start.get(("2", "Nb messages"), 0) + report.copied - report.deleted_host2),
                start.get(("2", "Total size"), 0) + report.copied_bytes,
            )

    def finish(self, returncode: int | None = None, stop_requested: bool = False) -> RunReport:
        """The RunReport. ``returncode`` is the process's (negative = killed by a signal);
        without it the ``Exiting with return value`` line is used."""
        self._end_folder()
        report = RunReport()
        if self.stats:
            report.copied = self._stat("Messages transferred")
            report.skipped = self._stat("Messages skipped")
            report.deleted_host1 = self._stat("Messages deleted on host1")
            report.deleted_host2 = self._stat("Messages deleted on host2")
            report.copied_bytes = self._stat("Total bytes transferred")
        else:  # killed before the statistics: count what the copy lines showed
            report.copied = len(self.copied)
            report.copied_bytes = sum(c.size for c in self.copied)
        report.folders_created = self.folders_created
        report.folders_deleted_host2 = self.folders_deleted
        self._sides(report)
        report.errors = list(self.listed_errors if self.listed_errors else self.errors)
        report.exit_code, signum = self._exit_code(returncode)
        report.error_class = error_class(report.exit_code, report.errors, signum=signum,
                                         stop_requested=stop_requested)
        if report.error_class and not report.errors:
            report.errors = [self._default_reason(report.exit_code, signum)]
        return report

    def _exit_code(self, returncode: int | None) -> tuple[int, int | None]:
        """(exit code, signal number when killed by one). A signal gives 128+N like a shell."""
        if returncode is not None and returncode < 0:
            return 128 - returncode, -returncode
        if returncode is not None:
            return returncode, None
        if self.exit_line is not None:
            return self.exit_line, None
        return -1, None  # no process code and no exit line: the run did not end normally

    def _default_reason(self, code: int, signum: int | None) -> str:
        if signum is not None:
            try:
                name = signal.Signals(signum).name
            except ValueError:
                name = str(signum)
            return f"imapsync was ended by signal {name}"
        if code in _ENGINE_ERROR_TEXT:
            return _ENGINE_ERROR_TEXT[code]
        if code == -1:
            return "imapsync ended without its final report"
        return f"imapsync exited with code {code}"


def _failing_side(errors: list[str]) -> int | None:
    for line in errors:
        if m := re.match(r"^Host([12])[ :]", line):
            return int(m.group(1))
    return None


def error_class(code: int, errors: list[str], *, signum: int | None = None,
                stop_requested: bool = False) -> str:
    """The RunReport error class of an imapsync run (report.ERROR_CLASSES keys).

    Host1 is the remote the administrator typed in; host2 is the local server
    logged in as ``<user>*vmail``, so its login failure is the master login's.
    """
    text = "\n".join(errors)
    if code == 0:
        return ""  # it finished before a stop took effect: a complete run
    if stop_requested:
        return "stopped"  # whatever imapsync said while being stopped
    if signum is None and code > 128 and code - 128 in _SIGNAL_NUMBERS:
        signum = code - 128  # a wrapper (shell, flock) reported the signal as 128+N
    if signum is not None:
        asked = signum in (signal.SIGTERM, signal.SIGINT, signal.SIGQUIT, signal.SIGHUP)
        return "stopped" if asked else "crashed"  # e.g. SIGKILL by the OOM killer
    if code in (EXIT_BY_SIGNAL, EXIT_BY_FILE):
        return "stopped"
    if code == -1:
        return "crashed"
    if code == EXIT_AUTHENTICATION_FAILURE_USER2:
        return BAD_MASTER_CREDENTIALS
    if code == EXIT_TLS_FAILURE and _failing_side(errors) == 2:
        return "SSL_encryption_error"  # the local server's STARTTLS: "use IMAPS" would mislead
    if code in _MESSAGE_ERROR_CODES:
        return CONNECTION_LOST if _CONNECTION_LOST.search(text) else MESSAGE_ERRORS
    known = classify_imapsync_exit(code, None, text)
    if known and known != VALIDATION_FAILED:
        return known
    return ENGINE_ERROR


def parse_lines(lines: Iterable[str], returncode: int | None = None) -> RunReport:
    """Parse a whole output at once (tests, logs read back)."""
    parser = ImapsyncOutputParser()
    for _ in parser.feed_all(lines):
        pass
    return parser.finish(returncode)
