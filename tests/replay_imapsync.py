#!/usr/bin/env python3
"""Replays a recorded imapsync 2.229 run against the real Dovecot servers.

``tests/fixtures/imapsync-runs/*.log`` are outputs of the real imapsync on a
known corpus.  For a mailbox filled with the same corpus (same order, so the
same UIDs), this program does exactly what that run did -- it creates the
folders it created and APPENDs each message of a ``copied to`` line, nothing
else -- and prints the recorded lines (with the new host2 UIDs), so the
engine's parser and post-steps see what a real run would have shown them.
Which log: ``$REPLAY_LOG``.  The connection options are the engine's argv.
"""

from __future__ import annotations

import os
import re
import sys

from standin_imapsync import connect, options, pidfile_of

COPIED = re.compile(r"^msg (?P<f1>.+)/(?P<uid1>\d+) \{\d+\}(?P<pad>\s+)copied to (?P<f2>.+)/(?P<uid2>\d*)"
                    r"(?P<rest>\s+[\d.]+ msgs/s.*)$")
CREATED = re.compile(r"^Created folder \[(?P<f2>.*)\] on host2\s*$")
EXIT = re.compile(r"^Exiting with return value (\d+) ")


def replay_line(c1, c2, line: str) -> tuple[str, int | None]:
    if m := CREATED.match(line):
        if not c2.folder_exists(m.group("f2")):
            c2.create_folder(m.group("f2"))
        return line, None
    if m := COPIED.match(line):
        c1.select_folder(m.group("f1"), readonly=True)
        uid1 = int(m.group("uid1"))
        item = c1.fetch([uid1], ["BODY.PEEK[]", "FLAGS", "INTERNALDATE"])[uid1]
        flags = [f for f in item[b"FLAGS"] if f.lower() != b"\\recent"]
        reply = c2.append(m.group("f2"), item[b"BODY[]"], flags, item[b"INTERNALDATE"])
        new = re.search(rb"APPENDUID \d+ (\d+)", reply or b"")
        uid2 = new.group(1).decode() if new else m.group("uid2")
        return (f"msg {m.group('f1')}/{uid1} {{{len(item[b'BODY[]'])}}}{m.group('pad')}copied to "
                f"{m.group('f2')}/{uid2}{m.group('rest')}"), None
    if m := EXIT.match(line):
        return line, int(m.group(1))
    return line, None


def main(argv: list[str]) -> int:
    values, flags = options(argv)
    code = 0
    with pidfile_of(values):
        c1, c2 = connect(values, flags, 1), connect(values, flags, 2)
        c1.folder_encode = c2.folder_encode = False  # the log has raw (modified UTF-7) names
        with open(os.environ["REPLAY_LOG"], encoding="utf-8") as log:
            for raw in log:
                line, exit_code = replay_line(c1, c2, raw.rstrip("\n"))
                print(line, flush=True)
                code = exit_code if exit_code is not None else code
    return code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
