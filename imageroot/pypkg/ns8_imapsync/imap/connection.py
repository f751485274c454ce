"""Open authenticated IMAP sessions and check credentials for create-task.

Every failure is raised as an :class:`~.errors.ImapLayerError` subclass whose
``error_class`` is the string create-task reports, and whose message is one
sentence an administrator can act on.  Passwords only travel in memory, as
arguments; they are never stored on objects, logged or put in a message.
"""

from __future__ import annotations

import imaplib
import re
import socket
import ssl
from dataclasses import dataclass, field
from typing import Literal

import imapclient
from imapclient import exceptions as imap_exc

from .errors import (
    AuthenticationFailed,
    ConnectFailed,
    ImapLayerError,
    NoGreeting,
    PlaintextLoginDisabled,
    StartTLSUnavailable,
    TLSFailed,
    classify,
    is_plaintext_refusal,
)

Security = Literal["ssl", "tls", ""]
_SECURITY_VALUES = ("ssl", "tls", "")


@dataclass
class Endpoint:
    """Where and as whom to log in; the password is passed separately on purpose.

    ``security``: ``"ssl"`` = IMAPS (TLS from the first byte), ``"tls"`` = STARTTLS,
    required; ``""`` = no encryption asked, but like imapsync (which goes to TLS
    "because STARTTLS is in CAPABILITY" unless ``--notls``) the session is upgraded
    when the server offers STARTTLS, so the password does not travel in clear;
    set ``opportunistic_tls=False`` for a truly plain session.
    Certificates are not verified by default, as imapsync and the real module do.
    """

    host: str
    port: int
    security: Security
    user: str
    verify_cert: bool = False
    ca_file: str | None = None
    timeout: float = 30
    opportunistic_tls: bool = True

    @property
    def where(self) -> str:
        """``host:port`` as shown in messages (IPv6 literals bracketed)."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"


@dataclass
class LoginCheck:
    """Result of :func:`check_login`, ready for create-task's validation step."""

    ok: bool
    error: str | None
    reason: str
    capabilities: list[str] = field(default_factory=list)


def _validate(ep: Endpoint) -> None:
    if ep.security not in _SECURITY_VALUES:
        raise ImapLayerError(f"Unknown encryption setting {ep.security!r}: use 'ssl', 'tls' or ''.")
    if not isinstance(ep.port, int) or not 1 <= ep.port <= 65535:
        raise ImapLayerError(f"The TCP port {ep.port!r} is not a number between 1 and 65535.")
    if not ep.host or any(c.isspace() for c in ep.host):
        raise ImapLayerError(f"The host name {ep.host!r} is not valid.")


def ssl_context(ep: Endpoint) -> ssl.SSLContext:
    """TLS settings for ``ep``: no verification unless ``verify_cert`` (imapsync's default)."""
    if ep.verify_cert:
        try:
            return ssl.create_default_context(cafile=ep.ca_file)
        except (OSError, ssl.SSLError) as exc:
            raise ImapLayerError(f"The CA file {ep.ca_file} cannot be used: {_os_text(exc)}.") from exc
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


def capabilities_of(client: imapclient.IMAPClient) -> tuple[str, ...]:
    """The server's current capabilities as upper-case strings."""
    return tuple(
        c.decode("ascii", "replace") if isinstance(c, bytes) else str(c) for c in client.capabilities()
    )


def is_encrypted(client: imapclient.IMAPClient) -> bool:
    """True once the session runs over TLS (IMAPS or after STARTTLS)."""
    return isinstance(client.socket(), ssl.SSLSocket)


def _os_text(exc: BaseException) -> str:
    text = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
    return str(text).rstrip(".")


def _server_text(exc: BaseException, password: str = "") -> str:
    """The server's words from an imaplib/imapclient error, without ``b'...'`` noise."""
    text = str(exc)
    match = re.fullmatch(r"""b(['"])(.*)\1""", text, flags=re.S)
    if match:
        text = match.group(2)
    text = re.sub(r"^\w+ failed: ", "", text)
    text = " ".join(text.split())
    return scrub(text[:300], password)


