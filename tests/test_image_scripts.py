"""The sync image's own script imapsync-container/crond (the cron of a base
without cronie). The container suite runs it for real; these pin its rules.
(What cron's jobs inherit from the service is the package's:
test_service_settings.py.)"""

from __future__ import annotations

import importlib.machinery
import importlib.util
import os
import pwd
import sys
import time
from datetime import datetime
from pathlib import Path
from types import ModuleType

import pytest

IMAGE_DIR = Path(__file__).resolve().parents[1] / "imapsync-container"


def load(name: str) -> ModuleType:
    loader = importlib.machinery.SourceFileLoader(f"image_{name}", str(IMAGE_DIR / name))
    spec = importlib.util.spec_from_loader(loader.name, loader)
    module = importlib.util.module_from_spec(spec)
    sys.modules[loader.name] = module  # dataclasses look their module up there
    loader.exec_module(module)
    return module


crond = load("crond")


# ---------------------------------------------------------------------------
# crond
@pytest.mark.parametrize(("field", "index", "values"), [
    ("*/15", 0, {0, 15, 30, 45}),
    ("5", 0, {5}),
    ("0,20,40", 0, {0, 20, 40}),
    ("1-3", 1, {1, 2, 3}),
    ("10-20/5", 1, {10, 15, 20}),
    ("5/20", 0, {5, 25, 45}),
    ("jan,Mar", 3, {1, 3}),
    ("mon-fri", 4, {1, 2, 3, 4, 5}),
    ("7", 4, {0, 7}),
])
def test_fields(field: str, index: int, values: set[int]) -> None:
    assert crond.parse_field(field, index) == values


@pytest.mark.parametrize(("field", "index"), [("60", 0), ("*/0", 0), ("5-1", 1), ("x", 2), ("", 0)])
def test_bad_fields_are_refused(field: str, index: int) -> None:
    with pytest.raises(ValueError):
        crond.parse_field(field, index)


def test_a_file_gives_jobs_with_its_own_variables(tmp_path: Path) -> None:
    (tmp_path / "u1_abc123.cron").write_text(
        '# a comment\nMAIL_HOST=10.5.4.1\nSYNC_START = "queue"\n\n*/5 * * * * root /usr/local/bin/syncctl start u1_abc123\n'
        "61 * * * * root never\nnot a line\n@hourly root hourly-job\n@reboot root at-start\n")
    (tmp_path / "x.custom").write_text("0 3 * * * root custom-job\n")
    for skipped in (".hidden", "old~", "a.dpkg-old", "b.rpmsave", "c.swp"):
        (tmp_path / skipped).write_text("* * * * * root must-not-run\n")
    jobs = crond.read_jobs(tmp_path)
    assert [(j.origin, j.command) for j in jobs] == [
        ("u1_abc123.cron:5", "/usr/local/bin/syncctl start u1_abc123"),
        ("u1_abc123.cron:8", "hourly-job"),
        ("u1_abc123.cron:9", "at-start"),
        ("x.custom:1", "custom-job"),
    ]
    assert jobs[0].env == {"MAIL_HOST": "10.5.4.1", "SYNC_START": "queue"}
    assert jobs[3].env == {}, "variables belong to their file"
    assert jobs[2].fields is None


def test_due_minutes_and_the_day_rule() -> None:
    job = crond.parse_line("*/5 * * * * root x", "t", {})
    assert crond.due(job, datetime(2026, 3, 2, 10, 15)) and not crond.due(job, datetime(2026, 3, 2, 10, 16))
    # day of month and day of week both given: either matches (cron's rule)
    either = crond.parse_line("0 12 1 * mon root x", "t", {})
    assert crond.due(either, datetime(2026, 3, 2, 12, 0))  # a Monday
    assert crond.due(either, datetime(2026, 4, 1, 12, 0))  # the 1st, a Wednesday
    assert not crond.due(either, datetime(2026, 3, 3, 12, 0))
    sunday = crond.parse_line("0 0 * * 7 root x", "t", {})
    assert crond.due(sunday, datetime(2026, 3, 1, 0, 0))


def test_a_job_sees_its_file_not_the_daemon(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SYNC_ENGINE", "imapsync")
    job = crond.parse_line("* * * * * root x", "t", {"MAIL_HOST": "h"})
    env = crond.job_env(job, pwd.getpwuid(os.getuid()))
    assert env["MAIL_HOST"] == "h" and env["PATH"] == "/usr/bin:/bin" and env["SHELL"] == "/bin/sh"
    assert "SYNC_ENGINE" not in env


def test_percent_ends_the_command_and_feeds_its_input() -> None:
    assert crond.split_input(r"date +\%s") == ("date +%s", None)
    assert crond.split_input("mail -s hi root%line one%line two") == ("mail -s hi root", b"line one\nline two\n")


def test_a_due_job_runs_through_the_shell_with_its_input(tmp_path: Path) -> None:
    me = pwd.getpwuid(os.getuid()).pw_name
    out = tmp_path / "out"
    job = crond.parse_line(f"* * * * * {me} cat > {out}; echo $MARK >> {out}%hello", "t", {"MARK": "from-file"})
    crond.start(job)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and "from-file" not in (out.read_text() if out.exists() else ""):
        time.sleep(0.05)
    assert out.read_text() == "hello\nfrom-file\n"
