"""Local-node stand-in for NS8's `agent.tasks`: submit sub-tasks and wait for them.

A real node has two paths, and modules see the difference:
- `redis://...` endpoints (api-cli, cluster credentials) LPUSH straight to the
  agent queue: no authorization, only a client idle check;
- the default `http://cluster-leader:9311` endpoint goes through the
  api-server, which checks the caller's role on the target agent (HTTP 403)
  and that the agent is alive (HTTP 404).
The local node has no api-server, so both paths talk to Redis here, and the
api-server's checks are done in-process with the same keys and rules.
"""

from __future__ import annotations

import concurrent.futures
import datetime
import json
import os
import random
import re
import signal
import sys
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

import redis

__all__ = [
    "DEFAULT_ENDPOINT",
    "ClientResponseError",
    "TaskError",
    "TaskRetryAbort",
    "TaskRetryError",
    "TaskStatusNotFound",
    "TaskSubmissionCheckFailed",
    "run",
    "run_nowait",
    "runp",
    "runp_brief",
    "runp_nowait",
]

DEFAULT_ENDPOINT = "http://cluster-leader:9311"
FINAL_STATUSES = ("completed", "aborted", "validation-failed")
API_IDLE_TIME = 8  # the api-server's own, fixed, idle check
POLL_INTERVAL = 5.0


class TaskError(Exception):
    pass


class TaskRetryError(TaskError):
    pass


class TaskRetryAbort(TaskRetryError):
    pass


class TaskRetryPubSubDisconnect(TaskRetryError):
    pass


class TaskStatusNotFound(TaskError):
    pass


class TaskSubmissionCheckFailed(TaskError):
    pass


class ClientResponseError(Exception):
    """Stands in for aiohttp.ClientResponseError: `status`, `message` (the HTTP reason phrase)."""

    def __init__(self, status: int, message: str, url: str = ""):
        super().__init__(status, message)
        self.status = status
        self.message = message
        self.url = url

    def __str__(self) -> str:
        return f"{self.status}, message={self.message!r}, url={self.url!r}"


# ---------------------------------------------------------------------------
# Public API
# ---------------------------------------------------------------------------


def run(agent_id: str, action: str, data: Any = {}, **kwargs: Any) -> Any:  # noqa: B006 - NS8 default, never mutated
    """Run one task and wait: `{"output", "error", "exit_code"}`; transport errors raise."""
    return runp([{"agent_id": agent_id, "action": action, "data": data}], **kwargs)[0]


def run_nowait(agent_id: str, action: str, data: Any = {}, **kwargs: Any) -> str:  # noqa: B006
    """Submit one task and return its path (`task/<agent>/<id>` or `<agent>/task/<id>`)."""
    return run(agent_id, action, data, nowait=True, **kwargs)


def runp(tasks: list[dict[str, Any]], **kwargs: Any) -> list[Any]:
    """Run tasks in parallel; with more than one task, exceptions are returned in place."""
    return _runp(tasks, **kwargs)


def runp_nowait(tasks: list[dict[str, Any]], **kwargs: Any) -> list[Any]:
    """Submit tasks in parallel and return their paths."""
    return _runp(tasks, nowait=True, **kwargs)


def runp_brief(tasks: list[dict[str, Any]], **kwargs: Any) -> int:
    """Run tasks in parallel and return how many failed; failures are printed to stderr."""
    results = _runp(tasks, **kwargs)
    errors = 0
    for idx, result in enumerate(results):
        if isinstance(result, Exception):
            print(f"Task {tasks[idx]['agent_id']}/{tasks[idx]['action']} run error: {result}", file=sys.stderr)
            errors += 1
        elif result["exit_code"] != 0:
            print(f"Task {tasks[idx]['agent_id']}/{tasks[idx]['action']} run failed: {result!r}", file=sys.stderr)
            errors += 1
    return errors


# ---------------------------------------------------------------------------
# Parallel runner and SIGTERM forwarding
# ---------------------------------------------------------------------------


