"""A cron daemon for the sync "container" on the local node.

The image runs cronie (`crond -f`) on `/etc/cron.d`; here the podman stand-in
maps that mount, and this process plays cronie: every minute it reads the
`/etc/cron.d` files (`KEY=VALUE` lines and `m h dom mon dow user command`
lines) and starts the due commands, without a shell, as cronie would run
them through one.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

FIELDS = ((0, 59), (0, 23), (1, 31), (1, 12), (0, 6))


def cron_dir() -> Path:
    for src, dst in json.loads(os.environ.get("LOCALNODE_MOUNTS", "[]")):
        if dst.rstrip("/") == "/etc/cron.d":
            return Path(src)
    return Path("/etc/cron.d")


def field_matches(expr: str, value: int, lo: int, hi: int) -> bool:
    for part in expr.split(","):
        step = 1
        if "/" in part:
            part, s = part.split("/", 1)
            step = int(s)
        if part == "*":
            a, b = lo, hi
        elif "-" in part:
            a, b = (int(x) for x in part.split("-", 1))
        else:
            a = b = int(part)
            if step != 1:
                b = hi
        if a <= value <= b and (value - a) % step == 0:
            return True
    return False


def due(fields: list[str], now: datetime) -> bool:
    values = (now.minute, now.hour, now.day, now.month, (now.weekday() + 1) % 7)
    return all(field_matches(f, v, lo, hi) for f, v, (lo, hi) in zip(fields, values, FIELDS, strict=True))


def jobs(now: datetime) -> list[tuple[list[str], dict[str, str]]]:
    found = []
    d = cron_dir()
    if not d.is_dir():
        return found
    for path in sorted(d.iterdir()):
        if not path.is_file() or path.name.startswith(".") or not re.fullmatch(r"[\w.-]+", path.name):
            continue
        env: dict[str, str] = {}
        for line in path.read_text().splitlines():
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            m = re.fullmatch(r"([A-Za-z_]\w*)\s*=\s*(.*)", line)
            if m:
                env[m.group(1)] = m.group(2).strip("\"'")
                continue
            parts = line.split(None, 6)
            if len(parts) < 7:
                continue
            try:
                if due(parts[:5], now):
                    found.append((shlex.split(parts[6]), dict(env)))
            except ValueError:
                print(f"crond: bad line in {path.name}: {line}", flush=True)
    return found


def main() -> int:
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # reap finished jobs
    print(f"crond: reading {cron_dir()}", flush=True)
    while True:
        now = datetime.now()
        time.sleep(60 - now.second - now.microsecond / 1e6 + 0.01)
        now = datetime.now().replace(second=0, microsecond=0)
        for argv, extra in jobs(now):
            env = dict(os.environ)
            env.update(extra)
            if not os.path.exists(argv[0]):  # /usr/local/bin/x of the image
                argv[0] = shutil.which(os.path.basename(argv[0]), path=env.get("PATH")) or argv[0]
            print(f"crond: {now:%H:%M} running {argv}", flush=True)
            try:
                subprocess.Popen(argv, env=env, stdin=subprocess.DEVNULL)
            except OSError as exc:
                print(f"crond: cannot run {argv[0]}: {exc}", flush=True)


if __name__ == "__main__":
    sys.exit(main())
