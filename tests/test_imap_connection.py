"""Connection, login and error classification.

Unit tests build real exceptions; misbehaving servers (no STARTTLS, STARTTLS
refused, LOGINDISABLED, bad greeting, silence) are a tiny in-process fake; the
rest runs against a real Dovecot pair started for this module.

The pair is the local node's two Dovecots (``localnode.dovecot``: the remote
provider with ``.`` and mail1 with ``/`` and the master user), in a temporary
state dir removed at teardown.
"""

from __future__ import annotations

import errno
import imaplib
import socket
import socketserver
import ssl
import threading
from collections.abc import Callable, Iterator

import pytest
from imapclient import exceptions as imap_exc
from localnode.imap_pair import REMOTE_OF, Pair
from ns8_imapsync.errors import LOGIN_CLASSES, LOGIN_EXIT_CODES
from ns8_imapsync.imap import errors
from ns8_imapsync.imap.connection import Endpoint, check_login, connect, open_session
from ns8_imapsync.imap.errors import (
    BAD_USER_CREDENTIALS,
    CHECK_HOSTNAME_OR_TCP_PORT,
    SSL_ENCRYPTION_ERROR,
    STARTTLS_NOT_ALLOWED_USE_IMAPS,
    VALIDATION_FAILED,
    classify,
    classify_imapsync_exit,
)

# --------------------------------------------------------------------------- fake server


class _FakeHandler(socketserver.StreamRequestHandler):
    """Speaks just enough IMAP to misbehave in one way (``server.mode``)."""

    def _send(self, line: str) -> None:
        self.wfile.write(line.encode() + b"\r\n")

    def handle(self) -> None:
        mode = self.server.mode  # type: ignore[attr-defined]
        if mode == "silent":
            self.request.recv(1024)  # never greets; returns when the client gives up
            return
        if mode == "bad-greeting":
            self._send("HTTP/1.0 400 Bad Request")
            return
        caps = {
            "no-starttls": "IMAP4rev1 AUTH=PLAIN",
            "starttls-refused": "IMAP4rev1 STARTTLS AUTH=PLAIN",
            "logindisabled": "IMAP4rev1 STARTTLS LOGINDISABLED",
            "privacyrequired": "IMAP4rev1 AUTH=PLAIN",
        }[mode]
        self._send(f"* OK [CAPABILITY {caps}] fake-imap ready")
        for raw in self.rfile:
            parts = raw.decode(errors="replace").strip().split(" ", 2)
            if len(parts) < 2:
                return
            tag, command = parts[0], parts[1].upper()
            if command == "CAPABILITY":
                self._send(f"* CAPABILITY {caps}")
                self._send(f"{tag} OK done")
            elif command == "STARTTLS":
                self._send(f"{tag} NO [ALERT] STARTTLS refused")
            elif command == "LOGIN" and mode == "privacyrequired":
                self._send(
                    "* BAD [ALERT] Plaintext authentication not allowed without SSL/TLS, but your client did it "
                    "anyway. If anyone was listening, the password was exposed."
                )
                self._send(
                    f"{tag} NO [PRIVACYREQUIRED] Plaintext authentication disallowed on non-secure (SSL/TLS) connections."
                )
            elif command == "LOGIN":
                self._send(f"{tag} NO [AUTHENTICATIONFAILED] Authentication failed.")
            elif command == "LOGOUT":
                self._send("* BYE bye")
                self._send(f"{tag} OK done")
                return
            else:
                self._send(f"{tag} BAD unknown")


