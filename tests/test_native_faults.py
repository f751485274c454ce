"""The native engine against servers that misbehave, through the loopback fault
proxy (``faultproxy.py``) in front of the real Dovecots: nothing lost, nothing
doubled, nothing deleted on the strength of a partial answer, and a run that
could not copy a message says so.
"""

from __future__ import annotations

import json
import os
import re
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path

import pytest
from faultproxy import FaultProxy, Unit
from localnode import corpus, dovecot
from localnode.imap_pair import REMOTE_OF, Pair, running_pair
from mailboxes import mailbox
from ns8_imapsync import runstate
from ns8_imapsync.imap.connection import Endpoint, open_session
from ns8_imapsync.statedir import StateDir
from ns8_imapsync.sync.native import NativeEngine
from ns8_imapsync.sync.plan import SyncPlan
from ns8_imapsync.sync.report import RunReport
from ns8_imapsync.sync.runctl import stop_run
from runproc import start_run, wait_state, write_passwords
from syncplans import plan_for

PORT_BASE = int(os.environ.get("NATIVE_FAULTS_TEST_PORT_BASE", "25500"))
USER = "user03"  # dave@remote.test -> u3
ENGINE_KW = dict(large_message=100_000, chunk_size=64_000)  # the chunked path on a small corpus


@pytest.fixture(scope="module")
def pair() -> Iterator[Pair]:
    with running_pair(PORT_BASE) as started:
        yield started


@pytest.fixture
def filled(pair: Pair) -> Pair:
    dovecot.wipe(pair.cfg.remote, REMOTE_OF[USER])
    dovecot.wipe(pair.cfg.mail1, "u3")
    corpus.fill(pair.cfg.remote, REMOTE_OF[USER], pair.password(USER), seed=7, count=40, large=1,
                large_size=300_000)
    return pair


def make_plan(pair: Pair, tmp: Path, **options: object) -> SyncPlan:
    return plan_for(pair, tmp, USER, "u3_fault01", **options)


def via(proxy: FaultProxy, ep: Endpoint) -> Endpoint:
    return replace(ep, host=proxy.host, port=proxy.port, security="")


def sync(plan: SyncPlan) -> tuple[RunReport, list[str]]:
    lines: list[str] = []
    report = NativeEngine(**ENGINE_KW).run(plan, lambda p: None, threading.Event(), lines.append)
    return report, lines


def identical(pair: Pair) -> bool:
    return mailbox(pair.remote(USER), pair.password(USER)) == mailbox(pair.local(USER), pair.master_pass)


def remote_uid(pair: Pair, folder: str = "INBOX", large: bool = False) -> int:
    """A UID in the remote ``folder``: of its largest message, or of its first."""
    client = open_session(pair.remote(USER), pair.password(USER))
    try:
        client.select_folder(folder, readonly=True)
        sizes = {u: d[b"RFC822.SIZE"] for u, d in client.fetch(client.search(["ALL"]), ["RFC822.SIZE"]).items()}
        return max(sizes, key=sizes.get) if large else min(sizes)
    finally:
        client.logout()


def local_count(pair: Pair) -> int:
    client = open_session(pair.local(USER), pair.master_pass)
    try:
        return sum(int(client.folder_status(f[2], ["MESSAGES"])[b"MESSAGES"]) for f in client.list_folders()
                   if not f[2].startswith(("Shared", "Public")))
    finally:
        client.logout()


@pytest.mark.parametrize("qresync", [False, True])
def test_a_listing_that_misses_a_message_deletes_nothing(filled: Pair, remote_proxy: FaultProxy,
                                                         tmp_path: Path, qresync: bool) -> None:
    """Without QRESYNC the folder is listed in full, and the gap is seen and named;
    with it only the changes are asked for, and the state keeps the message: in
    both cases its local copy stays."""
    if not qresync:
        remote_proxy.hide_capability("QRESYNC")
    plan = make_plan(filled, tmp_path, delete_local=True)
    plan.source = via(remote_proxy, plan.source)
    assert sync(plan)[0].ok
    before = local_count(filled)
    uid = remote_uid(filled)
    remote_proxy.drop_fetch(uid)  # the server "forgets" one message in every FETCH reply
    # new mail on the remote, so INBOX is looked at again (not skipped, not by CHANGEDSINCE alone)
    client = open_session(filled.remote(USER), filled.password(USER))
    client.append("INBOX", b"From: a@b\r\nSubject: new\r\nMessage-ID: <new@x>\r\n\r\nnew\r\n")
    client.logout()
    report, lines = sync(plan)
    if qresync:
        assert report.ok and report.copied == 1, report.errors
    else:
        assert not report.ok and report.error_class == "message_errors"
        assert any("listed" in e and "nothing of this folder is deleted" in e for e in report.errors), report.errors
    assert local_count(filled) == before + 1 and report.deleted_host2 == 0  # its local copy was kept
    remote_proxy.clear()
    report, _ = sync(plan)
    assert report.ok, report.errors
    assert identical(filled)


