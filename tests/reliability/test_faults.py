"""Issue 15, section 1: faults during a sync, on the real Dovecot pair, with both engines.

Every case has the same recipe (:class:`FaultCase`):

1. the remote account gets the corpus (duplicates, messages without
   Message-ID, nested and non-ASCII folders, keywords, old dates) plus three
   messages of today; the engine reaches both servers through a fault proxy,
   and a :class:`DeletionWatch` on the remote one checks every ``\\Deleted``
   as it is sent: the message must have a copy on the local server *at that
   moment*;
2. the fault run, with the fault injected at a precise point (the n-th
   message APPENDed to the local server); it must not crash, and if it says
   it succeeded, the local mailbox must already be right;
3. a normal re-run (faults off), which must succeed, then the comparator: the
   local mailbox holds exactly the remote one plus what the runs deleted from
   it (no loss, no duplicate, flags and dates right), every remote deletion
   was seen by the watch, and with ``delete_remote`` (``older``: only messages
   older than 10 days) nothing deletable is left on the remote.

Variants: engine (native; imapsync when the real one is on PATH) x deletion
(off, delete_remote, delete_remote_older). The default suite runs native and
imapsync with delete_remote, the riskiest; the other variants carry the
``reliability_long`` marker.
"""

from __future__ import annotations

import math
import os
import signal
import subprocess
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from faultproxy import UP, FaultProxy
from localnode import dovecot
from localnode.imap_pair import REMOTE_OF
from ns8_imapsync import runstate
from ns8_imapsync.statedir import StateDir
from ns8_imapsync.sync.runctl import stop_run

from reliability import comparator as cmp
from reliability.conftest import (
    DELETIONS,
    OLDER_DAYS,
    Mailboxes,
    Record,
    at_appended,
    expunge_one,
    fill_up,
    message,
    rename_away,
    server_stopped,
    stop_server,
    via,
)
from reliability.deletionwatch import DeletionWatch
from reliability.engines import IMAPSYNC, NO_IMAPSYNC, EngineRun, Task, finish

SECTION = "1-faults"
DEFAULT = {("native", "remote"), ("imapsync", "remote")}
# an imapsync run must give up within seconds, not imapsync's 120 s timeouts and retries
IMAPSYNC_KW = {"abort_grace": 2.0, "term_grace": 2.0}
STALL_ENV = {"SYNC_STALL_SECONDS": "3", "SYNC_STOP_GRACE": "3"}


def matrix(default: set[tuple[str, str]] = DEFAULT, defects: dict[tuple[str, str], str] | None = None) -> list:
    """engine x deletion; the combinations outside ``default`` are long variants;
    ``defects``: (engine, deletion or "*") -> the defect a variant shows (strict xfail)."""
    out = []
    for engine in ("native", "imapsync"):
        for deletion in DELETIONS:
            marks = [] if (engine, deletion) in default else [pytest.mark.reliability_long]
            if engine == "imapsync":
                marks.append(pytest.mark.skipif(IMAPSYNC is None, reason=NO_IMAPSYNC))
            reason = (defects or {}).get((engine, deletion)) or (defects or {}).get((engine, "*"))
            if reason:
                marks.append(pytest.mark.xfail(strict=True, reason=f"defect: {reason}"))
            out.append(pytest.param(engine, deletion, marks=marks, id=f"{engine}-{deletion}"))
    return out


