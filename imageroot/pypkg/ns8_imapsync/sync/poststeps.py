"""What an unpatched imapsync cannot do, done in Python around its run.

The reference module relied on a patched imapsync (``--setflag1``,
``--sievedelivery2``, ``--delete1older``).  Here imapsync stays stock and these
steps open their own sessions, before and after it:

Before the run (``precheck``)
    * with Sieve: host2 must offer ``FILTER=SIEVE``, else the run does not start
      (``sieve_unavailable``) rather than copy messages that then never get filtered;
    * with delete_local: the brake (``brake``) on counts from STATUS.  imapsync's
      ``--delete2`` would delete at least host2 - host1 messages of a folder and
      every local folder absent on the remote (``--delete2folders``); when that
      trips the brake, imapsync is not started at all.

After the run (``after_run``); every message is checked on the servers, never
taken from imapsync's output alone:
    * completion (``completion``): each synced folder is compared by identity
      (the native engine's multiset rule) and what imapsync left out -- messages
      with neither Message-Id nor Received, the second of two identical
      messages -- is appended; each folder's tally goes into the report;
    * inbox mode: each UNSEEN host1 INBOX message whose identity is in the host2
      INBOX is marked ``\\Seen`` on host1, so the next run's ``--search1=UNSEEN``
      never offers it again;
    * Sieve: the host2 INBOX copies made by this run (their host2 UIDs come from
      imapsync's ``copied to`` lines and from the completion), plus any left
      pending by an interrupted run, go through ``UID FILTER SIEVE DELIVERY``;
      the originals the script filed elsewhere (it marks them ``\\Deleted``) are
      expunged.  Messages that were ``\\Deleted`` before the filter are never
      expunged by us.  Pending UIDs are kept in ``<task>.sieve.json`` until
      filtered, so a crash or a stop between the copy and the filter is finished
      by the next run;
    * delete_remote / delete_remote_older N (imapsync gets no ``--delete1``):
      the one deletion rule of both engines (``deletion``): a host1 message (in
      inbox mode, one that was unseen, i.e. this run's business; with N, older
      than N days) is deleted only while its copy is found on the local server
      -- in the mapped folder, or with Sieve in any local folder.
"""

from __future__ import annotations

import contextlib
import imaplib
import json
import threading
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import imapclient

from ns8_imapsync import errors
from ns8_imapsync.errors import (
    BAD_MASTER_CREDENTIALS,
    CONNECTION_LOST,
    DELETE_LOCAL_BRAKE,
    MESSAGE_ERRORS,
    SIEVE_UNAVAILABLE,
    VALIDATION_FAILED,
)
from ns8_imapsync.files import write_atomic
from ns8_imapsync.imap import reads, sieve, wire
from ns8_imapsync.imap.connection import close_quietly, describe, open_session
from ns8_imapsync.imap.errors import BAD_USER_CREDENTIALS, classify
from ns8_imapsync.imap.expunge import expunge_uids
from ns8_imapsync.imap.folders import Folder, folder_arg, folder_encoding, list_folders, select_folder
from ns8_imapsync.imap.messages import uid_search_all, uid_sets
from ns8_imapsync.sync import completion, deletion, folderpairs
from ns8_imapsync.sync.brake import FolderLoss, brake_reasons
from ns8_imapsync.sync.engine import HeartbeatFn
from ns8_imapsync.sync.imapsync_output import CopiedMessage
from ns8_imapsync.sync.plan import SyncPlan, read_password
from ns8_imapsync.sync.report import RunReport

SEEN, DELETED = "\\Seen", "\\Deleted"
Log = Callable[[str], object]


class StepFailed(Exception):
    """A post-step could not run; ``error_class`` says why (the text is for the log)."""

    def __init__(self, error_class: str, text: str) -> None:
        super().__init__(text)
        self.error_class = error_class


@dataclass
class Sessions:
    c1: imapclient.IMAPClient
    c2: imapclient.IMAPClient