class _FakeServer(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True


@pytest.fixture
def fake_imap() -> Iterator[Callable[[str], int]]:
    servers: list[_FakeServer] = []

    def start(mode: str) -> int:
        server = _FakeServer(("127.0.0.1", 0), _FakeHandler)
        server.mode = mode  # type: ignore[attr-defined]
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return server.server_address[1]

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# --------------------------------------------------------------------------- classify


def _real_ssl_error() -> ssl.SSLError:
    """A genuine WRONG_VERSION_NUMBER from OpenSSL: TLS against a plain greeting."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)

    def serve() -> None:
        conn, _ = listener.accept()
        conn.sendall(b"* OK [CAPABILITY IMAP4rev1 STARTTLS] plain server ready\r\n")
        conn.recv(1024)
        conn.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    try:
        with socket.create_connection(listener.getsockname(), timeout=5) as sock:
            ctx.wrap_socket(sock)
    except ssl.SSLError as exc:
        return exc
    finally:
        thread.join(5)
        listener.close()
    raise AssertionError("handshake unexpectedly succeeded")


@pytest.mark.parametrize(
    ("exc", "expected"),
    [
        (socket.gaierror(socket.EAI_NONAME, "Name or service not known"), CHECK_HOSTNAME_OR_TCP_PORT),
        (ConnectionRefusedError(errno.ECONNREFUSED, "Connection refused"), CHECK_HOSTNAME_OR_TCP_PORT),
        (TimeoutError("timed out"), CHECK_HOSTNAME_OR_TCP_PORT),
        (OSError(errno.ENETUNREACH, "Network is unreachable"), CHECK_HOSTNAME_OR_TCP_PORT),
        (OSError(errno.EHOSTUNREACH, "No route to host"), CHECK_HOSTNAME_OR_TCP_PORT),
        (ConnectionResetError(errno.ECONNRESET, "Connection reset by peer"), CHECK_HOSTNAME_OR_TCP_PORT),
        (imaplib.IMAP4.abort("socket error: EOF"), CHECK_HOSTNAME_OR_TCP_PORT),
        (imaplib.IMAP4.abort("unexpected response: b'HTTP/1.0 400 Bad Request'"), CHECK_HOSTNAME_OR_TCP_PORT),
        (
            ssl.SSLError(1, "[SSL: WRONG_VERSION_NUMBER] wrong version number (_ssl.c:1006)"),
            SSL_ENCRYPTION_ERROR,
        ),
        (
            ssl.SSLCertVerificationError(1, "certificate verify failed: self-signed certificate"),
            SSL_ENCRYPTION_ERROR,
        ),
        (ssl.SSLEOFError(8, "EOF occurred in violation of protocol"), SSL_ENCRYPTION_ERROR),
        (imap_exc.LoginError("b'[AUTHENTICATIONFAILED] Authentication failed.'"), BAD_USER_CREDENTIALS),
        (imap_exc.LoginError("b'Login failed.'"), BAD_USER_CREDENTIALS),
        (
            imaplib.IMAP4.error(
                "LOGIN command error: BAD [b'Error in IMAP command LOGIN: Invalid arguments.']"
            ),
            VALIDATION_FAILED,
        ),
        (imaplib.IMAP4.error("2 NO [AUTHENTICATIONFAILED] Authentication failed."), BAD_USER_CREDENTIALS),
        (
            imap_exc.LoginError(
                "b'[PRIVACYREQUIRED] Plaintext authentication disallowed on non-secure (SSL/TLS) connections.'"
            ),
            STARTTLS_NOT_ALLOWED_USE_IMAPS,
        ),
        (imap_exc.LoginError("b'Login only available under a layer'"), STARTTLS_NOT_ALLOWED_USE_IMAPS),
        (imap_exc.LoginError("b'Use STARTTLS first'"), STARTTLS_NOT_ALLOWED_USE_IMAPS),
        (imaplib.IMAP4.error("Couldn't establish TLS session"), STARTTLS_NOT_ALLOWED_USE_IMAPS),
        (imaplib.IMAP4.error("STARTTLS extension not supported by server."), STARTTLS_NOT_ALLOWED_USE_IMAPS),
        (
            imap_exc.CapabilityError("Server does not support STARTTLS capability"),
            STARTTLS_NOT_ALLOWED_USE_IMAPS,
        ),
        (imaplib.IMAP4.error("2 NO [ALERT] STARTTLS refused"), STARTTLS_NOT_ALLOWED_USE_IMAPS),
        (FileNotFoundError(errno.ENOENT, "No such file or directory"), VALIDATION_FAILED),
        (ValueError("anything else"), VALIDATION_FAILED),
        (errors.AuthenticationFailed("x"), BAD_USER_CREDENTIALS),
        (errors.NoGreeting("x"), CHECK_HOSTNAME_OR_TCP_PORT),
        (errors.TLSFailed("x"), SSL_ENCRYPTION_ERROR),
        (errors.StartTLSUnavailable("x"), STARTTLS_NOT_ALLOWED_USE_IMAPS),
        (errors.PlaintextLoginDisabled("x"), STARTTLS_NOT_ALLOWED_USE_IMAPS),
        (errors.ImapLayerError("x"), VALIDATION_FAILED),
    ],
)
def test_classify(exc: BaseException, expected: str) -> None:
    assert classify(exc) == expected
    assert expected in LOGIN_CLASSES


def test_classify_real_openssl_error_and_cause_chain() -> None:
    real = _real_ssl_error()
    assert "WRONG_VERSION_NUMBER" in str(real)
    assert classify(real) == SSL_ENCRYPTION_ERROR
    wrapper = RuntimeError("wrapped")
    wrapper.__cause__ = real
    assert classify(wrapper) == SSL_ENCRYPTION_ERROR


@pytest.mark.parametrize(
    ("code", "host", "output", "expected"),
    [
        (0, None, None, None),
        (161, 1, None, BAD_USER_CREDENTIALS),
        (161, None, None, BAD_USER_CREDENTIALS),
        (162, 2, None, BAD_USER_CREDENTIALS),
        (162, 1, None, VALIDATION_FAILED),  # the local server refused: not the admin's input
        (101, 1, None, CHECK_HOSTNAME_OR_TCP_PORT),
        (102, 1, None, VALIDATION_FAILED),
        (
            101,
            1,
            "Host1 failure: can not open imap connection on host1 [127.0.0.1] with user [user11]: Unable to "
            "connect to 127.0.0.1: SSL connect attempt failed error:0A00010B:SSL routines::wrong version number ",
            SSL_ENCRYPTION_ERROR,
        ),
        (10, None, None, CHECK_HOSTNAME_OR_TCP_PORT),
        (12, 1, None, STARTTLS_NOT_ALLOWED_USE_IMAPS),
        (16, None, None, BAD_USER_CREDENTIALS),
        (111, 1, None, VALIDATION_FAILED),
        (64, None, None, VALIDATION_FAILED),
        (6, None, None, VALIDATION_FAILED),
    ],
)
def test_classify_imapsync_exit(
    code: int, host: int | None, output: str | None, expected: str | None
) -> None:
    assert classify_imapsync_exit(code, host, output) == expected


def test_action_exit_codes_cover_every_class() -> None:
    assert set(LOGIN_EXIT_CODES) == set(LOGIN_CLASSES)


# --------------------------------------------------------------------------- fake servers


@pytest.mark.parametrize("security", ["tls", ""])
def test_starttls_not_offered(fake_imap, security: str) -> None:
    port = fake_imap("no-starttls")
    if security == "tls":
        result = check_login(Endpoint("127.0.0.1", port, "tls", "u", timeout=5), "secret-pw")
        assert result.error == STARTTLS_NOT_ALLOWED_USE_IMAPS
        assert "does not offer STARTTLS" in result.reason
        assert "AUTH=PLAIN" in result.capabilities
    else:
        # no encryption asked, none offered: plain login is attempted (and refused here)
        result = check_login(Endpoint("127.0.0.1", port, "", "u", timeout=5), "secret-pw")
        assert result.error == BAD_USER_CREDENTIALS


def test_starttls_refused(fake_imap) -> None:
    port = fake_imap("starttls-refused")
    for security in ("tls", ""):  # "" upgrades when offered, like imapsync, and fails the same way
        result = check_login(Endpoint("127.0.0.1", port, security, "u", timeout=5), "secret-pw")
        assert (result.ok, result.error) == (False, STARTTLS_NOT_ALLOWED_USE_IMAPS)
        assert "refused STARTTLS" in result.reason


def test_logindisabled_without_tls(fake_imap) -> None:
    port = fake_imap("logindisabled")
    result = check_login(
        Endpoint("127.0.0.1", port, "", "u", timeout=5, opportunistic_tls=False), "secret-pw"
    )
    assert result.error == STARTTLS_NOT_ALLOWED_USE_IMAPS
    assert "without encryption" in result.reason


def test_plaintext_disallowed_at_login(fake_imap) -> None:
    port = fake_imap("privacyrequired")
    result = check_login(Endpoint("127.0.0.1", port, "", "u", timeout=5), "secret-pw")
    assert result.error == STARTTLS_NOT_ALLOWED_USE_IMAPS
    assert "PRIVACYREQUIRED" in result.reason


def test_bad_greeting_and_silence(fake_imap) -> None:
    result = check_login(Endpoint("127.0.0.1", fake_imap("bad-greeting"), "tls", "u", timeout=5), "secret-pw")
    assert result.error == CHECK_HOSTNAME_OR_TCP_PORT
    assert "IMAP" in result.reason
    result = check_login(Endpoint("127.0.0.1", fake_imap("silent"), "tls", "u", timeout=1), "secret-pw")
    assert result.error == CHECK_HOSTNAME_OR_TCP_PORT
    assert "within 1 s" in result.reason


def test_invalid_endpoint_is_validation_failed() -> None:
    assert check_login(Endpoint("127.0.0.1", 0, "tls", "u"), "pw").error == VALIDATION_FAILED
    assert check_login(Endpoint("127.0.0.1", 143, "starttls", "u"), "pw").error == VALIDATION_FAILED  # type: ignore[arg-type]


def test_unresolvable_host() -> None:
    result = check_login(Endpoint("no-such-host.invalid", 143, "tls", "u", timeout=5), "pw")
    assert result.error == CHECK_HOSTNAME_OR_TCP_PORT
    assert "resolved" in result.reason


# --------------------------------------------------------------------------- real Dovecot


@pytest.mark.parametrize("security", ["tls", "ssl"])
def test_login_ok(pair: Pair, security: str) -> None:
    result = check_login(pair.remote("user01", security), pair.password("user01"))
    assert (result.ok, result.error) == (True, None)
    assert "IMAPS" in result.reason if security == "ssl" else "STARTTLS" in result.reason
    assert "IMAP4REV1" in result.capabilities


def test_master_login_on_local(pair: Pair) -> None:
    result = check_login(pair.local("user01"), pair.master_pass)
    assert result.ok, result.reason
    client = open_session(pair.local("user02", "ssl"), pair.master_pass)
    try:
        assert client.namespace().personal[0] == ("", "/")
    finally:
        client.logout()


def test_closed_port(pair: Pair) -> None:
    result = check_login(Endpoint("127.0.0.1", _closed_port(), "tls", "user01"), pair.password("user01"))
    assert (result.ok, result.error) == (False, CHECK_HOSTNAME_OR_TCP_PORT)
    assert "refused" in result.reason


def test_ssl_against_starttls_port(pair: Pair) -> None:
    ep = Endpoint(pair.remote_host, pair.remote_imap, "ssl", REMOTE_OF["user01"])
    result = check_login(ep, pair.password("user01"))
    assert (result.ok, result.error) == (False, SSL_ENCRYPTION_ERROR)
    assert "WRONG_VERSION_NUMBER" in result.reason


def test_starttls_against_imaps_port_times_out(pair: Pair) -> None:
    ep = Endpoint(pair.remote_host, pair.remote_imaps, "tls", REMOTE_OF["user01"], timeout=1)
    result = check_login(ep, pair.password("user01"))
    assert result.error == CHECK_HOSTNAME_OR_TCP_PORT
    assert "IMAPS" in result.reason


def test_certificate_verification(pair: Pair) -> None:
    strict = pair.remote("user01", "ssl", verify_cert=True)
    result = check_login(strict, pair.password("user01"))
    assert result.error == SSL_ENCRYPTION_ERROR
    assert "certificate" in result.reason
    trusted = pair.remote("user01", "tls", verify_cert=True, ca_file=pair.ca_file)
    assert check_login(trusted, pair.password("user01")).ok
    missing = pair.remote("user01", "ssl", verify_cert=True, ca_file=str(pair.state_dir / "nope.pem"))
    assert check_login(missing, pair.password("user01")).error == VALIDATION_FAILED


def test_plain_session_when_opportunistic_tls_is_off(pair: Pair) -> None:
    ep = pair.remote("user01", "", opportunistic_tls=False)
    result = check_login(ep, pair.password("user01"))
    assert result.ok and "unencrypted" in result.reason
    client = connect(pair.remote("user01", ""))  # default: upgraded because STARTTLS is offered
    try:
        assert isinstance(client.socket(), ssl.SSLSocket)
    finally:
        client.logout()


# Failed logins last: Dovecot then delays every auth from 127.0.0.1 (auth penalty).


def test_bad_password(pair: Pair) -> None:
    password = "not-the-password"
    result = check_login(pair.remote("user01"), password)
    assert (result.ok, result.error) == (False, BAD_USER_CREDENTIALS)
    assert "AUTHENTICATIONFAILED" in result.reason
    assert password not in result.reason


def test_non_ascii_password_uses_authenticate(pair: Pair) -> None:
    result = check_login(pair.remote("user01"), "pässwörd")
    assert result.error == BAD_USER_CREDENTIALS
