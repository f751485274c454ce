"""The imapsync engine ends with the same mailbox as the native engine.

Stock imapsync skips a message with neither Message-Id nor Received and copies
one of several identical messages; the completion step appends what is missing
and the run's tallies say how many remote messages are on the local server.

On machines without imapsync (CI) the engine drives ``replay_imapsync.py``,
which does exactly what a recorded real run did on the same corpus
(``fixtures/imapsync-runs/corpus-seed11-first-sync.log``: 293 copied, 6
duplicates and 1 message without either header left out).  With imapsync on
PATH the real program runs too.
"""

from __future__ import annotations

import os
import shutil
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from localnode import corpus, dovecot
from localnode.imap_pair import REMOTE_OF, Pair, running_pair
from mailboxes import mailbox
from ns8_imapsync.sync.imapsync_engine import ImapsyncEngine
from ns8_imapsync.sync.native import NativeEngine
from ns8_imapsync.sync.plan import SyncPlan
from ns8_imapsync.sync.report import RunReport
from standin_imapsync import executable
from syncplans import plan_for

TESTS = Path(__file__).resolve().parent
RECORDED = TESTS / "fixtures" / "imapsync-runs" / "corpus-seed11-first-sync.log"
PORT_BASE = int(os.environ.get("COMPLETION_TEST_PORT_BASE", "25200"))
USER = "user01"  # alice@remote.test -> u1
SEED, COUNT, LARGE = 11, 300, dict(large=2, large_size=250_000)  # the recorded run's corpus
REAL = shutil.which("imapsync")


@pytest.fixture(scope="module")
def pair() -> Iterator[Pair]:
    with running_pair(PORT_BASE) as started:
        corpus.fill(started.cfg.remote, REMOTE_OF[USER], started.password(USER), SEED, COUNT, **LARGE)
        yield started


@pytest.fixture
def empty_local(pair: Pair) -> Pair:
    dovecot.wipe(pair.cfg.mail1, "u1")
    return pair


def make_plan(pair: Pair, tmp: Path, **options: object) -> SyncPlan:
    return plan_for(pair, tmp, USER, "u1_comp01", **options)


def replayer(tmp: Path) -> str:
    return executable(tmp, "replay_imapsync.py", REPLAY_LOG=str(RECORDED))


def run(binary: str, plan: SyncPlan) -> tuple[RunReport, list[str]]:
    lines: list[str] = []
    report = ImapsyncEngine(imapsync=binary).run(plan, lambda p: None, threading.Event(), lines.append)
    return report, lines


def same_mailboxes(pair: Pair) -> bool:
    return mailbox(pair.remote(USER), pair.password(USER)) == mailbox(pair.local(USER), pair.master_pass)


def test_a_recorded_imapsync_run_is_completed_to_the_whole_mailbox(empty_local: Pair, tmp_path: Path) -> None:
    plan = make_plan(empty_local, tmp_path)
    report, lines = run(replayer(tmp_path), plan)
    assert report.ok, (report.errors, lines[-20:])
    assert report.copied == COUNT  # 293 by imapsync, 7 by the completion
    assert any("completion: 7 message(s) imapsync did not copy were appended" in line for line in lines)
    assert report.listed == report.found == COUNT and not report.missing
    assert same_mailboxes(empty_local)
    # the native engine finds nothing to do after it: both engines agree on the mailbox
    native = NativeEngine().run(plan, lambda p: None, threading.Event(), lambda line: None)
    assert native.ok and native.copied == 0


def test_a_run_short_of_mail_is_not_succeeded(empty_local: Pair, tmp_path: Path, monkeypatch) -> None:
    """If the completion cannot append (here: every APPEND refused), the run fails naming the folders."""
    from ns8_imapsync.imap.messages import AppendRefused
    from ns8_imapsync.sync import transfer

    def refuse(*_a, **_k):
        raise AppendRefused("NO [OVERQUOTA] Quota exceeded")

    monkeypatch.setattr(transfer, "append_message", refuse)
    monkeypatch.setattr(transfer, "append_many", refuse)
    report, lines = run(replayer(tmp_path), make_plan(empty_local, tmp_path))
    assert not report.ok and report.error_class == "message_errors"
    assert report.found == COUNT - 7 and report.missing == 7
    assert any("could not be copied: NO [OVERQUOTA]" in e for e in report.errors)
    assert any("remote message(s) are not on the local server" in e for e in report.errors)


@pytest.mark.skipif(REAL is None, reason="needs the real imapsync 2.229 on PATH (not installable from our "
                                         "registries: run it beside the project)")
def test_the_real_imapsync_ends_with_the_whole_mailbox(empty_local: Pair, tmp_path: Path) -> None:
    plan = make_plan(empty_local, tmp_path)
    report, lines = run(str(REAL), plan)
    assert report.ok, (report.errors, lines[-20:])
    assert report.copied == COUNT and report.found == COUNT
    assert same_mailboxes(empty_local)
    again, lines = run(str(REAL), plan)  # a re-run adds nothing
    assert again.ok and again.copied == 0, (again.errors, lines[-20:])
    assert same_mailboxes(empty_local)
