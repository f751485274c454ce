"""How an IMAP failure maps to a login error class (``ns8_imapsync.errors``).

The exceptions of the IMAP layer carry their class from where they happened
(connect, TLS, login); ``classify`` maps any other exception, and
``classify_imapsync_exit`` maps imapsync's exit codes, to the same classes.
"""

from __future__ import annotations

import errno
import imaplib
import socket
import ssl

# the class names, words and exit codes are ns8_imapsync.errors' (importable on the host)
from ns8_imapsync.errors import (
    BAD_USER_CREDENTIALS,
    CHECK_HOSTNAME_OR_TCP_PORT,
    SSL_ENCRYPTION_ERROR,
    STARTTLS_NOT_ALLOWED_USE_IMAPS,
    VALIDATION_FAILED,
)


class ImapLayerError(Exception):
    """A failure whose class is known where it happened (connect, TLS, login).

    ``str(exc)`` is one plain-English sentence for an administrator; it never
    contains the password.  ``capabilities`` holds what the server announced
    before the failure, when known.
    """

    error_class: str = VALIDATION_FAILED

    def __init__(self, reason: str, capabilities: tuple[str, ...] = ()) -> None:
        super().__init__(reason)
        self.reason = reason
        self.capabilities = capabilities


class ConnectFailed(ImapLayerError):
    """DNS failure, refused or timed-out TCP connection."""

    error_class = CHECK_HOSTNAME_OR_TCP_PORT


class NoGreeting(ConnectFailed):
    """TCP worked but no valid IMAP greeting arrived (not an IMAP server, or closed)."""


class TLSFailed(ImapLayerError):
    """TLS handshake failure: IMAPS against a plain port, or a rejected certificate."""

    error_class = SSL_ENCRYPTION_ERROR


class StartTLSUnavailable(ImapLayerError):
    """The server does not offer STARTTLS, or answered NO/BAD to it."""

    error_class = STARTTLS_NOT_ALLOWED_USE_IMAPS


class PlaintextLoginDisabled(ImapLayerError):
    """The server wants TLS before a password login (LOGINDISABLED, PRIVACYREQUIRED)."""

    error_class = STARTTLS_NOT_ALLOWED_USE_IMAPS


class AuthenticationFailed(ImapLayerError):
    """The server answered NO/BAD to LOGIN or AUTHENTICATE."""

    error_class = BAD_USER_CREDENTIALS


# Server texts meaning "encrypt first, then log in" (Dovecot, Cyrus, Courier wording).
_PLAINTEXT_REFUSED_MARKERS = (
    "LOGINDISABLED",
    "PRIVACYREQUIRED",
    "PLAINTEXT AUTHENTICATION DISALLOWED",
    "PLAINTEXT AUTHENTICATION NOT ALLOWED",
    "PLAINTEXT AUTH DISALLOWED",
    "LOGIN DISABLED",
    "CLEARTEXT LOGIN",  # Zimbra: "cleartext logins disabled"
    "UNDER A LAYER",  # Cyrus: "Login only available under a layer"
    "ENCRYPTION REQUIRED",
    "TLS REQUIRED",
    "SSL REQUIRED",
    "STARTTLS",  # a LOGIN refusal naming STARTTLS ("Use STARTTLS first") wants TLS
)
_STARTTLS_MARKERS = (
    "STARTTLS",
    "COULDN'T ESTABLISH TLS SESSION",
)
_NETWORK_ERRNOS = frozenset(
    {
        errno.ECONNREFUSED,
        errno.ECONNRESET,
        errno.ECONNABORTED,
        errno.ETIMEDOUT,
        errno.EHOSTUNREACH,
        errno.EHOSTDOWN,
        errno.ENETUNREACH,
        errno.ENETDOWN,
        errno.EADDRNOTAVAIL,
        errno.EPIPE,
    }
)


def is_plaintext_refusal(text: str) -> bool:
    """True when a server text says a password login needs TLS first."""
    upper = text.upper()
    return any(marker in upper for marker in _PLAINTEXT_REFUSED_MARKERS)


