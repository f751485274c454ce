"""Start and stop the whole local node; one state directory holds everything.

`up` is idempotent: Redis, both Dovecots and the agents' daemon are started if
they are not running, then the mail module `mail1` and the module under
development `imapsync1` are installed once (add-module) and mail1 configured.
`down` stops every process of the node, service containers included.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from localnode import adminapi, cluster, dovecot, redisd
from localnode.config import REPO_ROOT, NodeConfig
from localnode.runner import read_envfile

MAIL_HOSTNAME = "mail.domain.test"
USER_DOMAIN = "domain.test"


def _pid(path: Path) -> int | None:
    try:
        pid = int(path.read_text().strip())
        os.kill(pid, 0)
        return pid
    except (FileNotFoundError, ValueError, ProcessLookupError):
        return None


def agentd_running(cfg: NodeConfig) -> bool:
    return _pid(cfg.run_dir / "agentd.pid") is not None


def start_agentd(cfg: NodeConfig) -> None:
    if agentd_running(cfg):
        return
    cfg.log_dir.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO_ROOT / "tests")
    log = open(cfg.log_dir / "agentd.log", "ab")
    subprocess.Popen(
        [sys.executable, "-m", "localnode.agentd", str(cfg.state_dir)],
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    for _ in range(100):
        if agentd_running(cfg):
            return
        time.sleep(0.05)
    raise RuntimeError(f"agentd did not start; see {cfg.log_dir / 'agentd.log'}")


def stop_pidfile(path: Path, timeout: float = 10) -> None:
    pid = _pid(path)
    if pid is None:
        path.unlink(missing_ok=True)
        return
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and _pid(path) is not None:
        time.sleep(0.05)
    if _pid(path) is not None:
        os.kill(pid, signal.SIGKILL)
    path.unlink(missing_ok=True)


def ensure_mail_module(cfg: NodeConfig) -> str:
    """mail1, installed and configured, with its Dovecot wired in its environment."""
    for mid, info in cluster.installed(cfg).items():
        if info["image"] == "mail":
            return mid
    mid = cluster.add_module(cfg, "mail")
    state = cfg.module_state_dir(mid)
    m = cfg.mail1
    env = read_envfile(state / "environment")
    env.update({"LOCALNODE_DOVECOT_CONF": m.config, "LOCALNODE_IMAP_PORT": str(m.imap_port)})
    cluster.write_env(state / "environment", env)
    fd = os.open(state / "dovecot.env", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(f"DOVECOT_VMAIL_PASS={m.master_password}\n")
    res = cluster.run_task(cfg, f"module/{mid}", "configure-module",
                           {"hostname": MAIL_HOSTNAME, "user_domain": USER_DOMAIN})
    if res["exit_code"] != 0:
        raise RuntimeError(f"configure-module of {mid} failed: {res['error']}")
    return mid


def ensure_imapsync_module(cfg: NodeConfig) -> str:
    for mid, info in cluster.installed(cfg).items():
        if info["image"] == "imapsync":
            return mid
    return cluster.add_module(cfg, "imapsync")


def link_image_extras(cfg: NodeConfig) -> None:
    """Lend the sync image an imapsync when the machine has one on PATH.

    The production image ships imapsync, and an empty engine setting then picks
    it; the local node's image has what the machine that starts the node has, so
    the suite runs against a real imapsync whenever one is installed beside the
    project (and with the native engine otherwise)."""
    extras = cfg.image_extras_dir
    extras.mkdir(parents=True, exist_ok=True)
    link = extras / "imapsync"
    link.unlink(missing_ok=True)
    found = shutil.which("imapsync")
    if found:
        link.symlink_to(os.path.realpath(found))


def up(cfg: NodeConfig, with_imapsync: bool = True) -> None:
    cfg.state_dir.mkdir(parents=True, exist_ok=True)
    cfg.write_node_json()
    link_image_extras(cfg)
    cluster.install_agent_pth()
    redisd.start(cfg)
    cluster.seed_cluster_keys(cfg)
    dovecot.start(cfg)
    start_agentd(cfg)
    cluster.wait_agent(cfg, "cluster")
    ensure_mail_module(cfg)
    cluster.start_user_managers(cfg)  # linger: Unix-user modules' systemd --user, as at boot
    if with_imapsync:
        ensure_imapsync_module(cfg)
    adminapi.start(cfg)  # the cluster-admin stand-in hosting the module UI
    cfg.write_node_json()


def stop_services(cfg: NodeConfig) -> None:
    """Stop the module services (their containers) the way systemd would at shutdown."""
    for mid in cluster.installed(cfg):
        if mid in cfg.unix_users:
            continue  # a real systemd --user: stop_user_managers
        env = cluster.module_env(cfg, mid)
        udir = cluster.home_dir(cfg, mid) / ".config" / "systemd" / "user"
        if not udir.is_dir():
            continue
        for unit in sorted(p.name for p in udir.iterdir() if p.suffix in (".service",)):
            subprocess.run([str(cluster.LOCALNODE_SRC / "hostbin" / "systemctl"), "--user", "stop", unit],
                           env=env, cwd=env["AGENT_STATE_DIR"], stdout=subprocess.DEVNULL)
    # any container left behind (a unit deleted while running, a crash)
    cdir = cfg.state_dir / "containers"
    if cdir.is_dir():
        for rec_path in cdir.glob("*/*.json"):
            rec = json.loads(rec_path.read_text())
            try:
                os.killpg(rec["pid"], signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
            rec_path.unlink(missing_ok=True)


def down(cfg: NodeConfig) -> None:
    if redisd.running(cfg):
        stop_services(cfg)
    cluster.stop_user_managers(cfg)
    adminapi.stop(cfg)
    stop_pidfile(cfg.run_dir / "agentd.pid")
    dovecot.stop(cfg)
    redisd.stop(cfg)


def status(cfg: NodeConfig) -> dict[str, bool]:
    st = {"redis": redisd.running(cfg), "agentd": agentd_running(cfg), "adminapi": adminapi.running(cfg)}
    st.update(dovecot.status(cfg))
    return st


@contextmanager
def throwaway(port_base: int, prefix: str = "localnode-") -> Iterator[NodeConfig]:
    """A node of its own in a fresh directory: up on entry, down and gone on exit."""
    # not under pytest's 0700 tmp root: the Dovecot mail user must reach its files
    state = Path(tempfile.mkdtemp(prefix=prefix))
    state.chmod(0o755)
    cfg = NodeConfig(state_dir=state, port_base=port_base)
    try:
        up(cfg)
        yield cfg
    finally:
        down(cfg)
        shutil.rmtree(state, ignore_errors=True)

