"""export: copy every folder of every source account into the export directory.

Non-destructive: folders are EXAMINEd (read-only) and bodies read with
``BODY.PEEK``, so the source's ``\\Seen`` flags and ``\\Recent`` state are left
alone.  Incremental: a re-run fetches only UIDs without complete files, removes
the files of messages (and folders) gone from the source, and refreshes changed
flags in the sidecars; a UIDVALIDITY change starts the folder over.  Bodies are
fetched in batches (up to 50 messages / 16 MiB per round trip); messages larger
than ``Limits.large_message`` are streamed to disk in partial FETCHes.

The source is not trusted to be consistent: files are removed only on a complete
listing (``reads.folder_listing``), never because a message was left out of it;
every read is bounded by the size the server announced, so nothing larger is
ever written; and a message refused for that, or listed but not delivered, is a
problem naming its folder and UID (the account's export is then incomplete)
while the rest of the folder is exported.
"""

from __future__ import annotations

import imaplib
import os
from collections.abc import Iterable
from datetime import UTC, datetime
from pathlib import Path

import imapclient

from ns8_imapsync.imap.folders import Folder, folder_arg, folder_encoding, list_folders, namespace_info
from ns8_imapsync.imap.identity import HEADER_FETCH, header_from_fetch, header_signature
from ns8_imapsync.imap.messages import as_text, clean_flags
from ns8_imapsync.imap.reads import (
    HEADER_LIMIT,
    Listing,
    UnreadableMessage,
    body_batches,
    fetch_bodies,
    fetch_meta,
    folder_listing,
    message_id_of,
    read_chunks,
    still_listed,
)

from .config import Account
from .context import RunContext
from .digest import MessageDigest
from .pool import AccountFailed, AccountResult, Stopped
from .session import account_session, examine
from .store import TMP_PREFIX, AccountStore, FolderMeta, Sidecar, atomic_write, message_paths


def foreign_prefixes(client: imapclient.IMAPClient) -> tuple[str, ...]:
    """Prefixes of the other-users and shared namespaces: not this account's mail."""
    if not client.has_capability("NAMESPACE"):
        return ()
    try:
        ns = client.namespace()
    except Exception:
        return ()
    out = []
    for group in (ns.other, ns.shared):
        for prefix, _delim in group or ():
            text = as_text(prefix)
            if text:
                out.append(text)
    return tuple(out)


def source_folders(client: imapclient.IMAPClient) -> list[Folder]:
    """The account's own selectable folders, INBOX first then by name."""
    foreign = foreign_prefixes(client)
    folders = [f for f in list_folders(client) if not any(f.name.startswith(p) for p in foreign)]
    folders.sort(key=lambda f: (f.name.upper() != "INBOX", f.name))
    return folders


def iso_date(value: object) -> str | None:
    if isinstance(value, datetime):
        if value.tzinfo is None:
            value = value.replace(tzinfo=UTC)
        return value.isoformat()
    return None


def export_account(account: Account, result: AccountResult, ctx: RunContext) -> None:
    store = AccountStore(ctx.root, account.email)
    store.ensure()
    started = datetime.now(UTC).isoformat()
    with account_session(ctx.server, account, ctx.tls) as client:
        prefix, delim = namespace_info(client)
        folders = source_folders(client)
        previous = store.read_account_meta()
        meta = {"email": account.email, "source": {"host": ctx.server.host, "port": ctx.server.port},
                "prefix": prefix, "delimiter": delim, "started": started, "complete": False,
                "folders": [f.name for f in folders]}
        if previous.get("finished"):
            meta["previous_finished"] = previous["finished"]
        store.write_account_meta(meta)
        total = 0
        for f in folders:
            arg, encode = folder_arg(f)
            try:
                with folder_encoding(client, encode):
                    total += int(client.folder_status(arg, ["MESSAGES"]).get(b"MESSAGES", 0))
            except imaplib.IMAP4.error:
                pass
        ctx.progress.total(account.email, total)
        ctx.log.info(f"{account.email}: {len(folders)} folders, {total} messages on the source")
        keep: set[Path] = set()
        for f in folders:
            if ctx.stop.is_set():
                raise Stopped()
            folder_dir = store.folder_dir(f.name, f.delimiter or delim)
            keep.add(folder_dir)
            try:
                _export_folder(client, f, f.delimiter or delim, folder_dir, account, result, ctx)
            except imaplib.IMAP4.abort:
                raise
            except imaplib.IMAP4.error as exc:  # this folder only (deleted meanwhile, refused)
                result.problems.append(f"{f.name}: {as_text(str(exc))}")
                ctx.log.error(f"{account.email}: folder {f.name} could not be exported: {exc}")
        for folder_dir, fmeta in list(store.folders()):
            if folder_dir not in keep:
                ctx.log.info(f"{account.email}: folder {fmeta.name} is gone from the source; removing its files")
                AccountStore.remove_folder_files(folder_dir)
                result.add("folders_removed")
    if result.problems:
        raise AccountFailed(f"{len(result.problems)} problem(s) with folders or messages; the export is incomplete")
    meta["complete"] = True
    meta["finished"] = datetime.now(UTC).isoformat()
    store.write_account_meta(meta)
    ctx.log.info(f"{account.email}: exported {result.counts.get('fetched', 0)} new message(s) "
                 f"({result.counts.get('bytes', 0)} bytes), removed {result.counts.get('removed', 0)}, "
                 f"{result.counts.get('kept', 0)} already exported")


