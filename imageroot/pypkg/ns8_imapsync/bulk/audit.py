"""audit: prove the export directory is a faithful copy before anyone relies on it.

Per folder: one ``.eml`` per message with a matching sidecar (and the reverse),
the UID in the file name equals the sidecar's, the file has the size and SHA-256
the sidecar recorded (so a truncated or edited file is caught), it parses as an
RFC 822 message, no IMAP protocol text leaked into it (the sign of a broken FETCH
parser), no interrupted write was left behind; then, unless offline, the local
count of every folder equals the source's, and no source folder with mail is
missing locally.
"""

from __future__ import annotations

import hashlib
import imaplib
import re
import threading
from dataclasses import dataclass
from email import message_from_binary_file
from email.errors import MissingHeaderBodySeparatorDefect
from email.policy import compat32
from pathlib import Path

from ns8_imapsync.imap.folders import folder_arg, folder_encoding

from . import exitcodes
from .config import Account, ServerConfig, TlsOptions
from .export import source_folders
from .pool import AccountResult, Stopped
from .progress import ProgressDisplay
from .runlog import RunLog
from .session import account_session
from .store import FOLDER_META, MESSAGE_RE, TMP_PREFIX, AccountStore, StoreError

PARSE_LIMIT = 16 * 1024 * 1024  # full MIME parse only below this size
_FIELD = re.compile(rb"^[!-9;-~]+[ \t]*:")
_COMMON = {b"from", b"to", b"date", b"subject", b"message-id", b"received", b"return-path", b"mime-version",
           b"content-type", b"sender", b"reply-to", b"cc"}
# what a FETCH response looks like when a client glues it to the message bytes
_LEAK_HEAD = re.compile(rb"^\*\s+\d+\s+FETCH\s+\(|^\(?\s*(UID\s+\d+\s+)?(FLAGS|INTERNALDATE|RFC822\.SIZE|BODY\[)", re.I)
_LEAK_ANY = re.compile(rb"\bBODY\[[^\]]*\]\s*\{\d+\}|\*\s+\d+\s+FETCH\s+\(|^\s*(UID\s+\d+\s+)?FLAGS\s+\([^)]*\)\)?\s*$"
                       rb"|INTERNALDATE\s+\"\d", re.I | re.M)


@dataclass
class AuditContext:
    server: ServerConfig | None  # None = offline
    tls: TlsOptions
    root: Path
    log: RunLog
    progress: ProgressDisplay
    stop: threading.Event


def check_message(eml: Path, uid: int, side) -> list[str]:
    """Problems of one exported message (empty list = fine)."""
    problems = []
    if side.uid != uid:
        problems.append(f"sidecar UID {side.uid} does not match the file name")
    digest = hashlib.sha256()
    size = 0
    head = b""
    tail = b""
    with open(eml, "rb") as f:
        while chunk := f.read(1024 * 1024):
            if len(head) < 4096:
                head += chunk[: 4096 - len(head)]
            tail = (tail + chunk)[-4096:]
            digest.update(chunk)
            size += len(chunk)
    if size == 0:
        return problems + ["the message file is empty"]
    if size != side.size:
        problems.append(f"size {size} differs from the sidecar's {side.size}")
    if digest.hexdigest() != side.sha256:
        problems.append("SHA-256 differs from the sidecar's (file changed or damaged)")
    first_line = head.split(b"\n", 1)[0].rstrip(b"\r")
    last_lines = [ln.rstrip(b"\r") for ln in tail.rstrip(b"\r\n").split(b"\n")[-2:]]
    if _LEAK_HEAD.search(first_line) or any(_LEAK_ANY.search(ln) for ln in last_lines):
        problems.append("IMAP protocol text leaked into the message")
    elif not _FIELD.match(first_line):
        problems.append("does not start with a header field: not an RFC 822 message")
    else:
        problems += _parse_problems(eml, size)
    return problems


def _parse_problems(eml: Path, size: int) -> list[str]:
    with open(eml, "rb") as f:
        if size > PARSE_LIMIT:
            from email.parser import BytesHeaderParser
            msg = BytesHeaderParser(policy=compat32).parse(f)
        else:
            msg = message_from_binary_file(f, policy=compat32)
    names = {k.lower().encode("utf-8", "replace") for k in msg.keys()}
    if not names & _COMMON:
        return ["no usual header (From, Date, Subject...): not an RFC 822 message"]
    if any(isinstance(d, MissingHeaderBodySeparatorDefect) for d in msg.defects):
        return ["the header block is malformed (no blank line before the body)"]
    if size <= PARSE_LIMIT and msg.get_content_maintype() == "multipart":
        payload = msg.get_payload()
        if not isinstance(payload, list) or not payload:
            return ["a multipart message without any part"]
    return []


