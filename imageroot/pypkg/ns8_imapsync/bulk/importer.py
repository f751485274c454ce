"""import: put the exported messages into the target accounts, exactly once.

Idempotent by identity, not by counts or by a journal: before appending to a
folder we read the identity of every message already there (imapsync's
Message-Id + Received signature in one batched FETCH; the CRLF-normalised
content hash only for messages with neither header) and match the export
against it as a multiset.  Only unmatched messages are appended.  So a re-run
after a crash, a kill -9 or a partial run appends what is missing and never a
duplicate, and mail delivered to the target meanwhile is left alone.

Folders are created with the target's delimiter and namespace prefix
(``imap.folders.map_name``); messages keep their flags (minus ``\\Recent``) and
INTERNALDATE.  Large messages are streamed from disk.  Nothing here needs the
UID of a copy, so a target without UIDPLUS (no APPENDUID) is fine: a stored
message counts as appended.  A target folder holding a message the server
does not deliver within its announced size cannot be matched, so nothing is
appended to it (that would risk a duplicate) and the account fails.
"""

from __future__ import annotations

import imaplib
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import imapclient

from ns8_imapsync.imap.errors import AuthenticationFailed
from ns8_imapsync.imap.folders import always_excluded, list_folders, map_name, namespace_info
from ns8_imapsync.imap.messages import (
    AppendRefused,
    append_message,
    clean_flags,
    file_chunks,
    mailbox_arg,
    parse_uid_set,
    uid_search_all,
    uid_sets,
)
from ns8_imapsync.imap.reads import Limits, RemoteMessage, fetch_meta, identify

from . import exitcodes
from .config import Account
from .context import RunContext
from .pool import AccountFailed, AccountResult, Stopped
from .runlog import RunLog
from .session import account_session
from .store import AccountStore, FolderMeta, Sidecar, StoreError

LOGIN_RETRIES_AFTER_CREATE = 3


@dataclass
class ImportContext(RunContext):
    provisioner: object | None = None  # directadmin.Provisioner


@dataclass
class LocalFolder:
    dir: Path
    meta: FolderMeta
    messages: list[tuple[Path, Sidecar]]
    target: str = ""


def load_export(store: AccountStore) -> tuple[dict, list[LocalFolder]]:
    """The account's exported folders and messages; AccountFailed if there is no export."""
    if not store.dir.is_dir():
        raise AccountFailed(f"nothing exported for this account in {store.dir}", exitcodes.ENVIRONMENT)
    try:
        meta = store.read_account_meta()
        folders = [LocalFolder(d, m, store.sidecars(d)) for d, m in store.folders()]
    except StoreError as exc:
        raise AccountFailed(f"the export is damaged ({exc}); run the audit", exitcodes.AUDIT_FAILED) from None
    return meta, folders


def map_targets(client: imapclient.IMAPClient, meta: dict, folders: list[LocalFolder]) -> tuple[str, str]:
    """Fill ``LocalFolder.target``: the folder's name on the target server."""
    prefix2, delim2 = namespace_info(client)
    prefix1 = str(meta.get("prefix", ""))
    for lf in folders:
        delim1 = lf.meta.delimiter or str(meta.get("delimiter", ""))
        lf.target = map_name(lf.meta.name, prefix1, delim1, prefix2, delim2)
    return prefix2, delim2


def create_folders(client: imapclient.IMAPClient, folders: list[LocalFolder], delim2: str,
                   result: AccountResult, log: RunLog, email: str) -> None:
    existing = {f.name for f in list_folders(client)} | {"INBOX"}
    for target in sorted({lf.target for lf in folders}):
        if target in existing or always_excluded(target, delim2 or None):
            continue
        try:
            client.create_folder(target)
        except imaplib.IMAP4.abort:
            raise
        except imaplib.IMAP4.error as exc:
            if "ALREADYEXISTS" not in str(exc).upper():
                raise AccountFailed(f"folder {target} could not be created on the target: {exc}") from None
        try:
            client.subscribe_folder(target)
        except imaplib.IMAP4.abort:
            raise
        except imaplib.IMAP4.error:
            pass
        existing.add(target)
        result.add("folders_created")
        log.detail(f"{email}: created folder {target}")


def parse_date(text: str | None) -> datetime | None:
    if not text:
        return None
    try:
        return datetime.fromisoformat(text)
    except ValueError:
        return None


