"""Local-node stand-in for NS8's Python `agent` package.

Actions import `agent` exactly as on a real node; this module gives them the
same API (NS8 core `usr/local/agent/pypkg/agent`), backed by a real Redis
and the module's `AGENT_STATE_DIR`. It must run in the agent environment of
a node, so it only uses the standard library and `redis`.
"""

from __future__ import annotations

import contextlib
import csv
import fcntl
import os
import shlex
import socket
import stat
import subprocess
import sys
import tempfile
import traceback
import warnings
from collections.abc import Callable, Iterator
from typing import Any

import redis

# Journal priority prefixes (sd-daemon(3)); NS8 defines no SD_ERROR.
SD_EMERG = "<0>"
SD_ALERT = "<1>"
SD_CRIT = "<2>"
SD_ERR = "<3>"
SD_WARNING = "<4>"
SD_NOTICE = "<5>"
SD_INFO = "<6>"
SD_DEBUG = "<7>"

_UNSET: Any = object()


# ---------------------------------------------------------------------------
# Redis
# ---------------------------------------------------------------------------


def _split_address(address: str) -> tuple[str, str]:
    host, _, port = address.partition(":")
    return host, port or "6379"


def redis_connect(privileged: bool = False, use_replica: bool = False, **kwargs: Any) -> redis.Redis:
    """Connect to the leader Redis (REDIS_ADDRESS) or the local replica (REDIS_REPLICA_ADDRESS).

    Unprivileged connections log in as `default`/`nopass` (read-only on NS8);
    `privileged=True` uses REDIS_USER/REDIS_PASSWORD and fails if they are unset.
    """
    var = "REDIS_REPLICA_ADDRESS" if use_replica else "REDIS_ADDRESS"
    host, port = _split_address(os.getenv(var, "127.0.0.1:6379"))
    if privileged:
        username, password = os.environ["REDIS_USER"], os.environ["REDIS_PASSWORD"]
    else:
        username, password = "default", "nopass"
    kwargs.setdefault("host", host)
    kwargs.setdefault("port", port)
    kwargs.setdefault("db", 0)
    kwargs.setdefault("username", username)
    kwargs.setdefault("password", password)
    kwargs.setdefault("decode_responses", True)
    return redis.Redis(**kwargs)


# ---------------------------------------------------------------------------
# Environment files
# ---------------------------------------------------------------------------


def read_envfile(file_path: str) -> dict[str, str]:
    """Parse raw `KEY=VALUE` lines; blank lines and `#` comments are skipped, bad lines warned."""
    env: dict[str, str] = {}
    with open(file_path) as fo:
        for lineno, line in enumerate(fo, start=1):
            record = line.rstrip("\n")
            if record == "" or record[0] == "#":
                continue
            variable, sep, value = record.partition("=")
            if not sep:
                warnings.warn(f"read_envfile: Cannot parse line {lineno} in {file_path}", stacklevel=2)
                continue
            env[variable] = value
    return env


@contextlib.contextmanager
def _atomic_writer(path: str) -> Iterator[Any]:
    """Write to a temp file beside `path`, fsync, rename over it keeping its mode.

    A reader (systemd EnvironmentFile=, another step) never sees a partial file.
    """
    directory = os.path.dirname(path) or "."
    try:
        ref_mode: int | None = stat.S_IMODE(os.stat(path).st_mode)
    except FileNotFoundError:
        ref_mode = None
    fd, tmp_path = tempfile.mkstemp(prefix="." + os.path.basename(path) + ".tmp-", dir=directory)
    try:
        if ref_mode is not None:
            os.fchmod(fd, ref_mode)
        else:  # a new file gets the umask default, as open() would give
            umask = os.umask(0)
            os.umask(umask)
            os.fchmod(fd, 0o666 & ~umask)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            fd = -1
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp_path, path)
        tmp_path = ""
        dirfd = os.open(directory, os.O_DIRECTORY)
        try:
            os.fsync(dirfd)
        finally:
            os.close(dirfd)
    finally:
        if fd >= 0:
            os.close(fd)
        if tmp_path:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp_path)


def write_envfile(file_path: str, envmap: dict[str, Any]) -> None:
    """Write `envmap` as sorted `KEY=VALUE` lines, atomically."""
    entries = sorted(f"{key}={value}" for key, value in envmap.items())
    with _atomic_writer(file_path) as ofile:
        ofile.write("\n".join(entries) + "\n")


