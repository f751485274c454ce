"""Issue 15, section 1: the container (service) restarted mid-run, on a local node of its own.

The module runs as on NS8 (api-cli, the imapsync service and its "container",
the run control, the chosen engine); the task reaches the node's remote
Dovecot through a throttled fault proxy so the run is still going when
``runagent -m imapsync1 systemctl --user restart imapsync`` hits it. The task
must then show ``crashed`` (not running for ever), a normal start must succeed,
and the comparator and the deletion watch judge as in ``test_faults.py``. The
node uses port base ``$RELIABILITY_NODE_PORT_BASE`` (default 28600).
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from faultproxy import FaultProxy
from localnode import corpus, dovecot, node
from localnode.config import NodeConfig
from localnode.imap_pair import Pair

from reliability import comparator as cmp
from reliability.conftest import DELETIONS, OLDER_DAYS, Mailboxes, Record
from reliability.engines import IMAPSYNC, NO_IMAPSYNC
from reliability.ownnode import NodeCli, configure

SECTION = "1-faults"
NODE_PORT_BASE = int(os.environ.get("RELIABILITY_NODE_PORT_BASE", "28600"))
TASK_ID = "rst001"
RATE = 400_000  # bytes/s through the proxy: the corpus takes ~8 s, time enough to restart mid-run


def task(cli: NodeCli) -> dict:
    items = cli.api_ok("list-tasks")["user_properties"]  # type: ignore[index]
    return next(t for t in items if t["task_id"] == TASK_ID)


def wait_finished(cli: NodeCli, timeout: float = 240) -> dict:
    """The task's run over (the service no longer runs it, and it has a last state)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        item = task(cli)
        if not item["service_running"] and item["last_sync_state"]:
            return item
        time.sleep(0.5)
    raise AssertionError(f"the task did not finish in {timeout} s: {task(cli)}")


@pytest.fixture(scope="module")
def node_cli() -> Iterator[NodeCli]:
    with node.throwaway(NODE_PORT_BASE, "reliability-node-") as cfg:
        yield NodeCli(cfg)


def local_count(boxes: Mailboxes) -> int:
    client = cmp.connect(boxes.local, boxes.local_password)
    try:
        return sum(int(client.folder_status(name, ["MESSAGES"])[b"MESSAGES"])
                   for flags, _d, name in client.list_folders()
                   if b"\\Noselect" not in flags and not name.startswith(("Shared", "Public")))
    finally:
        client.logout()


def wait_for_copies(boxes: Mailboxes, cli: NodeCli, at_least: int, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while local_count(boxes) < at_least:
        assert time.monotonic() < deadline, f"the first run never reached {at_least} messages: {task(cli)}"
        assert task(cli)["service_running"] or task(cli)["state"] in ("queued", "running"), task(cli)
        time.sleep(0.1)


def container_processes(cfg: NodeConfig) -> dict[int, str]:
    """The processes of the node's sync "container" (pid -> start time): the local node marks
    each with ``LOCALNODE_MOUNTS`` in its environment, and they inherit it."""
    marker, home = b"LOCALNODE_MOUNTS=", f"LOCALNODE_DIR={cfg.state_dir}".encode()
    found: dict[int, str] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            env = (entry / "environ").read_bytes().split(b"\0")
            started = (entry / "stat").read_text().rsplit(")", 1)[1].split()[19]
        except (OSError, IndexError):
            continue
        if home in env and any(v.startswith(marker) for v in env):
            found[int(entry.name)] = started
    return found


def end_old_container(before: dict[int, str]) -> list[int]:
    """What the kernel does when a container's PID 1 dies: every process left in its PID
    namespace gets SIGKILL. The local node's podman stand-in only signals the container's
    process group, so runs (process groups of their own) and their imapsync would
    outlive the "restart"; they are ended here. The pids killed."""
    killed = []
    for pid, started in before.items():
        try:
            if (Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19]) != started:
                continue
            os.kill(pid, 9)
            killed.append(pid)
        except (OSError, IndexError):
            continue
    return killed


