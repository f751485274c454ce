"""The sync service's settings, handed to the processes cron starts.

cron starts its jobs with an environment of its own (the cron file's lines,
HOME, SHELL, PATH), never the container's.  The service gets its settings
(the mail server's port, the engine, the caps, the stall time) in the
container's environment, so a scheduled run would miss them all: the wrong
IMAP port, the default engine and caps.  ``syncctl serve`` (the container's
main process) saves them in the task directory, and every other ``syncctl``
takes from there what its own environment lacks; a value of its own (the
cron file's MAIL_HOST) wins.  No secret is ever in these variables: passwords
are files.
"""

from __future__ import annotations

import json
import os
from collections.abc import MutableMapping
from pathlib import Path

from ns8_imapsync import files, layout

NAMES = ("MAIL_HOST", "MAIL_PORT", "SYNC_ENGINE", "SYNC_JOURNAL", "SYNC_MAX_CONCURRENT", "SYNC_MAX_PER_HOST",
         "SYNC_STALL_SECONDS", "SYNC_STOP_GRACE")


def path_of(tasks_dir: Path) -> Path:
    return tasks_dir / layout.SERVICE_SETTINGS


def save(tasks_dir: Path, environ: MutableMapping[str, str] = os.environ) -> None:
    """Keep the service's settings (the ones it has) for the processes cron starts."""
    values = {k: environ[k] for k in NAMES if k in environ}
    files.write_atomic(path_of(tasks_dir), json.dumps(values, sort_keys=True) + "\n", 0o600, durable=False)


def fill_in(tasks_dir: Path, environ: MutableMapping[str, str] = os.environ) -> None:
    """Add the saved settings our environment lacks (a cron job's); unreadable: nothing."""
    try:
        values = json.loads(path_of(tasks_dir).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return
    if not isinstance(values, dict):
        return
    for k, v in values.items():
        if k in NAMES and isinstance(v, str):
            environ.setdefault(k, v)
