"""Stop, the watchdog and a killed run leave no imapsync behind; output lines keep a slow run alive.

Real processes: a run in its own process (runctl.Run, tests/runproc.py) with
the imapsync engine, and a stand-in imapsync on PATH that ignores SIGTERM and
the abort file, or prints a line a second. The endpoints are the local
Dovecot pair with empty mailboxes, because the engine's post-run steps talk to
both servers. "Gone" means no live process: a zombie only waits for a reaper
we do not control.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from localnode import dovecot
from localnode.imap_pair import REMOTE_OF, Pair
from ns8_imapsync import runstate
from ns8_imapsync.statedir import StateDir
from ns8_imapsync.sync.runctl import stop_run
from runproc import (
    alive,
    endpoints,
    install_standin,
    kill_standins,
    set_mode,
    start_run,
    wait_pidfile,
    wait_state,
    write_passwords,
)

NAME = "u2_procs"


@pytest.fixture
def tasks(tmp_path: Path, pair: Pair) -> Iterator[Path]:
    dovecot.wipe(pair.cfg.remote, REMOTE_OF["user02"])
    dovecot.wipe(pair.cfg.mail1, "u2")
    write_passwords(tmp_path, NAME, pair.password("user02"), pair.master_pass)
    yield tmp_path
    kill_standins(tmp_path)  # a failing test must not leave its stand-in running


@pytest.fixture
def ends(pair: Pair) -> dict:
    return endpoints(pair, "user02", "user02")


def history(tasks: Path) -> list[str]:
    return [h["state"] for h in runstate.read_history(runstate.TaskFiles(tasks, NAME))]


def next_run_is_normal(tasks: Path, ends: dict, bindir: Path) -> None:
    """The next run starts its imapsync (no exit 8 on a pid file still held) and succeeds."""
    set_mode(tasks, "ok")
    out = start_run(tasks, NAME, ends, path=str(bindir)).communicate(timeout=120)[0].strip()
    log = runstate.TaskFiles(tasks, NAME).log.read_text()
    assert out == "succeeded", log
    assert "EXIT_PID_FILE_ERROR" not in log


def test_stop_kills_an_imapsync_deaf_to_sigterm(tasks: Path, ends: dict) -> None:
    bindir = install_standin(tasks)
    set_mode(tasks, "hang")
    proc = start_run(tasks, NAME, ends, path=str(bindir))
    wait_state(tasks, NAME, ("running",))
    fake = wait_pidfile(tasks / f"{NAME}.imapsync.pid")
    assert stop_run(StateDir(tasks, tasks), NAME, grace=1) == "stopped"
    assert not alive(fake)  # gone when stop returns, though it lived in a session of its own
    assert proc.wait(timeout=10) == -signal.SIGKILL  # the run itself had to be killed too
    st = runstate.read_status(runstate.TaskFiles(tasks, NAME))
    assert (st.state, st.exit_code) == ("stopped", 143) and "killed" in st.reason
    assert history(tasks) == ["stopped"]
    next_run_is_normal(tasks, ends, bindir)


def test_watchdog_forced_exit_ends_imapsync_before_recording(tasks: Path, ends: dict) -> None:
    """An engine deaf to stop (it never returns): the watchdog's forced exit path."""
    bindir = install_standin(tasks)
    set_mode(tasks, "hang")
    proc = start_run(tasks, NAME, ends, engine="spawns-and-hangs", path=str(bindir),
                     SYNC_STALL_SECONDS="1", SYNC_STOP_GRACE="1")
    fake = wait_pidfile(tasks / f"{NAME}.imapsync.pid")
    wait_state(tasks, NAME, ("stalled",))
    assert not alive(fake)  # recorded only once it was gone
    assert proc.wait(timeout=20) == 1
    assert history(tasks) == ["stalled"]
    next_run_is_normal(tasks, ends, bindir)


def test_watchdog_ends_a_silent_imapsync(tasks: Path, ends: dict) -> None:
    """The imapsync engine itself, with an imapsync that prints nothing and ignores the stop."""
    bindir = install_standin(tasks)
    set_mode(tasks, "hang")
    proc = start_run(tasks, NAME, ends, path=str(bindir), SYNC_STALL_SECONDS="1", SYNC_STOP_GRACE="1")
    fake = wait_pidfile(tasks / f"{NAME}.imapsync.pid")
    st = wait_state(tasks, NAME, ("stalled",))
    assert not alive(fake)
    assert st.error_class == "stalled"
    proc.wait(timeout=20)
    assert history(tasks) == ["stalled"]
    next_run_is_normal(tasks, ends, bindir)


def test_a_killed_run_counts_as_running_until_its_imapsync_is_gone(tasks: Path, ends: dict) -> None:
    """kill -9 of the run (OOM killer, an administrator): its imapsync still works on the
    mailbox, so the task is not shown crashed and no second imapsync starts beside it;
    a stop ends the orphan and records the stop."""
    bindir = install_standin(tasks)
    set_mode(tasks, "hang")
    proc = start_run(tasks, NAME, ends, path=str(bindir))
    st = wait_state(tasks, NAME, ("running",))
    fake = wait_pidfile(tasks / f"{NAME}.imapsync.pid")
    os.kill(st.pid, signal.SIGKILL)
    proc.wait(timeout=10)
    time.sleep(0.3)
    assert alive(fake)
    assert runstate.read_status(runstate.TaskFiles(tasks, NAME)).state == "running"
    set_mode(tasks, "ok")
    assert start_run(tasks, NAME, ends, path=str(bindir)).communicate(timeout=60)[0].strip() == "SKIPPED"
    assert stop_run(StateDir(tasks, tasks), NAME, grace=1) == "stopped"
    assert not alive(fake)
    assert runstate.read_status(runstate.TaskFiles(tasks, NAME)).state == "stopped"
    next_run_is_normal(tasks, ends, bindir)


def test_output_lines_keep_a_slow_imapsync_run_alive(tasks: Path, ends: dict) -> None:
    """A line a second and no progress the parser can read, with a 3 s stall limit, for 8 s."""
    bindir = install_standin(tasks)
    set_mode(tasks, "tick", "8")
    started = time.monotonic()
    out = start_run(tasks, NAME, ends, path=str(bindir), SYNC_STALL_SECONDS="3").communicate(timeout=120)[0]
    assert out.strip() == "succeeded", runstate.TaskFiles(tasks, NAME).log.read_text()
    assert time.monotonic() - started >= 8
    assert history(tasks) == ["succeeded"]