@pytest.mark.parametrize("item", ["BODY[]", "RFC822.SIZE"])
def test_a_message_listed_but_not_delivered_is_an_error_not_gone(filled: Pair, remote_proxy: FaultProxy,
                                                                 tmp_path: Path, item: str) -> None:
    plan = make_plan(filled, tmp_path)
    plan.source = via(remote_proxy, plan.source)
    uid = remote_uid(filled)
    remote_proxy.drop_item(item, uid)
    report, lines = sync(plan)
    assert not report.ok and report.error_class == "message_errors"
    assert any(f"/{uid} (" in e or f"/{uid}:" in e for e in report.errors), report.errors
    missed = report.missing  # the proxy knows no folders: that UID in every folder
    assert missed >= 1 and report.copied == 40 - missed
    remote_proxy.clear()
    report, _ = sync(plan)  # the folders were not recorded as synced: those messages are retried
    assert report.ok and report.copied == missed, report.errors
    assert identical(filled)


@pytest.mark.parametrize("large", [False, True])
def test_a_message_larger_than_announced_is_refused_and_the_rest_copied(filled: Pair, remote_proxy: FaultProxy,
                                                                        tmp_path: Path, large: bool) -> None:
    plan = make_plan(filled, tmp_path)
    plan.source = via(remote_proxy, plan.source)
    uid = remote_uid(filled, large=large)
    remote_proxy.inflate(uid, 2_000_000)  # that UID in every folder (the proxy knows no folders)
    report, lines = sync(plan)
    missed = report.missing
    assert report.error_class == "message_errors" and missed >= 1 and report.copied == 40 - missed
    assert any(f"/{uid} (" in e and "could not" in e for e in report.errors), report.errors
    remote_proxy.clear()
    again, _ = sync(plan)
    assert again.ok and again.copied == missed
    assert identical(filled)


def test_a_server_ignoring_partial_fetches_cannot_fill_the_spool(filled: Pair, remote_proxy: FaultProxy,
                                                                tmp_path: Path) -> None:
    plan = make_plan(filled, tmp_path)
    plan.source = via(remote_proxy, plan.source)
    remote_proxy.ignore_partial()
    report, lines = sync(plan)
    assert report.error_class == "message_errors"
    refused = [e for e in report.errors if "could not be copied" in e]
    # every message read in chunks (above ENGINE_KW's large_message) is refused, the rest arrived
    assert refused and report.missing == len(refused) and report.copied == 40 - len(refused)
    assert all("partial" in e for e in refused), refused
    remote_proxy.clear()
    assert sync(plan)[0].ok and identical(filled)


def test_flag_changes_survive_a_store_that_never_reached_the_server(filled: Pair, local_proxy: FaultProxy,
                                                                    tmp_path: Path) -> None:
    plan = make_plan(filled, tmp_path)
    plan.target = via(local_proxy, plan.target)
    assert sync(plan)[0].ok
    client = open_session(filled.remote(USER), filled.password(USER))
    client.select_folder("INBOX")
    client.add_flags(client.search(["ALL"])[:3], ["\\Flagged"])
    client.logout()
    local_proxy.drop_on_command(r"STORE")  # the connection dies as the flags are sent
    report, _ = sync(plan)
    assert report.error_class == "connection_lost"
    local_proxy.clear()
    report, _ = sync(plan)
    assert report.ok and report.flags_updated == 3, report.errors
    assert identical(filled)


@pytest.fixture(scope="module")
def no_uidplus() -> Iterator[Pair]:
    with running_pair(PORT_BASE + 300, mail1_uidplus=False) as started:
        yield started


