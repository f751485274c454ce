"""SyncPlans for engine tests against the Dovecot pair: a remote account of the
pair (``user01``...) synced into its local user, password files 0600 in a
temporary directory, as syncctl would build them from a task."""

from __future__ import annotations

import os
from pathlib import Path

from localnode.imap_pair import Pair
from ns8_imapsync.sync.plan import SyncPlan


def write_secret(path: Path, secret: str) -> None:
    """The first line of a password file, mode 0600 from the start."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(secret + "\n")


def plan_for(pair: Pair, tmp: Path, user: str, task_name: str, **options: object) -> SyncPlan:
    """A plan for remote account ``user`` -> its local user, state and passwords in ``tmp``."""
    tmp.mkdir(parents=True, exist_ok=True)
    src, dst = tmp / "remote.pwd", tmp / "vmail.pwd"
    write_secret(src, pair.password(user))
    write_secret(dst, pair.master_pass)
    return SyncPlan(task_name=task_name, source=pair.remote(user), target=pair.local(user),
                    source_password_file=src, target_password_file=dst, workdir=tmp, **options)  # type: ignore[arg-type]