def scrub(text: str, password: str) -> str:
    """Remove the password from ``text`` should a server ever echo it."""
    if password and len(password) >= 3:
        text = text.replace(password, "********")
    return text


def _tls_failure(exc: ssl.SSLError, ep: Endpoint, during: str) -> TLSFailed:
    if isinstance(exc, ssl.SSLCertVerificationError):
        detail = exc.verify_message or exc.reason or str(exc)
        return TLSFailed(f"The certificate of {ep.where} was rejected during {during}: {detail}.")
    reason = (getattr(exc, "reason", None) or str(exc) or "handshake failed").rstrip(".")
    if reason.upper() in {
        "WRONG_VERSION_NUMBER",
        "RECORD_LAYER_FAILURE",
        "PACKET_LENGTH_TOO_LONG",
        "HTTP_REQUEST",
    }:
        return TLSFailed(
            f"The TLS handshake with {ep.where} failed ({reason}): the port does not speak IMAPS; "
            "for a plain port such as 143 choose STARTTLS or no encryption."
        )
    return TLSFailed(f"The TLS handshake with {ep.where} failed during {during} ({reason}).")


def _network_failure(exc: OSError, ep: Endpoint) -> ConnectFailed:
    if isinstance(exc, socket.gaierror):
        return ConnectFailed(f"The host name {ep.host} could not be resolved ({_os_text(exc)}).")
    if isinstance(exc, TimeoutError):
        hint = "" if ep.security == "ssl" else ", or the port may expect IMAPS"
        return ConnectFailed(
            f"No IMAP greeting from {ep.where} within {ep.timeout:g} s: "
            f"the host may be unreachable or filtered{hint}."
        )
    if isinstance(exc, ConnectionRefusedError):
        return ConnectFailed(f"{ep.where} refused the connection: nothing listens on port {ep.port}.")
    return ConnectFailed(f"Could not connect to {ep.where}: {_os_text(exc)}.")


def connect(ep: Endpoint) -> imapclient.IMAPClient:
    """Connect and set up encryption as ``ep.security`` asks, without logging in.

    When STARTTLS is required but not offered (or refused) this raises instead of
    going on in clear text: the administrator must choose IMAPS.
    """
    _validate(ep)
    ctx = ssl_context(ep)
    use_ssl = ep.security == "ssl"
    try:
        client = imapclient.IMAPClient(
            ep.host, ep.port, ssl=use_ssl, ssl_context=ctx if use_ssl else None, timeout=ep.timeout
        )
    except ssl.SSLError as exc:
        raise _tls_failure(exc, ep, "the connection") from exc
    except OSError as exc:
        raise _network_failure(exc, ep) from exc
    except imaplib.IMAP4.error as exc:
        raise NoGreeting(
            f"{ep.where} accepted the connection but did not greet like an IMAP server "
            f"({_server_text(exc) or 'connection closed'})."
        ) from exc

    try:
        caps = capabilities_of(client)
        want_tls = ep.security == "tls" or (ep.security == "" and ep.opportunistic_tls and "STARTTLS" in caps)
        if want_tls:
            if "STARTTLS" not in caps:
                raise StartTLSUnavailable(
                    f"{ep.where} does not offer STARTTLS: choose IMAPS (usually port 993) instead.", caps
                )
            try:
                client.starttls(ctx)
            except ssl.SSLError as exc:
                raise _tls_failure(exc, ep, "STARTTLS") from exc
            except OSError as exc:
                raise _network_failure(exc, ep) from exc
            except imaplib.IMAP4.error as exc:
                raise StartTLSUnavailable(
                    f"{ep.where} refused STARTTLS ({_server_text(exc)}): choose IMAPS (usually port 993) instead.",
                    caps,
                ) from exc
    except BaseException:
        close_quietly(client)
        raise
    return client


