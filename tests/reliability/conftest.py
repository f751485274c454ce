"""Shared fixtures of the reliability suite (tests/reliability/), general enough for any of its modules.

* ``pair``: the local node's two real Dovecots for the whole suite (port base
  ``$RELIABILITY_PAIR_PORT_BASE``, default 31500; it overrides the module-scoped
  ``pair`` of tests/conftest.py inside this directory), ``no_uidplus_pair`` a
  second one whose mail1 lacks UIDPLUS (``$RELIABILITY_NO_UIDPLUS_PORT_BASE``,
  28300);
* ``remote_proxy`` / ``local_proxy`` (from tests/conftest.py): a fault proxy in front of each server of this ``pair``;
* ``mailboxes``: a :class:`Mailboxes` for one account, both sides wiped;
* ``record``: what a case measured, written at the end of the session to
  ``tests/outputs/reliability/<SECTION>.json`` (``SECTION`` is a module
  constant) with the case's outcome and time, for the README's table;
* ``small_fs``: a size-limited tmpfs mounted on a directory, always unmounted;
* :func:`server_stopped`: a Dovecot of the pair stopped, then started again.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import imapclient
import pytest
from faultproxy import FaultProxy, Session
from localnode import corpus, dovecot
from localnode.config import ImapServer
from localnode.imap_pair import LOCAL_OF, REMOTE_OF, Pair, running_pair
from ns8_imapsync.imap.connection import Endpoint

from reliability import comparator as cmp
from reliability import resultsfile
from reliability.deletionwatch import DeletionWatch
from reliability.engines import Task

PAIR_PORT_BASE = int(os.environ.get("RELIABILITY_PAIR_PORT_BASE", "31500"))
NO_UIDPLUS_PORT_BASE = int(os.environ.get("RELIABILITY_NO_UIDPLUS_PORT_BASE", "28300"))
OUTPUTS = resultsfile.OUTPUT_DIR
RECENT = datetime.now(UTC) - timedelta(hours=2)
OLDER_DAYS = 10  # delete_remote_older in the "older" variant: the corpus is years old, RECENT is not
DELETIONS = {"off": {}, "remote": {"delete_remote": True},
             "older": {"delete_remote": True, "delete_remote_older": OLDER_DAYS}}


def pytest_configure(config: pytest.Config) -> None:
    config.reliability_results = []  # type: ignore[attr-defined]
    config.reliability_ids = {}  # type: ignore[attr-defined]  # section -> module -> every case id collected


def pytest_itemcollected(item: pytest.Item) -> None:
    """Every case of a section, deselected or not: a results file keeps only cases that exist."""
    section = getattr(getattr(item, "module", None), "SECTION", None)
    if section is not None:
        ids = item.config.reliability_ids.setdefault(section, {})  # type: ignore[attr-defined]
        ids.setdefault(item.module.__name__, set()).add(item.name)


LONG_SKIP = ("long variant (marker reliability_long): run with "
             "`.venv/bin/python -m pytest -m reliability_long tests/reliability`")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """The long variants run only when the marker expression names them (``-m
    reliability_long``), so ``make test`` stays short while CI runs them in a step of their own."""
    if "reliability_long" in (config.option.markexpr or ""):
        return
    here = Path(__file__).parent
    for item in items:
        if item.get_closest_marker("reliability_long") and here in Path(item.fspath).parents:
            item.add_marker(pytest.mark.skip(reason=LONG_SKIP))


# ---- Dovecots and proxies ---------------------------------------------------------

@pytest.fixture(scope="session")
def pair() -> Iterator[Pair]:
    with running_pair(PAIR_PORT_BASE) as started:
        yield started


@pytest.fixture(scope="session")
def no_uidplus_pair() -> Iterator[Pair]:
    with running_pair(NO_UIDPLUS_PORT_BASE, mail1_uidplus=False) as started:
        yield started


def via(proxy: FaultProxy, ep: Endpoint) -> Endpoint:
    """``ep`` reached through ``proxy``, in clear text (the proxy hides STARTTLS)."""
    return replace(ep, host=proxy.host, port=proxy.port, security="")


def server_processes(pair: Pair, server: ImapServer) -> list[int]:
    """Every process of one Dovecot instance of the pair: ``dovecot.pids`` plus the IMAP
    sessions it misses (their cwd and root are "/"), found by their process title
    ``dovecot-localnode-<port base>-<name>/...``."""
    title = f"dovecot-localnode-{pair.cfg.port_base}-{server.name}/".encode()
    found = set(dovecot.pids(server))
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                if (entry / "cmdline").read_bytes().startswith(title):
                    found.add(int(entry.name))
    return sorted(found)


# held while a server is being stopped or started: a stop run by a proxy observer can
# outlast the run it interrupts (a loaded machine, a client timeout shorter than the
# stop), and must not kill the instance the test starts again meanwhile
_SERVER_CONTROL = threading.Lock()


def stop_server(pair: Pair, server: ImapServer, timeout: float = 10) -> None:
    """Every process of one Dovecot instance ended (TERM, then KILL), open sessions
    included, as a crash or an administrator's stop would; the other instance keeps running."""
    with _SERVER_CONTROL:
        _stop_server(pair, server, timeout)