def _export_folder(client: imapclient.IMAPClient, f: Folder, delim: str, folder_dir: Path,
                   account: Account, result: AccountResult, ctx: RunContext) -> None:
    info = examine(client, f)
    uidvalidity = int(info.get(b"UIDVALIDITY", 0))
    exists = int(info.get(b"EXISTS", 0))
    if (folder_dir / ".folder.json").exists():
        old = AccountStore.read_folder_meta(folder_dir)
        if old.uidvalidity != uidvalidity:
            ctx.log.warn(f"{account.email}: {f.name}: UIDVALIDITY changed ({old.uidvalidity} -> {uidvalidity}); "
                         "exporting the folder again")
            AccountStore.remove_folder_files(folder_dir)
    folder_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    AccountStore.clean_tmp(folder_dir)
    listing = folder_listing(client, exists)
    local = AccountStore.exported_uids(folder_dir)
    removed = _remove_gone(folder_dir, f, listing, local, account, result, ctx)
    _remove_stray_halves(folder_dir, local)
    kept = _refresh_flags(folder_dir, listing, local, result)
    ctx.progress.update(account.email, len(kept), 0, f.name)
    on_server = set(listing.flags) | listing.missing
    new = sorted(on_server - local)
    if new:
        _fetch_new(client, f, folder_dir, uidvalidity, new, account, result, ctx)
    AccountStore.write_folder_meta(folder_dir, FolderMeta(
        name=f.name, raw=f.raw_text, delimiter=delim, uidvalidity=uidvalidity, messages=len(on_server),
        flags=[as_text(x) for x in f.flags]))
    ctx.log.detail(f"{account.email}: {f.name}: {len(new)} to fetch, {len(kept)} kept, {removed} removed")


def _remove_gone(folder_dir: Path, f: Folder, listing: Listing, local: set[int], account: Account,
                 result: AccountResult, ctx: RunContext) -> int:
    """Remove the files of messages gone from the source, only on a complete listing:
    a server that did not list a message it has must not make us drop its copy."""
    if not listing.complete:
        shown = ", ".join(str(u) for u in sorted(listing.missing)[:10])
        more = "..." if len(listing.missing) > 10 else ""
        problem = (f"{f.name}: the server did not list {len(listing.missing)} of its messages (UID {shown}{more}); "
                   "nothing was removed in this folder")
        result.problems.append(problem)
        ctx.log.error(f"{account.email}: {problem}")
        return 0
    gone = sorted(local - set(listing.flags))
    for uid in gone:
        AccountStore.remove_message(folder_dir, uid)
        result.add("removed")
    return len(gone)


def _remove_stray_halves(folder_dir: Path, local: set[int]) -> None:
    """An .eml without sidecar (or the reverse) is a message not yet exported: rewritten later."""
    for path in folder_dir.iterdir():
        name = path.name
        if path.is_file() and name[:1] == "u" and name.endswith((".eml", ".json")):
            try:
                uid = int(name[1:].split(".")[0])
            except ValueError:
                continue
            if uid not in local:
                path.unlink()


def _refresh_flags(folder_dir: Path, listing: Listing, local: set[int], result: AccountResult) -> list[int]:
    """Sidecar flags of the exported messages brought to the source's; the kept UIDs."""
    kept = sorted(local & set(listing.flags))
    refreshed = 0
    for uid in kept:
        _eml, js = message_paths(folder_dir, uid)
        side = AccountStore.read_sidecar(js)
        flags = list(listing.flags[uid])
        if flags != side.flags:
            side.flags = flags
            atomic_write(js, side.to_json().encode())
            refreshed += 1
    result.add("kept", len(kept))
    result.add("flags_refreshed", refreshed)
    return kept


