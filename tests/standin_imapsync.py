#!/usr/bin/env python3
"""A stand-in for imapsync 2.229, for tests on machines without it (CI).

It copies the way imapsync does for the options our engine passes (spec
``imapsync.md`` section 6), against the real Dovecot servers, and prints the
lines our parser reads.  It is not imapsync: tests that must prove something
about the real program run it from PATH and skip, saying so, without it.

What it keeps of imapsync's behaviour:
* per folder pair, a message is identified by its Message-Id + Received
  signature; one with neither header is ``ignored (no wanted headers)``;
* a second message with the same signature in a folder is a duplicate, skipped;
* a message whose signature is on host2 is not copied (flags resynced unless
  ``--noresyncflags``); the others are APPENDed with flags and INTERNALDATE;
* ``--folder``, ``--search1``, ``--exclude`` (unanchored regex on raw names),
  ``--delete2`` (host2 messages whose signature host1 lacks), ``--pidfile``;
* the host2 name is the host1 name with the separator swapped.
"""

from __future__ import annotations

import contextlib
import os
import re
import ssl
import sys
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import imapclient
from ns8_imapsync.imap.identity import HEADER_FETCH, header_from_fetch, header_signature


def executable(tmp: Path, script: str, **env: str) -> str:
    """``<tmp>/bin/imapsync``: runs ``script`` (a file of this directory) with this
    interpreter and the package on its path, for an engine's ``imapsync=``."""
    here = Path(__file__).resolve().parent
    path = tmp / "bin" / "imapsync"
    path.parent.mkdir(exist_ok=True)
    assigns = " ".join(f"{k}={v}" for k, v in env.items())
    path.write_text(f"#!/bin/sh\n{assigns} PYTHONPATH={here}:{here.parent / 'imageroot' / 'pypkg'} "
                    f"exec {sys.executable} {here / script} \"$@\"\n")
    path.chmod(0o755)
    return str(path)


@contextlib.contextmanager
def pidfile_of(values: dict[str, list[str]]) -> Iterator[None]:
    """imapsync's ``--pidfile``: written at the start, removed at the end."""
    pidfile = values.get("pidfile", [""])[0]
    if pidfile:
        with open(pidfile, "w") as f:
            f.write(f"{os.getpid()}\n")
    try:
        yield
    finally:
        if pidfile and os.path.exists(pidfile):
            os.unlink(pidfile)


def options(argv: list[str]) -> tuple[dict[str, list[str]], set[str]]:
    values: dict[str, list[str]] = {}
    flags: set[str] = set()
    for arg in argv:
        if arg.startswith("--") and "=" in arg:
            key, value = arg[2:].split("=", 1)
            values.setdefault(key, []).append(value)
        elif arg.startswith("--"):
            flags.add(arg[2:])
    return values, flags


def connect(values: dict[str, list[str]], flags: set[str], n: int) -> imapclient.IMAPClient:
    context = ssl.create_default_context()
    context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
    host, port = values[f"host{n}"][0], int(values[f"port{n}"][0])
    client = imapclient.IMAPClient(host, port, ssl=f"ssl{n}" in flags, ssl_context=context)
    if f"tls{n}" in flags or (f"ssl{n}" not in flags and b"STARTTLS" in client.capabilities()):
        client.starttls(context)
    with open(values[f"passfile{n}"][0], encoding="utf-8") as f:
        client.login(values[f"user{n}"][0], f.readline().rstrip("\r\n"))
    client.normalise_times = False
    return client


def signatures(client: imapclient.IMAPClient, uids: list[int]) -> dict[int, str | None]:
    if not uids:
        return {}
    data = client.fetch(uids, [HEADER_FETCH.decode()])
    out = {}
    for uid, item in data.items():
        header = header_from_fetch(item)
        out[uid] = header_signature(header) if header is not None else None
    return out


def resync_flags(c1, c2, uid1: int, uid2: int) -> None:
    """imapsync's --resyncflags: host2's flags become host1's (a replace, removals included)."""
    wanted = [f for f in c1.get_flags([uid1])[uid1] if f.lower() != b"\\recent"]
    c2.set_flags([uid2], wanted, silent=True)