@dataclass
class FaultCase:
    """One case of the recipe above (see the module docstring)."""

    boxes: Mailboxes
    engine: str
    deletion: str
    remote_proxy: FaultProxy
    local_proxy: FaultProxy
    record: Record
    total: int = 0
    baseline: cmp.Snapshot | None = None
    watch: DeletionWatch | None = None
    task: Task | None = None
    runs: list[EngineRun] = field(default_factory=list)

    def prepare(self, workdir: Path | None = None, fill: bool = True, **fill_kw: object) -> FaultCase:
        if fill:
            self.total = self.boxes.fill(**fill_kw)  # type: ignore[arg-type]
        self.baseline = self.boxes.remote_snapshot()
        self.total = self.baseline.count
        if self.watch is None:
            self.watch = self.boxes.watch(self.remote_proxy, self.baseline)
        self.watch.baseline = self.baseline
        self.task = self.make_task(DELETIONS[self.deletion], workdir)
        return self

    def make_task(self, options: dict, workdir: Path | None = None) -> Task:
        task = self.boxes.task(self.engine, via(self.remote_proxy, self.boxes.remote),
                               via(self.local_proxy, self.boxes.local), **options)
        if workdir is not None:
            task.workdir = workdir
            task.__post_init__()
        if self.engine == "imapsync":
            task.engine_kw = dict(IMAPSYNC_KW)
        return task

    def at_message(self, fraction: float) -> int:
        """The message number (1-based) at ``fraction`` of the copy."""
        return max(1, min(self.total, math.ceil(self.total * fraction)))

    def ran(self, run: EngineRun) -> EngineRun:
        self.runs.append(run)
        self.record.peak(run)
        return run

    def fault_run(self, mode: str = "engine", env: dict[str, str] | None = None) -> EngineRun:
        """The run with the fault armed: no crash, and a success must be right."""
        assert self.task is not None
        run = self.ran(self.task.run(mode, timeout=300, env=env))
        self.note(run)
        assert not run.crashed or mode == "run", run.explain()
        if run.ok:
            self.check(recovered=False)
        return run

    def note(self, run: EngineRun) -> None:
        state = run.status.get("state") or ("succeeded" if run.ok else run.error_class or "no report")
        self.record.detail = f"fault run: {state}"
        self.record.counts["copied_in_fault_run"] = int(run.report.get("copied") or run.status.get("copied") or 0)

    def recover(self, mode: str = "engine", env: dict[str, str] | None = None,
                allowed: dict[cmp.Path, Counter] | None = None, added: int = 0, removed: int = 0) -> None:
        """Faults off, a normal re-run that must succeed, then the comparator."""
        assert self.task is not None
        for proxy in (self.remote_proxy, self.local_proxy):
            proxy.clear()
        self.remote_proxy.resume()
        run = self.ran(self.task.run(mode, timeout=300, env=env))
        assert run.ok, run.explain()
        self.check(recovered=True, allowed=allowed, added=added, removed=removed)

    def expected(self, remote_now: cmp.Snapshot) -> cmp.Snapshot:
        """What the local server must hold: the remote as it is now (without what is marked
        \\Deleted) plus every message the runs deleted from it, as it was then."""
        assert self.watch is not None
        exp = cmp.Snapshot("expected", remote_now.delimiter, remote_now.prefix)
        for path, msgs in remote_now.folders.items():
            exp.folders[path] = [m for m in msgs if "\\Deleted" not in m.flags]
        for path, msgs in self.watch.deleted.items():
            exp.folders.setdefault(path, []).extend(msgs)
        return exp

    def check(self, recovered: bool, allowed: dict[cmp.Path, Counter] | None = None, added: int = 0,
              removed: int = 0) -> None:
        assert self.watch is not None and self.baseline is not None
        remote_now, local = self.boxes.remote_snapshot(), self.boxes.local_snapshot()
        assert self.watch.violations == [], self.watch.violations
        assert self.remote_proxy.hook_errors == [] and self.local_proxy.hook_errors == []
        gone = self.baseline.count + added - removed - remote_now.count
        assert gone <= self.watch.checked, f"{gone} remote message(s) left without the watch seeing a \\Deleted"
        result = cmp.compare(self.expected(remote_now), local, allowed=allowed)
        self.record.counts.update(result.counts(), deleted_remote=self.watch.checked, messages=self.total)
        assert result.ok, result.summary()
        if recovered and self.deletion != "off":
            self.check_remote_cleaned(remote_now)

    def check_remote_cleaned(self, remote_now: cmp.Snapshot) -> None:
        """After a good run, the remote keeps only what the task does not delete."""
        cutoff = time.time() - OLDER_DAYS * 86400
        left = [(p, m.key[0]) for p, msgs in remote_now.folders.items() for m in msgs
                if self.deletion == "remote" or m.internaldate < cutoff - 86400]
        assert left == [], f"deletable messages left on the remote: {left[:10]}"


@pytest.fixture
def case(mailboxes: Mailboxes, remote_proxy: FaultProxy, local_proxy: FaultProxy, record: Record,
         engine: str, deletion: str) -> FaultCase:
    return FaultCase(mailboxes, engine, deletion, remote_proxy, local_proxy, record)


# ---- servers going away -----------------------------------------------------------

@pytest.mark.parametrize(("engine", "deletion"), matrix())
def test_remote_dovecot_stopped_mid_run(case: FaultCase) -> None:
    case.prepare()
    remote = case.boxes.pair.cfg.remote
    at_appended(case.local_proxy, case.at_message(0.5), lambda _line: stop_server(case.boxes.pair, remote))
    with server_stopped(case.boxes.pair, remote):
        run = case.fault_run()
    assert not run.ok
    case.recover()


@pytest.mark.parametrize(("engine", "deletion"), matrix())
def test_local_dovecot_stopped_mid_run(case: FaultCase) -> None:
    case.prepare()
    mail1 = case.boxes.pair.cfg.mail1
    at_appended(case.local_proxy, case.at_message(0.5), lambda _line: stop_server(case.boxes.pair, mail1))
    with server_stopped(case.boxes.pair, mail1):
        run = case.fault_run()
    assert not run.ok
    case.recover()