@contextlib.contextmanager
def sessions(plan: SyncPlan, heartbeat: HeartbeatFn | None = None) -> Iterator[Sessions]:
    """Both sessions, or StepFailed with the error class a run would report;
    ``heartbeat`` hears of every byte moved (the run's watchdog)."""
    try:
        pw1, pw2 = read_password(plan.source_password_file), read_password(plan.target_password_file)
    except OSError as exc:
        raise StepFailed(VALIDATION_FAILED, f"a password file cannot be read ({exc.strerror or exc})") from exc
    c1 = c2 = None
    try:
        try:
            c1 = open_session(plan.source, pw1)
        except Exception as exc:
            raise StepFailed(classify(exc), describe(exc, plan.source, pw1)) from exc
        try:
            c2 = open_session(plan.target, pw2)
        except Exception as exc:
            error_class = classify(exc)
            if error_class == BAD_USER_CREDENTIALS:
                error_class = BAD_MASTER_CREDENTIALS
            raise StepFailed(error_class, describe(exc, plan.target, pw2)) from exc
        for client in (c1, c2):
            wire.instrument(client, heartbeat)
        yield Sessions(c1, c2)
    finally:
        close_quietly(c2)
        close_quietly(c1)


def needs_precheck(plan: SyncPlan) -> bool:
    return plan.sieve_enabled or (plan.delete_local and plan.folder_mode != "inbox")


def limits_of(plan: SyncPlan) -> reads.Limits:
    """Read bounds of the post-steps (the native engine's defaults)."""
    return reads.Limits()


def _failed(error_class: str, errors: list[str]) -> RunReport:
    return RunReport(errors=errors, error_class=error_class, exit_code=1)


# ---------------------------------------------------------------------------------- before
def precheck(plan: SyncPlan, log: Log) -> RunReport | None:
    """None when imapsync may run; otherwise the report of a run that did not start."""
    if not needs_precheck(plan):
        return None
    try:
        with sessions(plan) as s:
            if plan.sieve_enabled and not sieve.available(s.c2):
                return _failed(SIEVE_UNAVAILABLE,
                               [f"the local server {plan.target.where} does not offer FILTER=SIEVE"])
            if plan.delete_local and plan.folder_mode != "inbox":
                reasons = _brake_on_counts(s, plan, log)
                if reasons:
                    for line in reasons:
                        log(f"delete_local brake: {line}")
                    return _failed(DELETE_LOCAL_BRAKE, [f"delete_local brake: {r}" for r in reasons])
    except StepFailed as exc:
        return _failed(exc.error_class, [str(exc)])
    except (imaplib.IMAP4.error, OSError) as exc:
        return _failed(CONNECTION_LOST, [f"the pre-run check failed: {exc}"])
    return None


def _messages(client: imapclient.IMAPClient, folder: Folder | str) -> int:
    arg, encode = folder_arg(folder)
    with folder_encoding(client, encode):
        return int(client.folder_status(arg, ["MESSAGES"]).get(b"MESSAGES", 0))


def _brake_on_counts(s: Sessions, plan: SyncPlan, log: Log) -> list[str]:
    found = folderpairs.discover(s.c1, s.c2, plan, log)
    existing2 = {f.name for f in found.folders2}
    remote: Counter[str] = Counter()
    for pair in found.pairs:
        remote[pair.target] += _messages(s.c1, pair.folder)
    losses = []
    for target, n1 in sorted(remote.items()):
        n2 = _messages(s.c2, target) if target in existing2 or target.upper() == "INBOX" else 0
        losses.append(FolderLoss(target, n1, n2, max(0, n2 - n1)))
    orphans = [(f.name, _messages(s.c2, f)) for f in folderpairs.local_orphans(found)]
    return brake_reasons(losses, orphans, plan.delete_local_max_share)


# ---------------------------------------------------------------------------------- after
def verified(wanted: dict[int, str], present: Iterable[str]) -> list[int]:
    """The UIDs of ``wanted`` whose identity has a copy in ``present``, one copy each."""
    available = Counter(present)
    out = []
    for uid in sorted(wanted):
        if available[wanted[uid]] > 0:
            available[wanted[uid]] -= 1
            out.append(uid)
    return out


