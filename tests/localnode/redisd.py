"""The node's real redis-server on loopback, with NS8-like users.

As on an NS8 leader, the `default` user is read-only without a password; the
`cluster` user (what `api-cli` and the agents' daemon use) may do anything;
each module gets its own user at add-module time.
"""

from __future__ import annotations

import os
import secrets
import socket
import subprocess
import time
from pathlib import Path

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from localnode.config import NodeConfig

DEFAULT_ACL = "user default on nopass ~* &* -@all +@read +@connection +@pubsub +info +client"


def _cluster_password(cfg: NodeConfig) -> str:
    p = cfg.redis_dir / "cluster.pw"
    if not p.exists():
        cfg.redis_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(p, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(secrets.token_hex(16))
    return p.read_text().strip()


def cluster_credentials(cfg: NodeConfig) -> tuple[str, str]:
    return "cluster", _cluster_password(cfg)


def connect(
    cfg: NodeConfig, user: str | None = "cluster", password: str | None = None, client_name: str | None = None,
    timeout: float | None = None,
) -> redis.Redis:
    """A client. No socket timeout by default, since blocking pops wait longer
    than redis-py's default; a named client keeps its name on reconnects."""
    if user == "cluster" and password is None:
        password = _cluster_password(cfg)
    kw: dict = {}
    if user and user != "default":
        kw = {"username": user, "password": password}
    if timeout is not None:  # a probe: one attempt, no retries with backoff
        kw["retry"] = Retry(NoBackoff(), 0)
    return redis.Redis(host="127.0.0.1", port=cfg.redis_port, decode_responses=True, socket_timeout=timeout,
                       socket_connect_timeout=5, client_name=client_name, **kw)


def _pidfile(cfg: NodeConfig) -> Path:
    return cfg.run_dir / "redis.pid"


def running(cfg: NodeConfig) -> bool:
    try:  # something else on the port may never answer: do not wait for it
        return connect(cfg, timeout=2).ping()
    except redis.RedisError:
        return False


def _port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def start(cfg: NodeConfig) -> None:
    if running(cfg):
        return
    if not _port_free(cfg.redis_port):
        raise RuntimeError(f"cannot start redis-server: 127.0.0.1:{cfg.redis_port} is already in use "
                           "(another node with the same port base?)")
    cfg.redis_dir.mkdir(parents=True, exist_ok=True)
    cfg.run_dir.mkdir(parents=True, exist_ok=True)
    cfg.log_dir.mkdir(parents=True, exist_ok=True)
    acl = cfg.redis_dir / "users.acl"
    pw = _cluster_password(cfg)
    lines = [DEFAULT_ACL, f"user cluster on >{pw} ~* &* +@all"]
    if acl.exists():  # keep module users saved by ACL SAVE
        lines += [ln for ln in acl.read_text().splitlines() if ln.startswith("user module/")]
    acl.write_text("\n".join(lines) + "\n")
    acl.chmod(0o600)
    conf = cfg.redis_dir / "redis.conf"
    conf.write_text(
        "\n".join(
            [
                "bind 127.0.0.1",
                f"port {cfg.redis_port}",
                "daemonize yes",
                f"pidfile {_pidfile(cfg)}",
                f"logfile {cfg.log_dir / 'redis.log'}",
                f"dir {cfg.redis_dir}",
                "appendonly yes",
                'save ""',
                f"aclfile {acl}",
                "protected-mode no",
                "",
            ]
        )
    )
    subprocess.run(["redis-server", str(conf)], check=True, stdout=subprocess.DEVNULL)
    for _ in range(100):
        if running(cfg):
            return
        time.sleep(0.05)
    raise RuntimeError(f"redis-server did not start on port {cfg.redis_port}; see {cfg.log_dir / 'redis.log'}")


def stop(cfg: NodeConfig) -> None:
    pidf = _pidfile(cfg)
    pid = None
    if pidf.exists():
        try:
            pid = int(pidf.read_text().strip())
        except ValueError:
            pid = None
    if running(cfg):
        try:
            connect(cfg).shutdown(nosave=False)
        except redis.RedisError:
            pass
    if pid:
        for _ in range(100):
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                break
            time.sleep(0.05)
        else:
            try:
                os.kill(pid, 9)
            except ProcessLookupError:
                pass
    pidf.unlink(missing_ok=True)
