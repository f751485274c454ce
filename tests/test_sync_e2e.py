"""The sync runtime end to end on the local node: api-cli, the service "container",
the native engine, real Dovecot on both sides."""

from __future__ import annotations

import json
import os
import signal
import threading
import time

import pytest
from localnode import corpus, dovecot
from localnode.config import NodeConfig
from localnode.procs import run_processes
from ns8_imapsync import runstate
from ns8_imapsync.layout import Layout
from ns8_imapsync.statedir import StateDir
from ns8_imapsync.task import Task
from taskdata import task_input, wait_idle


def local_count(localnode: NodeConfig, user: str) -> dict[str, int]:
    proc = dovecot.doveadm(localnode.mail1, "-f", "flow", "mailbox", "status", "-u", user, "messages", "*")
    counts = {}
    for line in proc.stdout.decode().splitlines():
        name, _, rest = line.rpartition(" messages=")
        counts[name.removeprefix("mailbox=")] = int(rest)
    return counts


@pytest.fixture
def filled(cli, localnode, configured):
    """dave's remote mailbox with a corpus, u3's local mailbox empty, no task."""
    remote = localnode.remote
    user = "dave@remote.test"
    for t in cli.api_ok("module/imapsync1/list-tasks")["user_properties"]:
        cli.api_ok("module/imapsync1/delete-task", {"localuser": t["localuser"], "task_id": t["task_id"]})
    dovecot.wipe(remote, user)
    dovecot.wipe(localnode.mail1, "u3")
    manifest = corpus.fill(remote, user, remote.users[user], seed=3, count=80, large=1, large_size=400_000)
    yield {"user": user, "manifest": manifest,
           "task": task_input(localnode, localuser="u3", task_id="sync01", remoteusername=user,
                              remotepassword=remote.users[user])}
    for t in cli.api_ok("module/imapsync1/list-tasks")["user_properties"]:
        cli.api_ok("module/imapsync1/delete-task", {"localuser": t["localuser"], "task_id": t["task_id"]})


def expected_counts(manifest: list[dict]) -> dict[str, int]:
    """Per folder, what must arrive: the source's messages, each once. Two identical
    messages in a source folder are two messages, and both arrive (imapsync would
    copy one)."""
    counts: dict[str, int] = {}
    for m in manifest:
        counts[m["folder"]] = counts.get(m["folder"], 0) + 1
    return counts


def test_create_task_runs_a_first_sync_and_a_rerun_copies_nothing(cli, localnode, filled) -> None:
    cli.api_ok("module/imapsync1/create-task", filled["task"])
    first = wait_idle(cli, "sync01")
    assert (first["last_sync_state"], first["last_sync_exit_code"]) == ("succeeded", 0), first
    assert first["has_log"] is True and first["last_sync_timestamp"] > 0
    # every remote message answered for, and found on the local server
    assert first["last_sync_listed"] == first["last_sync_found"] == len(filled["manifest"])
    assert first["last_sync_short_folders"] == []
    got = local_count(localnode, "u3")
    for folder, n in expected_counts(filled["manifest"]).items():
        assert got.get(folder) == n, (folder, got)
    cli.api_ok("module/imapsync1/start-task", {"localuser": "u3", "task_id": "sync01"})
    second = wait_idle(cli, "sync01")
    assert second["last_sync_state"] == "succeeded"
    assert local_count(localnode, "u3") == got
    log = cli.api_ok("module/imapsync1/get-log", {"localuser": "u3", "task_id": "sync01"})["log_content"]
    # either engine: imapsync when the image has it (as in production), else native
    assert log.startswith("run of u3_sync01 with the ") and filled["task"]["remotepassword"] not in log
    journal = (localnode.log_dir / "container-imapsync.log").read_text()
    assert "imapsync task u3_sync01: succeeded" in journal