def after_run(plan: SyncPlan, report: RunReport, copied: Sequence[CopiedMessage], log: Log,
              stop: threading.Event, heartbeat: HeartbeatFn | None = None) -> None:
    """Run the post-steps and record what they did in ``report``.

    A failure here is added to the report's errors (and sets its error class if
    the run had none); it never undoes what imapsync copied.  After a stop the
    inbox steps still run (a few commands: the copies made so far are marked and
    filtered); the completion and the deletions do not.
    """
    if report.error_class in errors.SESSION_FAILURES:  # the post-steps would fail the same way
        return
    inbox = plan.folder_mode == "inbox"
    try:
        with sessions(plan, heartbeat) as s:
            unseen = _unseen_inbox(s) if inbox else set()  # before marking: this run's business
            done = None
            if not stop.is_set():
                done = completion.complete(s.c1, s.c2, plan, log, stop, limits_of(plan))
                _record_completion(report, done, log)
            if inbox:
                mark_seen(s, report, log)
                if plan.sieve_enabled:
                    filter_copies(s, plan, [*copied, *(done.appended if done else [])], report, log)
            if plan.delete_remote and done is not None and not stop.is_set():
                delete_remote_verified(s, plan, done, unseen, report, log)
    except StepFailed as exc:
        _record(report, exc.error_class, str(exc), log)
    except (imaplib.IMAP4.error, OSError) as exc:
        _record(report, CONNECTION_LOST, f"a post-sync step failed: {exc}", log)
    report.require_complete()


def _unseen_inbox(s: Sessions) -> set[int]:
    s.c1.select_folder("INBOX", readonly=True)
    return set(s.c1.search(["UNSEEN"]))


def _record_completion(report: RunReport, done: completion.Completion, log: Log) -> None:
    for line in done.notes:
        log(f"completion: {line}")
    for line in done.errors:
        log(f"ERROR {line}")
    report.errors.extend(done.errors)
    if done.errors and not report.error_class:
        report.error_class = MESSAGE_ERRORS
        report.exit_code = report.exit_code or 1
    report.folders = done.tallies
    report.copied += len(done.appended)
    report.copied_bytes += done.copied_bytes
    report.host2.messages += len(done.appended)
    report.host2.bytes += done.copied_bytes


def _record(report: RunReport, error_class: str, text: str, log: Log) -> None:
    log(f"ERROR {text}")
    report.errors.append(text)
    if not report.error_class:
        report.error_class = error_class
        report.exit_code = report.exit_code or 1


def mark_seen(s: Sessions, report: RunReport, log: Log) -> int:
    """Inbox mode: UNSEEN host1 INBOX messages that are in the host2 INBOX become \\Seen on host1.

    Identity as everywhere else (header signature, or content hash for a
    message with neither header), so a copy made by the completion step is
    marked too."""
    limits = reads.Limits()
    s.c1.select_folder("INBOX")
    unseen = s.c1.search(["UNSEEN"])
    if not unseen:
        return 0
    wanted = {uid: m.identity for uid, m in reads.identify(s.c1, unseen, limits).items()}
    s.c2.select_folder("INBOX", readonly=True)
    present = [m.identity for m in reads.identify(s.c2, sorted(uid_search_all(s.c2)), limits).values()]
    done = verified(wanted, present)
    for uidset in uid_sets(done):
        s.c1.add_flags(uidset, [SEEN], silent=True)
    if done:
        log(f"INBOX: {len(done)} remote message(s) verified on the local server and marked \\Seen")
    if len(done) < len(unseen):
        log(f"INBOX: {len(unseen) - len(done)} unseen remote message(s) are not on the local server "
            "and stay unseen")
    return len(done)


