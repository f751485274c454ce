#!/usr/bin/env python3
"""Mailbox chores for the Robot suites, run on the node itself (standard library only).

The suites run against a real NS8 node over SSH or against the local node, so
what they do to mailboxes must work on both: this script is copied to the node
(or run in place) and speaks IMAP to the server given on its command line.

    mailtool.py --host H --port P --user U [--ssl] COMMAND [options]   (password: first line of stdin)

    append  --folder F --subject S [--count N] [--days-old D] [--seen]
    count   --folder F [--subject S] [--seen | --unseen]     prints the number of matching messages
    folders                                                  prints the folders, JSON, "/" as separator
    blackhole --seconds S                                    prints a loopback port that accepts
                                                             connections and never answers, for S seconds

Folder names are given with "/" and sent with the server's separator. STARTTLS
is used when offered (certificates are not checked: the servers are the
suite's own). Passwords come on standard input, never on the command line.
"""

from __future__ import annotations

import argparse
import imaplib
import json
import os
import re
import select
import socket
import ssl
import sys
import time
import uuid
from datetime import datetime, timedelta, timezone
from email.utils import format_datetime

LIST_RE = re.compile(r'^\((?P<flags>[^)]*)\) (?P<sep>"(?:[^"\\]|\\.)*"|NIL) (?P<name>.+)$')


def quote(name: str) -> str:
    return '"' + name.replace("\\", "\\\\").replace('"', '\\"') + '"'


def connect(args: argparse.Namespace) -> imaplib.IMAP4:
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    if args.ssl:
        client: imaplib.IMAP4 = imaplib.IMAP4_SSL(args.host, args.port, ssl_context=ctx, timeout=30)
    else:
        client = imaplib.IMAP4(args.host, args.port, timeout=30)
        if "STARTTLS" in client.capabilities:
            client.starttls(ssl_context=ctx)
    client.login(args.user, sys.stdin.readline().rstrip("\n"))
    return client


def separator(client: imaplib.IMAP4) -> str:
    """The hierarchy separator, from `LIST "" ""`."""
    _, data = client.list('""', '""')
    line = data[0].decode() if data and data[0] else ""
    parts = line.split('"')
    return parts[1] if len(parts) > 2 and parts[1] else "/"


def server_name(client: imaplib.IMAP4, folder: str) -> str:
    return folder if folder.upper() == "INBOX" else folder.replace("/", separator(client))


def message(subject: str, when: datetime) -> bytes:
    text = (f"From: Robot <robot@remote.test>\r\nTo: user@domain.test\r\nSubject: {subject}\r\n"
            f"Date: {format_datetime(when)}\r\nMessage-ID: <{uuid.uuid4()}@robot.test>\r\n"
            f"MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n"
            f"A message of the Robot suites: {subject}\r\n")
    return text.encode()


def cmd_append(client: imaplib.IMAP4, args: argparse.Namespace) -> None:
    when = datetime.now(timezone.utc) - timedelta(days=args.days_old)  # noqa: UP017 (the node may have python 3.9)
    box = quote(server_name(client, args.folder))
    for _ in range(args.count):
        typ, data = client.append(box, "(\\Seen)" if args.seen else "()",
                                  imaplib.Time2Internaldate(when.timestamp()), message(args.subject, when))
        if typ != "OK":
            raise SystemExit(f"APPEND to {args.folder} refused: {data}")


def cmd_count(client: imaplib.IMAP4, args: argparse.Namespace) -> None:
    typ, data = client.select(quote(server_name(client, args.folder)), readonly=True)
    if typ != "OK":
        print(0)
        return
    criteria = []
    if args.subject:
        criteria += ["SUBJECT", quote(args.subject)]
    if args.seen:
        criteria.append("SEEN")
    if args.unseen:
        criteria.append("UNSEEN")
    _, found = client.search(None, *(criteria or ["ALL"]))
    print(len(found[0].split()) if found and found[0] else 0)


def cmd_folders(client: imaplib.IMAP4, args: argparse.Namespace) -> None:
    sep = separator(client)
    _, data = client.list('""', "*")
    names = []
    for raw in data or []:
        m = LIST_RE.match(raw.decode() if isinstance(raw, bytes) else "")
        if m:
            name = m.group("name")
            if name.startswith('"'):
                name = re.sub(r"\\(.)", r"\1", name[1:-1])
            names.append(name.replace(sep, "/"))
    print(json.dumps(sorted(names)))


def blackhole(seconds: float) -> None:
    """Print a loopback port, then (detached) accept on it and never answer."""
    server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    server.bind(("127.0.0.1", 0))
    server.listen(16)
    print(server.getsockname()[1], flush=True)
    if os.fork():
        os._exit(0)
    os.setsid()
    devnull = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(devnull, fd)
    held = []
    deadline = time.monotonic() + seconds
    while (left := deadline - time.monotonic()) > 0:
        if select.select([server], [], [], left)[0]:
            held.append(server.accept()[0])
    os._exit(0)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=143)
    parser.add_argument("--user", default="")
    parser.add_argument("--ssl", action="store_true")
    sub = parser.add_subparsers(dest="command", required=True)
    ap = sub.add_parser("append")
    ap.add_argument("--folder", default="INBOX")
    ap.add_argument("--subject", required=True)
    ap.add_argument("--count", type=int, default=1)
    ap.add_argument("--days-old", type=float, default=0)
    ap.add_argument("--seen", action="store_true")
    cp = sub.add_parser("count")
    cp.add_argument("--folder", default="INBOX")
    cp.add_argument("--subject", default="")
    seen = cp.add_mutually_exclusive_group()
    seen.add_argument("--seen", action="store_true")
    seen.add_argument("--unseen", action="store_true")
    sub.add_parser("folders")
    bp = sub.add_parser("blackhole")
    bp.add_argument("--seconds", type=float, default=120)
    args = parser.parse_args(argv)
    if args.command == "blackhole":
        blackhole(args.seconds)
        return 0
    client = connect(args)
    try:
        {"append": cmd_append, "count": cmd_count, "folders": cmd_folders}[args.command](client, args)
    finally:
        client.logout()
    return 0


if __name__ == "__main__":
    sys.exit(main())