def audit_files(store: AccountStore, result: AccountResult, stop: threading.Event | None = None) -> dict[str, int]:
    """Offline checks of one account; returns folder name -> local message count."""
    counts: dict[str, int] = {}
    if not store.dir.is_dir():
        result.problems.append("no export directory for this account")
        return counts
    if not (store.dir / ".account.json").exists():
        result.problems.append("no .account.json: the account was never exported completely")
    elif not store.read_account_meta().get("complete"):
        result.problems.append("the last export of this account did not finish")
    for d in sorted(p for p in [store.dir, *store.dir.rglob("*")] if p.is_dir()):
        if stop is not None and stop.is_set():
            raise Stopped()
        files = [p for p in d.iterdir() if p.is_file()]
        rel = d.relative_to(store.dir).as_posix() or "."
        for p in files:
            if p.name.startswith(TMP_PREFIX):
                result.problems.append(f"{rel}/{p.name}: left over by an interrupted write")
        msgs = [p for p in files if MESSAGE_RE.match(p.name)]
        if not (d / FOLDER_META).exists():
            if msgs:
                result.problems.append(f"{rel}: message files in a directory that is not an exported folder")
            continue
        try:
            meta = store.read_folder_meta(d)
        except StoreError as exc:
            result.problems.append(str(exc))
            continue
        names = {p.name for p in msgs}
        count = 0
        for p in sorted(msgs):
            uid = int(MESSAGE_RE.match(p.name).group(1))
            other = p.stem + (".json" if p.name.endswith(".eml") else ".eml")
            if other not in names:
                missing = "sidecar" if p.name.endswith(".eml") else "message file"
                result.problems.append(f"{meta.name}/{p.name}: its {missing} is missing")
                continue
            if not p.name.endswith(".eml"):
                continue
            count += 1
            try:
                side = store.read_sidecar(d / other)
            except StoreError as exc:
                result.problems.append(f"{meta.name}/{exc}")
                continue
            for problem in check_message(p, uid, side):
                result.problems.append(f"{meta.name}/{p.name}: {problem}")
        counts[meta.name] = count
        result.add("messages", count)
        result.add("folders")
    return counts


def source_counts(client) -> dict[str, int]:
    out = {}
    for f in source_folders(client):
        arg, encode = folder_arg(f)
        try:
            with folder_encoding(client, encode):
                out[f.name] = int(client.folder_status(arg, ["MESSAGES"]).get(b"MESSAGES", 0))
        except imaplib.IMAP4.abort:
            raise
        except imaplib.IMAP4.error:
            out[f.name] = -1
    return out


def audit_account(account: Account, result: AccountResult, ctx: AuditContext) -> None:
    store = AccountStore(ctx.root, account.email)
    local = audit_files(store, result, ctx.stop)
    ctx.progress.total(account.email, sum(local.values()))
    if ctx.server is not None:
        with account_session(ctx.server, account, ctx.tls) as client:
            remote = source_counts(client)
        for name, n in sorted(remote.items()):
            if name not in local:
                if n != 0:
                    result.problems.append(f"{name}: {n} message(s) on the source, folder not exported")
            elif n == -1:
                result.problems.append(f"{name}: the source refused STATUS on this folder")
            elif local[name] != n:
                result.problems.append(f"{name}: {local[name]} message(s) exported, {n} on the source")
        for name in sorted(set(local) - set(remote)):
            result.problems.append(f"{name}: exported but no longer on the source (run export again)")
    ctx.progress.update(account.email, result.counts.get("messages", 0), 0)
    if result.problems:
        result.status, result.exit_code = "failed", exitcodes.AUDIT_FAILED
        result.error = f"{len(result.problems)} problem(s)"
        for line in result.problems[:50]:
            ctx.log.error(f"{account.email}: audit: {line}")
        if len(result.problems) > 50:
            ctx.log.error(f"{account.email}: audit: ... and {len(result.problems) - 50} more (see the log file)")
            for line in result.problems[50:]:
                ctx.log.detail(f"{account.email}: audit: {line}")
    else:
        ctx.log.info(f"{account.email}: audit clean: {result.counts.get('messages', 0)} messages in "
                     f"{result.counts.get('folders', 0)} folders"
                     + ("" if ctx.server is None else ", counts match the source"))
