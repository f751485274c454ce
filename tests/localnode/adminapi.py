"""The cluster-admin stand-in: the page that hosts a module's UI, and the
api-server routes module UIs use, served on 127.0.0.1:<port base + 80>.

NS8's cluster-admin loads a module UI in an iframe (`apps/<module_id>/`) and
gives it `window.parent.core`; the UI sends its tasks to the api-server and
learns their outcome from the websocket (spec section 6, UI). Here:

- `/cluster-admin/` is `clusteradmin/index.html`, whose `core.js` provides
  `core` (api URL, login, a `$root` event bus fed by task progress, `$t`,
  `$route`/`$router` over the page's hash);
- `/cluster-admin/apps/<id>/` serves `ui/dist` for each imapsync instance,
  `/cluster-admin/css/core.css` Carbon's stylesheet (as cluster-admin's own
  core.css does; without the font CDN: this node never leaves loopback);
- `/cluster-admin/api/...`: `POST login`, `POST <agent>/tasks` (the role
  check and the agent's idle check of the api-server, then LPUSH to the
  agent's queue, where the local node's agents run the real actions),
  `GET <agent>/task/<id>/status|context`, and `GET /cluster-admin/ws`, which
  relays the agents' `progress/*` messages to authorized clients.

Task inputs hold passwords: request bodies are never logged, the stored
context is the agent's masked one, and the POST answer masks the task's
secrets the same way.
"""

from __future__ import annotations

import base64
import fnmatch
import hashlib
import hmac
import json
import mimetypes
import os
import re
import secrets
import signal
import subprocess
import sys
import threading
import time
import uuid
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import redis

from localnode import cluster, redisd
from localnode.agentd import mask
from localnode.config import LOCALNODE_SRC, REPO_ROOT, NodeConfig, load
from localnode.websocket import ConnectionClosed, WebSocket, accept_key

PORT_OFFSET = 80
PREFIX = "/cluster-admin"
# NS8's first-login credentials; this node only listens on loopback
ADMIN_USER = "admin"
ADMIN_PASSWORD = "Nethesis,1234"
TOKEN_TTL = 8 * 3600
SHELL_DIR = LOCALNODE_SRC / "clusteradmin"
UI_DIST = REPO_ROOT / "ui" / "dist"
CARBON_CSS = REPO_ROOT / "ui" / "node_modules" / "carbon-components" / "css" / "carbon-components.min.css"
AGENT_PATH_RE = re.compile(r"^(cluster|node/\d+|module/[a-z][a-z0-9]*)$")
TASK_PATH_RE = re.compile(r"^/api/(cluster|node/\d+|module/[a-z][a-z0-9]*)/task/([0-9a-f-]{36})/(status|context)$")
TASKS_PATH_RE = re.compile(r"^/api/(cluster|node/\d+|module/[a-z][a-z0-9]*)/tasks$")
APP_PATH_RE = re.compile(r"^/apps/([a-z][a-z0-9]*)/(.*)$")


def port(cfg: NodeConfig) -> int:
    return cfg.port_base + PORT_OFFSET


def url(cfg: NodeConfig) -> str:
    """Where an administrator opens the module's page."""
    return f"http://127.0.0.1:{port(cfg)}{PREFIX}/#/apps/imapsync1"


