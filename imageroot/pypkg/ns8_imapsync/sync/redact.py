"""Masking a task's passwords in whatever a run writes down.

The task log, the status reason and the journal line are read by
administrators and returned by get-log: none may show the remote password or
the mail server's master password, whether the text comes from imapsync's
output (a server may echo a login line) or from a Python exception (an IMAP
library quoting the command it sent). The secrets are read from the plan's
password files, as the engines read them.
"""

from __future__ import annotations

from pathlib import Path

from ns8_imapsync.sync.plan import SyncPlan, read_password

MIN_REDACTED_LENGTH = 4  # shorter passwords would mask ordinary words and numbers of the log
MASK = "MASKED"


def _spellings(secret: str) -> set[str]:
    """The secret as it may appear in text: as is, in a Python repr (an exception
    quoting bytes or a str), and IMAP-quoted (backslash before ``"`` and ``\\``)."""
    imap_quoted = secret.replace("\\", "\\\\").replace('"', '\\"')
    return {secret, repr(secret)[1:-1], repr(secret.encode("utf-8"))[2:-1], imap_quoted}


class Redactor:
    """Replaces the plan's passwords by ``MASKED`` in a line of text."""

    def __init__(self, secrets: list[str]) -> None:
        spelled: set[str] = set()
        for secret in secrets:
            if len(secret) >= MIN_REDACTED_LENGTH:
                spelled |= _spellings(secret)
        self.secrets = sorted(spelled, key=len, reverse=True)  # longest first: no partial leftovers

    @classmethod
    def for_plan(cls, plan: SyncPlan) -> Redactor:
        """The task's remote password and the master password; a missing file masks nothing."""
        secrets = []
        for path in (plan.source_password_file, plan.target_password_file):
            try:
                secrets.append(read_password(Path(path)))
            except (OSError, UnicodeDecodeError):
                continue
        return cls(secrets)

    def __call__(self, line: str) -> str:
        for secret in self.secrets:
            if secret in line:
                line = line.replace(secret, MASK)
        return line
