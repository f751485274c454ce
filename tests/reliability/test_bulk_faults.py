"""Issue 15, section 1: faults during a bulk export and a bulk import (imapsync-bulk-migrator).

The migrator runs as a user runs it (the CLI, in a process of its own whose
peak RSS is read at exit), from the remote Dovecot (source, through a fault
proxy) into files, and from the files into mail1 (target, through another).
Each case injects its fault at a precise point (the n-th message fetched or
appended), then re-runs the stage normally, and ends with the comparator:
the target account holds exactly the source's messages, flags and dates
(``--mode validate`` must agree).
"""

from __future__ import annotations

import json
import math
import os
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from faultproxy import UP, FaultProxy
from localnode import corpus, dovecot, mailusers
from localnode.imap_pair import Pair, running_pair
from ns8_imapsync.bulk import exitcodes
from ns8_imapsync.imap.connection import Endpoint

from reliability import comparator as cmp
from reliability.conftest import (
    Record,
    at_appended,
    at_command,
    expunge_one,
    message,
    rename_away,
    server_stopped,
    stop_server,
)
from reliability.engines import PKG, TESTS

SECTION = "1-bulk-faults"
EMAIL = "dave@remote.test"
BODY_FETCH = r"FETCH .*BODY(\.PEEK)?\[\]"
LONG = pytest.mark.reliability_long
WRAPPER = ("import atexit, runpy, sys\n"
           "def peak():\n"
           "    hwm = [l for l in open('/proc/self/status') if l.startswith('VmHWM:')]\n"
           "    print('VMHWM_KIB', hwm[0].split()[1] if hwm else 0, file=sys.stderr, flush=True)\n"
           "atexit.register(peak)\n"
           "sys.argv = ['imapsync-bulk-migrator'] + sys.argv[1:]\n"
           "runpy.run_module('ns8_imapsync.bulk.cli', run_name='__main__')\n")


@dataclass
class BulkRun:
    returncode: int
    out: str
    peak_rss_mb: float | None
    seconds: float