def task_input(cfg: NodeConfig, proxy: FaultProxy, deletion: str) -> dict:
    options = DELETIONS[deletion]
    return {"localuser": "u3", "task_id": TASK_ID, "remotehostname": proxy.host, "remoteport": proxy.port,
            "security": "", "remoteusername": "dave@remote.test", "remotepassword": cfg.remote.users["dave@remote.test"],
            "delete_local": False, "delete_remote": bool(options.get("delete_remote")),
            "delete_remote_older": options.get("delete_remote_older", 0), "exclude": "", "cron": "",
            "foldersynchronization": "all", "sieve_enabled": False}


ENGINES = ["native", pytest.param("imapsync", marks=[pytest.mark.reliability_long,
                                                    pytest.mark.skipif(IMAPSYNC is None, reason=NO_IMAPSYNC)])]


@pytest.mark.parametrize("deletion", ["remote", pytest.param("off", marks=pytest.mark.reliability_long)])
@pytest.mark.parametrize("engine", ENGINES)
def test_service_restarted_mid_run(node_cli: NodeCli, engine: str, deletion: str, record: Record,
                                   tmp_path: Path) -> None:
    cfg = node_cli.cfg
    boxes = Mailboxes(Pair(cfg), "user03", tmp_path)
    dovecot.wipe(cfg.remote, "dave@remote.test")
    dovecot.wipe(cfg.mail1, "u3")
    corpus.fill(cfg.remote, "dave@remote.test", boxes.remote_password, seed=31, count=60, large=1,
                large_size=300_000)
    configure(node_cli, engine=engine)
    baseline = boxes.remote_snapshot()
    with FaultProxy(cfg.remote.host, cfg.remote.imap_port) as proxy:
        watch = boxes.watch(proxy, baseline)
        proxy.throttle(RATE)
        try:
            node_cli.api_ok("create-task", task_input(cfg, proxy, deletion))  # its first run starts at once
            wait_for_copies(boxes, node_cli, baseline.count * 2 // 5)
            before = container_processes(cfg)
            restart = node_cli.run("runagent", "-m", "imapsync1", "systemctl", "--user", "restart", "imapsync")
            assert restart.returncode == 0, restart.stderr
            end_old_container(before)
            time.sleep(0.5)
            shown = task(node_cli)
            record.detail = f"after the restart the task shows {shown['state']}"
            assert shown["state"] == "crashed" and not shown["service_running"], shown
            proxy.throttle(None)
            node_cli.api_ok("start-task", {"localuser": "u3", "task_id": TASK_ID})
            done = wait_finished(node_cli)
            assert done["last_sync_state"] == "succeeded", done
        finally:
            node_cli.api_ok("delete-task", {"localuser": "u3", "task_id": TASK_ID})
    judge(boxes, watch, baseline, deletion, record)


def judge(boxes: Mailboxes, watch, baseline: cmp.Snapshot, deletion: str, record: Record) -> None:
    """As FaultCase.check in test_faults.py: every deletion seen and safe, the local mailbox
    equal to the remote plus what was deleted from it, nothing deletable left."""
    remote_now, local = boxes.remote_snapshot(), boxes.local_snapshot()
    assert watch.violations == [], watch.violations
    assert baseline.count - remote_now.count <= watch.checked
    expected = cmp.Snapshot("expected", remote_now.delimiter, remote_now.prefix,
                            {p: list(m) for p, m in remote_now.folders.items()})
    for path, msgs in watch.deleted.items():
        expected.folders.setdefault(path, []).extend(msgs)
    result = cmp.compare(expected, local)
    record.counts.update(result.counts(), deleted_remote=watch.checked, messages=baseline.count)
    assert result.ok, result.summary()
    cutoff = time.time() - (OLDER_DAYS + 1) * 86400
    left = [m.key[0] for msgs in remote_now.folders.values() for m in msgs
            if deletion == "remote" or (deletion == "older" and m.internaldate < cutoff)]
    assert left == [], left[:10]