def match(local: Sequence[tuple[Path, Sidecar]], present: dict[int, RemoteMessage],
          key_local: Callable[[Sidecar], object], key_remote: Callable[[RemoteMessage], object],
          pairs: list[tuple[Sidecar, RemoteMessage]] | None = None,
          ) -> tuple[list[tuple[Path, Sidecar]], list[RemoteMessage]]:
    """Multiset matching: (exported messages with no counterpart, target messages with none).

    n exported messages with one key need n target messages with that key;
    ``pairs``, when given, receives each exported message with its counterpart."""
    pool: dict[object, list[RemoteMessage]] = defaultdict(list)
    for uid in sorted(present):
        pool[key_remote(present[uid])].append(present[uid])
    missing = []
    for item in local:
        bucket = pool.get(key_local(item[1]))
        if bucket:
            found = bucket.pop(0)
            if pairs is not None:
                pairs.append((item[1], found))
        else:
            missing.append(item)
    extra = sorted((m for bucket in pool.values() for m in bucket), key=lambda m: m.uid)
    return missing, extra


def target_state(client: imapclient.IMAPClient, target: str, limits: Limits, readonly: bool = False,
                 deep: bool = False, *, refused: dict[int, str] | None = None) -> dict[int, RemoteMessage] | None:
    """Identities of the target folder's messages (it stays selected); None if it does not exist.
    Messages the server does not deliver within their announced size are left out (``refused``)."""
    try:
        info = client.select_folder(target, readonly=readonly)
    except imaplib.IMAP4.abort:
        raise
    except imaplib.IMAP4.error:
        return None
    uids = uid_search_all(client) if int(info.get(b"EXISTS", 0)) else set()
    return identify(client, sorted(uids), limits, all_content=deep, refused=refused)


def update_flags(client: imapclient.IMAPClient, pairs: Sequence[tuple[Sidecar, RemoteMessage]],
                 problems: list[str], target: str) -> int:
    """The exported flags set on the (selected) target's copies that differ: a
    re-import after a fresh export carries what the user changed on the source
    since the last import (both sides as `clean_flags` spells them, so no
    ``\\Recent``); returns how many changed; a STORE the target refuses is added to ``problems``."""
    if not pairs:
        return 0
    current = {uid: clean_flags(item.get(b"FLAGS", ()))
               for uid, item in fetch_meta(client, [m.uid for _, m in pairs], "(UID FLAGS)").items()}
    wanted: dict[tuple[str, ...], list[int]] = defaultdict(list)
    for side, msg in pairs:
        want = clean_flags(side.flags)
        if msg.uid in current and want != current[msg.uid]:
            wanted[want].append(msg.uid)
    changed = 0
    for flags, uids in wanted.items():
        for uid_set in uid_sets(uids):
            try:
                client.set_flags(uid_set, list(flags), silent=True)
            except imaplib.IMAP4.abort:
                raise
            except imaplib.IMAP4.error as exc:  # the copies stay, with the flags they had
                problems.append(f"{target}: flags {' '.join(flags) or '(none)'} refused by the target: {exc}")
                continue
            changed += len(parse_uid_set(uid_set.encode()))
    return changed


def append_all(client: imapclient.IMAPClient, target: str, items: Sequence[tuple[Path, Sidecar]],
               account: Account, result: AccountResult, ctx) -> int:
    """APPEND messages to the (selected) target folder; returns how many were appended."""
    mailbox = mailbox_arg(target)
    appended = 0
    for eml, side in items:
        if ctx.stop.is_set():
            raise Stopped()
        when = parse_date(side.internaldate)
        try:
            with open(eml, "rb") as f:
                if side.size <= ctx.limits.large_message:
                    data = f.read()
                    append_message(client, mailbox, side.flags, when, len(data), [data])
                else:
                    append_message(client, mailbox, side.flags, when, side.size,
                                   file_chunks(f, ctx.limits.chunk_size))
        except AppendRefused as exc:
            result.problems.append(f"{target}: message u{side.uid} ({side.size} bytes) refused: {exc}")
            result.add("append_refused")
            ctx.log.error(f"{account.email}: {target}: message u{side.uid} refused by the target: {exc}")
            continue
        except OSError as exc:
            if isinstance(exc, ConnectionError | TimeoutError):
                raise
            result.problems.append(f"{target}: {eml.name} unreadable: {exc.strerror}")
            result.add("append_refused")
            continue
        appended += 1
        result.add("appended")
        result.add("bytes", side.size)
        ctx.progress.update(account.email, 1, side.size, target)
    return appended


