"""What a run found, did and failed at: progress events and the RunReport.

Engines emit `Progress` while they work and return one `RunReport`; syncctl
turns them into the task's live progress record, status and history.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field

from ns8_imapsync.errors import MESSAGE_ERRORS, RUN_WORDS

# a run's error class (RunReport.error_class) -> plain words: ns8_imapsync.errors owns them
ERROR_CLASSES = RUN_WORDS

MAX_FOLDER_LINES = 20  # error lines naming short folders
MAX_FOLDER_RECORDS = 200  # folders kept in a status record (a server may have thousands)


@dataclass
class Progress:
    folder: str = ""  # host1 folder being synced
    folders_done: int = 0
    folders_total: int = 0
    messages_done: int = 0  # examined on host1 so far (copied + skipped)
    messages_total: int = 0
    bytes_done: int = 0
    bytes_total: int = 0


@dataclass
class Side:
    folders: int = 0
    messages: int = 0
    bytes: int = 0


@dataclass
class FolderTally:
    """One remote folder at the end of a run: how many of its messages the run was
    responsible for, and how many of those are on the local server.

    "On the local server" means found there by the engine's own acknowledged
    record (native) or by identity after the run (imapsync's completion step);
    a message the user's Sieve script filed elsewhere or discarded was delivered
    and counts as found."""

    folder: str
    listed: int
    found: int

    @property
    def missing(self) -> int:
        return max(0, self.listed - self.found)


@dataclass
class RunReport:
    host1: Side = field(default_factory=Side)  # found on the remote (selected folders)
    host2: Side = field(default_factory=Side)  # found on the local server at the end
    copied: int = 0
    copied_bytes: int = 0
    skipped: int = 0  # already on host2 (or duplicates)
    flags_updated: int = 0
    deleted_host1: int = 0
    deleted_host2: int = 0
    folders_created: int = 0
    folders_deleted_host2: int = 0
    folders: list[FolderTally] = field(default_factory=list)  # every synced remote folder
    errors: list[str] = field(default_factory=list)  # one line each, never a password
    error_class: str = ""  # key of ERROR_CLASSES; "" when the run succeeded
    exit_code: int = 0  # 0 = success; imapsync's code for that engine; see syncctl for native

    @property
    def ok(self) -> bool:
        return self.exit_code == 0 and not self.error_class and not self.missing

    @property
    def listed(self) -> int:
        return sum(t.listed for t in self.folders)

    @property
    def found(self) -> int:
        return sum(t.found for t in self.folders)

    @property
    def missing(self) -> int:
        return sum(t.missing for t in self.folders)

    def require_complete(self) -> None:
        """A run that left remote messages off the local server is not a success:
        name each folder short of messages (the engines call this last, the run
        control once more; calling it twice says nothing twice)."""
        short = [t for t in self.folders if t.missing]
        for t in short[:MAX_FOLDER_LINES]:
            line = f"folder {t.folder}: {t.missing} of {t.listed} remote message(s) are not on the local server"
            if line not in self.errors:  # called by the engine and again by the run: say it once
                self.errors.append(line)
        if short and not self.error_class:
            self.error_class = MESSAGE_ERRORS
        if short and not self.exit_code:
            self.exit_code = 1

    @property
    def reason(self) -> str:
        """One plain sentence for the administrator."""
        if self.ok:
            return f"{self.copied} message(s) copied, {self.skipped} already there"
        base = ERROR_CLASSES.get(self.error_class, self.error_class)
        return f"{base}: {self.errors[0]}" if self.errors else base

    def to_dict(self) -> dict:
        d = asdict(self)
        d["reason"] = self.reason
        return d

    def tally_record(self) -> dict:
        """What the status and history keep: totals, and the folders (short ones first)."""
        folders = sorted(self.folders, key=lambda t: (-t.missing, t.folder))[:MAX_FOLDER_RECORDS]
        return {"listed": self.listed, "found": self.found,
                "folders": [{"folder": t.folder, "listed": t.listed, "found": t.found} for t in folders]}


ProgressFn = Callable[[Progress], None]
