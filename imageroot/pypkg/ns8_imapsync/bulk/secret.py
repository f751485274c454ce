"""Where a secret given to the bulk tools comes from.

Passwords on a command line are visible to every user of the machine (ps,
/proc/*/cmdline) and end up in shell history, so a file or an environment
variable is preferred; the flag still works because users come with that habit,
but it prints a warning. A terminal prompt is the last resort.
"""

from __future__ import annotations

import getpass
import os
import sys
from pathlib import Path


class SecretError(ValueError):
    """The secret's source is unreadable or empty."""


def read_secret(
    *,
    flag_value: str | None,
    file: str | os.PathLike | None,
    env_name: str,
    what: str,
    prompt: bool = True,
) -> str | None:
    """The secret from, in order: `file`, `$env_name`, the command-line flag, a
    terminal prompt. None when no source gives one and prompting is impossible."""
    if file is not None:
        try:
            text = Path(file).read_text(encoding="utf-8")
        except OSError as exc:
            raise SecretError(f"cannot read the {what} file {file}: {exc.strerror}") from None
        value = text.rstrip("\r\n")
        if not value:
            raise SecretError(f"the {what} file {file} is empty")
        return value
    value = os.environ.get(env_name)
    if value:
        return value
    if flag_value:
        print(f"warning: a {what} on the command line is visible to other users of this machine; "
              f"prefer a file or ${env_name}", file=sys.stderr)
        return flag_value
    if prompt and sys.stdin.isatty():
        return getpass.getpass(f"{what}: ") or None
    return None
