"""The parser of imapsync 2.229's output on every recorded real output: progress,
counts, copies, error classes (sync/imapsync_output.py)."""

from __future__ import annotations

import itertools
import signal

import pytest
from imapsync_logs import EXPECTED_CLASS, INDEX, lines_of
from ns8_imapsync.sync.imapsync_output import (
    CopiedMessage,
    ImapsyncOutputParser,
    error_class,
    parse_lines,
)
from ns8_imapsync.sync.report import ERROR_CLASSES, Progress

# =========================================================================== the parser

# Expected error class of every captured scenario (spec section 4).

# Numbers read from each log's statistics and folder-size totals:
# copied, skipped, deleted host1, deleted host2, bytes copied, host1 (folders, msgs, bytes), host2 (...)
EXPECTED_COUNTS = {
    "sync-full": (297, 4, 0, 0, 7064096, (16, 301, 7217618), (16, 297, 7064096)),
    "sync-incremental": (0, 301, 0, 0, 0, (16, 301, 7217618), (16, 297, 7064096)),
    "sync-flags-changed": (0, 301, 0, 0, 0, (16, 301, 7217618), (16, 298, 7064190)),
    "sync-delete2": (0, 301, 0, 1, 0, (16, 301, 7217618), (16, 297, 7064096)),
    "sync-addheader": (1, 129, 0, 0, 200, (1, 130, 3452374), (1, 129, 3441315)),
    "dry-run": (0, 2, 0, 0, 0, (16, 301, 7217618), (16, 0, 0)),
    "folder-exclude-maxage": (0, 1, 0, 0, 0, (1, 0, 0), (0, 0, 0)),  # --nofoldersizes
    "search1-flagged": (0, 13, 0, 0, 0, (1, 0, 0), (0, 0, 0)),
    "justfolders-delete2folders-dry": (0, 0, 0, 0, 0, (16, 0, 0), (0, 0, 0)),
    "debugimap-tiny-sync": (7, 3, 0, 0, 48188, (6, 10, 69146), (6, 7, 48188)),
    "justfoldersizes": (0, 0, 0, 0, 0, (16, 301, 7217618), (16, 0, 0)),
    "justfoldersizes-after-sync": (0, 0, 0, 0, 0, (16, 301, 7217618), (16, 297, 7064096)),
}


def test_tables_cover_the_index() -> None:
    assert {name for name, _, _ in INDEX} == set(EXPECTED_CLASS)
    assert set(EXPECTED_CLASS.values()) <= set(ERROR_CLASSES)


@pytest.mark.parametrize("name,code,command", INDEX, ids=[row[0] for row in INDEX])
def test_parser_on_every_captured_log(name: str, code: int, command: str) -> None:
    parser = ImapsyncOutputParser()
    updates = list(parser.feed_all(lines_of(name)))
    if parser.exit_line is None:
        # only `imapsync --version` prints no "Exiting" line: the process code is all there is
        assert name == "version"
        assert parser.finish().error_class == "crashed"  # no code and no exit line: not a normal end
        report = ImapsyncOutputParser().finish(code)
    else:
        report = parser.finish()  # no process code: the "Exiting with return value" line is used
    assert report.exit_code == code
    assert report.error_class == EXPECTED_CLASS[name]
    assert report.ok == (code == 0)
    if report.error_class:
        assert report.errors and report.reason.startswith(ERROR_CLASSES[report.error_class])
        assert not any("MASKED" in e for e in report.errors)
    else:
        assert report.errors == []
    if name in EXPECTED_COUNTS:
        copied, skipped, del1, del2, nbytes, h1, h2 = EXPECTED_COUNTS[name]
        assert (report.copied, report.skipped, report.deleted_host1, report.deleted_host2) == (copied, skipped, del1, del2)
        assert report.copied_bytes == nbytes
        assert (report.host1.folders, report.host1.messages, report.host1.bytes) == h1
        assert (report.host2.folders, report.host2.messages, report.host2.bytes) == h2
        assert len(parser.copied) == copied
    if updates:  # progress never goes backwards
        for before, after in itertools.pairwise(updates):
            assert after.messages_done >= before.messages_done
            assert after.bytes_done >= before.bytes_done
            assert after.folders_done >= before.folders_done


def test_failure_texts_kept_as_errors() -> None:
    both = parse_lines(lines_of("login-bad-password-both"))
    assert [e.split(":")[0] for e in both.errors] == ["Host1 failure", "Host2 failure"]
    assert "Authentication failed" in both.reason
    assert "Connection refused" in parse_lines(lines_of("connect-refused-host2")).errors[0]
    assert "STARTTLS refused" in parse_lines(lines_of("starttls-refused-host1")).reason
    assert "--passfile1" in parse_lines(lines_of("passfile-missing")).errors[0]
    assert "another imapsync" in " ".join(parse_lines(lines_of("pidfile-locked")).errors)