def _fetch_new(client: imapclient.IMAPClient, f: Folder, folder_dir: Path, uidvalidity: int,
               uids: list[int], account: Account, result: AccountResult, ctx: RunContext) -> None:
    """Export ``uids``: small ones in batches, large ones in chunks, each bounded by its
    announced size; what is refused or not delivered is a problem naming the message."""
    refused: dict[int, str] = {}
    meta = fetch_meta(client, uids, f"(UID RFC822.SIZE INTERNALDATE FLAGS {HEADER_FETCH.decode()})",
                      literal_max=HEADER_LIMIT, refused=refused)
    sizes = {u: int(m[b"RFC822.SIZE"]) for u, m in meta.items() if m.get(b"RFC822.SIZE") is not None}
    absent = [u for u in uids if u not in meta and u not in refused]
    present = [u for u in uids if u in meta]
    large = ctx.limits.large_message
    for batch in body_batches([u for u in present if sizes.get(u, 0) <= large], sizes):
        if ctx.stop.is_set():
            raise Stopped()
        bodies = fetch_bodies(client, batch, sizes=sizes, refused=refused)
        done_bytes = 0
        for uid in batch:
            body = bodies.get(uid)
            if body is None:
                if uid not in refused:
                    absent.append(uid)
                continue
            _write_message(folder_dir, uid, uidvalidity, f.name, meta[uid], [body], result)
            done_bytes += len(body)
        ctx.progress.update(account.email, len(batch), done_bytes, f.name)
    for uid in (u for u in present if sizes.get(u, 0) > large):
        if ctx.stop.is_set():
            raise Stopped()
        written = _write_large(client, folder_dir, uid, uidvalidity, f.name, meta[uid], result, ctx,
                               refused, account)
        if not written and uid not in refused:
            absent.append(uid)
        ctx.progress.update(account.email, 1, 0, f.name)
    _report_unexported(client, f, refused, absent, account, result, ctx)


def _report_unexported(client: imapclient.IMAPClient, f: Folder, refused: dict[int, str], absent: list[int],
                       account: Account, result: AccountResult, ctx: RunContext) -> None:
    """Refused messages and messages the server lists but did not deliver are problems
    (the export is incomplete); messages expunged meanwhile are only noted."""
    listed = still_listed(client, absent) if absent else set()
    problems = [(uid, f"refused: {reason}") for uid, reason in refused.items()]
    problems += [(uid, "is listed by the server but was not delivered") for uid in absent if uid in listed]
    for uid, text in sorted(problems):
        result.problems.append(f"{f.name}: message UID {uid} {text}")
        result.add("unexported")
        ctx.log.error(f"{account.email}: {f.name}: message UID {uid} {text}")
    for uid in sorted(set(absent) - listed):
        ctx.log.detail(f"{account.email}: {f.name}/{uid} vanished during the export")


def _write_large(client: imapclient.IMAPClient, folder_dir: Path, uid: int, uidvalidity: int, name: str,
                 item: dict, result: AccountResult, ctx: RunContext, refused: dict[int, str],
                 account: Account) -> bool:
    """Stream one large message to its file; False (nothing kept) if it could not be read."""
    eml, _js = message_paths(folder_dir, uid)
    tmp = folder_dir / f"{TMP_PREFIX}{eml.name}"
    digest = MessageDigest()
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        with os.fdopen(fd, "wb") as out:
            def sink(data: bytes) -> None:
                out.write(data)
                digest.update(data)
            ok = read_chunks(client, uid, sink, ctx.limits.chunk_size, size=int(item[b"RFC822.SIZE"]),
                             on_chunk=lambda n: ctx.progress.update(account.email, 0, n, name))
    except UnreadableMessage as exc:
        refused[uid] = exc.reason
        ok = False
    if not ok:
        tmp.unlink(missing_ok=True)
        return False
    os.replace(tmp, eml)
    _write_sidecar(folder_dir, uid, uidvalidity, name, item, digest, result)
    return True


def _write_message(folder_dir: Path, uid: int, uidvalidity: int, name: str, item: dict,
                   chunks: Iterable[bytes], result: AccountResult) -> None:
    eml, _js = message_paths(folder_dir, uid)
    tmp = folder_dir / f"{TMP_PREFIX}{eml.name}"
    digest = MessageDigest()
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as out:
        for chunk in chunks:
            out.write(chunk)
            digest.update(chunk)
    os.replace(tmp, eml)
    _write_sidecar(folder_dir, uid, uidvalidity, name, item, digest, result)


def _write_sidecar(folder_dir: Path, uid: int, uidvalidity: int, name: str, item: dict,
                   digest: MessageDigest, result: AccountResult) -> None:
    header = header_from_fetch(item)
    side = Sidecar(
        uid=uid, uidvalidity=uidvalidity, folder=name,
        flags=list(clean_flags(item.get(b"FLAGS", ()))),
        internaldate=iso_date(item.get(b"INTERNALDATE")),
        size=digest.size, rfc822_size=int(item.get(b"RFC822.SIZE", digest.crlf_size)),
        message_id=message_id_of(header), sha256=digest.sha256, content_key=digest.content_key(),
        signature=header_signature(header) if header is not None else None,
    )
    _eml, js = message_paths(folder_dir, uid)
    atomic_write(js, side.to_json().encode())
    result.add("fetched")
    result.add("bytes", digest.size)