def _classify_one(exc: BaseException) -> str:
    if isinstance(exc, ImapLayerError):
        return exc.error_class
    # ssl.SSLError is an OSError: test it before the network errors.
    if isinstance(exc, ssl.SSLError | ssl.CertificateError):
        return SSL_ENCRYPTION_ERROR
    if isinstance(exc, socket.gaierror | socket.herror | TimeoutError | ConnectionError):
        return CHECK_HOSTNAME_OR_TCP_PORT
    if isinstance(exc, OSError) and exc.errno in _NETWORK_ERRNOS:
        return CHECK_HOSTNAME_OR_TCP_PORT
    if isinstance(exc, imaplib.IMAP4.error):
        text = str(exc)
        if is_plaintext_refusal(text):
            return STARTTLS_NOT_ALLOWED_USE_IMAPS
        # imapclient.exceptions.LoginError: the server said NO/BAD to LOGIN/AUTHENTICATE.
        if type(exc).__name__ == "LoginError" or "AUTHENTICATIONFAILED" in text.upper():
            return BAD_USER_CREDENTIALS
        if any(marker in text.upper() for marker in _STARTTLS_MARKERS):
            return STARTTLS_NOT_ALLOWED_USE_IMAPS
        if isinstance(exc, imaplib.IMAP4.abort) and (
            "EOF" in text or "socket error" in text or "unexpected response" in text
        ):
            # imaplib's words for "the peer closed / did not speak IMAP"
            return CHECK_HOSTNAME_OR_TCP_PORT
    return VALIDATION_FAILED


def classify(exc: BaseException) -> str:
    """Map any exception from connecting or logging in to one of :data:`ERROR_CLASSES`.

    Unknown exceptions fall back to the class of their ``__cause__`` (so a wrapper
    around an ``ssl.SSLError`` still reports ``SSL_encryption_error``), then to
    ``validation_failed``.
    """
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        result = _classify_one(current)
        if result != VALIDATION_FAILED:
            return result
        current = current.__cause__
    return VALIDATION_FAILED


# imapsync 2.229 exit codes (spec section 5) that name a failure we can classify.
_EXIT_CONNECTION_FAILURE = 10
_EXIT_TLS_FAILURE = 12
_EXIT_AUTHENTICATION_FAILURE = 16
_EXIT_CONNECTION_FAILURE_HOST = {101: 1, 102: 2}
_EXIT_AUTHENTICATION_FAILURE_USER = {161: 1, 162: 2}


def classify_imapsync_exit(code: int, host: int | None = None, output: str | None = None) -> str | None:
    """Map an imapsync exit code to an error class, as create-task reports it.

    ``host`` says which side the caller validates (1 = the remote server the admin
    typed in, 2 = the local mail server); ``None`` means "either".  A failure that
    imapsync attributes to the *other* host is not the admin's input, so it is
    ``validation_failed``.  imapsync reports IMAPS against a plain port as a
    connection failure (101); pass its ``output`` to recognise ``SSL connect attempt
    failed`` and report ``SSL_encryption_error`` like the real module does.
    Returns ``None`` for exit code 0.
    """
    if code == 0:
        return None

    def for_host(side: int | None, error: str) -> str:
        if host is not None and side is not None and side != host:
            return VALIDATION_FAILED
        return error

    if code in _EXIT_AUTHENTICATION_FAILURE_USER:
        return for_host(_EXIT_AUTHENTICATION_FAILURE_USER[code], BAD_USER_CREDENTIALS)
    if code in _EXIT_CONNECTION_FAILURE_HOST:
        side = _EXIT_CONNECTION_FAILURE_HOST[code]
        if output and "SSL connect attempt failed" in output:
            return for_host(side, SSL_ENCRYPTION_ERROR)
        return for_host(side, CHECK_HOSTNAME_OR_TCP_PORT)
    if code == _EXIT_TLS_FAILURE:
        return STARTTLS_NOT_ALLOWED_USE_IMAPS
    if code == _EXIT_CONNECTION_FAILURE:
        if output and "SSL connect attempt failed" in output:
            return SSL_ENCRYPTION_ERROR
        return CHECK_HOSTNAME_OR_TCP_PORT
    if code == _EXIT_AUTHENTICATION_FAILURE:
        return BAD_USER_CREDENTIALS
    return VALIDATION_FAILED
