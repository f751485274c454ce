"""`systemd --user` for a module's Unix user, as linger gives it on NS8.

On an NS8 node every rootless module is a Unix user whose `user@UID.service`
(a `systemd --user` manager) runs from boot, so its units (`imapsync.service`)
start, restart and stop as `systemctl --user` tells them. Here systemd is not
PID 1 and there is no logind; ../shared/spec/containers-here.md measured how
to start such a manager by hand, and this module does exactly that:

- the user's cgroup `user.slice/user-UID.slice/user@UID.service` is made in
  the `name=systemd` v1 tree and in the `unified` tree, owned by the user,
  and the manager's process is moved into both before it execs;
- `/run/systemd/system` exists only for the manager's start-up (while it
  exists, apt and systemctl believe systemd is PID 1), under a lock, and only
  if it did not exist before;
- a manager is stopped with SIGTERM (a user manager then runs exit.target,
  stopping its units), and then every process left with the user's uid --
  rootless podman's `catatonit -P` pause process outlives the manager -- is
  ended by pid, and the cgroups and /run/user/UID are removed, as a reboot
  would leave them.

Used by the local node for its Unix-user modules (config.NodeConfig.unix_users).
"""

from __future__ import annotations

import fcntl
import json
import os
import pwd
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from localnode.config import NodeConfig

SYSTEMD = "/lib/systemd/systemd"
CGROUP_TREES = (Path("/sys/fs/cgroup/systemd"), Path("/sys/fs/cgroup/unified"))
BOOTED_MARK = Path("/run/systemd/system")
START_LOCK = Path("/run/lock/localnode-usermanager.lock")
START_TIMEOUT = 30.0


@dataclass(frozen=True)
class Account:
    name: str
    uid: int
    gid: int
    home: str

    @property
    def runtime_dir(self) -> Path:
        return Path("/run/user") / str(self.uid)

    @property
    def socket(self) -> Path:
        """The manager's private socket: `systemctl --user` talks to it."""
        return self.runtime_dir / "systemd" / "private"


def account(name: str) -> Account:
    pw = pwd.getpwnam(name)
    return Account(pw.pw_name, pw.pw_uid, pw.pw_gid, pw.pw_dir)


def ensure_runtime_dir(acct: Account) -> None:
    """/run/user/UID, mode 0700, the user's (logind would make it)."""
    acct.runtime_dir.mkdir(parents=True, exist_ok=True)
    os.chown(acct.runtime_dir, acct.uid, acct.gid)
    acct.runtime_dir.chmod(0o700)


def cgroup_dirs(uid: int) -> list[Path]:
    """The user's manager cgroup in each mounted tree."""
    return [t / "user.slice" / f"user-{uid}.slice" / f"user@{uid}.service"
            for t in CGROUP_TREES if (t / "cgroup.procs").exists()]


def _make_cgroups(acct: Account) -> list[Path]:
    dirs = cgroup_dirs(acct.uid)
    for d in dirs:
        d.mkdir(parents=True, exist_ok=True)
        for p in [d, *d.iterdir()]:
            os.chown(p, acct.uid, acct.gid)
    return dirs


def _record(cfg: NodeConfig, name: str) -> Path:
    return cfg.run_dir / f"usermanager-{name}.json"


def _alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def manager_pid(cfg: NodeConfig, name: str) -> int | None:
    try:
        pid = int(json.loads(_record(cfg, name).read_text())["pid"])
    except (OSError, ValueError, KeyError):
        return None
    return pid if _alive(pid) else None


def manager_env(acct: Account, extra: dict[str, str]) -> dict[str, str]:
    env = {"HOME": acct.home, "USER": acct.name, "LOGNAME": acct.name, "SHELL": "/bin/sh", "LANG": "C.UTF-8",
           "XDG_RUNTIME_DIR": str(acct.runtime_dir),
           "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"}
    env.update(extra)
    return env


def _spawn(acct: Account, cgroups: list[Path], env: dict[str, str], log: Path) -> subprocess.Popen:
    """The manager: moved into its cgroups as root, then the user's identity, then exec."""

    def become_user() -> None:
        for d in cgroups:
            (d / "cgroup.procs").write_text(str(os.getpid()))
        os.setgroups([])
        os.setgid(acct.gid)
        os.setuid(acct.uid)

    with open(log, "ab") as out:
        return subprocess.Popen([SYSTEMD, "--user"], env=env, cwd=acct.home, stdin=subprocess.DEVNULL,
                                stdout=out, stderr=subprocess.STDOUT, preexec_fn=become_user,
                                start_new_session=True)