class SievePending:
    """host2 INBOX UIDs copied but not yet filtered, kept across runs (``<task>.sieve.json``)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def load(self, uidvalidity: int) -> set[int]:
        try:
            data = json.loads(self.path.read_text())
        except (OSError, ValueError):
            return set()
        if not isinstance(data, dict) or data.get("uidvalidity") != uidvalidity:
            return set()  # the folder was recreated: its old UIDs mean nothing
        return {u for u in data.get("uids", []) if isinstance(u, int) and u > 0}

    def save(self, uidvalidity: int, uids: Iterable[int]) -> None:
        uids = sorted(set(uids))
        if not uids:
            with contextlib.suppress(FileNotFoundError):
                self.path.unlink()
            return
        write_atomic(self.path, json.dumps({"uidvalidity": uidvalidity, "uids": uids}))


def filter_copies(s: Sessions, plan: SyncPlan, copied: Sequence[CopiedMessage], report: RunReport,
                  log: Log) -> int:
    """Sieve: run the user's script on this run's INBOX copies (and earlier pending ones)."""
    if not sieve.available(s.c2):
        raise StepFailed(SIEVE_UNAVAILABLE, f"the local server {plan.target.where} does not offer FILTER=SIEVE")
    info = s.c2.select_folder("INBOX")
    uidvalidity = int(info.get(b"UIDVALIDITY", 0))
    pending = SievePending(plan.files.sieve_pending)
    uids = pending.load(uidvalidity) | {c.uid2 for c in copied
                                        if c.uid2 and c.folder2.upper() == "INBOX" and c.folder1.upper() == "INBOX"}
    if not uids:
        return 0
    pending.save(uidvalidity, uids)  # before the filter: a crash now is finished by the next run
    present = set()
    for uidset in uid_sets(uids):
        present.update(s.c2.search(["UID", uidset]))
    before = sieve.deleted_among(s.c2, present)  # \Deleted before the filter: never expunged by us
    todo = sorted(present - before)
    for refusal in sieve.deliver(s.c2, todo):
        log(f"WARNING the Sieve filter failed, messages stay in INBOX: {refusal}")
    filed = sorted(sieve.deleted_among(s.c2, todo)) if todo else []
    if filed and not expunge_uids(s.c2, filed):
        log("INBOX: the local server lacks UIDPLUS and other messages are marked deleted: "
            "the originals the Sieve script filed stay marked \\Deleted")
    pending.save(uidvalidity, ())
    log(f"INBOX: {len(todo)} copied message(s) passed through the Sieve script, {len(filed)} filed elsewhere")
    return len(filed)


def delete_remote_verified(s: Sessions, plan: SyncPlan, done: completion.Completion, unseen: set[int],
                           report: RunReport, log: Log) -> int:
    """delete_remote[_older]: expunge on host1 what has a copy on host2 now (``deletion``).

    Folders where the completion met a problem (an incomplete listing, a
    message it could not read) are left alone for this run."""
    limits = limits_of(plan)
    local = list_folders(s.c2) if plan.sieve_enabled else []
    # imapsync carries remote flags to the copies of folder mode; a Sieve script may
    # set its own flags, and in inbox mode the user reads the copies: no comparison
    carries_flags = plan.folder_mode != "inbox" and not plan.sieve_enabled
    total = 0
    for pair in done.pairs:
        if pair.folder.raw_text in done.incomplete:
            log(f"folder {pair.folder.name}: nothing deleted on the remote server in this run (see the errors)")
            continue
        select_folder(s.c1, pair.folder)
        uids = unseen if plan.folder_mode == "inbox" else uid_search_all(s.c1)
        if plan.delete_remote_older > 0 and uids:
            uids = uids & deletion.older_than(s.c1, plan.delete_remote_older)
        wanted = deletion.remote_wanted(s.c1, sorted(uids), limits)
        places = deletion.places_for(pair.target, local, plan.sieve_enabled)
        total += deletion.delete_verified(s.c1, s.c2, pair.folder, wanted, places, limits, log,
                                          same_flags=carries_flags).deleted
    report.deleted_host1 += total
    return total