class _CancelRegistry:
    """Running sub-tasks to cancel (and extra tasks to send) if our process gets SIGTERM."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.handlers: dict[str, Callable[[], None]] = {}

    def add(self, key: str, handler: Callable[[], None]) -> None:
        with self.lock:
            self.handlers[key] = handler

    def remove(self, key: str) -> None:
        with self.lock:
            self.handlers.pop(key, None)

    def fire(self) -> None:
        with self.lock:
            handlers, self.handlers = list(self.handlers.values()), {}
        for handler in handlers:  # each one sends a task; never block the signal handler on the result
            threading.Thread(target=_quietly, args=(handler,), daemon=True).start()


def _quietly(handler: Callable[[], None]) -> None:
    try:
        handler()
    except Exception as exc:  # a cancel request that fails must not hide the task result
        print(f"cancel request failed: {exc}", file=sys.stderr)


def _runp(tasks: list[dict[str, Any]], **kwargs: Any) -> list[Any]:
    parent_cbk = kwargs.pop("progress_callback", None)
    nowait = kwargs.pop("nowait", False)
    kwargs.setdefault("check_idle_time", 0 if nowait else 8)
    extra = kwargs.pop("extra", {})
    on_sigterm_tasks = kwargs.pop("on_sigterm_tasks", [])
    endpoint = kwargs.pop("endpoint", DEFAULT_ENDPOINT)

    progress = [0] * len(tasks)
    last_value = -1
    plock = threading.Lock()

    def make_cbk(idx: int) -> Callable[[Any], None] | None:
        if not parent_cbk:
            return None

        def cbk(p: Any) -> None:
            nonlocal last_value
            with plock:
                progress[idx] = p
                curr = int(sum(progress) / len(progress))
                if curr <= last_value:
                    return
                last_value = curr
            parent_cbk(curr)

        return cbk

    requests = []
    for taskrq in tasks:
        rq = dict(taskrq)
        rq.setdefault("data", {})
        rq.setdefault("parent", os.getenv("AGENT_TASK_ID", ""))
        if extra:
            rq["extra"] = extra
        requests.append(rq)

    cancels = _CancelRegistry()
    for idx, st in enumerate(on_sigterm_tasks):
        sigterm_task = dict(st)
        sigterm_task.setdefault("parent", os.getenv("AGENT_TASK_ID", ""))
        sigterm_task.setdefault("data", {})
        cancels.add(f"sigterm-{idx}", lambda t=sigterm_task: _submit(t, endpoint, check_idle_time=0))

    def one(idx: int, rq: dict[str, Any]) -> Any:
        if nowait:
            return _submit(rq, endpoint, check_idle_time=kwargs["check_idle_time"])
        return _run_task(rq, endpoint, make_cbk(idx), cancels, **kwargs)

    previous = _install_sigterm(cancels)
    try:
        with concurrent.futures.ThreadPoolExecutor(max_workers=max(1, len(requests))) as pool:
            futures = [pool.submit(one, idx, rq) for idx, rq in enumerate(requests)]
            pending = set(futures)
            while pending:  # short waits keep the main thread responsive to SIGTERM
                _, pending = concurrent.futures.wait(pending, timeout=0.5)
    finally:
        _restore_sigterm(previous)

    results: list[Any] = []
    for fut in futures:
        exc = fut.exception()
        if exc is not None and len(futures) == 1:
            raise exc
        results.append(exc if exc is not None else fut.result())
    return results


def _install_sigterm(cancels: _CancelRegistry) -> Any:
    """On SIGTERM, ask the agents to cancel our sub-tasks (as NS8 does) and keep waiting for them.

    NS8's agent installs it with ``loop.add_signal_handler``, which raises outside
    the main thread: so does this stand-in, or a module calling another module
    from a worker thread would pass here and fail on a real node."""
    if threading.current_thread() is not threading.main_thread():
        raise ValueError("set_wakeup_fd only works in main thread of the main interpreter")

    def handler(signum: int, frame: Any) -> None:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)  # a second SIGTERM terminates us
        cancels.fire()

    return signal.signal(signal.SIGTERM, handler)


def _restore_sigterm(previous: Any) -> None:
    if previous is not None:
        signal.signal(signal.SIGTERM, previous)


# ---------------------------------------------------------------------------
# Submission: both endpoints end in Redis
# ---------------------------------------------------------------------------


def _redis(username: str | None, password: str | None) -> redis.Redis:
    """A connection to REDIS_ADDRESS; without a password it stays the `default` user."""
    host, _, port = os.getenv("REDIS_ADDRESS", "127.0.0.1:6379").partition(":")
    if not password:
        username = password = None
    return redis.Redis(host=host, port=int(port or 6379), username=username or None, password=password,
                       decode_responses=True, socket_timeout=None)


def _cluster_redis() -> redis.Redis:
    """What a `redis://` endpoint logs in as: the caller's own credentials (cluster for api-cli)."""
    return _redis(os.getenv("REDIS_USER"), os.getenv("REDIS_PASSWORD"))