_ATOM_SPECIALS = re.compile(r'[\s(){%*"\\\]\x00-\x1f\x7f]')


def _astring(value: str) -> str:
    """``value`` as an IMAP astring: quoted when it is not a valid atom (e.g. ``user*vmail``)."""
    if value and not _ATOM_SPECIALS.search(value):
        return value
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def login(client: imapclient.IMAPClient, ep: Endpoint, password: str) -> None:
    """LOGIN (or AUTHENTICATE PLAIN for non-ASCII credentials) on a connected client."""
    caps = capabilities_of(client)
    if not is_encrypted(client) and "LOGINDISABLED" in caps:
        raise PlaintextLoginDisabled(
            f"{ep.where} does not allow a password login without encryption: choose STARTTLS or IMAPS.", caps
        )
    try:
        if ep.user.isascii() and password.isascii():
            client.login(_astring(ep.user), password)
        elif "AUTH=PLAIN" in caps:
            client.plain_login(ep.user, password)
        else:
            raise ImapLayerError(
                f"The user name or password contains non-ASCII characters and {ep.where} "
                "does not offer AUTHENTICATE PLAIN, which is needed to send them.",
                caps,
            )
    except imap_exc.LoginError as exc:
        text = _server_text(exc, password)
        if is_plaintext_refusal(text):
            raise PlaintextLoginDisabled(
                f"{ep.where} does not allow a password login without encryption ({text}): "
                "choose STARTTLS or IMAPS.",
                caps,
            ) from exc
        raise AuthenticationFailed(
            f"{ep.where} rejected the user name or password for {ep.user} ({text}).", caps
        ) from exc
    except imaplib.IMAP4.abort as exc:
        raise ImapLayerError(
            f"{ep.where} closed the connection during login ({_server_text(exc, password)}).", caps
        ) from exc
    except ssl.SSLError as exc:
        raise _tls_failure(exc, ep, "login") from exc
    except OSError as exc:
        raise _network_failure(exc, ep) from exc


def open_session(ep: Endpoint, password: str) -> imapclient.IMAPClient:
    """Connect, encrypt as asked and log in; the caller owns (and must log out) the client."""
    client = connect(ep)
    try:
        login(client, ep, password)
    except BaseException:
        close_quietly(client)
        raise
    return client


def close_quietly(client: imapclient.IMAPClient | None) -> None:
    """LOGOUT, or drop the socket if the session is already broken."""
    if client is None:
        return
    try:
        client.logout()
    except Exception:
        try:
            client.shutdown()
        except Exception:
            pass


def transport_of(client: imapclient.IMAPClient) -> str:
    """How the session is protected, in words."""
    if client.ssl:
        return "IMAPS"
    return "STARTTLS" if is_encrypted(client) else "an unencrypted connection"


def describe(exc: BaseException, ep: Endpoint, password: str = "") -> str:
    """One sentence explaining ``exc`` for an administrator (never the password)."""
    if isinstance(exc, ImapLayerError):
        text = str(exc)
    elif isinstance(exc, ssl.SSLError):
        text = str(_tls_failure(exc, ep, "the session"))
    elif isinstance(exc, OSError):
        text = str(_network_failure(exc, ep))
    else:
        detail = _server_text(exc, password) or type(exc).__name__
        text = f"Checking {ep.user} on {ep.where} failed unexpectedly ({detail})."
    return scrub(text, password)


def check_login(ep: Endpoint, password: str) -> LoginCheck:
    """Try a real login and report the outcome; never raises for server or network problems."""
    client = None
    try:
        client = open_session(ep, password)
        caps = list(capabilities_of(client))
        return LoginCheck(
            True, None, f"Logged in to {ep.where} as {ep.user} over {transport_of(client)}.", caps
        )
    except Exception as exc:
        return LoginCheck(
            False, classify(exc), describe(exc, ep, password), list(getattr(exc, "capabilities", ()) or ())
        )
    finally:
        close_quietly(client)