def _stop_server(pair: Pair, server: ImapServer, timeout: float) -> None:
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid in server_processes(pair, server):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)
        deadline = time.monotonic() + timeout
        while server_processes(pair, server) and time.monotonic() < deadline:
            time.sleep(0.05)
        if not server_processes(pair, server):
            return
    raise RuntimeError(f"dovecot {server.name} survived SIGKILL")


@contextlib.contextmanager
def server_stopped(pair: Pair, server: ImapServer, uidplus: bool = True) -> Iterator[None]:
    """For a block that starts with ``stop_server`` (often from a proxy observer): the
    instance is started again on exit, whatever happened."""
    try:
        yield
    finally:
        start_again(pair, server, uidplus)


def start_again(pair: Pair, server: ImapServer, uidplus: bool = True, attempts: int = 5) -> None:
    """``dovecot.start`` after a kill: a master killed a moment ago can leave its listener
    or pid file behind briefly, so a failed start is retried; the last failure names the
    instance's log."""
    for attempt in range(attempts):
        try:
            with _SERVER_CONTROL:
                dovecot.start(pair.cfg, mail1_uidplus=uidplus)
            return
        except dovecot.DovecotError as exc:
            if attempt == attempts - 1:
                log = Path(server.dir) / "log" / "dovecot.log"
                tail = log.read_text(errors="replace")[-800:] if log.exists() else ""
                raise RuntimeError(f"{exc}\n{tail}") from exc
            time.sleep(0.5)


def at_command(proxy: FaultProxy, pattern: str, n: int, action: Callable[[], object]) -> list[int]:
    """Run ``action`` once, as the ``n``-th client command matching ``pattern`` passes the
    proxy (before it is forwarded); the returned list holds the running count. Once the
    proxy's faults are cleared (a re-run), the action is never run."""
    seen = [0]
    armed = proxy.generation

    def observe(_line: bytes, _session: object) -> None:
        seen[0] += 1
        if seen[0] == n and proxy.generation == armed:
            action()

    proxy.on_command(pattern, observe)
    return seen


APPEND = r"^\S+ APPEND "
_LITERAL = r"\{\d+\+?\}\r\n$"


def at_appended(proxy: FaultProxy, n: int, action: Callable[[bytes], object]) -> list[int]:
    """Run ``action(line)`` once, as the ``n``-th message APPENDed through ``proxy`` is
    announced (one APPEND or one message of a MULTIAPPEND: its literal is held until
    ``action`` returns); the returned list holds the running count. Once the proxy's
    faults are cleared (a re-run), the action is never run."""
    seen = [0]
    armed = proxy.generation

    def observe(line: bytes, session: Session) -> None:
        if not re.match(rb"^\S+ APPEND ", session.command, re.I):
            return
        seen[0] += 1
        if seen[0] == n and proxy.generation == armed:
            action(line)

    proxy.on_command(_LITERAL, observe, continuations=True)
    return seen


# ---- mailboxes --------------------------------------------------------------------