def _api_redis() -> redis.Redis:
    """The api-server's own privileged connection (LOCALNODE_API_REDIS_USER/PASSWORD, else default user)."""
    return _redis(os.getenv("LOCALNODE_API_REDIS_USER"), os.getenv("LOCALNODE_API_REDIS_PASSWORD"))


def _go_timestamp() -> str:
    """Go's time.Time JSON form (RFC 3339, nanoseconds trimmed, `Z`)."""
    now = datetime.datetime.now(datetime.UTC)
    frac = f"{now.microsecond:06d}".rstrip("0")
    return now.strftime("%Y-%m-%dT%H:%M:%S") + (f".{frac}" if frac else "") + "Z"


def _client_alive(rdb: redis.Redis, agent_id: str, max_idle: int) -> bool:
    """The agent keeps a connection named after its id; it must have been active recently."""
    for client in rdb.client_list(_type="normal"):
        if client.get("name") == agent_id and int(client.get("idle", 1 << 30)) <= max_idle:
            return True
    return False


def _go_match(pattern: str, name: str) -> bool:
    """Go path/filepath.Match: `*`/`?` never match `/`, `[...]` classes with `^`, `\\` escapes."""
    out: list[str] = []
    i, n = 0, len(pattern)

    def esc_char(j: int) -> tuple[str, int] | None:
        if j >= n or pattern[j] in "-]":
            return None
        if pattern[j] == "\\":
            j += 1
            if j >= n:
                return None
        return pattern[j], j + 1

    while i < n:
        c = pattern[i]
        if c == "*":
            out.append("[^/]*")
            i += 1
        elif c == "?":
            out.append("[^/]")
            i += 1
        elif c == "\\":
            if i + 1 >= n:
                return False
            out.append(re.escape(pattern[i + 1]))
            i += 2
        elif c == "[":
            i += 1
            negate = i < n and pattern[i] == "^"
            i += negate
            ranges: list[str] = []
            while True:
                if i < n and pattern[i] == "]" and ranges:
                    i += 1
                    break
                got = esc_char(i)
                if got is None:
                    return False
                lo, i = got
                hi = lo
                if i < n and pattern[i] == "-":
                    got = esc_char(i + 1)
                    if got is None:
                        return False
                    hi, i = got
                ranges.append(f"{re.escape(lo)}-{re.escape(hi)}")
            out.append("[" + ("^" if negate else "") + "".join(ranges) + "]")
        else:
            out.append(re.escape(c))
            i += 1
    try:
        return re.fullmatch("".join(out), name, re.S) is not None
    except re.error:
        return False


def _task_json(rq: dict[str, Any], task_id: str, queue: str, user: str) -> str:
    return json.dumps({
        "id": task_id,
        "action": rq["action"],
        "data": rq["data"],
        "extra": rq.get("extra", {}),
        "queue": queue,
        "user": user,
        "timestamp": _go_timestamp(),
        "parent": rq["parent"],
    })


def _prepare(rq: dict[str, Any], endpoint: str, check_idle_time: int) -> tuple[redis.Redis, str, str, str]:
    """Connect and run the submission checks of the chosen path.

    Returns (connection, queue, task JSON, task path as run_nowait reports it).
    """
    agent_id = rq["agent_id"]
    queue = f"{agent_id}/tasks"
    task_id = str(uuid.uuid4())
    if endpoint.startswith("redis://"):
        rdb = _cluster_redis()
        if check_idle_time > 0 and not _client_alive(rdb, agent_id, check_idle_time):
            raise TaskSubmissionCheckFailed(f'Client "{agent_id}" was not found')
        return rdb, queue, _task_json(rq, task_id, queue, ""), f"task/{agent_id}/{task_id}"

    user = os.environ["REDIS_USER"]  # the api-server login needs it, as on NS8
    url = f"{endpoint}/api/{agent_id}/tasks"
    rdb = _api_redis()
    roles = rdb.hget(f"roles/{user}", agent_id) or ""
    allowed = []
    for role in roles.split(","):
        if role.strip():
            allowed.extend(rdb.smembers(f"{agent_id}/roles/{role.strip()}"))
    if not any(_go_match(glob, rq["action"]) for glob in allowed):
        raise ClientResponseError(403, "Forbidden", url)
    if not _client_alive(rdb, agent_id, API_IDLE_TIME):
        raise ClientResponseError(404, "Not Found", url)  # body: "client idle check failed"
    return rdb, queue, _task_json(rq, task_id, queue, user), f"{agent_id}/task/{task_id}"