@dataclass
class Bulk:
    """A work directory with both configs (through the proxies), the accounts, the runs."""

    pair: Pair
    work: Path
    source_proxy: FaultProxy
    target_proxy: FaultProxy
    record: Record
    runs: list[BulkRun] = field(default_factory=list)

    @property
    def password(self) -> str:
        return self.pair.cfg.remote.users[EMAIL]

    @property
    def source(self) -> Endpoint:
        return Endpoint(self.pair.remote_host, self.pair.remote_imap, "tls", EMAIL)

    @property
    def target(self) -> Endpoint:
        m = self.pair.cfg.mail1
        return Endpoint(m.host, m.imap_port, "tls", EMAIL)

    def setup(self, count: int = 60) -> int:
        dovecot.wipe(self.pair.cfg.remote, EMAIL)
        mailusers.add_user(self.pair.cfg.mail1, EMAIL, self.password)
        self.wipe_target()
        corpus.fill(self.pair.cfg.remote, EMAIL, self.password, seed=51, count=count, large=1, large_size=300_000)
        for name, proxy in (("export", self.source_proxy), ("import", self.target_proxy)):
            conf = {"server": {"host": proxy.host, "port": proxy.port, "ssl": False, "starttls": False},
                    "accounts": [{"email": EMAIL, "password": self.password}]}
            path = self.work / f"{name}.pass.config.json"
            path.write_text(json.dumps(conf))
            path.chmod(0o600)
        return count

    def wipe_target(self) -> None:
        """The target account's mailbox gone (mail1 files it under the login's local part)."""
        dovecot.wipe(self.pair.cfg.mail1, mailusers.passwd_name(self.pair.cfg.mail1, EMAIL))

    def start(self, mode: str, *extra: str) -> tuple[subprocess.Popen, float]:
        argv = [sys.executable, "-c", WRAPPER, "--mode", mode, "--max-workers", "1", "--min-free-gb", "0",
                "--large-message-bytes", "100000", "--imap-timeout", "5", *extra]
        env = {**os.environ, "PYTHONPATH": f"{TESTS}:{PKG}"}
        proc = subprocess.Popen(argv, cwd=self.work, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, text=True, start_new_session=True)
        return proc, time.monotonic()

    def finish(self, proc: subprocess.Popen, started: float, timeout: float = 300) -> BulkRun:
        out, _ = proc.communicate(timeout=timeout)
        peak = None
        for line in out.splitlines():
            if line.startswith("VMHWM_KIB "):
                peak = round(int(line.split()[1]) / 1024, 1)
        run = BulkRun(proc.returncode, out, peak, round(time.monotonic() - started, 2))
        self.runs.append(run)
        if peak is not None and (self.record.peak_rss_mb is None or peak > self.record.peak_rss_mb):
            self.record.peak_rss_mb = peak
        assert "Traceback" not in out, out[-3000:]
        return run

    def run(self, mode: str, *extra: str) -> BulkRun:
        return self.finish(*self.start(mode, *extra))

    def ok(self, mode: str, *extra: str) -> BulkRun:
        """A normal run of a stage (faults off): it must succeed."""
        for proxy in (self.source_proxy, self.target_proxy):
            proxy.clear()
        self.source_proxy.resume()
        self.target_proxy.resume()
        run = self.run(mode, *extra)
        assert run.returncode == 0, run.out[-3000:]
        return run

    def finished(self, allowed: dict[cmp.Path, Counter] | None = None) -> None:
        """After the fault: the export and the import re-run normally, then the comparator
        and the migrator's own validation."""
        self.ok("export")
        self.ok("import")
        result = cmp.compare(cmp.snapshot(self.source, self.password), cmp.snapshot(self.target, self.password),
                             allowed=allowed)
        self.record.counts.update(result.counts())
        assert result.ok, result.summary()
        if not allowed:
            self.ok("validate")

    def fraction(self, part: float, total: int) -> int:
        return max(1, min(total, math.ceil(total * part)))


PORT_BASE = int(os.environ.get("RELIABILITY_BULK_PORT_BASE", "34000"))


@pytest.fixture(scope="module")
def pair() -> Iterator[Pair]:
    """A pair of this module's own: its cases stop, fill and rewrite mail1's users (the
    migrator's target account), which must not depend on what the sync cases left there."""
    with running_pair(PORT_BASE) as started:
        yield started


@pytest.fixture
def bulk(pair: Pair, tmp_path: Path, record: Record) -> Iterator[Bulk]:
    source = FaultProxy(pair.remote_host, pair.remote_imap)
    m = pair.cfg.mail1
    target = FaultProxy(m.host, m.imap_port, source_host=m.host)
    with source, target:
        yield Bulk(pair, tmp_path, source, target, record)


def fault(bulk: Bulk, mode: str, run: BulkRun, *ok_codes: int) -> None:
    """The fault run ended as a failure the migrator reports (never 0 with work missing)."""
    bulk.record.detail = f"{mode} under the fault: exit {run.returncode}"
    assert run.returncode in ok_codes, run.out[-3000:]


# ---- servers going away ---------------------------------------------------------------

def test_source_dovecot_stopped_mid_export(bulk: Bulk) -> None:
    total = bulk.setup()
    remote = bulk.pair.cfg.remote
    at_command(bulk.source_proxy, BODY_FETCH, bulk.fraction(0.5, 3),
               lambda: stop_server(bulk.pair, remote))  # the export reads bodies in a few batches
    with server_stopped(bulk.pair, remote):
        run = bulk.run("export")
    fault(bulk, "export", run, exitcodes.CONNECTIVITY)
    bulk.record.counts["messages"] = total
    bulk.finished()


