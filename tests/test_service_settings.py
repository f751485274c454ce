"""What a start cron asks for gets: the service's settings, and a run that runs.

cron gives its jobs none of the container's environment, and its cron files
say ``SYNC_START=queue``; both reach ``syncctl`` here as cron passes them."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from ns8_imapsync import runstate, servicesettings
from ns8_imapsync.statedir import StateDir
from ns8_imapsync.task import Task

PKG = Path(__file__).resolve().parents[1] / "imageroot" / "pypkg"


def cron_env(tasks: Path, **extra: str) -> dict[str, str]:
    """An environment like cronie's for a job: PATH, HOME, the cron file's lines."""
    return {"PATH": os.environ["PATH"], "HOME": "/root", "PYTHONPATH": str(PKG), "IMAPSYNC_DIR": str(tasks),
            "CRON_DIR": str(tasks / "cron"), **extra}


def syncctl(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "ns8_imapsync.cli.syncctl", *args], env=env,
                          capture_output=True, text=True, timeout=60)


def test_the_service_settings_reach_cron_jobs_and_theirs_win(tmp_path: Path) -> None:
    service = {"MAIL_HOST": "10.5.4.1", "MAIL_PORT": "16143", "SYNC_ENGINE": "native", "SECRET_THING": "x"}
    servicesettings.save(tmp_path, service)
    saved = tmp_path / ".service-settings.json"
    assert saved.stat().st_mode & 0o777 == 0o600
    assert "SECRET_THING" not in json.loads(saved.read_text())  # only the service's own settings are kept
    job = {"MAIL_HOST": "from-the-cron-file"}
    servicesettings.fill_in(tmp_path, job)
    assert job == {"MAIL_HOST": "from-the-cron-file", "MAIL_PORT": "16143", "SYNC_ENGINE": "native"}
    saved.write_text("{broken")
    untouched: dict[str, str] = {}
    servicesettings.fill_in(tmp_path, untouched)
    assert untouched == {}


def test_syncctl_serve_saves_what_a_later_job_reads(tmp_path: Path) -> None:
    env = cron_env(tmp_path, MAIL_HOST="10.5.4.1", MAIL_PORT="16143")
    # `serve` ends by exec'ing crond; a PATH without one makes it stop right after saving
    proc = syncctl(["serve"], dict(env, PATH=str(tmp_path / "no-bin")))
    assert proc.returncode != 0
    info = syncctl(["info"], cron_env(tmp_path, MAIL_HOST="10.9.9.9"))
    assert "mail server: 10.9.9.9:16143" in info.stdout, info.stdout + info.stderr


def test_a_cron_start_is_queued_and_then_really_runs(tmp_path: Path) -> None:
    """SYNC_START=queue queues the start; the dispatcher and the run it spawns do
    not inherit it (else the run would queue itself again and never run)."""
    StateDir(tmp_path, tmp_path / "cron").save(
        Task(localuser="u1", task_id="cron1", remotehostname="127.0.0.1", remoteport=1, remoteusername="bob"), "pw")
    (tmp_path / "vmail.pwd").write_text("master\n")
    os.chmod(tmp_path / "vmail.pwd", 0o600)
    env = cron_env(tmp_path, MAIL_HOST="127.0.0.1", SYNC_START="queue", SYNC_ENGINE="native",
                   SYNC_JOURNAL=str(tmp_path / "journal"))
    proc = syncctl(["start", "u1_cron1"], env)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout.splitlines()[0])["outcome"] == "queued"
    tf = runstate.TaskFiles(tmp_path, "u1_cron1")
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and runstate.read_status(tf).state in ("", "queued", "running"):
        time.sleep(0.2)
    st = runstate.read_status(tf)
    # nothing listens on port 1: the run ran, and failed as a run to a closed port does
    assert st.state == "failed" and st.error_class, (st, proc.stdout)
    assert not runstate.is_queued(tmp_path, "u1_cron1")


@pytest.mark.parametrize("command", ["info", "status u1_none"])
def test_commands_run_without_a_settings_file(tmp_path: Path, command: str) -> None:
    proc = syncctl(command.split(), cron_env(tmp_path))
    assert "Traceback" not in proc.stderr
