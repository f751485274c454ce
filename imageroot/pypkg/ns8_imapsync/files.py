"""Atomic file writes with the right mode from the first byte.

A crash must never leave a half-written task file, and a secret must never
exist, even for an instant, with a mode wider than 0600: so the temp file is
created with its final mode, fsynced, then renamed over the target.
"""

from __future__ import annotations

import os
from pathlib import Path


def write_atomic(path: str | os.PathLike, data: str | bytes, mode: int = 0o600, overwrite: bool = True, *,
                 durable: bool = True, tmp: Path | None = None) -> None:
    """``overwrite=False``: the complete file is linked into place, which fails
    with FileExistsError if the target exists (even one created meanwhile).

    ``durable=False`` skips the fsyncs, for files written by the thousand whose
    loss in a power cut only costs redoing them (a queued start, a bulk export's
    sidecar): the rename still makes them whole or absent.  ``tmp``: the temporary
    name, for a caller that recognises its own leftovers (the bulk audit)."""
    path = Path(path)
    raw = data.encode() if isinstance(data, str) else data
    tmp = tmp if tmp is not None else path.with_name(f".{path.name}.tmp{os.getpid()}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, mode)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(raw)
            if durable:
                f.flush()
                os.fsync(f.fileno())
        os.chmod(tmp, mode)  # umask may have narrowed or widened it
        if overwrite:
            os.replace(tmp, path)
        else:
            os.link(tmp, path)
            tmp.unlink()
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    if not durable:
        return
    dfd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)


def ensure_dir(path: str | os.PathLike, mode: int = 0o700) -> Path:
    path = Path(path)
    path.mkdir(mode=mode, parents=True, exist_ok=True)
    os.chmod(path, mode)
    return path