def test_copied_messages_sync_full() -> None:
    parser = ImapsyncOutputParser()
    list(parser.feed_all(lines_of("sync-full")))
    report = parser.finish()
    assert parser.copied[0] == CopiedMessage("&BBQEPgQ6BEMEPAQ1BD0EQgRL-", 1, 6998, "&BBQEPgQ6BEMEPAQ1BD0EQgRL-", 1)
    lists = [c for c in parser.copied if c.folder1 == "Lists.dev list"]
    assert [(c.folder2, c.uid1, c.uid2) for c in lists] == [("Lists/dev list", 1, 1), ("Lists/dev list", 2, 2)]
    assert sum(c.size for c in parser.copied) == report.copied_bytes == 7064096
    assert report.folders_created == 15  # INBOX already existed on host2
    assert report.reason == "297 message(s) copied, 4 already there"


def test_copied_messages_keep_host2_uids() -> None:
    parser = ImapsyncOutputParser()
    list(parser.feed_all(lines_of("debugimap-tiny-sync")))
    assert CopiedMessage("INBOX", 4, 2654, "INBOX", 3) in parser.copied  # APPENDUID, not the host1 UID
    assert CopiedMessage("Projets.R&AOk-unions", 1, 8420, "Projets/R&AOk-unions", 1) in parser.copied


def test_dry_runs_count_nothing_as_done() -> None:
    dry = parse_lines(lines_of("dry-run"))
    assert dry.copied == 0 and dry.folders_created == 0
    folders = parse_lines(lines_of("justfolders-delete2folders-dry"))
    assert folders.folders_deleted_host2 == 0  # "Deleted OnlyOnHost2 (not really since --dry mode)"
    assert parse_lines(["Deleted OnlyOnHost2", "Exiting with return value 0 (EX_OK)"]).folders_deleted_host2 == 1


def test_progress_sync_full() -> None:
    parser = ImapsyncOutputParser()
    updates = list(parser.feed_all(lines_of("sync-full")))
    copies = [u for u in updates if u.folder == "Archive.2023"]
    assert len(copies) > 20
    done = [u.messages_done for u in updates]
    assert done == sorted(done) and done[0] == 0 and done[-1] == 301
    # each copy line moves messages_done forward
    in_folder = [u.messages_done for u in copies]
    assert all(b > a for a, b in itertools.pairwise(in_folder[1:]))
    folders = list(dict.fromkeys(u.folder for u in updates if u.folder))
    assert folders == [
        "Документы", "Archive", "Archive.2023", "Archive.2024", "Clients", "Clients.ACME",
        "Clients.ACME.Contracts", "Clients.Globex", "Drafts", "INBOX", "Lists", "Lists.dev list",
        "Projets", "Projets.Réunions", "Sent", "Trash",
    ]
    assert updates[-1] == Progress("Trash", 16, 16, 301, 301, 7217618, 7217618)
    first_folder = next(u for u in updates if u.folder)
    assert (first_folder.folders_done, first_folder.folders_total, first_folder.messages_total) == (0, 16, 301)


def test_progress_without_folder_sizes() -> None:
    # --nofoldersizes: no totals, no ETA; "considering N" still moves the count
    updates = list(ImapsyncOutputParser().feed_all(lines_of("search1-flagged")))
    assert updates[-1].messages_done == 13 and updates[-1].folders_done == 1


@pytest.mark.parametrize("code,errors,signum,stop,expected", [
    (111, ["Failure: lost connection for host1 [h]: socket closed"], None, False, "connection_lost"),
    (114, ["- msg INBOX/1 {12} could not append ( Subject:[x] ) to folder INBOX: BAD too big"], None, False,
     "message_errors"),
    (114, ["- msg INBOX/1 {12} could not append: Write failed 'Broken pipe'"], None, False, "connection_lost"),
    (113, ["could not append ... [OVERQUOTA] Mailbox is full"], None, False, "message_errors"),
    (117, ["Host1: Could not select: NO [NOPERM] Permission denied"], None, False, "message_errors"),
    (12, ["Host2 failure: Can not go to tls encryption on host2 [h]: NO"], None, False, "SSL_encryption_error"),
    (16, [], None, False, "bad_user_credentials"),
    (7, ["Asked to terminate by file /x.pidabort12"], None, False, "stopped"),
    (6, [], None, False, "stopped"),
    (143, [], signal.SIGTERM, False, "stopped"),
    (137, [], signal.SIGKILL, False, "crashed"),
    (137, [], signal.SIGKILL, True, "stopped"),
    (143, [], None, False, "stopped"),  # a wrapper's 128+15
    (161, ["Host1 failure: Error login"], None, True, "stopped"),
    (0, [], None, True, ""),  # finished before the stop took effect
    (-1, [], None, False, "crashed"),
    (255, ["Can't locate Mail/IMAPClient.pm"], None, False, "engine_error"),
    (21, [], None, False, "engine_error"),
])
def test_error_class_rules(code, errors, signum, stop, expected) -> None:
    assert error_class(code, errors, signum=signum, stop_requested=stop) == expected


def test_killed_before_statistics_counts_copylines_of() -> None:
    lines = [line for line in lines_of("sync-full") if not line.startswith(("Exiting", "++++ Statistics"))]
    lines = lines[: next(i for i, s in enumerate(lines) if s.startswith("Folder    4/16"))]
    parser = ImapsyncOutputParser()
    list(parser.feed_all(lines))
    report = parser.finish(-signal.SIGKILL, stop_requested=True)
    assert report.error_class == "stopped" and report.exit_code == 137
    assert report.copied == 10 + 28
    assert report.errors == ["imapsync was ended by signal SIGKILL"]


