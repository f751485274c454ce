"""A local stand-in for a DirectAdmin panel's documented legacy API.

DirectAdmin is proprietary, so the bulk tools are tested against this small
HTTP server of ours. It answers what the public API documentation describes:
`CMD_API_SHOW_DOMAINS` and `CMD_API_POP` (`action=list|create`), HTTP Basic
auth, URL-encoded replies (`list[]=a&list[]=b`, `error=1&text=...&details=...`)
and JSON ones with `json=yes`. Switches make it misbehave the ways real panels
do: an error on the next call, the HTML login page instead of a 401, a
self-signed certificate.

    with PanelServer("admin", "s3cret", {"example.com": ["alice"]}) as panel:
        panel.url, panel.created, panel.requests
"""

from __future__ import annotations

import atexit
import base64
import json
import shutil
import ssl
import subprocess
import tempfile
import threading
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qsl, urlencode, urlsplit

_SECRET_PARAMS = ("passwd", "passwd2")
_LOGIN_PAGE = (
    "<!DOCTYPE html><html><head><title>DirectAdmin Login</title></head>"
    "<body><form action=\"/CMD_LOGIN\" method=\"post\"><input name=\"username\">"
    "<input type=\"password\" name=\"password\"></form></body></html>"
)


@dataclass(frozen=True)
class PanelRequest:
    """One API call as the panel saw it, without its passwords. `query_keys`
    are the parameter names that came in the URL (a password must never)."""

    method: str
    path: str
    params: dict[str, str]
    query_keys: tuple[str, ...]


class PanelError(Exception):
    """A legacy API failure: becomes `error=1&text=...&details=...`."""

    def __init__(self, text: str, details: str = "") -> None:
        super().__init__(text)
        self.text = text
        self.details = details


