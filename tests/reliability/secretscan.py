"""Where a password can hide, and a scanner that looks there (section 4).

Each password used in the audit is searched in the forms it would take
where it leaks: as written, URL-encoded (quote, quote_plus, lower-case
hex), base64 (alone and inside a longer base64 text at any of the three
alignments -- an IMAP AUTHENTICATE PLAIN `\\0user\\0pass` blob, an HTTP Basic
header), JSON-, Python-repr-, shell- and CSV-escaped. One compiled regular
expression finds every form of every password in one pass over a buffer.

Each hit is attributed:
- "module": anything the module writes or runs (a failure of the audit);
- "platform": what NS8 itself keeps for a while, reported, not hidden: the
  api-server's queued task payload (`<agent>/tasks`, until the agent pops it)
  and another module's task output (`task/module/mail1/<id>/output` of
  `reveal-master-credentials`, 8 h);
- "allowed": the `.pwd` files and the bulk migrator's config files, whose
  modes are checked instead.
"""

from __future__ import annotations

import base64
import json
import os
import re
import shlex
import stat
import threading
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote, quote_plus

import redis

MIN_FORM = 8  # shorter encodings of a part of a password would match by chance
MAX_FILE = 64 * 1024 * 1024


@dataclass(frozen=True)
class Secret:
    name: str  # e.g. "remote:audit1@remote.test"
    kind: str  # "remote", "master", "directadmin"
    value: str


@dataclass(frozen=True)
class Hit:
    where: str  # "proc:1234:cmdline", "file:/...", "redis:key", "output:create-task"
    secret: str
    form: str
    attribution: str  # "module", "platform", "allowed"
    note: str = ""


