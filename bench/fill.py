"""Filling remote mailboxes with the bench corpus: several processes, MULTIAPPEND.

Filling is not measured, but one connection APPENDing one message per round
trip took 81 s for 10,000 messages when measured earlier; a few worker processes
(rendering is Python CPU, so threads would queue on the GIL) each sending
batches of up to 100 messages in one MULTIAPPEND keep it to a fraction.
"""

from __future__ import annotations

import time
from collections import defaultdict
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass

import benchcorpus
import imapclient
from imapclient.exceptions import LoginError
from localnode import corpus
from localnode.config import ImapServer
from ns8_imapsync.imap.messages import append_many, mailbox_arg

JOB_MESSAGES = 400
WORKERS = 3


@dataclass(frozen=True)
class Account:
    """Who the corpus is for: the server, the login and its password."""

    server: ImapServer
    user: str
    password: str


def _server_name(logical: str, separator: str) -> str:
    """A logical ``/`` name in the server's hierarchy (decoded: mailbox_arg encodes it)."""
    return separator.join(logical.split("/"))


def session(account: Account, patience: float = 10.0) -> imapclient.IMAPClient:
    """A logged-in client. A user just added to the passwd-file may be refused for a
    moment (Dovecot notices the changed file on a later lookup), so a refused login
    is retried for ``patience`` seconds."""
    deadline = time.monotonic() + patience
    while True:
        client = corpus.connect(account.server)
        try:
            client.login(account.user, account.password)
            return client
        except LoginError:
            client.shutdown()
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)


def create_folders(account: Account) -> None:
    """Every corpus folder, parents first (the empty ones too: they are part of the tree)."""
    client = session(account)
    try:
        existing = {name for _f, _s, name in client.list_folders()}
        for logical in corpus.FOLDERS:
            name = _server_name(logical, account.server.separator)
            if logical != "INBOX" and name not in existing:
                client.create_folder(name)
    finally:
        client.logout()


def append_job(account: Account, seed: int, folder: str, items: list[benchcorpus.Planned]) -> int:
    """Render and MULTIAPPEND one share of one folder; returns the bytes appended."""
    client = session(account)
    mailbox = mailbox_arg(_server_name(folder, account.server.separator))
    total = 0
    try:
        for batch in benchcorpus.batches(seed, items):
            append_many(client, mailbox, [(list(f), d, raw) for f, d, raw in batch])
            total += sum(len(raw) for _f, _d, raw in batch)
    finally:
        client.logout()
    return total


def jobs(planned: list[benchcorpus.Planned]) -> list[tuple[str, list[benchcorpus.Planned]]]:
    """Per-folder shares of at most JOB_MESSAGES, in index order within a folder."""
    by_folder: dict[str, list[benchcorpus.Planned]] = defaultdict(list)
    for p in planned:
        by_folder[p.folder].append(p)
    out = []
    for folder, items in by_folder.items():
        out += [(folder, items[i:i + JOB_MESSAGES]) for i in range(0, len(items), JOB_MESSAGES)]
    return sorted(out, key=lambda job: -len(job[1]))


def fill(account: Account, seed: int, count: int, workers: int = WORKERS) -> dict:
    """The corpus (seed, count) into the account; what was appended, for the results."""
    planned = benchcorpus.plan(seed, count)
    create_folders(account)
    with ProcessPoolExecutor(max_workers=workers) as pool:
        futures = [pool.submit(append_job, account, seed, folder, items) for folder, items in jobs(planned)]
        total = sum(f.result() for f in futures)
    return {"seed": seed, "messages": len(planned), "bytes": total,
            "duplicates": sum(1 for p in planned if p.duplicate_of is not None),
            "folders": len({p.folder for p in planned})}
