"""validate: prove the target holds exactly the exported messages, folder by folder.

A message is identified by its header signature (Message-Id + Received, as
imapsync) or, without those headers, by its content hash, *and* its size; with
``--verify-content`` every target message is downloaded and its SHA-256
compared too.  Matching is a multiset per target folder, so a missing copy of a
duplicated message is found.  Missing and extra messages are listed with
Message-ID, size and UID; any mismatch makes the exit code 5.
``--resync-missing`` appends exactly the missing messages and checks again.
A target message the server does not deliver within its announced size is a
mismatch too (UNREADABLE), and nothing is re-imported into its folder.
"""

from __future__ import annotations

import imaplib
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import imapclient

from ns8_imapsync.imap.folders import always_excluded, list_folders

from . import exitcodes
from .config import Account
from .importer import (
    ImportContext,
    append_all,
    load_export,
    map_targets,
    match,
    target_state,
    with_target_session,
)
from .pool import Stopped
from .store import AccountStore, Sidecar


@dataclass
class ValidateContext(ImportContext):
    resync_missing: bool = False
    deep: bool = False


def _keys(deep: bool):
    if deep:
        return (lambda s: (s.identity, s.rfc822_size, s.content_key),
                lambda m: (m.identity, m.size, m.content_key))
    return (lambda s: (s.identity, s.rfc822_size)), (lambda m: (m.identity, m.size))


def validate_account(account: Account, result, ctx: ValidateContext) -> None:
    store_meta, folders = load_export(AccountStore(ctx.root, account.email))
    ctx.progress.total(account.email, sum(len(lf.messages) for lf in folders))

    def work(client: imapclient.IMAPClient) -> None:
        _, delim2 = map_targets(client, store_meta, folders)
        by_target: dict[str, list[tuple[Path, Sidecar]]] = defaultdict(list)
        for lf in folders:
            by_target[lf.target].extend(lf.messages)
        for target, items in sorted(by_target.items()):
            if ctx.stop.is_set():
                raise Stopped()
            _validate_folder(client, target, items, account, result, ctx)
        # target folders that hold mail but stand for no exported folder
        mapped = set(by_target) | {"INBOX"}
        for f in list_folders(client):
            if f.name in mapped or always_excluded(f.name, f.delimiter or delim2 or None):
                continue
            info = client.select_folder(f.name, readonly=True)
            n = int(info.get(b"EXISTS", 0))
            if n:
                result.add("extra", n)
                result.problems.append(f"{f.name}: EXTRA folder on the target with {n} message(s), not in the export")

    with_target_session(account, ctx, work)
    missing, extra = result.counts.get("missing", 0), result.counts.get("extra", 0)
    unreadable = result.counts.get("unreadable", 0)
    if missing or extra or unreadable:
        result.status, result.exit_code = "failed", exitcodes.VALIDATION_MISMATCH
        result.error = f"{missing} missing, {extra} extra" + (f", {unreadable} unreadable" if unreadable else "")
        for line in result.problems[:100]:
            ctx.log.error(f"{account.email}: {line}")
        for line in result.problems[100:]:
            ctx.log.detail(f"{account.email}: {line}")
    else:
        ctx.log.info(f"{account.email}: validate clean: all {result.counts.get('checked', 0)} exported messages "
                     "are on the target, nothing extra"
                     + (f" ({result.counts['resynced']} re-imported)" if result.counts.get("resynced") else ""))


def _validate_folder(client: imapclient.IMAPClient, target: str, items: list[tuple[Path, Sidecar]],
                     account: Account, result, ctx: ValidateContext) -> None:
    """Compare one target folder with the export (and re-import what is missing, when asked).

    A target message the server does not deliver within its announced size cannot be
    identified: it is reported, and nothing is re-imported into that folder (it might
    be the copy of a "missing" one)."""
    key_local, key_remote = _keys(ctx.deep)
    missing, extra, unreadable = _compare(client, target, items, key_local, key_remote, ctx)
    if missing and ctx.resync_missing and not unreadable:
        try:
            client.select_folder(target)
        except imaplib.IMAP4.abort:
            raise
        except imaplib.IMAP4.error:
            client.create_folder(target)
            client.select_folder(target)
        n = append_all(client, target, missing, account, result, ctx)
        ctx.log.info(f"{account.email}: {target}: re-imported {n} missing message(s)")
        result.add("resynced", n)
        missing, extra, unreadable = _compare(client, target, items, key_local, key_remote, ctx)
    result.add("checked", len(items))
    ctx.progress.update(account.email, len(items), 0, target)
    for _eml, side in missing:
        result.add("missing")
        result.problems.append(f"{target}: MISSING exported u{side.uid} Message-ID {side.message_id or '-'} "
                               f"size {side.rfc822_size}")
    for m in extra:
        result.add("extra")
        result.problems.append(f"{target}: EXTRA target UID {m.uid} Message-ID {m.message_id or '-'} "
                               f"size {m.size}")
    for uid, reason in sorted(unreadable.items()):
        result.add("unreadable")
        result.problems.append(f"{target}: UNREADABLE target UID {uid}: {reason}")


def _compare(client, target, items, key_local, key_remote, ctx):
    unreadable: dict[int, str] = {}
    present = target_state(client, target, ctx.limits, readonly=True, deep=ctx.deep, refused=unreadable)
    if present is None:
        return list(items), [], {}
    missing, extra = match(items, present, key_local, key_remote)
    return missing, extra, unreadable