# ---- the run killed -----------------------------------------------------------------

def end_after_kill(task: Task) -> str:
    """What is left of a killed run: an imapsync it started still holds the task lock
    (the task shows running); a stop ends it, as an administrator would. The state shown."""
    tf = runstate.TaskFiles(task.workdir, task.name)
    if runstate.read_status(tf).state == "running":  # "not running": the orphan finished meanwhile
        assert stop_run(StateDir(task.workdir, task.workdir), task.name, grace=2) in ("stopped", "not running")
    state = runstate.read_status(tf).state
    assert state in ("crashed", "stopped"), state
    return state


LONG = pytest.mark.reliability_long


@pytest.mark.parametrize("percent", [pytest.param(10, marks=LONG), 50, pytest.param(90, marks=LONG)])
@pytest.mark.parametrize(("engine", "deletion"), matrix())
def test_run_killed_with_sigkill(case: FaultCase, percent: int) -> None:
    case.prepare()
    started: list[subprocess.Popen] = []
    at_appended(case.local_proxy, case.at_message(percent / 100),
                lambda _line: os.kill(started[0].pid, signal.SIGKILL))
    assert case.task is not None
    proc, t0 = case.task.start("run")
    started.append(proc)
    run = case.ran(finish(proc, t0, timeout=300))
    assert run.returncode == -signal.SIGKILL, f"the run ended before {percent} %: {run.explain()}"
    case.record.detail = f"killed at {percent} %, then {end_after_kill(case.task)}"
    case.recover(mode="run")


# ---- the connection -----------------------------------------------------------------

BODY_FETCH = r"FETCH .*BODY(\.PEEK)?\[\]"


@pytest.mark.parametrize(("engine", "deletion"), matrix())
def test_connection_dropped_mid_fetch(case: FaultCase) -> None:
    case.prepare()
    at_appended(case.local_proxy, case.at_message(0.4),
                lambda _line: case.remote_proxy.drop_on_command(BODY_FETCH, down=20_000))
    case.fault_run()
    case.recover()


@pytest.mark.parametrize(("engine", "deletion"), matrix())
def test_connection_dropped_mid_append_literal(case: FaultCase) -> None:
    case.prepare()
    at_appended(case.local_proxy, case.at_message(0.5),
                lambda line: case.local_proxy.drop_after(UP, len(line) + 300))
    run = case.fault_run()
    assert not run.ok or case.engine == "imapsync", "the native run cannot have survived a lost connection"
    case.recover()


@pytest.mark.parametrize(("engine", "deletion"), matrix())
def test_stalled_server_ends_the_run_as_stalled_and_the_next_completes(case: FaultCase) -> None:
    case.prepare()
    at_appended(case.local_proxy, case.at_message(0.5), lambda _line: case.remote_proxy.stall())
    run = case.fault_run(mode="run", env=STALL_ENV)
    assert case.task is not None
    state = runstate.read_status(runstate.TaskFiles(case.task.workdir, case.task.name)).state
    case.record.detail = f"fault run: {state} (the watchdog's forced exit)" if run.result is None else \
        case.record.detail
    assert state == "stalled", run.explain()
    case.recover(mode="run")  # the default stall limit: a loaded machine may take 3 s to start imapsync


# ---- the disk -----------------------------------------------------------------------

@pytest.mark.parametrize(("engine", "deletion"), matrix())
def test_disk_full_on_the_state_directory(case: FaultCase, small_fs, tmp_path: Path) -> None:
    """The task directory (state, status, log, engine state) fills up mid-run."""
    state = small_fs(tmp_path / "state", "4m")
    case.prepare(workdir=state)
    fillers: list[Path] = []
    at_appended(case.local_proxy, case.at_message(0.5), lambda _line: fillers.append(fill_up(state)))
    assert case.task is not None
    proc, t0 = case.task.start("run")
    run = case.ran(finish(proc, t0, timeout=300))
    tf = runstate.TaskFiles(state, case.task.name)
    shown = runstate.read_status(tf).state
    case.record.detail = f"disk full: the run exited {run.returncode}, the task shows {shown}"
    assert fillers and shown != "running", run.explain()
    assert shown != "succeeded" or run.ok
    for filler in fillers:
        filler.unlink()
    case.recover(mode="run")