def with_target_session(account: Account, ctx, work: Callable[[imapclient.IMAPClient], None]) -> None:
    """Log in to the target and run ``work``; with DirectAdmin provisioning, an
    authentication failure (only that) creates the mailbox and logs in again."""
    prov = ctx.provisioner
    try:
        with account_session(ctx.server, account, ctx.tls, raise_auth=prov is not None) as client:
            work(client)
        return
    except AuthenticationFailed:
        pass
    from .directadmin import DirectAdminError
    try:
        outcome = prov.ensure(account.email, account.password)
    except DirectAdminError as exc:
        raise AccountFailed(f"login failed and the panel could not create the mailbox: {exc}") from None
    ctx.log.info(f"{account.email}: login refused; mailbox on the panel: {outcome}")
    if outcome == "would-create":
        raise AccountFailed("login refused and the mailbox does not exist (dry run: not created)")
    for attempt in range(LOGIN_RETRIES_AFTER_CREATE):
        try:
            with account_session(ctx.server, account, ctx.tls,
                                 raise_auth=attempt + 1 < LOGIN_RETRIES_AFTER_CREATE) as client:
                work(client)
            return
        except AuthenticationFailed:
            time.sleep(1)  # a freshly created mailbox may take a moment to be known to IMAP


def import_account(account: Account, result: AccountResult, ctx: ImportContext) -> None:
    store = AccountStore(ctx.root, account.email)
    meta, folders = load_export(store)
    total = sum(len(lf.messages) for lf in folders)
    ctx.progress.total(account.email, total)

    def work(client: imapclient.IMAPClient) -> None:
        _, delim2 = map_targets(client, meta, folders)
        create_folders(client, folders, delim2, result, ctx.log, account.email)
        by_target: dict[str, list[tuple[Path, Sidecar]]] = defaultdict(list)
        for lf in folders:
            by_target[lf.target].extend(lf.messages)
        for target, items in by_target.items():
            if ctx.stop.is_set():
                raise Stopped()
            unreadable: dict[int, str] = {}
            present = target_state(client, target, ctx.limits, refused=unreadable)
            if present is None:
                raise AccountFailed(f"folder {target} cannot be selected on the target")
            if unreadable:
                _skip_folder(target, unreadable, account, result, ctx)
                continue
            pairs: list[tuple[Sidecar, RemoteMessage]] = []
            missing, _extra = match(items, present, lambda s: s.identity, lambda m: m.identity, pairs)
            already = len(items) - len(missing)
            result.add("already_there", already)
            result.add("flags_updated", update_flags(client, pairs, result.problems, target))
            ctx.progress.update(account.email, already, 0, target)
            appended = append_all(client, target, missing, account, result, ctx)
            ctx.log.detail(f"{account.email}: {target}: {appended} appended, {already} already there")

    with_target_session(account, ctx, work)
    ctx.log.info(f"{account.email}: imported {result.counts.get('appended', 0)} message(s), "
                 f"{result.counts.get('already_there', 0)} already on the target, "
                 f"{result.counts.get('folders_created', 0)} folder(s) created"
                 + (f", {result.counts['append_refused']} REFUSED" if result.counts.get("append_refused") else ""))
    if result.counts.get("append_refused"):
        raise AccountFailed(f"{result.counts['append_refused']} message(s) could not be imported")
    if result.counts.get("folders_skipped"):
        raise AccountFailed(f"{result.counts['folders_skipped']} target folder(s) hold unreadable messages; "
                            "nothing was appended to them")


def _skip_folder(target: str, unreadable: dict[int, str], account: Account, result: AccountResult,
                 ctx: ImportContext) -> None:
    """A target message we cannot identify might be a copy of one we would append."""
    for uid, reason in sorted(unreadable.items()):
        result.problems.append(f"{target}: target message UID {uid} unreadable: {reason}")
        ctx.log.error(f"{account.email}: {target}: target message UID {uid} unreadable: {reason}")
    ctx.log.error(f"{account.email}: {target}: nothing appended to this folder (it could create duplicates)")
    result.add("folders_skipped")