def sync_folder(c1, c2, raw1: str, sep1: str, sep2: str, values, flags, stats: Counter) -> None:
    raw2 = raw1.replace(sep1, sep2) if sep1 and sep2 else raw1
    print(f"Folder {stats['folders'] + 1:>4}/{stats['total']} [{raw1}] -> [{raw2}]", flush=True)
    stats["folders"] += 1
    c1.folder_encode = c2.folder_encode = False
    c1.select_folder(raw1, readonly=True)
    if not c2.folder_exists(raw2):
        c2.create_folder(raw2)
        print(f"Created folder [{raw2}] on host2", flush=True)
    c2.select_folder(raw2)
    search = values.get("search1", ["ALL"])[0].split()
    uids1 = sorted(c1.search(search))
    sig1 = signatures(c1, uids1)
    sig2 = signatures(c2, sorted(c2.search(["ALL"])))
    on2 = set(s for s in sig2.values() if s)
    seen: set[str] = set()
    for uid in uids1:
        sig = sig1.get(uid)
        if not sig:
            print(f"Host1: {raw1}/{uid} size 0 ignored (no wanted headers so we ignore this message. "
                  "To solve this: use --addheader)", flush=True)
            stats["skipped"] += 1
            continue
        if sig in seen or sig in on2:
            if sig in on2 and sig not in seen and "noresyncflags" not in flags:
                resync_flags(c1, c2, uid, [u for u, s in sig2.items() if s == sig][0])
            seen.add(sig)
            stats["skipped"] += 1
            continue
        seen.add(sig)
        item = c1.fetch([uid], ["BODY.PEEK[]", "FLAGS", "INTERNALDATE"])[uid]
        body = item[b"BODY[]"]
        msg_flags = [f for f in item[b"FLAGS"] if f.lower() != b"\\recent"]
        reply = c2.append(raw2, body, msg_flags, item[b"INTERNALDATE"])
        match = re.search(rb"APPENDUID \d+ (\d+)", reply or b"")
        uid2 = match.group(1).decode() if match else ""
        print(f"msg {raw1}/{uid} {{{len(body)}}}  copied to {raw2}/{uid2}  1.00 msgs/s  1.000 KiB/s", flush=True)
        stats["transferred"] += 1
        stats["bytes"] += len(body)
    if "delete2" in flags:
        wanted = set(s for s in sig1.values() if s)
        gone = [u for u, s in sig2.items() if s and s not in wanted]
        if gone:
            c2.delete_messages(gone)
            c2.uid_expunge(gone)
            stats["deleted2"] += len(gone)


def folders(c1, values) -> tuple[list[str], str]:
    rows = c1.list_folders("", "*")
    sep = next((d.decode() if isinstance(d, bytes) else d for _f, d, _n in rows if d), "/")
    names = [n.decode() if isinstance(n, bytes) else str(n) for f, _d, n in rows
             if not any(x.lower() == b"\\noselect" for x in f)]
    if "folder" in values:
        names = [n for n in names if n in values["folder"]]
    for pattern in values.get("exclude", []):
        names = [n for n in names if not re.search(pattern, n)]
    return sorted(names, key=lambda n: (n.upper() != "INBOX", n)), sep


def main(argv: list[str]) -> int:
    values, flags = options(argv)
    with pidfile_of(values):
        c1, c2 = connect(values, flags, 1), connect(values, flags, 2)
        names, sep1 = folders(c1, values)
        sep2 = c2.list_folders("", "")[0][1]
        sep2 = sep2.decode() if isinstance(sep2, bytes) else (sep2 or "/")
        stats: Counter = Counter(total=len(names))
        print(f"++++ Looping on each one of {len(names)} folders to sync", flush=True)
        for raw in names:
            sync_folder(c1, c2, raw, sep1, sep2, values, flags, stats)
        print("++++ End looping on each folder", flush=True)
        print("++++ Statistics")
        print(f"{'Messages transferred':<40}: {stats['transferred']} ")
        print(f"{'Messages skipped':<40}: {stats['skipped']}")
        print(f"{'Messages deleted on host2':<40}: {stats['deleted2']}")
        print(f"{'Total bytes transferred':<40}: {stats['bytes']} (0.000 KiB)")
        print("Detected 0 errors")
        print(f"Exiting with return value 0 (EX_OK: successful termination) 0/50 nb_errors/max_errors "
              f"PID {os.getpid()}", flush=True)
        return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