def _submit(rq: dict[str, Any], endpoint: str, check_idle_time: int = 0) -> str:
    """Queue a task without waiting for it."""
    rdb, queue, payload, path = _prepare(rq, endpoint, check_idle_time)
    with rdb:
        _retry(rdb.lpush, queue, payload)
    return path


def _retry(request: Callable[..., Any], *args: Any, attempts: int = 20) -> Any:
    """Retry on lost Redis connections like NS8's _retry_request, then give up with TaskRetryAbort."""
    delay = 1.0 + random.uniform(0.0, 1.0)
    last_error = ""
    for attempt in range(1, attempts + 1):
        try:
            value = request(*args)
        except (redis.ConnectionError, TaskRetryPubSubDisconnect) as exc:
            error = str(exc)
        else:
            if attempt > 1:
                print(f"{request.__name__} request recovered successfully at attempt {attempt}", file=sys.stderr)
            return value
        time.sleep(delay)
        delay *= 1.2
        if error != last_error:
            print(f"{request.__name__} request attempt failed ({error}). Retrying...", file=sys.stderr)
            last_error = error
    raise TaskRetryAbort(f"{request.__name__} request failed at attempt {attempts}")


def _read_status(rdb: redis.Redis, status_path: str) -> dict[str, Any]:
    output, error, exit_code = rdb.mget(f"{status_path}/output", f"{status_path}/error", f"{status_path}/exit_code")
    if output is None or error is None or exit_code is None:
        raise TaskStatusNotFound(f"Task status {status_path} not found")
    try:
        output = json.loads(output)
    except ValueError:
        pass
    return {"output": output, "error": error, "exit_code": int(exit_code)}


def _run_task(
    rq: dict[str, Any],
    endpoint: str,
    progress_callback: Callable[[Any], None] | None,
    cancels: _CancelRegistry,
    check_idle_time: int = 8,
    cancel_task_timeout: int = 0,
    **_ignored: Any,  # auth_token, tls_verify: meaningless without an api-server
) -> dict[str, Any]:
    """Subscribe to the task's progress channel, queue it, wait for a final status (5 s polling fallback)."""
    rdb, queue, payload, _path = _prepare(rq, endpoint, check_idle_time)
    task_id = json.loads(payload)["id"]
    agent_id = rq["agent_id"]
    status_path = f"task/{agent_id}/{task_id}"
    channel = f"progress/{agent_id}/task/{task_id}"
    pushed = False

    def wait() -> dict[str, Any]:
        nonlocal pushed
        pubsub = rdb.pubsub(ignore_subscribe_messages=True)
        try:
            pubsub.subscribe(channel)
            if not pushed:
                rdb.lpush(queue, payload)
                pushed = True
                cancels.add(task_id, cancel)
            next_poll = time.monotonic() + POLL_INTERVAL
            while True:
                msg = pubsub.get_message(timeout=max(0.0, min(1.0, next_poll - time.monotonic())))
                if msg is not None and msg.get("type") == "message":
                    try:
                        jdata = json.loads(msg["data"])
                        status, progress = jdata["status"], jdata["progress"]
                    except (ValueError, TypeError, KeyError):
                        continue  # unreadable message
                    if progress_callback:
                        progress_callback(progress)
                    if status in FINAL_STATUSES:
                        return _read_status_until_found(rdb, status_path)
                if time.monotonic() >= next_poll:
                    try:
                        return _read_status(rdb, status_path)
                    except TaskStatusNotFound:
                        next_poll = time.monotonic() + POLL_INTERVAL
        finally:
            pubsub.close()

    def cancel() -> None:
        print(f"Sending cancel-task request to {status_path}", file=sys.stderr)
        _submit({
            "agent_id": agent_id,
            "action": "cancel-task",
            "data": {"task": task_id, "timeout": cancel_task_timeout},
            "parent": rq["parent"],
            "extra": {
                "title": f"{agent_id}/cancel-task",
                "description": f"Terminate task {task_id}",
                "isNotificationHidden": True,
            },
        }, endpoint)

    try:
        with rdb:
            return _retry(wait)
    finally:
        cancels.remove(task_id)


def _read_status_until_found(rdb: redis.Redis, status_path: str) -> dict[str, Any]:
    """The final status is published in the same MULTI as the result keys; retry briefly anyway."""
    delay = 0.05
    for _ in range(40):
        try:
            return _read_status(rdb, status_path)
        except TaskStatusNotFound:
            time.sleep(delay)
            delay = min(delay * 2, 1.0)
    raise TaskRetryAbort(f"_aread_status request failed: task status {status_path} not found")