def test_stop_task_and_crash_detection(cli, localnode, filled) -> None:
    state = localnode.module_state_dir("imapsync1") / "imapsync"
    task = dict(filled["task"], task_id="sync02")
    cli.api_ok("module/imapsync1/create-task", task)
    cli.api_ok("module/imapsync1/stop-task", {"localuser": "u3", "task_id": "sync02"})
    item = wait_idle(cli, "sync02")
    assert item["service_running"] is False and item["last_sync_state"] in ("stopped", "succeeded")
    # stopping a stopped task is harmless
    cli.api_ok("module/imapsync1/stop-task", {"localuser": "u3", "task_id": "sync02"})
    # kill -9 a run: it shows as crashed, not running, and the next run completes exactly
    dovecot.wipe(localnode.mail1, "u3")
    cli.api_ok("module/imapsync1/start-task", {"localuser": "u3", "task_id": "sync02"})
    deadline = time.monotonic() + 30
    pid = None
    while time.monotonic() < deadline and pid is None:
        status = json.loads((state / "u3_sync02.status.json").read_text())
        if status["state"] == "running":
            pid = status["pid"]
        time.sleep(0.05)
    assert pid, "the run never started"
    os.kill(pid, signal.SIGKILL)
    time.sleep(0.5)
    item = [t for t in cli.api_ok("module/imapsync1/list-tasks")["user_properties"] if t["task_id"] == "sync02"][0]
    assert item["service_running"] is False and item["state"] == "crashed"
    cli.api_ok("module/imapsync1/start-task", {"localuser": "u3", "task_id": "sync02"})
    assert wait_idle(cli, "sync02")["last_sync_state"] == "succeeded"
    got = local_count(localnode, "u3")
    for folder, n in expected_counts(filled["manifest"]).items():
        assert got.get(folder) == n, (folder, got)


def test_fifty_tasks_never_exceed_the_cap(cli, localnode, configured) -> None:
    """start-all-tasks on 50 tasks: at most the cap run at once, all finish."""
    imapsync_dir = localnode.module_state_dir("imapsync1") / "imapsync"
    remote = localnode.remote
    user = "bob@remote.test"
    dovecot.wipe(remote, user)
    corpus.fill(remote, user, remote.users[user], seed=5, count=150, large=0)
    names = [f"many{i:02d}" for i in range(50)]
    for i, task_id in enumerate(names):
        data = task_input(localnode, localuser=f"u{1 + i % 3}", task_id=task_id, remoteusername=user,
                          remotepassword=remote.users[user], foldersynchronization="inbox" if i % 2 else "all")
        # written as create-task would, without 50 first syncs racing the test
        StateDir(imapsync_dir, imapsync_dir.parent / "cron").save(Task.from_request(data), data["remotepassword"])
    env = localnode.module_state_dir("imapsync1") / "environment"
    saved = env.read_text()
    peak = peak_runs = 0
    sampling = threading.Event()

    def states() -> list[str]:
        out = []
        for i, task_id in enumerate(names):
            try:
                out.append(json.loads((imapsync_dir / f"u{1 + i % 3}_{task_id}.status.json").read_text())["state"])
            except (FileNotFoundError, json.JSONDecodeError):
                out.append("never")
        return out

    def reason(i: int, task_id: str) -> str:
        name = f"u{1 + i % 3}_{task_id}"
        log = (imapsync_dir / f"{name}.log").read_text(errors="replace").splitlines()
        status = json.loads((imapsync_dir / f"{name}.status.json").read_text())
        return f"{name}: {status['reason']} | " + " | ".join(line for line in log if "rror" in line)[:2000]

    def sample() -> None:
        nonlocal peak, peak_runs
        while not sampling.is_set():
            peak = max(peak, states().count("running"))
            peak_runs = max(peak_runs, len(run_processes()))
            time.sleep(0.02)

    sampler = threading.Thread(target=sample)
    try:
        env.write_text(saved + "SYNC_MAX_CONCURRENT=4\n")
        proc = cli.run("runagent", "-m", "imapsync1", "systemctl", "--user", "restart", "imapsync")
        assert proc.returncode == 0, proc.stderr
        sampler.start()
        out = cli.api_ok("module/imapsync1/start-all-tasks")
        assert len(out["done"]) == 50 and out["failed"] == []
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline and not all(s in ("succeeded", "failed") for s in states()):
            time.sleep(0.2)
        sampling.set()
        sampler.join()
        final = states()
        assert final.count("succeeded") == 50, [reason(i, t) for i, t in enumerate(names) if final[i] != "succeeded"]
        assert 2 <= peak <= 4, peak
        # queued tasks wait as files, not as processes: the cap, plus runs still exiting
        assert peak_runs <= 2 * 4, peak_runs
    finally:
        sampling.set()
        if sampler.is_alive():
            sampler.join()
        env.write_text(saved)
        cli.run("runagent", "-m", "imapsync1", "systemctl", "--user", "restart", "imapsync")
        for i, task_id in enumerate(names):
            cli.api("module/imapsync1/delete-task", {"localuser": f"u{1 + i % 3}", "task_id": task_id})
        for u in ("u1", "u2", "u3"):
            dovecot.wipe(localnode.mail1, u)