@dataclass
class Mailboxes:
    """One account of the pair: its remote mailbox (source) and its local one (target)."""

    pair: Pair
    user: str  # a pair user: user01, user02, user03
    tmp: Path

    @property
    def remote(self) -> Endpoint:
        return self.pair.remote(self.user)

    @property
    def local(self) -> Endpoint:
        return self.pair.local(self.user)

    @property
    def remote_password(self) -> str:
        return self.pair.password(self.user)

    @property
    def local_password(self) -> str:
        return self.pair.master_pass

    def wipe(self) -> None:
        dovecot.wipe(self.pair.cfg.remote, REMOTE_OF[self.user])
        dovecot.wipe(self.pair.cfg.mail1, LOCAL_OF[self.user])

    def fill(self, seed: int = 7, count: int = 60, large: int = 1, large_size: int = 300_000,
             recent: int = 3) -> int:
        """The corpus (duplicates, no Message-ID, reused Message-ID, nested and non-ASCII
        folders, keywords, old dates) plus ``recent`` messages of today in INBOX; the count."""
        corpus.fill(self.pair.cfg.remote, REMOTE_OF[self.user], self.remote_password, seed=seed, count=count,
                    large=large, large_size=large_size)
        client = cmp.connect(self.remote, self.remote_password)
        try:
            for i in range(recent):
                client.append("INBOX", message(f"recent-{seed}-{i}"), [b"\\Flagged"] if i else [], RECENT)
        finally:
            client.logout()
        return count + recent

    def remote_snapshot(self, **kw: object) -> cmp.Snapshot:
        return cmp.snapshot(self.remote, self.remote_password, **kw)  # type: ignore[arg-type]

    def local_snapshot(self) -> cmp.Snapshot:
        return cmp.snapshot(self.local, self.local_password)

    def task(self, engine: str, source: Endpoint | None = None, target: Endpoint | None = None,
             name: str | None = None, **options: object) -> Task:
        return Task(engine, name or f"{LOCAL_OF[self.user]}_rel{engine[:3]}", self.tmp / "tasks",
                    source or self.remote, target or self.local, self.remote_password, self.local_password,
                    dict(options))

    def watch(self, proxy: FaultProxy, baseline: cmp.Snapshot | None, anywhere: bool = False) -> DeletionWatch:
        """A :class:`DeletionWatch` on ``proxy`` (in front of the remote)."""
        return DeletionWatch(self.remote, self.remote_password, self.local, self.local_password,
                             anywhere=anywhere, baseline=baseline).attach(proxy)


def message(tag: str, body: bytes = b"", headers: str = "") -> bytes:
    """A small RFC 5322 message with its own Message-ID."""
    return (f"From: sender@example.org\r\nTo: dave@remote.test\r\nSubject: {tag}\r\n"
            f"Message-ID: <{tag}@reliability.test>\r\nDate: Mon, 2 Dec 2024 10:00:00 +0000\r\n{headers}"
            f"\r\n").encode() + (body or f"body of {tag}\r\n".encode())


def expunge_one(client: imapclient.IMAPClient, folder: str, index: int, expunged: dict[cmp.Path, Counter]
                ) -> list[int]:
    """On the remote itself: the ``index``-th message of ``folder`` expunged and recorded in
    ``expunged`` (by path); the folder's UIDs before the expunge."""
    client.select_folder(folder)
    uids = sorted(client.search(["ALL"]))
    raw = client.fetch([uids[index]], ["BODY.PEEK[]"])[uids[index]][b"BODY[]"]
    expunged.setdefault((folder,), Counter())[cmp.key_of(raw)] += 1
    client.delete_messages([uids[index]])
    client.expunge()
    return uids


def rename_away(client: imapclient.IMAPClient, folder: str, new_name: str, expunged: dict[cmp.Path, Counter]) -> None:
    """On the remote itself: ``folder`` renamed; its messages recorded as gone from its path."""
    client.select_folder(folder, readonly=True)
    olds = client.fetch(client.search(["ALL"]), ["BODY.PEEK[]"])
    expunged[(folder,)] = Counter(cmp.key_of(d[b"BODY[]"]) for d in olds.values())
    client.close_folder()
    client.rename_folder(folder, new_name)


@pytest.fixture
def mailboxes(pair: Pair, tmp_path: Path) -> Mailboxes:
    """dave@remote.test -> u3, both sides empty."""
    boxes = Mailboxes(pair, "user03", tmp_path)
    boxes.wipe()
    return boxes


# ---- results ----------------------------------------------------------------------

@dataclass
class Record:
    """What a case measured, beside the outcome and time pytest knows: written to the
    section's results file (see the module docstring)."""

    engine: str = ""
    variant: str = ""
    detail: str = ""  # e.g. the state the fault run ended in
    counts: dict[str, int] = field(default_factory=dict)
    peak_rss_mb: float | None = None

    def peak(self, *runs: object) -> None:
        """Keep the highest peak RSS of the runs (EngineRun) seen so far."""
        for run in runs:
            mb = getattr(run, "peak_rss_mb", None)
            if mb is not None and (self.peak_rss_mb is None or mb > self.peak_rss_mb):
                self.peak_rss_mb = mb


RECORD_KEY = pytest.StashKey[Record]()