class PanelServer:
    """The fake panel, on 127.0.0.1 with an ephemeral port, while the `with` lasts.

    `domains` maps each domain of the user to its mailboxes' local parts and is
    updated by creations. `on_create(email, password, quota_mb)` runs before a
    creation is accepted (e.g. to add the IMAP user); if it raises, the panel
    answers an error. Set `fail_next` to a text to make the next API call fail
    with it, `login_page = True` to answer wrong credentials with the HTML login
    page (status 200) as some panels do instead of a 401.
    """

    def __init__(self, username: str, password: str, domains: dict[str, list[str]],
                 on_create: Callable[[str, str, int], None] | None = None, tls: bool = False) -> None:
        self.username = username
        self.password = password
        self.domains: dict[str, list[str]] = {d.lower(): [u.lower() for u in boxes] for d, boxes in domains.items()}
        self.on_create = on_create
        self.tls = tls
        self.fail_next: str | None = None
        self.login_page = False
        self.created: list[str] = []
        self.requests: list[PanelRequest] = []
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle ------------------------------------------------------------

    def __enter__(self) -> PanelServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> None:
        server = ThreadingHTTPServer(("127.0.0.1", 0), _handler_for(self))
        server.daemon_threads = True
        if self.tls:
            cert, key = self_signed_cert()
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            ctx.load_cert_chain(cert, key)
            server.socket = ctx.wrap_socket(server.socket, server_side=True)
        self._server = server
        self._thread = threading.Thread(target=server.serve_forever, name="dapanel", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    @property
    def url(self) -> str:
        if self._server is None:
            raise RuntimeError("the panel is not running")
        scheme = "https" if self.tls else "http"
        return f"{scheme}://127.0.0.1:{self._server.server_address[1]}"

    # -- the API ------------------------------------------------------------

    def answer(self, path: str, params: dict[str, str]) -> dict | list:
        """The reply data of one authenticated call; raises PanelError."""
        with self._lock:
            if self.fail_next is not None:
                text, self.fail_next = self.fail_next, None
                raise PanelError(text, "requested by the test")
            if path == "/CMD_API_SHOW_DOMAINS":
                return {"list": list(self.domains)}
            if path == "/CMD_API_POP":
                return self._pop(params)
            raise PanelError("Cannot Execute Your Request", f"unknown command {path.lstrip('/')}")

    def _pop(self, params: dict[str, str]) -> dict:
        action = params.get("action", "")
        domain = params.get("domain", "").lower()
        if domain not in self.domains:
            raise PanelError("Cannot Execute Your Request", "You do not own that domain")
        boxes = self.domains[domain]
        if action == "list":
            return {"list": list(boxes)}
        if action == "create":
            user = params.get("user", "").lower()
            passwd, passwd2 = params.get("passwd", ""), params.get("passwd2", "")
            quota = params.get("quota", "0")
            if not user or "@" in user:
                raise PanelError("Unable to create E-Mail account", "Invalid user name")
            if not passwd:
                raise PanelError("Unable to create E-Mail account", "Password is empty")
            if passwd != passwd2:
                raise PanelError("Unable to create E-Mail account", "Passwords do not match")
            if not quota.isdigit():
                raise PanelError("Unable to create E-Mail account", "Quota must be a number")
            if user in boxes:
                raise PanelError("Unable to create E-Mail account", "That user already exists")
            email = f"{user}@{domain}"
            if self.on_create is not None:
                try:
                    self.on_create(email, passwd, int(quota))
                except Exception as exc:  # the panel's own failure, in its words
                    raise PanelError("Unable to create E-Mail account", str(exc)) from None
            boxes.append(user)
            self.created.append(email)
            return {"error": "0", "text": "E-Mail account created", "details": ""}
        raise PanelError("Cannot Execute Your Request", f"unknown action {action!r}")

    def authorized(self, header: str | None) -> bool:
        if not header or not header.startswith("Basic "):
            return False
        try:
            user, _, password = base64.b64decode(header[6:]).decode("utf-8").partition(":")
        except (ValueError, UnicodeDecodeError):
            return False
        return user == self.username and password == self.password

    def record(self, method: str, path: str, params: dict[str, str], query_keys: tuple[str, ...]) -> None:
        shown = {k: v for k, v in params.items() if k not in _SECRET_PARAMS}
        with self._lock:
            self.requests.append(PanelRequest(method, path, shown, query_keys))


# ---------------------------------------------------------------------------
# HTTP
# ---------------------------------------------------------------------------


def _handler_for(panel: PanelServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        server_version = "DirectAdmin-fake/1"

        def do_GET(self) -> None:
            self._serve("GET")

        def do_POST(self) -> None:
            self._serve("POST")

        def _serve(self, method: str) -> None:
            parts = urlsplit(self.path)
            query = dict(parse_qsl(parts.query, keep_blank_values=True))
            params = dict(query)
            if method == "POST":
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length).decode("utf-8", "replace")
                params.update(parse_qsl(body, keep_blank_values=True))
            if not panel.authorized(self.headers.get("Authorization")):
                if panel.login_page:
                    self._send(200, _LOGIN_PAGE, "text/html")
                else:
                    self.send_response(401)
                    self.send_header("WWW-Authenticate", 'Basic realm="DirectAdmin"')
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                return
            panel.record(method, parts.path, params, tuple(query))
            as_json = params.get("json") == "yes"
            try:
                data = panel.answer(parts.path, params)
            except PanelError as exc:
                data = {"error": "1", "text": exc.text, "details": exc.details}
            self._send(200, _encode(data, as_json), "application/json" if as_json else "text/html")

        def _send(self, status: int, text: str, ctype: str) -> None:
            raw = text.encode("utf-8")
            self.send_response(status)
            self.send_header("Content-Type", f"{ctype}; charset=utf-8")
            self.send_header("Content-Length", str(len(raw)))
            self.end_headers()
            self.wfile.write(raw)

        def log_message(self, format: str, *args: object) -> None:  # quiet: tests read .requests
            pass

    return Handler


def _encode(data: dict | list, as_json: bool) -> str:
    """JSON, or the legacy URL-encoded form (lists as `key[]=`)."""
    if as_json:
        return json.dumps(data)
    pairs: list[tuple[str, str]] = []
    for key, value in data.items():
        if isinstance(value, list):
            pairs.extend((f"{key}[]", str(v)) for v in value)
        else:
            pairs.append((key, str(value)))
    return urlencode(pairs)


# ---------------------------------------------------------------------------
# certificate
# ---------------------------------------------------------------------------

_cert_lock = threading.Lock()
_cert_dir: Path | None = None


def self_signed_cert() -> tuple[str, str]:
    """A throw-away self-signed certificate for 127.0.0.1 (made once per process)."""
    global _cert_dir
    with _cert_lock:
        if _cert_dir is None:
            d = Path(tempfile.mkdtemp(prefix="dapanel-cert-"))
            atexit.register(shutil.rmtree, d, True)
            proc = subprocess.run(
                ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
                 "-subj", "/CN=localhost", "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1",
                 "-keyout", str(d / "key.pem"), "-out", str(d / "cert.pem")],
                capture_output=True, text=True,
            )
            if proc.returncode != 0:
                raise RuntimeError(f"openssl req failed: {proc.stderr.strip()}")
            _cert_dir = d
        return str(_cert_dir / "cert.pem"), str(_cert_dir / "key.pem")


def main() -> None:
    """`python -m localnode.dapanel`: a demo panel until Ctrl-C."""
    import argparse
    import time

    ap = argparse.ArgumentParser(description="Fake DirectAdmin legacy API for demos and tests.")
    ap.add_argument("--username", default="admin")
    ap.add_argument("--password", default="admin", help="demo only: this is a throw-away fake panel")
    ap.add_argument("--domain", action="append", default=[], metavar="DOMAIN:user1,user2",
                    help="a domain and its mailboxes (repeatable)")
    ap.add_argument("--tls", action="store_true", help="serve HTTPS with a self-signed certificate")
    args = ap.parse_args()
    domains: dict[str, list[str]] = {}
    for item in args.domain or ["example.com:alice,bob", "example.org:carol"]:
        name, _, users = item.partition(":")
        domains[name] = [u for u in users.split(",") if u]
    with PanelServer(args.username, args.password, domains, tls=args.tls) as panel:
        print(f"fake DirectAdmin panel at {panel.url} (user {args.username}); Ctrl-C to stop", flush=True)
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            pass


if __name__ == "__main__":
    main()
