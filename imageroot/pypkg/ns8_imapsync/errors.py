"""Error classes: their names, their words and their exit codes, in one place.

Two families:

* the *login* classes a remote login check ends with (create-task,
  import-csv-tasks).  The five names are the ones the reference ns8-imapsync
  module returns in create-task's validation-failed payload and its UI
  translates as ``tasks.<error>``, so they never change; so do their exit codes.
* the *run* classes a sync run ends with (``RunReport.error_class``), shown in
  the task's status, history and ``list-tasks``.

Standard library only: the actions import it on the host, the engines in the
container.
"""

from __future__ import annotations

# ---- login classes (create-task) -----------------------------------------------
BAD_USER_CREDENTIALS = "bad_user_credentials"
CHECK_HOSTNAME_OR_TCP_PORT = "Check_hostname_or_tcp_port"
SSL_ENCRYPTION_ERROR = "SSL_encryption_error"
STARTTLS_NOT_ALLOWED_USE_IMAPS = "STARTTLS_not_allowed_use_IMAPS"
VALIDATION_FAILED = "validation_failed"

LOGIN_CLASSES: tuple[str, ...] = (
    BAD_USER_CREDENTIALS,
    CHECK_HOSTNAME_OR_TCP_PORT,
    SSL_ENCRYPTION_ERROR,
    STARTTLS_NOT_ALLOWED_USE_IMAPS,
    VALIDATION_FAILED,
)

#: create-task's exit code for each (the reference module's 30Imapsync_validation values)
LOGIN_EXIT_CODES: dict[str, int] = {
    BAD_USER_CREDENTIALS: 2,
    CHECK_HOSTNAME_OR_TCP_PORT: 3,
    SSL_ENCRYPTION_ERROR: 4,
    STARTTLS_NOT_ALLOWED_USE_IMAPS: 4,
    VALIDATION_FAILED: 1,
}

#: in words, for a terminal (import-csv-tasks) and the logs: always about the remote login
LOGIN_WORDS: dict[str, str] = {
    BAD_USER_CREDENTIALS: "the remote server refused the user or password",
    CHECK_HOSTNAME_OR_TCP_PORT: "the remote host or TCP port could not be reached",
    SSL_ENCRYPTION_ERROR: "the encryption does not match what the remote server expects",
    STARTTLS_NOT_ALLOWED_USE_IMAPS: "the remote server refuses STARTTLS, use IMAPS (ssl, port 993) instead",
    VALIDATION_FAILED: "the remote login failed",
}

# ---- run classes ------------------------------------------------------------------
BAD_MASTER_CREDENTIALS = "bad_master_credentials"
CONNECTION_LOST = "connection_lost"
DELETE_LOCAL_BRAKE = "delete_local_brake"
SIEVE_UNAVAILABLE = "sieve_unavailable"
MESSAGE_ERRORS = "message_errors"
STOPPED = "stopped"
STALLED = "stalled"
CRASHED = "crashed"
ENGINE_ERROR = "engine_error"

#: a run's error class in plain words for the status line ("" = the run succeeded);
#: the login classes are generic here, a run's failing server may be either side
RUN_WORDS: dict[str, str] = {
    "": "",
    BAD_USER_CREDENTIALS: "the remote server refused the user name or password",
    BAD_MASTER_CREDENTIALS: "the local mail server refused the master login",
    CHECK_HOSTNAME_OR_TCP_PORT: "the server could not be reached",
    SSL_ENCRYPTION_ERROR: "the TLS connection failed",
    STARTTLS_NOT_ALLOWED_USE_IMAPS: "the server does not allow STARTTLS: use IMAPS",
    CONNECTION_LOST: "the connection was lost during the sync",
    DELETE_LOCAL_BRAKE: "too many local messages would be deleted: the run stopped without deleting",
    SIEVE_UNAVAILABLE: "the local mail server does not offer FILTER=SIEVE",
    MESSAGE_ERRORS: "some messages could not be copied",
    STOPPED: "the run was stopped",
    STALLED: "the run made no progress and was ended",
    CRASHED: "the run ended unexpectedly (process killed or container restarted)",
    ENGINE_ERROR: "the sync engine failed",
    VALIDATION_FAILED: "the task could not be run",
}

#: the classes a run that never got past its logins ends with (post-steps would fail alike)
SESSION_FAILURES = frozenset({BAD_USER_CREDENTIALS, BAD_MASTER_CREDENTIALS, CHECK_HOSTNAME_OR_TCP_PORT,
                              SSL_ENCRYPTION_ERROR, STARTTLS_NOT_ALLOWED_USE_IMAPS, VALIDATION_FAILED})


def login_exit_code(error_class: str) -> int:
    """create-task's exit code for a refused login (1 for anything unknown)."""
    return LOGIN_EXIT_CODES.get(error_class, 1)


def login_words(error_class: str) -> str:
    return LOGIN_WORDS.get(error_class, error_class)


def run_words(error_class: str) -> str:
    return RUN_WORDS.get(error_class, error_class)


class TaskError(ValueError):
    """A value that cannot be part of a task; `field` names the input field."""

    def __init__(self, field: str, error: str, value: object) -> None:
        super().__init__(f"{field}: {error}")
        self.field = field
        self.error = error
        self.value = value