def _base64_inner(raw: bytes) -> dict[str, bytes]:
    """The base64 characters that only `raw` decides, at each alignment
    within a longer text (the first and last groups depend on neighbours)."""
    out = {}
    for shift in range(3):
        enc = base64.b64encode(b"\0" * shift + raw)
        first = 4 if shift else 0
        last = 4 * ((shift + len(raw)) // 3)
        for name, text in (("base64", enc), ("base64url", base64.urlsafe_b64encode(b"\0" * shift + raw))):
            inner = text[first:last]
            if len(inner) >= MIN_FORM:
                out[f"{name}@{shift}"] = inner
    return out


def forms(value: str) -> dict[str, bytes]:
    """Every form of `value` worth looking for, by name."""
    raw = value.encode()
    found = {
        "plain": raw,
        "url": quote(value, safe="").encode(),
        "url-lower": re.sub(r"%[0-9A-F]{2}", lambda m: m.group(0).lower(), quote(value, safe="")).encode(),
        "url-plus": quote_plus(value).encode(),
        "json": json.dumps(value)[1:-1].encode(),
        "repr": repr(value)[1:-1].encode(),
        "shell": shlex.quote(value).encode(),
        "csv": value.replace('"', '""').encode(),
        "base64-whole": base64.b64encode(raw),
        **_base64_inner(raw),
    }
    unique: dict[str, bytes] = {}
    for name, text in found.items():
        if len(text) >= MIN_FORM and text not in unique.values():
            unique[name] = text
    return unique


class Matcher:
    """All forms of all secrets, one regular expression."""

    def __init__(self, secrets: Iterable[Secret]):
        self.by_text: dict[bytes, tuple[Secret, str]] = {}
        for s in secrets:
            for name, text in forms(s.value).items():
                self.by_text.setdefault(text, (s, name))
        alternatives = sorted(self.by_text, key=len, reverse=True)
        self.regex = re.compile(b"|".join(re.escape(t) for t in alternatives))

    def find(self, data: bytes) -> Iterator[tuple[Secret, str]]:
        seen = set()
        for m in self.regex.finditer(data):
            found = self.by_text[m.group(0)]
            if found not in seen:
                seen.add(found)
                yield found


# ---------------------------------------------------------------------------
# processes
# ---------------------------------------------------------------------------
def _proc_table() -> dict[int, tuple[int, int]]:
    """pid -> (ppid, session id) of every process."""
    table = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            stat_line = Path(f"/proc/{entry.name}/stat").read_text()
        except OSError:
            continue
        fields = stat_line[stat_line.rfind(")") + 2:].split()
        table[int(entry.name)] = (int(fields[1]), int(fields[3]))
    return table


def _read(path: str) -> bytes | None:
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError:
        return None


def project_processes(roots: set[int], marker: str) -> set[int]:
    """The processes of the audit: `roots`, every process whose command line
    names `marker` (the node's directory), and all their descendants. Only
    these have their environment read: the audit looks at its own processes,
    nobody else's secrets."""
    table = _proc_table()
    ours = {p for p in roots if p in table}
    needle = marker.encode()
    for pid in table:
        cmd = _read(f"/proc/{pid}/cmdline") or b""
        if needle in cmd:
            ours.add(pid)
    children: dict[int, list[int]] = {}
    for pid, (ppid, _sid) in table.items():
        children.setdefault(ppid, []).append(pid)
    stack = list(ours)
    while stack:
        for child in children.get(stack.pop(), []):
            if child not in ours:
                ours.add(child)
                stack.append(child)
    return ours


# ---------------------------------------------------------------------------
# the scanner
# ---------------------------------------------------------------------------
@dataclass
class Scanner:
    """Looks for the secrets in processes, files, Redis and texts, and keeps
    every hit (once per place and form) with its attribution."""

    secrets: list[Secret]
    roots: set[int]
    marker: str
    rdb: redis.Redis | None = None
    file_roots: list[Path] = field(default_factory=list)
    allowed_files: re.Pattern = re.compile(r"\.pwd$")
    hits: dict[tuple[str, str, str], Hit] = field(default_factory=dict)
    scanned: Counter = field(default_factory=Counter)
    platform_ttls: dict[str, int] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def __post_init__(self) -> None:
        self.matcher = Matcher(self.secrets)

    def _record(self, where: str, data: bytes, attribution: str, note: str = "") -> None:
        for secret, form in self.matcher.find(data):
            with self.lock:
                self.hits.setdefault((where, secret.name, form), Hit(where, secret.name, form, attribution, note))

    def scan_text(self, where: str, text: str | bytes) -> None:
        """An action's output, an API answer, a CLI's printout."""
        self.scanned["outputs"] += 1
        self._record(where, text.encode(errors="replace") if isinstance(text, str) else text, "module")

    def scan_processes(self) -> None:
        ours = project_processes(self.roots, self.marker)
        for entry in os.scandir("/proc"):
            if not entry.name.isdigit():
                continue
            pid = int(entry.name)
            cmd = _read(f"/proc/{pid}/cmdline")
            if cmd is None:
                continue
            label = cmd[:60].replace(b"\0", b" ").decode(errors="replace")
            self.scanned["process command lines"] += 1
            self._record(f"proc:{pid}:cmdline:{label}", cmd, "module")
            env = _read(f"/proc/{pid}/environ") if pid in ours else None
            if env is not None:
                self.scanned["process environments"] += 1
                self._record(f"proc:{pid}:environ:{label}", env, "module")

    def scan_files(self, since: float = 0.0) -> None:
        for root in self.file_roots:
            for path in _files(root, since):
                data = _read(str(path))
                if data is None:
                    continue
                self.scanned["files"] += 1
                allowed = bool(self.allowed_files.search(str(path)))
                self._record(f"file:{path}", data, "allowed" if allowed else "module")

    def scan_redis(self) -> None:
        if self.rdb is None:
            return
        for key in self.rdb.scan_iter(count=1000):
            try:
                value = _redis_value(self.rdb, key)
            except redis.ResponseError:
                continue
            self.scanned["redis keys"] += 1
            attribution, note = self.redis_owner(key)
            before = len(self.hits)
            self._record(f"redis:{key}", value, attribution, note)
            if attribution == "platform" and len(self.hits) > before:
                self.platform_ttls[key] = int(self.rdb.ttl(key))

    def redis_owner(self, key: str) -> tuple[str, str]:
        """Whose a Redis key is: the platform's queued payloads and the mail
        module's reveal-master-credentials output, or the module's."""
        if key.endswith("/tasks"):
            return "platform", "a queued task payload (NS8's api-server pushes it; the agent pops it at once)"
        m = re.fullmatch(r"task/(module/[^/]+)/([^/]+)/output", key)
        if m and m.group(1) != "module/imapsync1":
            context = self.rdb.get(f"task/{m.group(1)}/{m.group(2)}/context") if self.rdb else None
            action = (json.loads(context) or {}).get("action", "?") if context else "?"
            return "platform", f"{m.group(1)}'s {action} output (NS8 keeps task outputs 8 h)"
        return "module", ""

    def module_hits(self) -> list[Hit]:
        return sorted((h for h in self.hits.values() if h.attribution == "module"), key=lambda h: h.where)

    def by_attribution(self, attribution: str) -> list[Hit]:
        return sorted((h for h in self.hits.values() if h.attribution == attribution), key=lambda h: h.where)


def _files(root: Path, since: float) -> Iterator[Path]:
    """Regular files under `root` (symlinks not followed), changed since `since`."""
    if not root.exists():
        return
    for dirpath, _dirs, names in os.walk(root):
        for name in names:
            path = Path(dirpath) / name
            try:
                st = path.lstat()
            except OSError:
                continue
            if stat.S_ISREG(st.st_mode) and st.st_size <= MAX_FILE and st.st_mtime >= since:
                yield path


def _redis_value(rdb: redis.Redis, key: str) -> bytes:
    """The key and every value it holds, as stored (a JSON string inside a
    string key stays as it is: a second encoding would hide its plain form)."""
    kind = rdb.type(key)
    parts: list[object]
    if kind == "string":
        parts = [rdb.get(key)]
    elif kind == "hash":
        parts = [x for kv in rdb.hgetall(key).items() for x in kv]
    elif kind == "list":
        parts = rdb.lrange(key, 0, -1)
    elif kind == "set":
        parts = sorted(rdb.smembers(key))
    elif kind == "zset":
        parts = [m for m, _score in rdb.zrange(key, 0, -1, withscores=True)]
    elif kind == "stream":
        parts = [x for _id, entry in rdb.xrange(key) for kv in entry.items() for x in kv]
    else:
        parts = []
    return "\n".join([key, *(str(p) for p in parts if p is not None)]).encode()


class Watch:
    """Scan processes and Redis every `interval` seconds (files every
    `file_every` rounds) in a thread, while the activities run."""

    def __init__(self, scanner: Scanner, interval: float = 0.25, file_every: int = 8):
        self.scanner, self.interval, self.file_every = scanner, interval, file_every
        self.stop = threading.Event()
        self.rounds = 0
        self.errors: list[str] = []
        self.thread = threading.Thread(target=self._loop, daemon=True)

    def _loop(self) -> None:
        while not self.stop.is_set():
            try:
                self.scanner.scan_processes()
                self.scanner.scan_redis()
                if self.rounds % self.file_every == 0:
                    self.scanner.scan_files()
            except Exception as exc:  # the watch must go on: an error is reported at the end
                self.errors.append(f"{type(exc).__name__}: {exc}")
            self.rounds += 1
            self.stop.wait(self.interval)

    def __enter__(self) -> Watch:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join(timeout=30)
