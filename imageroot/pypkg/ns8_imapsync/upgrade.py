"""Bringing old state up to date: after update-module and restore-module.

Task files written by the reference module (imapsync flags as values) are
rewritten in our format, so users switch modules without re-creating tasks.
A file that cannot be read is left as it is and reported, never deleted.
"""

from __future__ import annotations

from ns8_imapsync import files
from ns8_imapsync.layout import task_names
from ns8_imapsync.statedir import StateDir
from ns8_imapsync.task import FORMAT_VERSION, Task, format_env, parse_env


def upgrade_task_files(state: StateDir) -> tuple[list[str], list[str]]:
    """Rewrite old task files; returns (upgraded names, unreadable file names)."""
    upgraded, unreadable = [], []
    if not state.tasks_dir.is_dir():
        return upgraded, unreadable
    for name in task_names(state.tasks_dir):
        path = state.files(name).env
        env = parse_env(path.read_text(errors="replace"))
        if env.get("FORMAT_VERSION") == FORMAT_VERSION:
            continue
        try:
            task = Task.from_env(env)
        except (KeyError, ValueError):
            unreadable.append(path.name)
            continue
        if task.name != name:
            unreadable.append(path.name)
            continue
        files.write_atomic(path, format_env(task.to_env()), 0o600)
        upgraded.append(task.name)
    return upgraded, unreadable