@contextlib.contextmanager
def _exclusive_file_lock(path: str) -> Iterator[None]:
    """flock on `.<name>.lock` beside `path`: concurrent steps/handlers must not lose updates."""
    lock_path = os.path.join(os.path.dirname(path) or ".", "." + os.path.basename(path) + ".lock")
    fd = os.open(lock_path, os.O_CREAT | os.O_RDWR, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


def _envfile_path() -> str:
    return os.environ["AGENT_STATE_DIR"] + "/environment"


def set_env(var_name: str, var_value: Any) -> None:
    """Set one variable in the module `environment` file (visible to the next steps)."""
    path = _envfile_path()
    with _exclusive_file_lock(path):
        envmap = read_envfile(path)
        envmap[var_name] = var_value
        write_envfile(path, envmap)


def mset_env(env_dict: dict[str, Any]) -> None:
    """Merge several variables into the `environment` file in one write."""
    if not env_dict:
        return
    path = _envfile_path()
    with _exclusive_file_lock(path):
        envmap = read_envfile(path)
        envmap.update(env_dict)
        write_envfile(path, envmap)


def unset_env(var_name: str) -> None:
    """Remove a variable from the `environment` file; a missing one is fine."""
    path = _envfile_path()
    with _exclusive_file_lock(path):
        envmap = read_envfile(path)
        if var_name in envmap:
            del envmap[var_name]
            write_envfile(path, envmap)


def munset_env(var_list: list[str]) -> None:
    """Remove several variables from the `environment` file in one write."""
    if not var_list:
        return
    path = _envfile_path()
    with _exclusive_file_lock(path):
        envmap = read_envfile(path)
        changed = False
        for name in var_list:
            if name in envmap:
                del envmap[name]
                changed = True
        if changed:
            write_envfile(path, envmap)


def dump_env() -> None:
    """Deprecated in NS8: the agent mirrors the environment to Redis by itself."""
    print(SD_DEBUG + "dump_env() is deprecated and implemented as a no-op", file=sys.stderr)


def slurp_file(file_name: str) -> str:
    """Whole file contents without surrounding whitespace."""
    with open(file_name) as f:
        return f.read().strip()


# ---------------------------------------------------------------------------
# Agent commands (AGENT_COMFD)
# ---------------------------------------------------------------------------


def _action(*args: Any) -> None:
    """Write one CSV command line to AGENT_COMFD (fd 2 when unset, e.g. under runagent)."""
    fd = int(os.getenv("AGENT_COMFD", "2"))
    with os.fdopen(fd, mode="w", encoding="utf-8", closefd=False) as fdobj:
        csv.writer(fdobj, delimiter=" ", quotechar='"', quoting=csv.QUOTE_MINIMAL).writerow(args)


def set_status(value: str) -> None:
    """Only `validation-failed` is understood by the agent."""
    _action("set-status", value)


def set_progress(value: int) -> None:
    """Progress 0..100 of the current step."""
    _action("set-progress", value)


def set_weight(step_name: str, weight: int) -> None:
    """Weight of a step of the running action in the overall progress."""
    _action("set-weight", step_name, str(weight))


def get_progress_callback(range_low: int, range_high: int) -> Callable[[int], None]:
    """A callback mapping 0..100 onto range_low..range_high of this step's progress."""
    assert_exp(range_low < range_high)
    delta = range_high - range_low

    def cbk(progress: int) -> None:
        if 0 <= progress <= 100:
            set_progress(range_low + int(delta * progress / 100))

    return cbk


# ---------------------------------------------------------------------------
# Processes and assertions
# ---------------------------------------------------------------------------


def run_helper(
    *args: str,
    log_command: bool = True,
    progress_callback: Callable[[int], None] | None = None,
    env: Any = _UNSET,
    pass_fds: Any = (),
    stdout: Any = _UNSET,
    **popen_kw: Any,
) -> subprocess.CompletedProcess:
    """Run a helper whose output must not pollute the action output.

    The command is logged at INFO on stderr, the child's stdout goes to stderr
    by default, and it gets a private AGENT_COMFD whose `set-progress` lines
    are forwarded to `progress_callback` (anything else is dropped).
    """
    if log_command:
        print(SD_INFO + shlex.join(args), file=sys.stderr)
    start_env = os.environ if env is _UNSET else env
    outstream = sys.stderr if stdout is _UNSET else stdout

    curr_progress = -1
    fdr, fdw = os.pipe()
    child_env = dict(start_env, AGENT_COMFD=str(fdw))
    try:
        proc = subprocess.Popen(args, stdout=outstream, pass_fds=(*pass_fds, fdw), env=child_env, **popen_kw)
    except BaseException:
        os.close(fdr)
        raise
    finally:
        os.close(fdw)
    with os.fdopen(fdr, mode="r", encoding="utf-8", errors="replace") as fdh:
        for row in csv.reader(fdh, delimiter=" ", quotechar='"', quoting=csv.QUOTE_MINIMAL):
            if len(row) < 2 or row[0] != "set-progress" or not progress_callback:
                continue
            try:
                value = int(row[1])
            except ValueError:
                continue
            if value > curr_progress:
                curr_progress = value
                progress_callback(curr_progress)
    proc.wait()
    if progress_callback and curr_progress < 100:
        progress_callback(100)
    return subprocess.CompletedProcess(args, proc.returncode)


def assert_exp(exp: Any, message: str = "Assertion failed") -> None:
    """Like `assert`, but always on: print message and stack to stderr, exit 2."""
    if exp:
        return
    if message:
        print(message, file=sys.stderr)
    traceback.print_stack(sys._getframe(1), file=sys.stderr)
    sys.exit(2)


# ---------------------------------------------------------------------------
# Discovery and identifiers
# ---------------------------------------------------------------------------


def resolve_agent_id(agent_selector: str, node_id: str | int | None = None) -> str | None:
    """Expand `node`, `self`, `<image>@node`, `<image>@cluster`, a node number or a module id."""
    agent_id = None
    if node_id is None:
        node_id = os.environ.get("NODE_ID")
    if agent_selector == "node":
        if node_id:
            agent_id = f"node/{node_id}"
    elif agent_selector == "self":
        agent_id = os.environ["AGENT_ID"]
    elif agent_selector.endswith("@node"):
        if node_id:
            image = agent_selector[: -len("@node")]
            default_instance = redis_connect(use_replica=True).get(f"node/{node_id}/default_instance/{image}")
            if default_instance:
                agent_id = f"module/{default_instance}"
    elif agent_selector.endswith("@cluster"):
        image = agent_selector[: -len("@cluster")]
        default_instance = redis_connect(use_replica=True).get(f"cluster/default_instance/{image}")
        if default_instance:
            agent_id = f"module/{default_instance}"
    elif agent_selector.isnumeric():
        agent_id = f"node/{agent_selector}"
    elif agent_selector == "cluster" or agent_selector.startswith(("module/", "node/")):
        agent_id = agent_selector
    else:
        agent_id = f"module/{agent_selector}"
    if agent_id is None:
        warnings.warn(f"Could not resolve {agent_selector} to an agent_id", stacklevel=2)
    return agent_id


def get_module_seq(module_id: str) -> int:
    """`traefik3` -> 3; -1 when the id has no trailing number."""
    mtype = module_id.strip("0123456789")
    try:
        return int(module_id.removeprefix(mtype))
    except (TypeError, ValueError):
        return -1


def get_image_name_from_url(image_url: str) -> str:
    """`ghcr.io/nethserver/mail:1.0` or `...@sha256:...` -> `mail`."""
    _, image_nametag = image_url.rsplit("/", 1)
    image_name, _ = image_nametag.replace("@", ":", 1).split(":", 1)
    return image_name


def list_service_providers(
    rdb: redis.Redis,
    service: str,
    transport: str = "*",
    filters: dict[str, Any] | None = None,
    sortby: str = "node_proximity",
) -> list[dict[str, Any]]:
    """Find `*/srv/<transport>/<service>` records, enriched with cluster facts.

    Filters are exact equality on the enriched fields; filtering on
    module_uuid keeps only the highest module_seq (clone/restore leave
    duplicates). `node_proximity` puts the local node first, then the leader.
    """
    filters = filters or {}
    results: list[dict[str, Any]] = []
    for rkey in rdb.scan_iter(f"*/srv/{transport}/{service}"):
        rvalue: dict[str, Any] = rdb.hgetall(rkey)
        if rkey.startswith("module/"):
            parts = rkey.split("/")
            module_id = parts[1]
            rvalue["module_seq"] = get_module_seq(module_id)
            rvalue["module_uuid"] = rdb.hget("cluster/module_uuid", module_id)
            rvalue["node"] = rdb.hget("cluster/module_node", module_id)
            if parts[2] != "srv":
                rvalue["qualifier"] = parts[2]
            rvalue["transport"] = parts[-2]
            rvalue["module_id"] = module_id
            rvalue["ui_name"] = rdb.get(f"module/{module_id}/ui_name")
        if all(rvalue.get(key) == value for key, value in filters.items()):
            results.append(rvalue)

    if "module_uuid" in filters and len(results) > 1:
        results.sort(key=lambda e: e["module_seq"])
        results = [results[-1]]

    if sortby == "module_seq_asc":
        results.sort(key=lambda e: e.get("module_seq", -1))
    elif sortby == "module_seq_desc":
        results.sort(key=lambda e: e.get("module_seq", -1), reverse=True)
    elif sortby == "node_proximity":
        local_node = os.environ.get("NODE_ID")
        leader_node = rdb.hget("cluster/environment", "NODE_ID")

        def node_priority(record: dict[str, Any]) -> tuple[int, int]:
            node = record.get("node")
            priority = 0 if node == local_node else 1 if node == leader_node else 2
            return priority, record.get("module_seq", -1)

        results.sort(key=node_priority)
    return results


def get_hostname() -> str:
    """The node FQDN (`hostname -f`)."""
    try:
        return subprocess.run(["hostname", "-f"], text=True, capture_output=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return socket.getfqdn() or "myserver.example.org"


from . import tasks as tasks  # noqa: E402  (NS8's agent imports agent.tasks too)
