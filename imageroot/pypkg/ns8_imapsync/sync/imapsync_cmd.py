"""The imapsync 2.229 command line for one SyncPlan (a list, never a shell string).

Rules that hold for every argv built here:

* no password ever: imapsync reads them from ``--passfile1``/``--passfile2``
  (first line of the file); the command line is echoed in the log;
* every value that comes from a user (host, user, regex) is glued to its option
  as ``--opt=value``: Getopt::Long then takes it as the value even when it starts
  with ``-``, so a remote user ``-x`` or a host ``--delete2`` can never become a
  flag; values with control characters (a newline could forge log lines in the
  echoed command line) and empty host/user values (imapsync turns a run without
  ``--user1`` into a harmless-looking ``--justconnect`` that exits 0) are refused;
* paths are absolute: imapsync changes its directory to ``/var/tmp/uid_<euid>``
  when it detects a container (spec section 1).

What the Python post-steps (not done by imapsync, see ``build_argv``) rely on:
inbox mode selects only UNSEEN host1 INBOX messages and never resyncs flags, so
marking them ``\\Seen`` on host1 after the run is what stops the next run from
copying them again; remote deletions are never imapsync's (no ``--delete1``):
the post-step deletes only what it finds copied on the local server.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from imapclient import imap_utf7

from ns8_imapsync.sync.plan import SyncPlan

# Shared/ and Public/ namespaces are never synced. The reference module excludes
# ``^Shared(/.*)?$|^Public(/.*)?$``; imapsync matches the raw host1 names, whose
# separator may be "." or "\\" as well, so the separator is a class here. This is
# a superset of the reference and the native engine's rule for an unknown separator.
ALWAYS_EXCLUDE_ARGS = (r"^Shared(?:[/.\\].*)?$", r"^Public(?:[/.\\].*)?$")

# --delete2folders must never delete the local server's shared namespaces, which
# host1 never has; imapsync evals this value as a Perl match (a constant, never user text).
DELETE2FOLDERS_BUT_NOT = r"m{^(?:Shared|Public)(?:[/.\\].*)?$}"

_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_SECURITY_FLAGS = {"ssl": "--ssl{n}", "tls": "--tls{n}", "": None}


class ArgvError(ValueError):
    """The plan cannot be turned into a safe imapsync command line."""


def _text(option: str, value: str, *, allow_empty: bool = False) -> str:
    """``--option=value`` after refusing values that would be unsafe or change the run's meaning."""
    if not isinstance(value, str):
        raise ArgvError(f"{option}: expected a string, got {type(value).__name__}")
    if not value and not allow_empty:
        raise ArgvError(f"{option}: the value is empty")
    if _CONTROL.search(value):
        raise ArgvError(f"{option}: the value contains a control character")
    return f"{option}={value}"


def _port(option: str, port: int) -> str:
    if isinstance(port, bool) or not isinstance(port, int) or not 1 <= port <= 65535:
        raise ArgvError(f"{option}: {port!r} is not a TCP port")
    return f"{option}={port}"


def _path(option: str, path: Path) -> str:
    return _text(option, os.fspath(Path(path).absolute()))


def _security(security: str, n: int) -> list[str]:
    """``--ssl1`` (IMAPS), ``--tls1`` (STARTTLS required) or nothing.

    Nothing means imapsync still goes to TLS when STARTTLS is announced (its
    default, like the native engine's opportunistic TLS), so a password does not
    travel in clear when the server can avoid it. Certificates are not verified
    (imapsync's default SSL_VERIFY_NONE), as the reference module does.
    """
    if security not in _SECURITY_FLAGS:
        raise ArgvError(f"unknown security {security!r} (use 'ssl', 'tls' or '')")
    flag = _SECURITY_FLAGS[security]
    return [flag.format(n=n)] if flag else []


def mutf7_variant(pattern: str) -> str | None:
    """The pattern with its non-ASCII (and ``&``) runs in modified UTF-7, when that keeps its meaning.

    imapsync matches raw host1 names (``Projets.R&AOk-unions``) while the native
    engine also tries decoded ones (``Projets.Réunions``); adding this variant makes
    a pattern typed with accents exclude the same folders under both engines. A
    run inside a character class or followed by a quantifier would change meaning
    once encoded, so no variant is given then (the decoded form is still passed).
    """
    if pattern.isascii() and "&" not in pattern:
        return None
    in_class = escaped = False
    for i, ch in enumerate(pattern):
        if not ch.isascii() or ch == "&":
            if in_class or pattern[i + 1 : i + 2] in ("*", "+", "?", "{"):
                return None
        elif escaped:
            pass
        elif ch == "[":
            in_class = True
        elif ch == "]":
            in_class = False
        escaped = ch == "\\" and not escaped
    encoded = imap_utf7.encode(pattern).decode("ascii")
    return encoded if encoded != pattern else None


