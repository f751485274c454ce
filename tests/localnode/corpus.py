"""A deterministic mailbox corpus, and a filler that APPENDs it over IMAP.

Migration tests need a mailbox that exercises what breaks migrations
(non-ASCII and nested folder names, duplicates, messages without Message-ID,
large attachments, keywords, old internal dates) and a manifest that says
exactly what should arrive. `build` is pure: the same seed gives the same
bytes, so a manifest can be compared across runs and machines.

CLI (from the repo root)::

    PYTHONPATH=tests python -m localnode.corpus fill --state-dir .localnode \\
        --server remote --user alice@remote.test --seed 11 --count 300 --manifest m.jsonl
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import os
import random
import ssl
import sys
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from email import quoprimime
from email.utils import format_datetime
from pathlib import Path

from imapclient import IMAPClient, imap_utf7

from localnode.config import ImapServer

CRLF = "\r\n"
OWNER = ("Mario Rossi", "mario.rossi@example.com")

# Logical folder names, `/`-separated, parents before children. Parents are
# created as real folders so both mailbox layouts show the same tree.
FOLDERS = [
    "INBOX",
    "Sent",
    "Drafts",
    "Trash",
    "Archive",
    "Archive/2023",
    "Archive/2024",
    "Old Projects",
    "Clients",
    "Clients/ACME",
    "Clients/ACME/Contracts",
    "Clients/Globex",
    "Документы",
    "Projets",
    "Projets/Réunions",
    "日本語",
    "Empty Folder",
]
# Folders that receive messages, with their weight in the random assignment.
FOLDER_WEIGHTS = {
    "INBOX": 40,
    "Sent": 15,
    "Archive/2023": 8,
    "Archive/2024": 8,
    "Clients/ACME/Contracts": 6,
    "Old Projects": 4,
    "Projets/Réunions": 4,
    "Документы": 4,
    "日本語": 3,
    "Clients/Globex": 3,
    "Drafts": 2,
    "Trash": 2,
}
EMPTY_FOLDERS = [f for f in FOLDERS if f not in FOLDER_WEIGHTS]
REQUIRED_FLAGS = ["\\Seen", "\\Answered", "\\Flagged", "\\Draft", "$Label1", "Work"]
MIN_COUNT = 8
FIRST_DATE = datetime(2019, 1, 1, tzinfo=UTC)
LAST_DATE = datetime(2024, 12, 28, tzinfo=UTC)
DUPLICATE_DATE = datetime(2024, 12, 29, 1, 0, 0, tzinfo=UTC)

# Message kinds (CorpusMessage.kind).
REGULAR = "regular"
LARGE = "large"
NO_MESSAGE_ID = "no_message_id"
NO_MESSAGE_ID_NO_RECEIVED = "no_message_id_no_received"
REUSED_MESSAGE_ID = "reused_message_id"
DUPLICATE = "duplicate"

CORRESPONDENTS = [
    ("Alice Bianchi", "alice.bianchi@acme.example"),
    ("Bob Smith", "bob@globex.example"),
    ("Chloé Dupont", "chloe.dupont@example.fr"),
    ("Дмитрий Иванов", "dmitry@example.ru"),
    ("田中 太郎", "tanaka@example.jp"),
    ("Eve O'Neil", "eve.oneil@example.net"),
    ("Support Team", "support@vendor.example"),
    ("dev-list", "dev@lists.example.org"),
]
SUBJECTS_ASCII = [
    "Quarterly report",
    "Re: Meeting tomorrow",
    "Invoice #{n}",
    "Contract renewal for {year}",
    "Fwd: server maintenance window",
    "Lunch?",
    "[dev] build failure on main",
    "Your order has shipped",
    "Re: Re: project timeline",
    "Minutes of the {n}th board meeting",
]
SUBJECTS_UNICODE = [
    "Réunion de projet – compte rendu",
    "Документы по договору №{n}",
    "会議の議事録 {n}",
    "Preventivo è pronto ✓",
    "Grüße aus München",
]
WORDS = (
    "the project meeting contract invoice deadline review draft schedule budget client server "
    "please find attached as discussed regards thanks update proposal status migration mailbox "
    "folder message week month quarter report numbers team customer order delivery signed"
).split()
WORDS_UNICODE = "réunion café déjà façon Größe Straße договор документы 会議 資料 ünïcødé".split()


@dataclass(frozen=True)
class CorpusMessage:
    """One message to APPEND, with everything the manifest records."""

    index: int
    folder: str
    raw: bytes
    flags: tuple[str, ...]
    internaldate: datetime
    message_id: str | None
    duplicate_of: int | None = None
    kind: str = REGULAR
    reuses_message_id_of: int | None = None

    @property
    def size(self) -> int:
        return len(self.raw)

    @property
    def sha1(self) -> str:
        return hashlib.sha1(self.raw).hexdigest()

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.raw).hexdigest()

    def manifest_entry(self) -> dict:
        return {
            "index": self.index,
            "folder": self.folder,
            "message_id": self.message_id,
            "size": self.size,
            "flags": list(self.flags),
            "internaldate": self.internaldate.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "sha1": self.sha1,
            "duplicate_of": self.duplicate_of,
            "sha256": self.sha256,
        }


# ---------------------------------------------------------------------------
# rendering helpers
# ---------------------------------------------------------------------------


def _encoded_word(text: str, rng: random.Random) -> str:
    """RFC 2047 encoded-words (B or Q, UTF-8), folded so no line exceeds 78 chars."""
    use_b = rng.random() < 0.5
    limit = 30 if use_b else 15  # UTF-8 bytes per word: keeps each encoded word under ~60 chars
    words, chunk = [], ""
    for ch in text:
        if len((chunk + ch).encode()) > limit:
            words.append(chunk)
            chunk = ""
        chunk += ch
    if chunk:
        words.append(chunk)
    if use_b:
        enc = [f"=?UTF-8?B?{base64.b64encode(w.encode()).decode()}?=" for w in words]
    else:
        enc = ["=?UTF-8?Q?" + "".join(chr(b) if chr(b).isalnum() and b < 128 else "_" if b == 32 else f"={b:02X}"
                                      for b in w.encode()) + "?=" for w in words]
    return (CRLF + " ").join(enc)


def _address(name: str, addr: str) -> str:
    if name.isascii():
        quoted = name.replace("\\", "\\\\").replace('"', '\\"')
        return f'"{quoted}" <{addr}>'
    return f"{_encoded_word(name, random.Random(addr))} <{addr}>"


def _paragraphs(rng: random.Random, n: int, unicode: bool) -> str:
    out = []
    for _ in range(n):
        words = [rng.choice(WORDS_UNICODE if unicode and rng.random() < 0.2 else WORDS)
                 for _ in range(rng.randint(12, 60))]
        line, lines = "", []
        for w in words:
            if len(line) + len(w) + 1 > 72:
                lines.append(line)
                line = w
            else:
                line = f"{line} {w}".strip()
        lines.append(line)
        out.append(CRLF.join(lines).capitalize() + ".")
    return (CRLF + CRLF).join(out) + CRLF


def _b64(data: bytes) -> str:
    return base64.encodebytes(data).decode("ascii").replace("\n", CRLF)


def _qp(text: str) -> str:
    # quoprimime works on characters < 256: hand it the UTF-8 bytes as latin-1 characters.
    raw = text.replace(CRLF, "\n").encode("utf-8").decode("latin-1")
    return quoprimime.body_encode(raw, maxlinelen=76, eol=CRLF) + CRLF


def _blob(seed: int, index: int, n: int, size: int) -> bytes:
    """Incompressible but reproducible attachment bytes."""
    return hashlib.shake_256(f"corpus:{seed}:{index}:{n}".encode()).digest(size)


def _text_part(rng: random.Random, unicode: bool) -> str:
    body = _paragraphs(rng, rng.randint(1, 5), unicode)
    signature = f"--{CRLF}{OWNER[0] if rng.random() < 0.5 else 'Alice'}{CRLF}"
    body += CRLF + signature
    if body.isascii():
        return f"Content-Type: text/plain; charset=us-ascii{CRLF}Content-Transfer-Encoding: 7bit{CRLF}{CRLF}{body}"
    return (f"Content-Type: text/plain; charset=utf-8{CRLF}Content-Transfer-Encoding: quoted-printable"
            f"{CRLF}{CRLF}{_qp(body)}")


def _html_part(rng: random.Random) -> str:
    paras = "".join(f"<p>{p}</p>\n" for p in _paragraphs(rng, rng.randint(1, 3), False).split(CRLF + CRLF))
    html = f"<html><body>\n{paras}</body></html>\n"
    return f"Content-Type: text/html; charset=utf-8{CRLF}Content-Transfer-Encoding: quoted-printable{CRLF}{CRLF}{_qp(html)}"


def _attachment(seed: int, index: int, n: int, rng: random.Random, size: int | None = None) -> str:
    kinds = [("application/pdf", "report-{n}.pdf"), ("image/png", "photo_{n}.png"),
             ("text/csv", "figures {n}.csv"), ("application/octet-stream", "Réunion-{n}.bin")]
    ctype, name = kinds[rng.randrange(len(kinds))] if size is None else ("application/zip", "backup-{n}.zip")
    name = name.format(n=index)
    if ctype == "text/csv" and size is None:
        rows = [f"{i},{rng.randint(0, 10**6)},{rng.choice(WORDS)}" for i in range(rng.randint(5, 200))]
        data = (CRLF.join(["id,amount,label", *rows]) + CRLF).encode()
    else:
        # A given size is the encoded size (base64 grows by 4/3), so the message is about that big.
        data = _blob(seed, index, n, size * 3 // 4 if size is not None else rng.randint(2_000, 120_000))
    if name.isascii():
        disp = f'attachment; filename="{name}"'
    else:
        pct = "".join(c if c.isascii() and c.isalnum() or c in "-._" else "".join(f"%{b:02X}" for b in c.encode())
                      for c in name)
        disp = f"attachment;{CRLF} filename*=UTF-8''{pct}"
    return (f'Content-Type: {ctype}; name="{name if name.isascii() else "attachment.bin"}"{CRLF}'
            f"Content-Disposition: {disp}{CRLF}Content-Transfer-Encoding: base64{CRLF}{CRLF}{_b64(data)}")


def _multipart(subtype: str, boundary: str, parts: list[str]) -> str:
    body = f"Content-Type: multipart/{subtype};{CRLF} boundary=\"{boundary}\"{CRLF}{CRLF}"
    body += f"This is a multi-part message in MIME format.{CRLF}"
    for p in parts:
        body += f"{CRLF}--{boundary}{CRLF}{p}"
    return body + f"{CRLF}--{boundary}--{CRLF}"


def _render(seed: int, index: int, folder: str, kind: str, when: datetime, message_id: str | None,
            large_size: int) -> bytes:
    """The RFC 5322 bytes of one message (CRLF), a function of its arguments only."""
    rng = random.Random(f"corpus:{seed}:{index}:content")
    peer = CORRESPONDENTS[rng.randrange(len(CORRESPONDENTS))]
    outgoing = folder in ("Sent", "Drafts")
    sender, rcpt = (OWNER, peer) if outgoing else (peer, OWNER)
    tz = timezone(timedelta(minutes=rng.choice([0, 60, 120, -300, 330, 540])))
    sent = (when - timedelta(seconds=rng.randint(5, 7200))).astimezone(tz)
    unicode = rng.random() < 0.3 or folder in ("Документы", "日本語", "Projets/Réunions")
    templates = SUBJECTS_UNICODE if unicode else SUBJECTS_ASCII
    subject = templates[rng.randrange(len(templates))].format(n=index + 100, year=when.year)
    subject_hdr = _encoded_word(subject, rng) if not subject.isascii() else subject

    headers: list[str] = []
    if kind != NO_MESSAGE_ID_NO_RECEIVED:
        headers.append(f"Return-Path: <{sender[1]}>")
        hop = when.astimezone(UTC)
        for h in range(rng.randint(1, 3)):
            qid = hashlib.sha1(f"{seed}:{index}:{h}".encode()).hexdigest()[:11].upper()
            host = f"mx{h + 1}.{sender[1].split('@')[1]}"
            headers.append(
                f"Received: from {host} ({host} [192.0.2.{rng.randint(1, 254)}]){CRLF}"
                f"\tby mail.remote.test (Postfix) with ESMTPS id {qid}{CRLF}"
                f"\tfor <{rcpt[1]}>; {format_datetime(hop)}"
            )
            hop -= timedelta(seconds=rng.randint(1, 30))
    headers += [
        f"Date: {format_datetime(sent)}",
        f"From: {_address(*sender)}",
        f"To: {_address(*rcpt)}",
    ]
    if rng.random() < 0.2:
        cc = CORRESPONDENTS[rng.randrange(len(CORRESPONDENTS))]
        headers.append(f"Cc: {_address(*cc)}")
    headers.append(f"Subject: {subject_hdr}")
    if message_id is not None:
        headers.append(f"Message-ID: {message_id}")
    if subject.startswith("Re:") and rng.random() < 0.7:
        headers.append(f"In-Reply-To: <prev.{seed}.{index}@corpus.example>")
    headers += ["MIME-Version: 1.0", f"X-Corpus: seed={seed} index={index} kind={kind}"]

    boundary = f"=_corpus_{seed}_{index}"
    shape = rng.random()
    if kind == LARGE:
        body = _multipart("mixed", boundary + "_m", [_text_part(rng, unicode),
                                                       _attachment(seed, index, 0, rng, size=large_size)])
    elif shape < 0.35:
        body = _text_part(rng, unicode)
    elif shape < 0.6:
        body = _multipart("alternative", boundary + "_a", [_text_part(rng, unicode), _html_part(rng)])
    else:
        first = (_multipart("alternative", boundary + "_a", [_text_part(rng, unicode), _html_part(rng)])
                 if rng.random() < 0.4 else _text_part(rng, unicode))
        atts = [_attachment(seed, index, n + 1, rng) for n in range(rng.randint(1, 2))]
        body = _multipart("mixed", boundary + "_m", [first, *atts])
    head, _, rest = body.partition(CRLF + CRLF)
    return (CRLF.join(headers) + CRLF + head + CRLF + CRLF + rest).encode("utf-8")


# ---------------------------------------------------------------------------
# build
# ---------------------------------------------------------------------------


def _flags_for(folder: str, rng: random.Random) -> set[str]:
    if folder == "Drafts":
        return {"\\Draft", "\\Seen"} if rng.random() < 0.5 else {"\\Draft"}
    flags = set()
    if folder == "Sent" or rng.random() < 0.6:
        flags.add("\\Seen")
    if folder != "Sent" and rng.random() < 0.15:
        flags.add("\\Answered")
    if rng.random() < 0.1:
        flags.add("\\Flagged")
    if rng.random() < 0.05:
        flags.add("$Label1")
    if rng.random() < 0.05:
        flags.add("Work")
    return flags


def _sorted_flags(flags: set[str]) -> tuple[str, ...]:
    return tuple(sorted(flags, key=lambda f: (not f.startswith("\\"), REQUIRED_FLAGS.index(f)
                                              if f in REQUIRED_FLAGS else 99, f)))


def build(seed: int, count: int, large: int = 2, large_size: int = 3_000_000) -> list[CorpusMessage]:
    """`count` messages (duplicates included), deterministic in all arguments.

    Every promised feature is present as soon as count >= MIN_COUNT: one
    message with neither Message-ID nor Received (in INBOX), messages without
    Message-ID, a reused Message-ID, exact duplicates at the end, `large`
    messages whose attachment takes about `large_size` bytes (base64), and every flag of
    REQUIRED_FLAGS.
    """
    if count < MIN_COUNT:
        raise ValueError(f"count must be >= {MIN_COUNT} to hold every corpus feature")
    rng = random.Random(f"corpus:{seed}:plan")
    n_dup = max(1, count // 50)
    m = count - n_dup  # originals
    n_noid = max(1, count // 40)
    n_reuse = max(1, count // 100)
    if large < 0 or large > m - 2 - n_noid - n_reuse:
        raise ValueError(f"large={large} does not fit in count={count}")

    # Folders: every weighted folder gets a message (when count allows), then weighted picks.
    names, weights = list(FOLDER_WEIGHTS), list(FOLDER_WEIGHTS.values())
    folders = rng.choices(names, weights, k=m)
    for pos, name in zip(rng.sample(range(m), k=min(m, len(names))), names, strict=False):
        folders[pos] = name

    # Internal dates: ascending, spread evenly over the years with jitter.
    span = (LAST_DATE - FIRST_DATE).total_seconds()
    dates = sorted(FIRST_DATE + timedelta(seconds=int(span * (i + rng.random()) / m)) for i in range(m))

    # Kinds. Index 0 stays regular so a reused Message-ID always has an earlier target.
    kinds = [REGULAR] * m
    inbox = [i for i in range(1, m) if folders[i] == "INBOX"] or [i for i in range(1, m)]
    special = rng.choice(inbox)
    folders[special] = "INBOX"
    kinds[special] = NO_MESSAGE_ID_NO_RECEIVED
    free = [i for i in range(1, m) if kinds[i] == REGULAR]
    for i in rng.sample(free, n_noid):
        kinds[i] = NO_MESSAGE_ID
    free = [i for i in range(1, m) if kinds[i] == REGULAR]
    for i in rng.sample(free, n_reuse):
        kinds[i] = REUSED_MESSAGE_ID
    free = [i for i in range(1, m) if kinds[i] == REGULAR]
    for i in rng.sample(free, large):
        kinds[i] = LARGE

    ids: list[str | None] = []
    reuse_of: list[int | None] = []
    for i in range(m):
        own = f"<c{seed}.{i}.{hashlib.sha1(f'{seed}:{i}'.encode()).hexdigest()[:8]}@corpus.example>"
        if kinds[i] in (NO_MESSAGE_ID, NO_MESSAGE_ID_NO_RECEIVED):
            ids.append(None)
            reuse_of.append(None)
        elif kinds[i] == REUSED_MESSAGE_ID:
            target = rng.choice([j for j in range(i) if ids[j] is not None and reuse_of[j] is None])
            ids.append(ids[target])
            reuse_of.append(target)
        else:
            ids.append(own)
            reuse_of.append(None)

    flags = [_flags_for(folders[i], random.Random(f"corpus:{seed}:{i}:flags")) for i in range(m)]
    for flag in REQUIRED_FLAGS:
        if not any(flag in f for f in flags):
            pool = [i for i in range(m) if folders[i] not in ("Drafts", "Sent")] or list(range(m))
            flags[rng.choice(pool)].add(flag)

    msgs = [
        CorpusMessage(
            index=i,
            folder=folders[i],
            raw=_render(seed, i, folders[i], kinds[i], dates[i], ids[i], large_size),
            flags=_sorted_flags(flags[i]),
            internaldate=dates[i],
            message_id=ids[i],
            kind=kinds[i],
            reuses_message_id_of=reuse_of[i],
        )
        for i in range(m)
    ]
    # Exact duplicates: same bytes, same folder, later internal date.
    candidates = [x for x in msgs if x.kind == REGULAR]
    for k, orig in enumerate(rng.sample(candidates, n_dup)):
        msgs.append(CorpusMessage(
            index=m + k,
            folder=orig.folder,
            raw=orig.raw,
            flags=orig.flags,
            internaldate=DUPLICATE_DATE + timedelta(seconds=61 * k),
            message_id=orig.message_id,
            duplicate_of=orig.index,
            kind=DUPLICATE,
        ))
    return msgs


# ---------------------------------------------------------------------------
# IMAP
# ---------------------------------------------------------------------------


def ssl_context(server: ImapServer) -> ssl.SSLContext:
    """Verify against the node's CA when it exists, else no verification (as imapsync does)."""
    if server.ca_cert and os.path.exists(server.ca_cert):
        return ssl.create_default_context(cafile=server.ca_cert)
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


