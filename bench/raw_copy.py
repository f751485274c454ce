"""The raw ceiling: our IMAP layer copying a mailbox with no sync logic at all.

    python bench/raw_copy.py SPEC.json        (SPEC as engine_child.py's)

What the fastest client built on ``ns8_imapsync.imap`` can do on this pair:
per folder, one metadata FETCH, batched ``BODY.PEEK[]`` reads
(``reads.fetch_bodies``) and one MULTIAPPEND per batch
(``messages.append_many``) into the SELECTed destination folder, the next
batch read from the remote while this one is appended (a reader thread and a
queue of two batches). No identity, no state, no flags sync: the gap between
this and the native engine is what the engine's own logic costs.
"""

from __future__ import annotations

import imaplib
import json
import queue
import sys
import threading
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO / "imageroot" / "pypkg")]

from ns8_imapsync.imap import reads  # noqa: E402
from ns8_imapsync.imap.connection import Endpoint, open_session  # noqa: E402
from ns8_imapsync.imap.folders import list_folders, map_name, namespace_info, select_folder  # noqa: E402
from ns8_imapsync.imap.messages import append_many, clean_flags, mailbox_arg, uid_search_all  # noqa: E402

DONE = object()


def read_side(c1, p1: str, d1: str, p2: str, d2: str, out: queue.Queue) -> None:
    """Puts ("folder", name) then ("batch", [(flags, date, body)]) items, then DONE."""
    try:
        for folder in list_folders(c1):
            target = map_name(folder.name, p1, d1, p2, d2)
            out.put(("folder", target))
            info = select_folder(c1, folder, readonly=True)
            if not info.get(b"EXISTS"):
                continue
            uids = sorted(uid_search_all(c1))
            meta = reads.fetch_meta(c1, uids, "(UID FLAGS INTERNALDATE RFC822.SIZE)")
            sizes = {u: int(m[b"RFC822.SIZE"]) for u, m in meta.items()}
            for batch in reads.body_batches(uids, sizes):
                bodies = reads.fetch_bodies(c1, batch, sizes=sizes, refused={})
                out.put(("batch", [(clean_flags(meta[u][b"FLAGS"]), meta[u][b"INTERNALDATE"], bodies[u])
                                   for u in batch if u in bodies]))
    except BaseException as exc:  # the writer re-raises it
        out.put(("error", exc))
    out.put(DONE)


def write_side(c2, items: queue.Queue) -> tuple[int, int]:
    """CREATE and SELECT each destination folder, MULTIAPPEND each batch; (messages, bytes)."""
    copied = size = 0
    mailbox = b""
    while (item := items.get()) is not DONE:
        kind, value = item
        if kind == "error":
            raise value
        if kind == "folder":
            if value.upper() != "INBOX":
                try:
                    c2.create_folder(value)
                except imaplib.IMAP4.error:  # a parent Dovecot made for a child listed first
                    pass
            c2.select_folder(value)
            mailbox = mailbox_arg(value)
            continue
        append_many(c2, mailbox, value)
        copied += len(value)
        size += sum(len(body) for _f, _d, body in value)
    return copied, size


def main() -> int:
    """Copy every folder from a spec file's source to its target; the figures as one JSON line."""
    spec = json.loads(Path(sys.argv[1]).read_text())
    pw1 = Path(spec["source_password_file"]).read_text().splitlines()[0]
    pw2 = Path(spec["target_password_file"]).read_text().splitlines()[0]
    c1 = open_session(Endpoint(**spec["source"]), pw1)
    c2 = open_session(Endpoint(**spec["target"]), pw2)
    for c in (c1, c2):
        c.normalise_times = False
    p1, d1 = namespace_info(c1)
    p2, d2 = namespace_info(c2)
    items: queue.Queue = queue.Queue(maxsize=2)
    reader = threading.Thread(target=read_side, args=(c1, p1, d1, p2, d2, items), daemon=True)
    reader.start()
    copied, size = write_side(c2, items)
    reader.join()
    c1.logout()
    c2.logout()
    print(json.dumps({"copied": copied, "bytes": size}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