def test_a_local_server_without_uidplus_works(no_uidplus: Pair, tmp_path: Path) -> None:
    pair = no_uidplus
    corpus.fill(pair.cfg.remote, REMOTE_OF[USER], pair.password(USER), seed=8, count=30, large=1,
                large_size=300_000)
    m = pair.cfg.mail1
    with FaultProxy(m.host, m.imap_port, source_host=m.host) as proxy:
        proxy.strip_appenduid()  # no APPENDUID either
        plan = make_plan(pair, tmp_path, delete_local=True)
        plan.target = via(proxy, plan.target)
        report, lines = sync(plan)
        assert report.ok and report.copied == 30, report.errors
        assert identical(pair)
        again, _ = sync(plan)  # every copy was found back: nothing twice, nothing deleted
        assert again.ok and again.copied == 0 and again.deleted_host2 == 0, again.errors
        assert identical(pair)


def _slow_run(pair: Pair, proxy: FaultProxy, tmp: Path, stall: str) -> str:
    """A whole run (runctl.Run, as syncctl starts one) of the native engine through ``proxy``;
    the state it recorded."""
    remote = via(proxy, pair.remote(USER))
    local = pair.local(USER)
    write_passwords(tmp, "u3_slow01", pair.password(USER), pair.master_pass)
    ends = {"source": {"host": remote.host, "port": remote.port, "security": "", "user": remote.user},
            "target": {"host": local.host, "port": local.port, "security": local.security, "user": local.user}}
    proc = start_run(tmp, "u3_slow01", ends, engine="native", SYNC_ENGINE="native", SYNC_STALL_SECONDS=stall,
                     SYNC_STOP_GRACE="2")
    proc.communicate(timeout=240)  # a forced end (the engine stuck in a read) prints nothing
    return json.loads((tmp / "u3_slow01.status.json").read_text())["state"]


def test_a_slow_but_healthy_transfer_is_never_ended_as_stalled(pair: Pair, remote_proxy: FaultProxy,
                                                               tmp_path: Path) -> None:
    """One 1.2 MB message at 100 KB/s takes ~12 s, with no batch ending meanwhile; a
    3 s stall limit must not end it: bytes keep moving (before, only batch ends counted)."""
    dovecot.wipe(pair.cfg.remote, REMOTE_OF[USER])
    dovecot.wipe(pair.cfg.mail1, "u3")
    client = open_session(pair.remote(USER), pair.password(USER))
    client.append("INBOX", b"From: a@b\r\nSubject: big\r\nMessage-ID: <big@x>\r\n\r\n"
                  + (b"y" * 78 + b"\r\n") * 15_000)
    client.logout()
    remote_proxy.throttle(100_000)
    assert _slow_run(pair, remote_proxy, tmp_path, stall="3") == "succeeded"
    assert identical(pair)
    status = json.loads((tmp_path / "u3_slow01.status.json").read_text())
    assert (status["listed"], status["found"]) == (1, 1)


def test_a_stalled_server_ends_the_run_and_the_next_completes(pair: Pair, remote_proxy: FaultProxy,
                                                              tmp_path: Path) -> None:
    dovecot.wipe(pair.cfg.remote, REMOTE_OF[USER])
    dovecot.wipe(pair.cfg.mail1, "u3")
    corpus.fill(pair.cfg.remote, REMOTE_OF[USER], pair.password(USER), seed=9, count=20, large=0)
    # the server goes silent as it starts sending bodies, the connection stays open
    remote_proxy.rewrite(lambda unit: (remote_proxy.stall() or unit) if b"BODY[]" in unit.flat() else unit)
    assert _slow_run(pair, remote_proxy, tmp_path, stall="2") == "stalled"
    remote_proxy.clear()
    remote_proxy.resume()
    assert _slow_run(pair, remote_proxy, tmp_path, stall="30") == "succeeded"
    assert identical(pair)


LONG_KEYWORD = b"k" * 60  # Dovecot refuses keywords above 50 characters (mail_max_keyword_length)


def _with_long_keyword(uid: int) -> Callable[[Unit], Unit]:
    """A rewriter giving one UID's FLAGS a keyword the local Dovecot refuses to store."""
    mine = re.compile(rb"^\* \d+ FETCH \(.*\bUID %d[ )]" % uid)

    def rewrite(unit: Unit) -> Unit:
        if not mine.search(unit.texts[0]) or b"FLAGS (" not in unit.texts[0]:
            return unit
        head = unit.texts[0].replace(b"FLAGS ()", b"FLAGS (%s)" % LONG_KEYWORD, 1)
        if head == unit.texts[0]:
            head = head.replace(b"FLAGS (", b"FLAGS (%s " % LONG_KEYWORD, 1)
        return Unit([head, *unit.texts[1:]], unit.literals)
    return rewrite


