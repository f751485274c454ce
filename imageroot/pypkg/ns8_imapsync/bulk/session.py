"""Opening an account's IMAP session with the bulk tools' certificate policy and
turning failures into one sentence (never the password)."""

from __future__ import annotations

import imaplib
from collections.abc import Iterator
from contextlib import contextmanager

import imapclient

from ns8_imapsync.imap.connection import close_quietly, describe, open_session
from ns8_imapsync.imap.errors import AuthenticationFailed, TLSFailed
from ns8_imapsync.imap.folders import Folder, select_folder

from .config import Account, ServerConfig, TlsOptions, endpoint
from .pool import AccountFailed

CERT_HINT = ("; the certificate is verified by default: pass --ca-file with the server's CA, "
             "or --insecure to accept a self-signed certificate")


def failure_text(exc: BaseException, server: ServerConfig, account: Account, tls: TlsOptions) -> str:
    text = describe(exc, endpoint(server, account.email, tls), account.password)
    if isinstance(exc, TLSFailed) and tls.verify and "certificate" in text.lower():
        text = text.rstrip(".") + CERT_HINT
    return text


@contextmanager
def account_session(server: ServerConfig, account: Account, tls: TlsOptions,
                    raise_auth: bool = False) -> Iterator[imapclient.IMAPClient]:
    """A logged-in session for ``account``; failures become :class:`AccountFailed`
    (or, with ``raise_auth``, an :class:`AuthenticationFailed` is re-raised as is so
    the caller can provision the mailbox and retry)."""
    try:
        client = open_session(endpoint(server, account.email, tls), account.password)
    except AuthenticationFailed as exc:
        if raise_auth:
            raise
        raise AccountFailed(failure_text(exc, server, account, tls)) from None
    except Exception as exc:
        raise AccountFailed(failure_text(exc, server, account, tls)) from None
    client.normalise_times = False  # keep INTERNALDATE's own offset
    try:
        yield client
    except (imaplib.IMAP4.abort, OSError) as exc:
        raise AccountFailed(f"the connection to {server.where} broke: {describe(exc, endpoint(server, account.email, tls), account.password)}") from None
    finally:
        close_quietly(client)


def examine(client: imapclient.IMAPClient, folder: Folder | str) -> dict:
    """Read-only SELECT: no flag changes, no \\Recent taken, nothing expunged."""
    return select_folder(client, folder, readonly=True)


def select(client: imapclient.IMAPClient, name: str) -> dict:
    return client.select_folder(name)