def test_target_dovecot_stopped_mid_import(bulk: Bulk) -> None:
    total = bulk.setup()
    bulk.ok("export")
    mail1 = bulk.pair.cfg.mail1
    at_appended(bulk.target_proxy, bulk.fraction(0.5, total), lambda _line: stop_server(bulk.pair, mail1))
    with server_stopped(bulk.pair, mail1):
        run = bulk.run("import")
    mailusers.add_user(mail1, EMAIL, bulk.password)  # a restart rewrites mail1's users file
    fault(bulk, "import", run, exitcodes.CONNECTIVITY)
    bulk.finished()


# ---- killed -------------------------------------------------------------------------

@pytest.mark.parametrize("percent", [pytest.param(10, marks=LONG), 50, pytest.param(90, marks=LONG)])
def test_import_killed_with_sigkill(bulk: Bulk, percent: int) -> None:
    total = bulk.setup()
    bulk.ok("export")
    started: list[subprocess.Popen] = []
    at_appended(bulk.target_proxy, bulk.fraction(percent / 100, total),
                lambda _line: os.kill(started[0].pid, signal.SIGKILL))
    proc, t0 = bulk.start("import")
    started.append(proc)
    run = bulk.finish(proc, t0)
    fault(bulk, "import", run, -signal.SIGKILL)
    bulk.finished()


@pytest.mark.parametrize("percent", [pytest.param(10, marks=LONG), 50, pytest.param(90, marks=LONG)])
def test_export_killed_with_sigkill(bulk: Bulk, percent: int) -> None:
    bulk.setup()
    seen = at_command(bulk.source_proxy, BODY_FETCH, 0, lambda: None)  # counts the body reads
    probe = bulk.run("export", "--no-audit-after-export")
    assert probe.returncode == 0, probe.out[-2000:]
    reads = seen[0]
    shutil.rmtree(bulk.work / "exported")
    bulk.source_proxy.clear_observers()
    started: list[subprocess.Popen] = []
    at_command(bulk.source_proxy, BODY_FETCH, bulk.fraction(percent / 100, reads),
               lambda: os.kill(started[0].pid, signal.SIGKILL))
    proc, t0 = bulk.start("export")
    started.append(proc)
    fault(bulk, "export", bulk.finish(proc, t0), -signal.SIGKILL)
    bulk.record.counts["body_reads"] = reads
    bulk.finished()


# ---- the connection -------------------------------------------------------------------

def test_connection_dropped_mid_fetch_during_export(bulk: Bulk) -> None:
    bulk.setup()
    at_command(bulk.source_proxy, BODY_FETCH, 2,
               lambda: bulk.source_proxy.drop_on_command(BODY_FETCH, down=20_000))
    fault(bulk, "export", bulk.run("export"), exitcodes.CONNECTIVITY)
    bulk.finished()


def test_connection_dropped_mid_append_literal_during_import(bulk: Bulk) -> None:
    total = bulk.setup()
    bulk.ok("export")
    at_appended(bulk.target_proxy, bulk.fraction(0.5, total),
                lambda line: bulk.target_proxy.drop_after(UP, len(line) + 300))
    fault(bulk, "import", bulk.run("import"), exitcodes.CONNECTIVITY)
    bulk.finished()


@pytest.mark.parametrize("stage", ["export", pytest.param("import", marks=LONG)])
def test_stalled_server_times_out_and_the_next_run_completes(bulk: Bulk, stage: str) -> None:
    """No watchdog in the migrator: ``--imap-timeout`` (5 s here) must end a silent server."""
    total = bulk.setup()
    if stage == "export":
        at_command(bulk.source_proxy, BODY_FETCH, 2, lambda: bulk.source_proxy.stall())
    else:
        bulk.ok("export")
        at_appended(bulk.target_proxy, bulk.fraction(0.5, total), lambda _line: bulk.target_proxy.stall())
    run = bulk.run(stage)
    fault(bulk, stage, run, exitcodes.CONNECTIVITY)
    assert run.seconds < 120, f"a stalled server held the {stage} for {run.seconds} s"
    bulk.finished()