def test_a_queue_left_by_a_restart_is_resumed(cli, localnode, filled) -> None:
    """Starts queued when the container went down run once it is back."""
    cli.api_ok("module/imapsync1/create-task", filled["task"])
    assert wait_idle(cli, "sync01")["last_sync_state"] == "succeeded"
    imapsync_dir = localnode.module_state_dir("imapsync1") / "imapsync"
    assert cli.run("runagent", "-m", "imapsync1", "systemctl", "--user", "stop", "imapsync").returncode == 0
    tf = runstate.TaskFiles(imapsync_dir, "u3_sync01")
    runstate.write_status(tf, runstate.RunStatus(state="queued", trigger="manual", queued_at=time.time()))
    assert runstate.enqueue(imapsync_dir, runstate.QueueEntry("u3_sync01", time.time(), "manual",
                                                             localnode.remote.host))
    item = next(t for t in cli.api_ok("module/imapsync1/list-tasks")["user_properties"] if t["task_id"] == "sync01")
    assert item["state"] == "queued"  # waiting, not crashed
    assert cli.run("runagent", "-m", "imapsync1", "systemctl", "--user", "start", "imapsync").returncode == 0
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and len(runstate.read_history(tf)) < 2:
        time.sleep(0.5)
    runs = runstate.read_history(tf)
    assert [(r["state"], r["trigger"]) for r in runs][-2:] == [("succeeded", "create"), ("succeeded", "manual")]
    assert runstate.queued(imapsync_dir) == []


def test_delete_task_removes_every_file_the_layout_declares(cli, localnode, filled) -> None:
    """After runs with every option, each file of the task is one the layout
    declares (none is written behind its back), and delete-task leaves none."""
    imapsync_dir = localnode.module_state_dir("imapsync1") / "imapsync"
    cron_dir = imapsync_dir.parent / "cron"
    task = dict(filled["task"], task_id="files01", cron="5m", foldersynchronization="inbox", sieve_enabled=True,
                delete_remote=True, delete_remote_older=30)
    cli.api_ok("module/imapsync1/create-task", task)
    assert wait_idle(cli, "files01")["last_sync_state"] == "succeeded"
    cli.api_ok("module/imapsync1/start-task", {"localuser": "u3", "task_id": "files01"})
    assert wait_idle(cli, "files01")["last_sync_state"] == "succeeded"
    name = "u3_files01"
    found = {p for p in imapsync_dir.rglob(f"{name}*")} | set(cron_dir.glob(f"{name}*"))
    declared = set(Layout(imapsync_dir, cron_dir).owned(name))
    assert found <= declared, sorted(str(p) for p in found - declared)
    files = Layout(imapsync_dir, cron_dir).task(name)
    for path in (files.env, files.password, files.log, files.lock, files.status, files.history,
                 Layout(imapsync_dir, cron_dir).cron(name)):
        assert path in found, path
    cli.api_ok("module/imapsync1/delete-task", {"localuser": "u3", "task_id": "files01"})
    assert not list(imapsync_dir.rglob(f"{name}*")) and not list(cron_dir.glob(f"{name}*"))
