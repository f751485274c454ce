"""IMAP layer of the sync container: sessions, error classes, folders, message identity.

Runs only inside the sync container (it needs imapclient); host-side code never imports it.
"""

from .connection import Endpoint, LoginCheck, check_login, connect, open_session
from .errors import (
    BAD_USER_CREDENTIALS,
    CHECK_HOSTNAME_OR_TCP_PORT,
    SSL_ENCRYPTION_ERROR,
    STARTTLS_NOT_ALLOWED_USE_IMAPS,
    VALIDATION_FAILED,
    ImapLayerError,
    classify,
    classify_imapsync_exit,
)
from .folders import (
    Folder,
    FolderStat,
    folder_stats,
    is_excluded,
    list_folders,
    map_name,
    namespace_info,
    totals,
)
from .identity import HEADER_FETCH, content_hash, header_from_fetch, header_signature

__all__ = [
    "BAD_USER_CREDENTIALS",
    "CHECK_HOSTNAME_OR_TCP_PORT",
    "HEADER_FETCH",
    "SSL_ENCRYPTION_ERROR",
    "STARTTLS_NOT_ALLOWED_USE_IMAPS",
    "VALIDATION_FAILED",
    "Endpoint",
    "Folder",
    "FolderStat",
    "ImapLayerError",
    "LoginCheck",
    "check_login",
    "classify",
    "classify_imapsync_exit",
    "connect",
    "content_hash",
    "folder_stats",
    "header_from_fetch",
    "header_signature",
    "is_excluded",
    "list_folders",
    "map_name",
    "namespace_info",
    "open_session",
    "totals",
]