# ---- the disk -------------------------------------------------------------------------

def test_disk_full_on_the_export_directory(bulk: Bulk, small_fs) -> None:
    """The export directory has room for a third of the mailbox: the export fails saying so,
    leaves no file the audit would accept as a message, and completes once there is room."""
    bulk.setup()
    exported = small_fs(bulk.work / "exported", "1m")
    run = bulk.run("export")
    fault(bulk, "export", run, exitcodes.CONNECTIVITY, exitcodes.ENVIRONMENT, exitcodes.AUDIT_FAILED)
    assert "space" in run.out.lower(), run.out[-3000:]
    audit = bulk.run("audit", "--audit-offline")
    assert audit.returncode == exitcodes.AUDIT_FAILED or audit.returncode == 0, audit.out[-2000:]
    subprocess.run(["mount", "-o", "remount,size=64m", str(exported)], check=True)
    bulk.finished()


# ---- the source changing ----------------------------------------------------------------

def change_source(bulk: Bulk, expunged: dict[cmp.Path, Counter]) -> None:
    """Mid-export, on the source itself: messages added and expunged, flags changed, a
    folder renamed (``expunged`` gets what left, by path, the renamed folder's old name too)."""
    client = cmp.connect(bulk.source, bulk.password)
    try:
        client.append("INBOX", message("bulk-mid-1"), [b"\\Seen"])
        client.append("Archive.2024", message("bulk-mid-2"))
        for folder in ("INBOX", "Sent"):
            uids = expunge_one(client, folder, -1, expunged)
            client.add_flags(uids[:2], [b"\\Flagged", b"$Changed"])
        rename_away(client, "Old Projects", "Old Projects Renamed", expunged)
    finally:
        client.logout()


def test_source_changing_during_the_export(bulk: Bulk) -> None:
    bulk.setup()
    expunged: dict[cmp.Path, Counter] = {}
    at_command(bulk.source_proxy, BODY_FETCH, 2, lambda: change_source(bulk, expunged))
    run = bulk.run("export")
    bulk.record.detail = f"export during the change: exit {run.returncode}"
    assert expunged, bulk.source_proxy.hook_errors
    bulk.finished(allowed=expunged)


# ---- stale state between runs ---------------------------------------------------------------

def test_source_uidvalidity_changed_between_exports(bulk: Bulk) -> None:
    from reliability.test_faults import recreate_remote_folder

    bulk.setup()
    bulk.ok("export")
    dovecot.doveadm(bulk.pair.cfg.remote, "mailbox", "update", "-u", EMAIL, "--uid-validity",
                    str(int(time.time()) + 11), "INBOX")

    class Boxes:  # what recreate_remote_folder needs of a Mailboxes
        remote, remote_password = bulk.source, bulk.password

    recreate_remote_folder(Boxes, "Archive.2023")  # type: ignore[arg-type]
    bulk.finished()


def test_target_mailbox_deleted_and_recreated_between_imports(bulk: Bulk) -> None:
    bulk.setup()
    bulk.ok("export")
    bulk.ok("import")
    bulk.wipe_target()
    bulk.finished()


def test_flags_changed_after_an_import_reach_the_target_on_the_next_import(bulk: Bulk) -> None:
    """Export, import, then the user keeps working on the source until the cutover: the
    next export and import must bring the flags along."""
    bulk.setup()
    bulk.ok("export")
    bulk.ok("import")
    client = cmp.connect(bulk.source, bulk.password)
    try:
        for folder in ("INBOX", "Sent"):
            client.select_folder(folder)
            uids = sorted(client.search(["ALL"]))
            client.add_flags(uids[:2], [b"\\Flagged", b"$Changed"])
            client.remove_flags(uids[:2], [b"\\Seen"])
    finally:
        client.logout()
    bulk.finished()