def start(cfg: NodeConfig, name: str, extra_env: dict[str, str]) -> int:
    """Start the user's manager unless it runs; returns its pid once its socket answers."""
    pid = manager_pid(cfg, name)
    if pid is not None:
        return pid
    acct = account(name)
    ensure_runtime_dir(acct)
    acct.socket.unlink(missing_ok=True)  # a previous manager's: it would look up at once
    cgroups = _make_cgroups(acct)
    cfg.log_dir.mkdir(parents=True, exist_ok=True)
    cfg.run_dir.mkdir(parents=True, exist_ok=True)
    START_LOCK.parent.mkdir(parents=True, exist_ok=True)
    with open(START_LOCK, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        created = not BOOTED_MARK.exists()
        BOOTED_MARK.mkdir(parents=True, exist_ok=True)
        try:
            proc = _spawn(acct, cgroups, manager_env(acct, extra_env), cfg.log_dir / f"systemd-user-{name}.log")
            _record(cfg, name).write_text(json.dumps({"pid": proc.pid, "uid": acct.uid}))
            _wait_socket(acct, proc)
        finally:
            if created:
                BOOTED_MARK.rmdir()
    return proc.pid


def _wait_socket(acct: Account, proc: subprocess.Popen) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"systemd --user for {acct.name} exited with {proc.returncode}")
        if _answers(acct.socket):
            return
        time.sleep(0.1)
    raise RuntimeError(f"systemd --user for {acct.name} did not start in {START_TIMEOUT}s")


def _answers(path: Path) -> bool:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        try:
            s.connect(str(path))
        except OSError:
            return False
    return True


def user_pids(uid: int) -> list[int]:
    """Every live process whose real uid is `uid` (zombies are not: PID 1 here may never reap them)."""
    pids = []
    for status in Path("/proc").glob("[0-9]*/status"):
        try:
            fields = dict(line.split(":", 1) for line in status.read_text().splitlines() if ":" in line)
            if int(fields["Uid"].split()[0]) == uid and not fields["State"].strip().startswith("Z"):
                pids.append(int(status.parent.name))
        except (OSError, ValueError, KeyError):
            continue
    return pids


def _end(pids: list[int], timeout: float) -> None:
    """SIGTERM, then SIGKILL what is still there after `timeout`."""
    for sig, wait in ((signal.SIGTERM, timeout), (signal.SIGKILL, 5.0)):
        for pid in pids:
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline and any(_alive(p) for p in pids):
            time.sleep(0.1)
        pids = [p for p in pids if _alive(p)]
        if not pids:
            return


def stop(cfg: NodeConfig, name: str, timeout: float = 90) -> None:
    """Stop the manager as a shutdown would (its units first), then every
    process of the user, then remove its cgroups and runtime directory."""
    try:
        acct = account(name)
    except KeyError:
        _record(cfg, name).unlink(missing_ok=True)
        return
    pid = manager_pid(cfg, name)
    if pid is not None:
        _end([pid], timeout)
    _end(user_pids(acct.uid), 10)
    remove_cgroups(acct.uid)
    # as at a reboot (or logind at the last logout): the runtime dir is gone
    shutil.rmtree(acct.runtime_dir, ignore_errors=True)
    _record(cfg, name).unlink(missing_ok=True)


def remove_cgroups(uid: int) -> None:
    """The user's slice in each tree, deepest first (a cgroup with processes stays)."""
    for tree in CGROUP_TREES:
        top = tree / "user.slice" / f"user-{uid}.slice"
        if not top.is_dir():
            continue
        for d in sorted((p for p in top.rglob("*") if p.is_dir()), key=lambda p: -len(p.parts)):
            try:
                d.rmdir()
            except OSError:
                pass
        try:
            top.rmdir()
        except OSError:
            pass


def run_as(name: str, argv: list[str], **kw: object) -> subprocess.CompletedProcess:
    """A command as the user, with its runtime dir (rootless podman, systemctl --user)."""
    acct = account(name)
    env = manager_env(acct, {})
    return subprocess.run(["runuser", "-u", name, "--", "env", f"XDG_RUNTIME_DIR={acct.runtime_dir}",
                           f"HOME={acct.home}", *argv], env=env, **kw)  # type: ignore[call-overload]