def connect(server: ImapServer, *, imaps: bool = False, timeout: float = 30) -> IMAPClient:
    """An unauthenticated client on a TLS connection (STARTTLS, or IMAPS when asked)."""
    ctx = ssl_context(server)
    if imaps:
        return IMAPClient(server.host, server.imaps_port, ssl=True, ssl_context=ctx, timeout=timeout)
    client = IMAPClient(server.host, server.imap_port, ssl=False, timeout=timeout)
    client.starttls(ctx)
    return client


def server_folder_name(logical: str, separator: str) -> str:
    """Logical `/` name → the server's separator, modified UTF-7 (ASCII str)."""
    parts = logical.split("/")
    for p in parts:
        if separator in p:
            raise ValueError(f"folder component {p!r} contains the server separator {separator!r}")
    return imap_utf7.encode(separator.join(parts)).decode("ascii")


def fill(server: ImapServer, user: str, password: str, seed: int, count: int, **build_kw) -> list[dict]:
    """Create FOLDERS and APPEND build(seed, count) for `user`; return the manifest entries."""
    msgs = build(seed, count, **build_kw)
    client = connect(server)
    try:
        client.login(user, password)
        client.folder_encode = False  # names below are already modified UTF-7
        separator = server.separator
        ns = client.namespace()
        if ns.personal and ns.personal[0][1]:
            separator = ns.personal[0][1]
        existing = {name for _flags, _sep, name in client.list_folders()}
        for logical in FOLDERS:
            name = server_folder_name(logical, separator)
            if logical != "INBOX" and name not in existing:
                client.create_folder(name)
        for msg in msgs:
            client.append(server_folder_name(msg.folder, separator), msg.raw,
                          [f.encode() for f in msg.flags], msg.internaldate)
        client.logout()
    finally:
        try:
            client.shutdown()
        except OSError:
            pass
    return [msg.manifest_entry() for msg in msgs]