def test_a_refused_multiappend_is_retried_one_by_one_and_names_the_culprit(filled: Pair, remote_proxy: FaultProxy,
                                                                          tmp_path: Path) -> None:
    """The local server stores a MULTIAPPEND whole or not at all: one message it
    refuses costs that message (named), not its batch."""
    plan = make_plan(filled, tmp_path)
    plan.source = via(remote_proxy, plan.source)
    uid = remote_uid(filled)
    remote_proxy.rewrite(_with_long_keyword(uid))
    engine = NativeEngine(**ENGINE_KW)
    report = engine.run(plan, lambda p: None, threading.Event(), lambda line: None)
    assert not report.ok and report.error_class == "message_errors"
    culprits = [e for e in report.errors if f"/{uid} (" in e and "could not be copied" in e]
    assert culprits and all("Keyword length too long" in e for e in culprits), report.errors
    assert engine.stats["h2.append_batched"] >= 1  # the batch was tried first, then message by message
    assert report.copied == 40 - len(culprits) and local_count(filled) == 40 - len(culprits)
    remote_proxy.clear()
    report, _ = sync(plan)
    assert report.ok and report.copied == len(culprits), report.errors
    assert identical(filled)


def test_without_multiappend_each_message_is_its_own_append(filled: Pair, local_proxy: FaultProxy,
                                                            tmp_path: Path) -> None:
    plan = make_plan(filled, tmp_path)
    plan.target = via(local_proxy, plan.target)
    local_proxy.hide_capability("MULTIAPPEND")
    engine = NativeEngine(**ENGINE_KW)
    report = engine.run(plan, lambda p: None, threading.Event(), lambda line: None)
    assert report.ok and report.copied == 40, report.errors
    assert engine.stats["h2.append_batched"] == 0 and engine.stats["h2.append"] == 40
    assert identical(filled)


def _silent_server() -> socket.socket:
    """A TCP server that accepts connections and never says a word (no IMAP greeting)."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(8)
    return server


def test_a_stop_while_the_remote_never_greets_is_recorded_stopped_at_once(pair: Pair, tmp_path: Path) -> None:
    """The greeting would time out after 30 s; a stop must not wait for it, and
    what the run records is the stop, not a connection failure."""
    server = _silent_server()
    try:
        local = pair.local(USER)
        write_passwords(tmp_path, "u3_mute01", "pw", pair.master_pass)
        ends = {"source": {"host": "127.0.0.1", "port": server.getsockname()[1], "security": "", "user": "dave"},
                "target": {"host": local.host, "port": local.port, "security": local.security, "user": local.user}}
        proc = start_run(tmp_path, "u3_mute01", ends, engine="native", SYNC_ENGINE="native", SYNC_STOP_GRACE="60")
        wait_state(tmp_path, "u3_mute01", ("running",))
        asked = time.monotonic()
        outcome = stop_run(StateDir(tmp_path, tmp_path), "u3_mute01")
        took = time.monotonic() - asked
        proc.communicate(timeout=60)
    finally:
        server.close()
    status = runstate.read_status(runstate.TaskFiles(tmp_path, "u3_mute01"))
    assert outcome == "stopped" and status.state == "stopped", (outcome, status)
    assert took < 15, f"the stop waited {took:.0f}s for a greeting that never came"


def test_a_stop_while_a_read_hangs_cuts_it_and_the_next_run_completes(filled: Pair, remote_proxy: FaultProxy,
                                                                       tmp_path: Path) -> None:
    plan = make_plan(filled, tmp_path)
    plan.source = via(remote_proxy, plan.source)
    hung = threading.Event()
    remote_proxy.rewrite(lambda unit: (remote_proxy.stall() or hung.set() or unit)
                         if b"BODY[]" in unit.flat() else unit)
    stop = threading.Event()
    out: dict[str, RunReport] = {}
    worker = threading.Thread(target=lambda: out.update(
        r=NativeEngine(**ENGINE_KW).run(plan, lambda p: None, stop, lambda line: None)))
    worker.start()
    assert hung.wait(60)
    stop.set()
    worker.join(20)  # without the cut, the read waits for its 30 s socket timeout
    assert not worker.is_alive()
    assert out["r"].error_class == "stopped", out["r"].errors
    remote_proxy.clear()
    remote_proxy.resume()
    report, _ = sync(plan)
    assert report.ok, report.errors
    assert identical(filled)