@pytest.fixture
def record(request: pytest.FixtureRequest) -> Record:
    rec = Record()
    params = getattr(request.node, "callspec", None)
    if params is not None:
        rec.engine = str(params.params.get("engine", ""))
        rec.variant = str(params.params.get("deletion", ""))
    request.node.stash[RECORD_KEY] = rec
    return rec


def _outcome(report: pytest.TestReport) -> str:
    if hasattr(report, "wasxfail"):
        return "xfailed (known defect)" if report.skipped else "xpassed"
    return report.outcome


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo) -> Iterator[None]:
    outcome = yield
    report: pytest.TestReport = outcome.get_result()
    section = getattr(item.module, "SECTION", None)
    if section is None or (report.when != "call" and not (report.when == "setup" and report.skipped)):
        return
    rec = item.stash.get(RECORD_KEY, None) or Record()
    params = getattr(item, "callspec", None)
    engine = rec.engine or (str(params.params.get("engine", "")) if params else "")
    reason = ""
    if report.skipped and isinstance(report.longrepr, tuple):
        reason = str(report.longrepr[2])
        if LONG_SKIP in reason:
            return  # not run this time: keep what a long run recorded
    item.config.reliability_results.append({  # type: ignore[attr-defined]
        "section": section, "module": item.module.__name__, "case": item.originalname, "id": item.name,
        "engine": engine,
        "variant": rec.variant, "outcome": _outcome(report), "seconds": round(report.duration, 2),
        "detail": rec.detail or reason or (getattr(report, "wasxfail", "") or ""),
        "counts": rec.counts, "peak_rss_mb": rec.peak_rss_mb, "defect": getattr(report, "wasxfail", "") or "",
        "long": item.get_closest_marker("reliability_long") is not None})


def pytest_sessionfinish(session: pytest.Session) -> None:
    """Merge this session's cases into each section's file (a targeted run updates its cases only)."""
    results = getattr(session.config, "reliability_results", [])
    by_section: dict[str, list[dict]] = {}
    for r in results:
        by_section.setdefault(r.pop("section"), []).append(r)
    known = getattr(session.config, "reliability_ids", {})
    for section, cases in by_section.items():
        write_results(section, cases, known.get(section))


def write_results(section: str, cases: list[dict], known: dict[str, set[str]] | None = None) -> Path:
    """Merge ``cases`` into the section's file; ``known``: module -> the ids it has now (older
    entries of a collected module's removed or renamed cases are dropped)."""
    OUTPUTS.mkdir(parents=True, exist_ok=True)
    path = OUTPUTS / f"{section}.json"
    try:
        old = json.loads(path.read_text())["cases"]
    except (OSError, ValueError, KeyError):
        old = []
    fresh = {c["id"] for c in cases}
    known = known or {}

    def exists(c: dict) -> bool:
        module = c.get("module")
        return module not in known or c.get("id") in known[module]

    merged = [c for c in old if c.get("id") not in fresh and exists(c)] + cases
    doc = {"section": section, "updated": datetime.now(UTC).isoformat(timespec="seconds"),
           "machine": resultsfile.machine(), "cases": sorted(merged, key=lambda c: c["id"])}
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(doc, indent=1, ensure_ascii=False) + "\n")
    tmp.replace(path)
    return path


# ---- small file systems -----------------------------------------------------------

@pytest.fixture
def small_fs() -> Iterator[Callable[[Path, str], Path]]:
    """``small_fs(dir, "2m")`` mounts a tmpfs of that size on ``dir`` (root only; skips
    otherwise); every mount is undone at the end of the test, whatever happened."""
    mounted: list[Path] = []

    def mount(path: Path, size: str) -> Path:
        path.mkdir(parents=True, exist_ok=True)
        proc = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size},mode=0755", "tmpfs", str(path)],
                              capture_output=True, text=True)
        if proc.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs here (needs root): {proc.stderr.strip()}")
        mounted.append(path)
        return path

    try:
        yield mount
    finally:
        for path in reversed(mounted):
            subprocess.run(["umount", "-l", str(path)], capture_output=True)


def fill_up(path: Path, leave: int = 0) -> Path:
    """A file taking all the free space of ``path``'s file system but ``leave`` bytes."""
    st = os.statvfs(path)
    free = st.f_bavail * st.f_frsize
    filler = path / ".filler"
    with open(filler, "wb") as f:
        with contextlib.suppress(OSError):
            f.write(b"\0" * max(0, free - leave))
    return filler