@pytest.mark.parametrize(("engine", "deletion"), [("native", "off")])
def test_a_run_that_fills_the_state_directory_says_so_in_the_journal(case: FaultCase, small_fs,
                                                                    tmp_path: Path) -> None:
    """The journal (the container's output, not on that disk) is where the end of every
    run is written; a full state directory must not take that line away."""
    state = small_fs(tmp_path / "state", "4m")
    journal = tmp_path / "journal"
    case.prepare(workdir=state)
    at_appended(case.local_proxy, case.at_message(0.5), lambda _line: fill_up(state))
    assert case.task is not None
    run = case.ran(case.task.run("run", env={"SYNC_JOURNAL": str(journal)}))
    lines = journal.read_text().splitlines() if journal.exists() else []
    case.record.detail = f"journal: {lines[-1:] or 'nothing'}; stderr: {run.stderr.strip().splitlines()[-1:]}"
    assert any(case.task.name in line and "space" in line.lower() for line in lines), run.explain()


# ---- the remote changing ------------------------------------------------------------

def change_remote(boxes: Mailboxes, expunged: dict[cmp.Path, Counter]) -> None:
    """Mid-run, on the remote itself: 3 messages added, 2 expunged, flags changed on 3,
    a folder renamed (``expunged`` gets what left, by path, renamed folder included)."""
    client = cmp.connect(boxes.remote, boxes.remote_password)
    try:
        client.append("INBOX", message("mid-run-1"), [b"\\Seen"])
        client.append("INBOX", message("mid-run-2"))
        client.append("Archive.2024", message("mid-run-3"), [b"$Label9"])
        for folder in ("INBOX", "Sent"):
            uids = expunge_one(client, folder, 0, expunged)
            client.add_flags(uids[1:3], [b"\\Flagged", b"$Changed"])
            client.remove_flags(uids[1:3], [b"Work", b"$Label1"])
        rename_away(client, "Old Projects", "Old Projects Renamed", expunged)
    finally:
        client.logout()


@pytest.mark.parametrize(("engine", "deletion"), matrix())
def test_remote_mailbox_changing_during_the_run(case: FaultCase) -> None:
    """Local copies of what the remote expunged meanwhile (and of the renamed folder's
    old name) may stay: no delete_local; everything else must match the remote."""
    case.prepare()
    expunged: dict[cmp.Path, Counter] = {}
    at_appended(case.local_proxy, case.at_message(0.3), lambda _line: change_remote(case.boxes, expunged))
    case.fault_run()
    assert expunged, f"the change never happened: {case.local_proxy.hook_errors}"
    removed = sum(c.total() for p, c in expunged.items() if p != ("Old Projects",))
    case.recover(allowed=expunged, added=3, removed=removed)


# ---- stale engine state between runs ------------------------------------------------

def recreate_remote_folder(boxes: Mailboxes, folder: str) -> None:
    """The folder deleted and created again with the same messages in reverse order:
    a new UIDVALIDITY, and each old UID now names another message."""
    client = cmp.connect(boxes.remote, boxes.remote_password)
    try:
        client.select_folder(folder, readonly=True)
        data = client.fetch(client.search(["ALL"]), ["BODY.PEEK[]", "FLAGS", "INTERNALDATE"])
        client.close_folder()
        client.delete_folder(folder)
        client.create_folder(folder)
        for _uid, item in sorted(data.items(), reverse=True):
            client.append(folder, item[b"BODY[]"], [f for f in item[b"FLAGS"] if f != b"\\Recent"],
                          item[b"INTERNALDATE"])
    finally:
        client.logout()


def first_sync(case: FaultCase) -> None:
    """A clean first run without deletion, so the engine has state to go stale."""
    case.prepare()
    assert case.task is not None
    first = case.ran(case.make_task({}).run())
    assert first.ok, first.explain()


@pytest.mark.parametrize(("engine", "deletion"), matrix())
def test_remote_uidvalidity_changed_between_runs(case: FaultCase) -> None:
    first_sync(case)
    user = REMOTE_OF[case.boxes.user]
    dovecot.doveadm(case.boxes.pair.cfg.remote, "mailbox", "update", "-u", user, "--uid-validity",
                    str(int(time.time()) + 7), "INBOX")
    recreate_remote_folder(case.boxes, "Archive.2023")
    case.prepare(fill=False)
    case.fault_run()
    case.recover()


@pytest.mark.parametrize("what", ["mailbox", "folder"])
@pytest.mark.parametrize(("engine", "deletion"), matrix())
def test_local_mailbox_deleted_and_recreated_between_runs(case: FaultCase, what: str) -> None:
    first_sync(case)
    if what == "mailbox":
        dovecot.wipe(case.boxes.pair.cfg.mail1, "u3")
    else:
        client = cmp.connect(case.boxes.local, case.boxes.local_password)
        client.delete_folder("Archive/2023")
        client.create_folder("Archive/2023")
        client.logout()
    case.prepare(fill=False)
    case.fault_run()
    case.recover()