class Tokens:
    """HS256 JWTs as the api-server issues them (`id` = the user), signed
    with a key that lives as long as the process."""

    def __init__(self) -> None:
        self.key = secrets.token_bytes(32)

    @staticmethod
    def _b64(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

    def _sign(self, signing_input: str) -> str:
        return self._b64(hmac.new(self.key, signing_input.encode(), hashlib.sha256).digest())

    def issue(self, user: str) -> tuple[str, int]:
        exp = int(time.time()) + TOKEN_TTL
        head = self._b64(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
        body = self._b64(json.dumps({"id": user, "role": "", "actions": [], "exp": exp}).encode())
        return f"{head}.{body}.{self._sign(head + '.' + body)}", exp

    def verify(self, token: str) -> str | None:
        """The user of a valid, unexpired token; None otherwise."""
        parts = token.split(".")
        if len(parts) != 3 or not hmac.compare_digest(self._sign(parts[0] + "." + parts[1]), parts[2]):
            return None
        try:
            claims = json.loads(base64.urlsafe_b64decode(parts[1] + "=" * (-len(parts[1]) % 4)))
        except (ValueError, json.JSONDecodeError):
            return None
        if not isinstance(claims, dict) or claims.get("exp", 0) < time.time():
            return None
        return str(claims.get("id", "")) or None


class Api:
    """The api-server's semantics, apart from HTTP: each method answers
    (HTTP status, JSON body)."""

    def __init__(self, cfg: NodeConfig):
        self.cfg = cfg
        self.tokens = Tokens()
        self.rdb = redisd.connect(cfg)
        # NS8's core gives the cluster's and each node's `owner` role every action
        self.rdb.sadd("cluster/roles/owner", "*")
        self.rdb.sadd(f"node/{cfg.node_id}/roles/owner", "*")

    def login(self, body: object) -> tuple[int, dict]:
        user = body.get("username") if isinstance(body, dict) else None
        password = body.get("password") if isinstance(body, dict) else None
        if not (isinstance(user, str) and isinstance(password, str)
                and hmac.compare_digest(user.encode(), ADMIN_USER.encode())
                and hmac.compare_digest(password.encode(), ADMIN_PASSWORD.encode())):
            return 401, {"code": 401, "message": "incorrect Username or Password", "data": None}
        token, exp = self.tokens.issue(user)
        expire = datetime.fromtimestamp(exp, UTC).isoformat()
        return 200, {"code": 200, "expire": expire, "token": token}

    def allowed(self, user: str, agent: str, action: str) -> bool:
        """HGET roles/<user> <agent>, then any action glob of that role matches."""
        role = self.rdb.hget(f"roles/{user}", agent)
        if not role:
            return False
        return any(fnmatch.fnmatchcase(action, glob) for glob in self.rdb.smembers(f"{agent}/roles/{role}"))

    def agent_connected(self, agent: str) -> bool:
        """The api-server's idle check: the agent's named Redis connection is there."""
        return any(c.get("name") == agent and int(c.get("idle", 0)) <= 8 for c in self.rdb.client_list())

    def submit(self, user: str, agent: str, body: object) -> tuple[int, dict]:
        if not isinstance(body, dict) or not isinstance(body.get("action"), str) or not body["action"]:
            return 400, {"code": 400, "message": "request fields malformed", "data": None}
        if not self.allowed(user, agent, body["action"]):
            return 403, {"code": 403, "message": "forbidden", "data": None}
        if not self.agent_connected(agent):
            return 404, {"code": 404, "message": "client idle check failed", "data": None}
        task = {"id": str(uuid.uuid4()), "action": body["action"], "data": body.get("data"),
                "extra": body.get("extra") or {}, "queue": f"{agent}/tasks", "user": user,
                "timestamp": datetime.now(UTC).isoformat(), "parent": str(body.get("parent") or "")}
        # the context is there from submission on (the agent rewrites it, masked, when it takes the task)
        self.rdb.set(f"task/{agent}/{task['id']}/context", json.dumps(mask(task)), ex=60)
        self.rdb.lpush(f"{agent}/tasks", json.dumps(task))
        return 201, {"code": 201, "message": "task queued", "data": mask(task)}

    def task_status(self, agent: str, tid: str) -> tuple[int, dict]:
        prefix = f"task/{agent}/{tid}"
        exit_code = self.rdb.get(f"{prefix}/exit_code")
        if exit_code is None and not self.rdb.exists(f"{prefix}/context"):
            return 404, {"code": 404, "message": "task not found", "data": None}
        if exit_code is None:  # queued or running: nothing to tell yet
            return 200, {"code": 200, "message": "success",
                         "data": {"output": "", "error": "", "exit_code": None, "file": f"{prefix}/status"}}
        output = self.rdb.get(f"{prefix}/output") or ""
        try:
            decoded: object = json.loads(output)
        except json.JSONDecodeError:
            decoded = output
        return 200, {"code": 200, "message": "success",
                     "data": {"output": decoded, "error": self.rdb.get(f"{prefix}/error") or "",
                              "exit_code": int(exit_code), "file": f"{prefix}/status"}}

    def task_context(self, agent: str, tid: str) -> tuple[int, dict]:
        raw = self.rdb.get(f"task/{agent}/{tid}/context")
        if raw is None:
            return 404, {"code": 404, "message": "task context not found", "data": None}
        return 200, {"code": 200, "message": "success",
                     "data": {"context": json.loads(raw), "file": f"task/{agent}/{tid}/context"}}


def ui_module(cfg: NodeConfig, module_id: str) -> bool:
    """Only installed imapsync instances have a UI here (ui/dist)."""
    return cluster.installed(cfg).get(module_id, {}).get("image") == "imapsync"


def core_css() -> bytes:
    """Carbon's stylesheet, which cluster-admin's core.css provides to module UIs,
    without its @font-face rules: they load IBM Plex from a CDN."""
    try:
        css = CARBON_CSS.read_text()
    except FileNotFoundError:
        return b"/* carbon-components is not installed: run scripts/install-ui-deps.sh */\n"
    return re.sub(r"@font-face\{[^}]*\}", "", css).encode()


def static_file(root: Path, rel: str) -> Path | None:
    """`rel` under `root`, never outside it; a directory means its index.html."""
    base = root.resolve()
    target = (base / (rel or "index.html")).resolve()
    if target != base and base not in target.parents:
        return None
    if target.is_dir():
        target = target / "index.html"
    return target if target.is_file() else None


def subscribe_progress(cfg: NodeConfig) -> redis.client.PubSub:
    """A subscription to every agent's `progress/*`, confirmed by Redis (so a
    task submitted after this returns cannot publish unseen)."""
    ps = redisd.connect(cfg).pubsub()
    ps.psubscribe("progress/*")
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        msg = ps.get_message(timeout=0.5)
        if msg is not None and msg["type"] == "psubscribe":
            return ps
    ps.close()
    raise redis.RedisError("no confirmation of PSUBSCRIBE progress/*")


def relay_progress(ps: redis.client.PubSub, ws: WebSocket) -> None:
    """The api-server's websocket feed: every agent's `progress/*` message,
    as `{type: "task", name: <channel>, timestamp, payload}`."""
    try:
        while not ws.closed.is_set():
            msg = ps.get_message(timeout=1.0)
            if msg is None or msg["type"] != "pmessage":
                continue
            try:
                payload = json.loads(msg["data"])
            except (TypeError, json.JSONDecodeError):
                continue
            ws.send_text(json.dumps({"type": "task", "name": str(msg["channel"]),
                                     "timestamp": datetime.now(UTC).isoformat(), "payload": payload}))
    except (ConnectionClosed, redis.RedisError):
        pass
    finally:
        ws.closed.set()
        ps.close()


class Handler(BaseHTTPRequestHandler):
    """Routes of cluster-admin and of its api-server, under /cluster-admin."""

    protocol_version = "HTTP/1.1"
    server_version = "localnode-cluster-admin"
    api: Api
    log_path: Path
    MAX_BODY = 40 * 1024 * 1024  # a 32 MiB CSV (the importer's limit) as JSON

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 (the base class's name)
        """One line per request: method, path and status, never a body (task inputs hold passwords)."""
        with open(self.log_path, "a", encoding="utf-8") as f:
            f.write(f"{datetime.now(UTC).isoformat()} {format % args}\n")

    # ---- answers -------------------------------------------------------------
    def _send(self, status: int, body: bytes, ctype: str, headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _json(self, status: int, obj: object) -> None:
        self._send(status, json.dumps(obj).encode(), "application/json")

    def _file(self, path: Path | None) -> None:
        if path is None:
            self._json(404, {"code": 404, "message": "not found", "data": None})
            return
        ctype = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
        if path.suffix in (".js", ".mjs"):
            ctype = "application/javascript"
        self._send(200, path.read_bytes(), ctype)

    def _user(self) -> str | None:
        auth = self.headers.get("Authorization", "")
        return self.api.tokens.verify(auth[7:]) if auth.startswith("Bearer ") else None

    def _body(self) -> object:
        length = int(self.headers.get("Content-Length") or 0)
        if length > self.MAX_BODY:
            return None
        try:
            return json.loads(self.rfile.read(length) or b"null")
        except (json.JSONDecodeError, UnicodeDecodeError):
            return None

    # ---- routes ----------------------------------------------------------------
    def _route(self) -> str | None:
        """The path under /cluster-admin, or None after redirecting there."""
        path = self.path.split("?", 1)[0]
        if path in ("/", PREFIX):
            self._send(302, b"", "text/plain", {"Location": PREFIX + "/"})
            return None
        return path[len(PREFIX):] if path.startswith(PREFIX + "/") else ""

    def do_GET(self) -> None:
        sub = self._route()
        if sub is None:
            return
        if sub == "/ws":
            self._websocket()
        elif sub.startswith("/api/"):
            self._api_get(sub)
        elif sub == "/css/core.css":
            self._send(200, core_css(), "text/css")
        elif (m := APP_PATH_RE.match(sub)) and ui_module(self.api.cfg, m.group(1)):
            self._file(static_file(UI_DIST, m.group(2)))
        elif sub and not sub.startswith("/apps/"):
            self._file(static_file(SHELL_DIR, sub.lstrip("/")))
        else:
            self._file(None)

    def do_POST(self) -> None:
        sub = self._route()
        if sub is None:
            return
        if sub == "/api/login":
            self._json(*self.api.login(self._body()))
            return
        m = TASKS_PATH_RE.match(sub)
        if m is None:
            self._file(None)
            return
        user = self._user()
        if user is None:
            self._json(401, {"code": 401, "message": "token is missing or expired", "data": None})
            return
        self._json(*self.api.submit(user, m.group(1), self._body()))

    def _api_get(self, sub: str) -> None:
        m = TASK_PATH_RE.match(sub)
        if m is None:
            self._file(None)
        elif self._user() is None:
            self._json(401, {"code": 401, "message": "token is missing or expired", "data": None})
        elif m.group(3) == "status":
            self._json(*self.api.task_status(m.group(1), m.group(2)))
        else:
            self._json(*self.api.task_context(m.group(1), m.group(2)))

    def _websocket(self) -> None:
        key = self.headers.get("Sec-WebSocket-Key")
        if self.headers.get("Upgrade", "").lower() != "websocket" or not key:
            self._json(400, {"code": 400, "message": "websocket upgrade expected", "data": None})
            return
        self.send_response(101, "Switching Protocols")
        self.send_header("Upgrade", "websocket")
        self.send_header("Connection", "Upgrade")
        self.send_header("Sec-WebSocket-Accept", accept_key(key))
        self.end_headers()
        self.close_connection = True
        ws = WebSocket(self.rfile, self.wfile)
        try:
            if not self._authorize(ws):
                ws.close()
                return
            ps = subscribe_progress(self.api.cfg)
            threading.Thread(target=relay_progress, args=(ps, ws), daemon=True).start()
            # not in the api-server's protocol (clients ignore unknown types): the
            # stand-in page loads the module only once its tasks cannot go unseen
            ws.send_text(json.dumps({"type": "authorized"}))
            while True:
                ws.receive_text()  # nothing else is expected from the client
        except (ConnectionClosed, redis.RedisError):
            pass
        finally:
            ws.closed.set()

    def _authorize(self, ws: WebSocket) -> bool:
        """The client's first message must be `{"action": "authorize", "payload": {"jwt": ...}}`."""
        try:
            msg = json.loads(ws.receive_text())
            token = msg["payload"]["jwt"] if msg.get("action") == "authorize" else ""
        except (json.JSONDecodeError, KeyError, TypeError, AttributeError):
            token = ""
        return isinstance(token, str) and self.api.tokens.verify(token) is not None


def serve(cfg: NodeConfig) -> None:
    """Serve until SIGTERM; the pid file says we run."""
    api = Api(cfg)
    cfg.log_dir.mkdir(parents=True, exist_ok=True)
    handler = type("BoundHandler", (Handler,), {"api": api, "log_path": cfg.log_dir / "adminapi.log"})
    ThreadingHTTPServer.allow_reuse_address = True
    server = ThreadingHTTPServer(("127.0.0.1", port(cfg)), handler)
    server.daemon_threads = True
    signal.signal(signal.SIGTERM, lambda *_: threading.Thread(target=server.shutdown, daemon=True).start())
    pidfile = cfg.run_dir / "adminapi.pid"
    pidfile.parent.mkdir(parents=True, exist_ok=True)
    pidfile.write_text(str(os.getpid()))
    try:
        server.serve_forever(poll_interval=0.5)
    finally:
        server.server_close()
        pidfile.unlink(missing_ok=True)


def _pid(cfg: NodeConfig) -> int | None:
    try:
        pid = int((cfg.run_dir / "adminapi.pid").read_text().strip())
        os.kill(pid, 0)
        return pid
    except (FileNotFoundError, ValueError, ProcessLookupError):
        return None


def running(cfg: NodeConfig) -> bool:
    return _pid(cfg) is not None


def start(cfg: NodeConfig) -> None:
    """Start the stand-in in the background (once), as `up` does for agentd."""
    if running(cfg):
        return
    cfg.log_dir.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, PYTHONPATH=str(REPO_ROOT / "tests"))
    with open(cfg.log_dir / "adminapi.log", "ab") as log:
        proc = subprocess.Popen([sys.executable, "-m", "localnode.adminapi", str(cfg.state_dir)], env=env,
                                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if running(cfg):
            return
        if proc.poll() is not None:
            break
        time.sleep(0.05)
    raise RuntimeError(f"the cluster-admin stand-in did not start on port {port(cfg)}; "
                       f"see {cfg.log_dir / 'adminapi.log'}")


def stop(cfg: NodeConfig, timeout: float = 10) -> None:
    pid = _pid(cfg)
    if pid is None:
        (cfg.run_dir / "adminapi.pid").unlink(missing_ok=True)
        return
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and _pid(cfg) is not None:
        time.sleep(0.05)
    if _pid(cfg) is not None:
        os.kill(pid, signal.SIGKILL)
    (cfg.run_dir / "adminapi.pid").unlink(missing_ok=True)


def main() -> None:
    serve(load(sys.argv[1] if len(sys.argv) > 1 else None))


if __name__ == "__main__":
    main()
