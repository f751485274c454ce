"""Run control with real processes: one run per task, stop, crash detection, caps, watchdog.

The engine here is a test double (sleeps, reports progress or heartbeats);
the real engines are tested end to end elsewhere, the imapsync engine's
process handling under run control in test_stop_and_watchdog.py. Everything
else is the product's code.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest
from ns8_imapsync import runstate
from ns8_imapsync.statedir import StateDir
from ns8_imapsync.sync.runctl import stop_run
from runproc import wait_state

PKG = Path(__file__).resolve().parents[1] / "imageroot" / "pypkg"

RUNNER = textwrap.dedent('''
    import sys, time
    from pathlib import Path
    from ns8_imapsync.imap.connection import Endpoint
    from ns8_imapsync.statedir import StateDir
    from ns8_imapsync.sync.plan import SyncPlan
    from ns8_imapsync.sync.report import FolderTally, Progress, RunReport
    from ns8_imapsync.sync.runctl import Run

    tasks, name, seconds, host = sys.argv[1], sys.argv[2], float(sys.argv[3]), sys.argv[4]
    queued_at = float(sys.argv[5]) if len(sys.argv) > 5 else None  # started by the dispatcher
    class SlowEngine:
        name = "test-double"
        def run(self, plan, progress, stop, log, heartbeat=None):
            if "hung" in name:  # ignores stop, reports nothing
                time.sleep(seconds)
                return RunReport()
            if "leak" in name:  # an engine bug whose text quotes the passwords
                secret = plan.source_password_file.read_text().splitlines()[0]
                master = plan.target_password_file.read_text().splitlines()[0]
                log(f"C: a1 LOGIN bob {secret}")
                raise RuntimeError(f"login failed: {secret.encode()!r} {secret!r} (master {master})")
            if "slowstart" in name:  # a slow login before the first sign of life
                time.sleep(1)
            if "short" in name:  # a run that left mail on the remote: 3 of 5 arrived
                return RunReport(copied=3, folders=[FolderTally("INBOX", 5, 3), FolderTally("Sent", 2, 2)])
            steps = int(seconds * 10)
            for i in range(steps):
                if stop.is_set():
                    return RunReport(copied=i, error_class="stopped", exit_code=143)
                if "beat" in name:  # one long message: bytes flow, no batch ends
                    heartbeat(4096)
                elif "silent" not in name:
                    progress(Progress(folder="INBOX", messages_done=i, messages_total=steps))
                log(f"message {i}")
                time.sleep(0.1)
            return RunReport(copied=steps)
    ep = Endpoint(host, 143, "tls", "u")
    mailbox = "shared" if "same" in name else name  # each task its own local mailbox, but the "same" ones
    plan = SyncPlan(name, ep, Endpoint(host, 143, "tls", f"{mailbox}*vmail"), Path(tasks) / f"{name}.pwd",
                    Path(tasks) / "vmail.pwd")
    st = Run(StateDir(tasks, tasks), plan, "manual", engine=SlowEngine(), queued_at=queued_at,
             from_queue=queued_at is not None).execute()
    print("SKIPPED" if st is None else st.state, flush=True)
''')


def start(tmp: Path, name: str, seconds: float, host: str = "h1", **env: str) -> subprocess.Popen:
    e = dict(os.environ, PYTHONPATH=str(PKG), SYNC_JOURNAL=str(tmp / "journal"), **env)
    return subprocess.Popen([sys.executable, "-c", RUNNER, str(tmp), name, str(seconds), host], env=e,
                            stdout=subprocess.PIPE, text=True, start_new_session=True)


def test_one_run_per_task_and_history(tmp_path) -> None:
    first = start(tmp_path, "u1_a", 1.5)
    wait_state(tmp_path, "u1_a", ("running",))
    second = start(tmp_path, "u1_a", 0.1)
    assert second.communicate(timeout=20)[0].strip() == "SKIPPED"
    assert first.communicate(timeout=20)[0].strip() == "succeeded"
    tf = runstate.TaskFiles(tmp_path, "u1_a")
    st = runstate.read_status(tf)
    assert (st.state, st.exit_code, st.copied, st.engine) == ("succeeded", 0, 15, "test-double")
    assert st.started and st.ended and st.ended >= st.started
    assert [h["state"] for h in runstate.read_history(tf)] == ["succeeded"]
    assert "message 14" in tf.log.read_text()
    assert not tf.progress.exists()  # live progress only while running


def test_progress_record_while_running(tmp_path) -> None:
    proc = start(tmp_path, "u1_p", 3)
    wait_state(tmp_path, "u1_p", ("running",))
    time.sleep(1.5)
    snap = runstate.view(tmp_path, "u1_p")
    assert snap.running and snap.progress is not None
    assert snap.progress["folder"] == "INBOX" and 0 < snap.progress["messages_done"] < 30
    assert snap.progress["messages_total"] == 30 and snap.progress["eta_seconds"] is not None
    proc.communicate(timeout=20)


def test_stop_waits_for_the_run_to_exit(tmp_path) -> None:
    proc = start(tmp_path, "u1_s", 30)
    wait_state(tmp_path, "u1_s", ("running",))
    assert stop_run(StateDir(tmp_path, tmp_path), "u1_s", grace=10) == "stopped"
    # the lock is free at once: a new run may start, the old one is gone
    assert not runstate.lock_held(tmp_path / "u1_s.lock")
    assert proc.wait(timeout=5) is not None
    st = runstate.read_status(runstate.TaskFiles(tmp_path, "u1_s"))
    assert (st.state, st.exit_code) == ("stopped", 143)
    assert stop_run(StateDir(tmp_path, tmp_path), "u1_s") == "not running"


def test_kill_after_grace_is_recorded_as_stopped(tmp_path) -> None:
    proc = start(tmp_path, "u1_k", 30)
    st = wait_state(tmp_path, "u1_k", ("running",))
    os.kill(st.pid, signal.SIGSTOP)  # a run that cannot react to SIGTERM
    try:
        assert stop_run(StateDir(tmp_path, tmp_path), "u1_k", grace=1) == "stopped"
    finally:
        proc.wait(timeout=10)
    st = runstate.read_status(runstate.TaskFiles(tmp_path, "u1_k"))
    assert st.state == "stopped" and "killed" in st.reason


def test_sigkill_shows_as_crashed_not_running(tmp_path) -> None:
    proc = start(tmp_path, "u1_c", 30)
    st = wait_state(tmp_path, "u1_c", ("running",))
    os.kill(st.pid, signal.SIGKILL)
    proc.wait(timeout=5)
    snap = runstate.view(tmp_path, "u1_c")
    assert snap.running is False
    assert (snap.status.state, snap.status.error_class) == ("crashed", "crashed")
    # and the next run starts normally
    assert start(tmp_path, "u1_c", 0.2).communicate(timeout=20)[0].strip() == "succeeded"


def test_node_cap_queues_and_all_finish(tmp_path) -> None:
    procs = [start(tmp_path, f"u1_q{i:02d}", 1.0, host=f"h{i}", SYNC_MAX_CONCURRENT="3") for i in range(10)]
    peak = 0
    deadline = time.monotonic() + 60
    while any(p.poll() is None for p in procs) and time.monotonic() < deadline:
        states = [runstate.read_status(runstate.TaskFiles(tmp_path, f"u1_q{i:02d}")).state for i in range(10)]
        peak = max(peak, states.count("running"))
        time.sleep(0.05)
    outcomes = [p.communicate(timeout=5)[0].strip() for p in procs]
    assert outcomes == ["succeeded"] * 10
    assert 2 <= peak <= 3


def test_one_run_per_local_mailbox(tmp_path) -> None:
    """Two tasks writing into one local mailbox never run at once (each would copy
    what the other is copying, and imapsync fails on a folder the other created)."""
    names = [f"u1_same{i}" for i in range(3)]
    procs = [start(tmp_path, n, 0.5, host=f"h{i}", SYNC_MAX_CONCURRENT="4") for i, n in enumerate(names)]
    peak = 0
    while any(p.poll() is None for p in procs):
        states = [runstate.read_status(runstate.TaskFiles(tmp_path, n)).state for n in names]
        peak = max(peak, states.count("running"))
        time.sleep(0.02)
    assert [p.communicate()[0].strip() for p in procs] == ["succeeded"] * 3
    assert peak == 1


def test_per_host_cap(tmp_path) -> None:
    procs = [start(tmp_path, f"u1_h{i}", 1.0, host="same.example", SYNC_MAX_PER_HOST="2") for i in range(5)]
    peak = 0
    while any(p.poll() is None for p in procs):
        states = [runstate.read_status(runstate.TaskFiles(tmp_path, f"u1_h{i}")).state for i in range(5)]
        peak = max(peak, states.count("running"))
        time.sleep(0.05)
    assert [p.communicate()[0].strip() for p in procs] == ["succeeded"] * 5
    assert peak == 2


def test_stopping_a_queued_run(tmp_path) -> None:
    blocker = start(tmp_path, "u1_b1", 5, SYNC_MAX_CONCURRENT="1")
    wait_state(tmp_path, "u1_b1", ("running",))
    queued = start(tmp_path, "u1_b2", 5, SYNC_MAX_CONCURRENT="1")
    wait_state(tmp_path, "u1_b2", ("queued",))
    assert stop_run(StateDir(tmp_path, tmp_path), "u1_b2", grace=5) == "stopped"
    assert queued.communicate(timeout=10)[0].strip() == "stopped"
    stop_run(StateDir(tmp_path, tmp_path), "u1_b1", grace=5)
    blocker.wait(timeout=10)


def test_watchdog_ends_a_stalled_run(tmp_path) -> None:
    # "silent" engines never report progress
    proc = start(tmp_path, "u1_silent", 30, SYNC_STALL_SECONDS="1", SYNC_STOP_GRACE="1")
    assert proc.communicate(timeout=30)[0].strip() == "stalled"
    tf = runstate.TaskFiles(tmp_path, "u1_silent")
    st = runstate.read_status(tf)
    assert st.state == "stalled" and st.error_class == "stalled"
    time.sleep(1.5)  # past the grace period: the run ended once, not twice
    assert [h["state"] for h in runstate.read_history(tf)] == ["stalled"]


@pytest.mark.parametrize("bad", ["../x", "a b", "u1", "_"])
def test_status_file_names_are_validated(tmp_path, bad) -> None:
    from ns8_imapsync.task import TaskError

    with pytest.raises(TaskError):
        StateDir(tmp_path, tmp_path).load_name(bad)


def test_a_run_short_of_mail_is_recorded_failed_with_its_tally(tmp_path) -> None:
    proc = start(tmp_path, "u1_short", 0)
    assert proc.communicate(timeout=30)[0].strip() == "failed"
    status = json.loads((tmp_path / "u1_short.status.json").read_text())
    assert (status["listed"], status["found"]) == (7, 5)
    assert status["error_class"] == "message_errors" and "INBOX: 2 of 5" in status["reason"]
    assert status["folders"][0] == {"folder": "INBOX", "listed": 5, "found": 3}  # short ones first
    assert len(status["folders"]) == 2
    last = runstate.read_history(runstate.TaskFiles(tmp_path, "u1_short"))[-1]
    assert last["state"] == "failed" and last["folders"] == [{"folder": "INBOX", "listed": 5, "found": 3}]


def test_history_keeps_the_last_20(tmp_path) -> None:
    tf = runstate.TaskFiles(tmp_path, "u1_hist")
    for i in range(25):
        runstate.append_history(tf, runstate.RunStatus(state="succeeded", copied=i))
    hist = runstate.read_history(tf)
    assert len(hist) == 20 and hist[0]["copied"] == 5 and hist[-1]["copied"] == 24
    assert json.loads(tf.history.read_text().splitlines()[0])["copied"] == 5


def test_watchdog_ends_a_hung_engine(tmp_path) -> None:
    proc = start(tmp_path, "u1_hung", 60, SYNC_STALL_SECONDS="1", SYNC_STOP_GRACE="1")
    assert proc.wait(timeout=30) == 1  # the process was ended, not left hanging
    tf = runstate.TaskFiles(tmp_path, "u1_hung")
    assert runstate.read_status(tf).state == "stalled"
    assert [h["state"] for h in runstate.read_history(tf)] == ["stalled"]
    assert not runstate.lock_held(tf.lock)


def test_heartbeats_without_progress_are_not_a_stall(tmp_path) -> None:
    """3 s of heartbeats and no progress event, with a 1 s stall limit: a slow
    transfer of one big message, not a stall."""
    proc = start(tmp_path, "u1_beat", 3, SYNC_STALL_SECONDS="1", SYNC_STOP_GRACE="1")
    assert proc.communicate(timeout=30)[0].strip() == "succeeded"
    tf = runstate.TaskFiles(tmp_path, "u1_beat")
    assert [h["state"] for h in runstate.read_history(tf)] == ["succeeded"]
    assert runstate.read_status(tf).copied == 30


def test_time_spent_queued_is_not_a_stall(tmp_path) -> None:
    """Queued 3 s behind another run with a 2 s stall limit, then 1 s to the first progress."""
    blocker = start(tmp_path, "u1_first", 3, SYNC_MAX_CONCURRENT="1")
    wait_state(tmp_path, "u1_first", ("running",))
    late = start(tmp_path, "u1_slowstart", 1, SYNC_MAX_CONCURRENT="1", SYNC_STALL_SECONDS="2")
    assert late.communicate(timeout=30)[0].strip() == "succeeded"
    assert blocker.communicate(timeout=30)[0].strip() == "succeeded"


def test_the_task_log_is_0600(tmp_path) -> None:
    old = tmp_path / "u1_wide.log"
    old.write_text("an older log, world-readable\n")
    old.chmod(0o644)
    for name in ("u1_wide", "u1_fresh"):
        proc = start(tmp_path, name, 0.2)
        assert proc.communicate(timeout=20)[0].strip() == "succeeded"
        log = runstate.TaskFiles(tmp_path, name).log
        assert log.stat().st_mode & 0o777 == 0o600, name
        assert "message 1" in log.read_text() and "older" not in log.read_text()


def test_an_engine_error_leaves_no_password_in_log_status_history_or_journal(tmp_path) -> None:
    secret, master = 'Remote "S3cret" \\pass', "Master-S3cret"
    (tmp_path / "u1_leak.pwd").write_text(secret + "\n")
    (tmp_path / "vmail.pwd").write_text(master + "\n")
    proc = start(tmp_path, "u1_leak", 1)
    assert proc.communicate(timeout=20)[0].strip() == "failed"
    tf = runstate.TaskFiles(tmp_path, "u1_leak")
    log = tf.log.read_text()
    assert "RuntimeError: login failed" in log and "MASKED" in log
    spellings = (secret, repr(secret)[1:-1], repr(secret.encode())[2:-1], "S3cret", master)
    for path in (tf.log, tf.status, tf.history, tmp_path / "journal"):
        text = path.read_text()
        assert not [s for s in spellings if s in text], f"{path.name}: {text}"
    st = runstate.read_status(tf)
    assert (st.state, st.error_class) == ("failed", "engine_error")


# ---------------------------------------------------------------- stop and start of one task

def race_start_and_stop(state: StateDir, name: str, delay: float) -> dict[str, str]:
    """One `syncctl start --detach` and one `syncctl stop` of the task, let go together."""
    from ns8_imapsync.cli import syncctl

    barrier, out = threading.Barrier(2), {}

    def starter() -> None:
        barrier.wait()
        out["start"] = syncctl._enqueue(name, "manual")

    def stopper() -> None:
        barrier.wait()
        time.sleep(delay)
        out["stop"] = stop_run(state, name, grace=5)

    threads = [threading.Thread(target=starter), threading.Thread(target=stopper)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    return out


def test_a_stop_never_loses_to_a_concurrent_start(tmp_path, monkeypatch) -> None:
    """Started together many times: a stop that says "stopped" leaves nothing
    queued (it took the start out), one that says "not running" came first (the
    start stays queued); never a stop that reports success while the start it
    raced then runs."""
    from ns8_imapsync.task import Task

    monkeypatch.setenv("IMAPSYNC_DIR", str(tmp_path))
    monkeypatch.setenv("CRON_DIR", str(tmp_path / "cron"))
    StateDir(tmp_path, tmp_path / "cron").save(Task(localuser="u1", task_id="race", remotehostname="imap.example.com", remoteport=143,
                                                    remoteusername="bob"), "pw")
    name, state = "u1_race", StateDir(tmp_path, tmp_path)
    tf = runstate.TaskFiles(tmp_path, name)
    stops, wrong = set(), []
    for i in range(150):
        out = race_start_and_stop(state, name, 0.0005 * (i % 10))  # spread over the start's critical section
        queued, record = runstate.is_queued(tmp_path, name), runstate.read_status(tf).state
        stops.add(out["stop"])
        if out["stop"] == "stopped" and (queued or record != "stopped"):
            wrong.append((i, out, queued, record))
        if out["stop"] == "not running" and queued != (out["start"] == "queued"):
            wrong.append((i, out, queued, record))
        runstate.dequeue(tmp_path, name)
        tf.status.unlink(missing_ok=True)
    assert wrong == []
    assert stops == {"stopped", "not running"}  # both orders happened


# ---------------------------------------------------------------- the start queue and its dispatcher

def enqueue(tmp: Path, name: str, host: str = "h1", at: float | None = None) -> None:
    mailbox = "shared" if "same" in name else name  # as RUNNER's plans
    entry = runstate.QueueEntry(name, at if at is not None else time.time(), "manual", host, mailbox)
    assert runstate.enqueue(tmp, entry)
    st = runstate.RunStatus(state="queued", trigger="manual")
    runstate.write_status(runstate.TaskFiles(tmp, name), st)


class Spawner:
    """Starts test-double runs for queue entries and watches how many live at once."""

    def __init__(self, tmp: Path, seconds: float, **env: str) -> None:
        self.tmp, self.seconds, self.env = tmp, seconds, env
        self.procs: dict[str, subprocess.Popen] = {}
        self.order: list[str] = []

    def __call__(self, entry: runstate.QueueEntry) -> subprocess.Popen:
        e = dict(os.environ, PYTHONPATH=str(PKG), **self.env)
        proc = subprocess.Popen([sys.executable, "-c", RUNNER, str(self.tmp), entry.name, str(self.seconds),
                                 entry.host, str(entry.queued_at)], env=e, stdout=subprocess.PIPE, text=True,
                                start_new_session=True)
        self.procs[entry.name] = proc
        self.order.append(entry.name)
        return proc

    def alive(self) -> int:
        return sum(p.poll() is None for p in list(self.procs.values()))  # the dispatcher thread adds meanwhile


def dispatch_in_thread(tmp: Path, spawner: Spawner):
    import threading

    from ns8_imapsync.sync.dispatch import Dispatcher

    d = Dispatcher(StateDir(tmp, tmp), spawn=spawner, poll=0.05)
    t = threading.Thread(target=d.run, daemon=True)
    t.start()
    return d, t


def test_queue_runs_at_most_the_cap_without_a_process_per_queued_task(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("SYNC_MAX_CONCURRENT", "3")
    names = [f"u1_n{i:03d}" for i in range(40)]
    base = time.time()
    for i, name in enumerate(names):
        enqueue(tmp_path, name, host=f"h{i % 7}", at=base + i)
    assert runstate.read_status(runstate.TaskFiles(tmp_path, names[-1])).state == "queued"  # not "crashed"
    spawner = Spawner(tmp_path, 0.3, SYNC_MAX_CONCURRENT="3")
    _, thread = dispatch_in_thread(tmp_path, spawner)
    peak_running = peak_alive = 0
    while thread.is_alive():
        states = [runstate.read_status(runstate.TaskFiles(tmp_path, n)).state for n in names]
        peak_running = max(peak_running, states.count("running"))
        peak_alive = max(peak_alive, spawner.alive())
        time.sleep(0.02)
    thread.join()
    outcomes = [spawner.procs[n].communicate(timeout=10)[0].strip() for n in names]
    assert outcomes == ["succeeded"] * 40
    assert 2 <= peak_running <= 3
    # never a process per queued task: the cap, plus runs that ended and are still exiting
    assert peak_alive <= 2 * 3
    assert spawner.order == names  # oldest first
    assert runstate.queued(tmp_path) == []


def test_a_full_host_does_not_hold_back_other_hosts(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("SYNC_MAX_CONCURRENT", "4")
    monkeypatch.setenv("SYNC_MAX_PER_HOST", "2")
    base = time.time()
    for i in range(6):
        enqueue(tmp_path, f"u1_a{i}", host="busy.example", at=base + i)
    enqueue(tmp_path, "u1_other", host="other.example", at=base + 10)
    spawner = Spawner(tmp_path, 1.0, SYNC_MAX_CONCURRENT="4", SYNC_MAX_PER_HOST="2")
    _, thread = dispatch_in_thread(tmp_path, spawner)
    st = wait_state(tmp_path, "u1_other", ("running", "succeeded"), timeout=5)
    assert st.state in ("running", "succeeded")
    # while the busy host's later tasks still wait in the queue
    assert sum(runstate.is_queued(tmp_path, f"u1_a{i}") for i in range(6)) >= 3
    thread.join(timeout=60)
    assert all(p.communicate(timeout=10)[0].strip() == "succeeded" for p in spawner.procs.values())
    assert len(spawner.procs) == 7


def test_the_dispatcher_starts_one_run_per_local_mailbox(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("SYNC_MAX_CONCURRENT", "4")
    base = time.time()
    shared = [f"u1_same{i}" for i in range(3)]
    for i, name in enumerate(shared):
        enqueue(tmp_path, name, host=f"h{i}", at=base + i)
    enqueue(tmp_path, "u2_own", host="h9", at=base + 5)  # another mailbox is not held back
    spawner = Spawner(tmp_path, 0.6, SYNC_MAX_CONCURRENT="4")
    _, thread = dispatch_in_thread(tmp_path, spawner)
    peak_shared = 0
    other_ran_with_shared = False
    while thread.is_alive():
        states = {n: runstate.read_status(runstate.TaskFiles(tmp_path, n)).state for n in [*shared, "u2_own"]}
        running_shared = [n for n in shared if states[n] == "running"]
        peak_shared = max(peak_shared, len(running_shared))
        other_ran_with_shared |= bool(running_shared) and states["u2_own"] == "running"
        time.sleep(0.02)
    thread.join()
    assert all(p.communicate(timeout=10)[0].strip() == "succeeded" for p in spawner.procs.values())
    assert peak_shared == 1 and other_ran_with_shared


def test_stopping_a_queued_start_records_it_and_it_never_runs(tmp_path, monkeypatch) -> None:
    enqueue(tmp_path, "u1_wait")
    assert stop_run(StateDir(tmp_path, tmp_path), "u1_wait", grace=1) == "stopped"
    tf = runstate.TaskFiles(tmp_path, "u1_wait")
    st = runstate.read_status(tf)
    assert (st.state, st.exit_code) == ("stopped", 143) and "queued" in st.reason
    assert [h["state"] for h in runstate.read_history(tf)] == ["stopped"]
    assert not runstate.is_queued(tmp_path, "u1_wait")
    spawner = Spawner(tmp_path, 0.1)
    _, thread = dispatch_in_thread(tmp_path, spawner)
    thread.join(timeout=10)
    assert spawner.procs == {}
    assert stop_run(StateDir(tmp_path, tmp_path), "u1_wait", grace=1) == "not running"


def test_a_run_whose_entry_was_removed_gives_up(tmp_path) -> None:
    """The dispatcher started it, then a stop took the entry out first: no run."""
    proc = subprocess.Popen([sys.executable, "-c", RUNNER, str(tmp_path), "u1_gone", "0.1", "h1", str(time.time())],
                            env=dict(os.environ, PYTHONPATH=str(PKG)), stdout=subprocess.PIPE, text=True)
    assert proc.communicate(timeout=20)[0].strip() == "SKIPPED"
    assert runstate.read_status(runstate.TaskFiles(tmp_path, "u1_gone")).state == "never"


def test_an_entry_nobody_can_run_is_dropped(tmp_path, monkeypatch) -> None:
    enqueue(tmp_path, "u1_broken")

    def broken(entry: runstate.QueueEntry) -> subprocess.Popen:
        return subprocess.Popen([sys.executable, "-c", "raise SystemExit(3)"])

    from ns8_imapsync.sync.dispatch import Dispatcher

    started = Dispatcher(StateDir(tmp_path, tmp_path), spawn=broken, poll=0.05).run()
    assert started == 1 and runstate.queued(tmp_path) == []


def test_queue_entries_are_whole_or_absent(tmp_path) -> None:
    """A second enqueue of a queued task is refused; no temporary file is left behind."""
    entry = runstate.QueueEntry("u1_once", 12.5, "schedule", "imap.example.org")
    assert runstate.enqueue(tmp_path, entry) is True
    assert runstate.enqueue(tmp_path, runstate.QueueEntry("u1_once", 99.0, "manual", "x")) is False
    assert runstate.queued(tmp_path) == [entry]
    assert sorted(p.name for p in runstate.queue_dir(tmp_path).iterdir()) == ["u1_once.json"]
    assert runstate.dequeue(tmp_path, "u1_once") and not runstate.dequeue(tmp_path, "u1_once")