def write_manifest(entries: list[dict], path: str | os.PathLike) -> None:
    """JSONL, one entry per line, non-ASCII kept readable."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        for e in entries:
            f.write(json.dumps(e, ensure_ascii=False) + "\n")
    os.replace(tmp, path)


def read_manifest(path: str | os.PathLike) -> list[dict]:
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def _main(argv: list[str] | None = None) -> int:
    from localnode.config import load

    ap = argparse.ArgumentParser(prog="python -m localnode.corpus", description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    f = sub.add_parser("fill", help="APPEND a corpus into one mailbox of the local node")
    f.add_argument("--state-dir", default=None)
    f.add_argument("--server", choices=["remote", "mail1"], required=True)
    f.add_argument("--user", required=True)
    f.add_argument("--password", default=None, help="default: from the node config (master user on mail1)")
    f.add_argument("--seed", type=int, required=True)
    f.add_argument("--count", type=int, required=True)
    f.add_argument("--large", type=int, default=2)
    f.add_argument("--large-size", type=int, default=3_000_000)
    f.add_argument("--manifest", default=None)
    args = ap.parse_args(argv)

    cfg = load(args.state_dir)
    server = cfg.mail1 if args.server == "mail1" else cfg.remote
    login, password = args.user, args.password
    if password is None:
        if server.master_user:
            login = f"{args.user}{server.master_separator}{server.master_user}"
            password = server.master_password or ""
        elif args.user in server.users:
            password = server.users[args.user]
        else:
            ap.error(f"unknown user {args.user!r} on {server.name}; pass --password")
    entries = fill(server, login, password, args.seed, args.count, large=args.large, large_size=args.large_size)
    if args.manifest:
        write_manifest(entries, args.manifest)
    total = sum(e["size"] for e in entries)
    print(f"appended {len(entries)} messages ({total} bytes) for {args.user} on {server.name}"
          + (f"; manifest {args.manifest}" if args.manifest else ""))
    return 0


if __name__ == "__main__":
    sys.exit(_main())