def exclude_args(plan: SyncPlan) -> list[str]:
    """One ``--exclude`` per regex: joining them with ``|`` would let one user
    pattern with an unbalanced group swallow the others (and imapsync applies
    each ``--exclude`` separately anyway). Empty patterns are dropped: an empty
    regex matches every folder."""
    args = [f"--exclude={p}" for p in ALWAYS_EXCLUDE_ARGS]
    if plan.folder_mode != "exclusion":
        return args
    for pattern in plan.exclude:
        if not pattern:
            continue
        args.append(_text("--exclude", pattern))
        variant = mutf7_variant(pattern)
        if variant:
            args.append(_text("--exclude", variant))
    return args


def _deletion_args(plan: SyncPlan) -> list[str]:
    """Deletions, refusing the combinations that lose mail.

    * ``delete_local`` (``--delete2 --delete2folders``) is ignored in inbox mode:
      host1 then shows only its UNSEEN INBOX messages, so ``--delete2`` would wipe
      the local INBOX and ``--delete2folders`` every local folder.
    * ``delete_local`` with any remote deletion is refused: once a message is gone
      from host1, the next run's ``--delete2`` deletes its only copy (imapsync
      itself refuses ``--delete1 --delete2`` with exit 64).
    * never ``--delete1``: imapsync would delete a host1 message once it thinks
      host2 has it -- after an APPEND, before the Sieve script may discard the
      copy, or when host2 holds a copy the user marked ``\\Deleted``.  Remote
      deletions are the post-step's, under the rule both engines share
      (``deletion``): only while a copy is found on the local server.
    """
    args: list[str] = []
    delete_local = plan.delete_local and plan.folder_mode != "inbox"
    if delete_local and plan.delete_remote:
        raise ArgvError("deleting local messages missing on the remote cannot be combined "
                        "with deleting remote messages: the local copies would be deleted next")
    if delete_local:
        args += ["--delete2", "--delete2folders", f"--delete2foldersbutnot={DELETE2FOLDERS_BUT_NOT}"]
    return args


def _selection_args(plan: SyncPlan) -> list[str]:
    """Folders and messages to consider on host1.

    Never ``--maxage``: imapsync applies it as SEARCH SENTSINCE on the Date:
    header, so a window would hide every message whose Date: is older (mail
    restored or imported on the remote, delayed mail, a message moved to
    another remote folder) and, after the task is pointed at another remote
    account, that whole older mailbox. Like the reference module, every run
    examines every message of the selected folders.
    """
    if plan.folder_mode == "inbox":
        # Like the reference: only unseen INBOX messages. --noresyncflags: the
        # local INBOX is the user's live mailbox; host1 flags must not overwrite
        # what the user did locally (read, flagged) on messages already copied.
        return ["--folder=INBOX", "--search1=UNSEEN", "--noresyncflags"]
    if plan.folder_mode not in ("all", "exclusion"):
        raise ArgvError(f"unknown folder mode {plan.folder_mode!r}")
    return []


def default_pidfile(plan: SyncPlan) -> Path:
    """One pidfile per task (imapsync's default /tmp/imapsync.pid is shared by all runs)."""
    return plan.files.imapsync_pid


def build_argv(plan: SyncPlan, imapsync: str = "imapsync", pidfile: Path | None = None) -> list[str]:
    """The argv that runs one sync of ``plan`` unattended.

    Fixed options, and why:

    * ``--nolog``: we capture stdout ourselves; without it imapsync writes a second
      log under ``LOG_imapsync/`` in its directory outside a Docker context (podman
      has no ``/.dockerenv``).
    * ``--noreleasecheck``: no call home from the server.
    * ``--pidfile=F --pidfilelocking``: a per-task pidfile; a second run of the same
      task exits 8 instead of overwriting it; the engine's stop touches
      ``F``abort``<pid>`` so imapsync ends cleanly between two messages (exit 7).
    * folder sizes are kept at start (they give progress totals and the ETA lines
      the progress reads) and at end (the report's host2 side); they cost one
      RFC822.SIZE FETCH per folder and side, little next to the header FETCH of
      every message imapsync does on both sides at each run.
    * ``--gmail1`` when the plan says so (automap, Gmail headers, throttling).
    """
    src, dst = plan.source, plan.target
    argv = [
        imapsync,
        "--nolog",
        "--noreleasecheck",
        _path("--pidfile", pidfile if pidfile is not None else default_pidfile(plan)),
        "--pidfilelocking",
        _text("--host1", src.host),
        _port("--port1", src.port),
        _text("--user1", src.user),
        _path("--passfile1", plan.source_password_file),
        *_security(src.security, 1),
        _text("--host2", dst.host),
        _port("--port2", dst.port),
        _text("--user2", dst.user),
        _path("--passfile2", plan.target_password_file),
        *_security(dst.security, 2),
    ]
    if plan.gmail:
        argv.append("--gmail1")
    argv += _selection_args(plan)
    argv += exclude_args(plan)
    argv += _deletion_args(plan)
    # plan.sieve_enabled adds nothing: FILTER=SIEVE on the copied INBOX messages is a
    # Python post-step (the reference's --sievedelivery2 needs a patched imapsync).
    return argv
