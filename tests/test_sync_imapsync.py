"""The imapsync engine: its command lines, its parser on real imapsync 2.229
outputs, and the process handling with a fake ``imapsync`` (the real one cannot
be installed here; the last test runs it against the local Dovecots when found)."""

from __future__ import annotations

import itertools
import os
import shutil
import signal
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest
from localnode.imap_pair import Pair
from ns8_imapsync.imap.connection import Endpoint, close_quietly, open_session
from ns8_imapsync.sync import poststeps
from ns8_imapsync.sync.imapsync_cmd import (
    ALWAYS_EXCLUDE_ARGS,
    DELETE2FOLDERS_BUT_NOT,
    ArgvError,
    build_argv,
    mutf7_variant,
)
from ns8_imapsync.sync.imapsync_engine import ImapsyncEngine, clear_stale_pidfile
from ns8_imapsync.sync.imapsync_output import (
    CopiedMessage,
    ImapsyncOutputParser,
    error_class,
    parse_lines,
)
from ns8_imapsync.sync.plan import SyncPlan
from ns8_imapsync.sync.redact import Redactor
from ns8_imapsync.sync.report import ERROR_CLASSES, Progress

LOGS = Path(__file__).parent / "fixtures" / "imapsync-logs"
REMOTE_PASSWORD = "Remote-S3cret pass"
MASTER_PASSWORD = "Master-S3cret pass"


def _index() -> list[tuple[str, int, str]]:
    rows = (LOGS / "INDEX.tsv").read_text().splitlines()[1:]
    return [(name, int(code), cmd) for name, code, cmd in (r.split("\t") for r in rows if r.strip())]


INDEX = _index()


def _lines(name: str) -> list[str]:
    return (LOGS / f"{name}.log").read_text(encoding="utf-8", errors="replace").splitlines()


def make_plan(tmp_path: Path, **kw) -> SyncPlan:
    src = tmp_path / "u1_abc123.pwd"
    dst = tmp_path / "vmail.pwd"
    src.write_text(REMOTE_PASSWORD + "\n")
    dst.write_text(MASTER_PASSWORD + "\n")
    source = kw.pop("source", Endpoint("imap.example.com", 993, "ssl", "john@example.com"))
    target = kw.pop("target", Endpoint("10.5.4.1", 143, "tls", "u1*vmail"))
    return SyncPlan(task_name="u1_abc123", source=source, target=target, source_password_file=src,
                    target_password_file=dst, workdir=tmp_path, **kw)


# =========================================================================== build_argv

FOLDER_MODES = ("all", "inbox", "exclusion")
SECURITIES = ("ssl", "tls", "")
DELETES = {  # name -> (delete_remote, delete_remote_older, delete_local)
    "none": (False, 0, False),
    "remote": (True, 0, False),
    "remote_older": (True, 15, False),
    "local": (False, 0, True),
    "local_and_remote": (True, 0, True),
    "local_and_remote_older": (True, 15, True),
}
USER_EXCLUDES = ["^Junk$", "Drafts", "Projets\\.Réunions"]


def _expected(tmp_path: Path, mode: str, security: str, delete: str, gmail: bool) -> list[str]:
    """The argv spelled out flag by flag, independently of the code under test."""
    delete_remote, older, delete_local = DELETES[delete]
    argv = [
        "imapsync", "--nolog", "--noreleasecheck",
        f"--pidfile={tmp_path}/u1_abc123.imapsync.pid", "--pidfilelocking",
        "--host1=imap.example.com", "--port1=993", "--user1=john@example.com",
        f"--passfile1={tmp_path}/u1_abc123.pwd",
    ]
    argv += {"ssl": ["--ssl1"], "tls": ["--tls1"], "": []}[security]
    argv += ["--host2=10.5.4.1", "--port2=143", "--user2=u1*vmail", f"--passfile2={tmp_path}/vmail.pwd", "--tls2"]
    if gmail:
        argv.append("--gmail1")
    if mode == "inbox":
        argv += ["--folder=INBOX", "--search1=UNSEEN", "--noresyncflags"]
    # never --maxage (a window on the Date: header would hide older mail): see test_imapsync_window.py
    argv += [r"--exclude=^Shared(?:[/.\\].*)?$", r"--exclude=^Public(?:[/.\\].*)?$"]
    if mode == "exclusion":
        argv += ["--exclude=^Junk$", "--exclude=Drafts", "--exclude=Projets\\.Réunions",
                 "--exclude=Projets\\.R&AOk-unions"]
    if delete_local and mode != "inbox":
        argv += ["--delete2", "--delete2folders", r"--delete2foldersbutnot=m{^(?:Shared|Public)(?:[/.\\].*)?$}"]
    # never --delete1: remote deletions are the post-step's, each proven by a local copy
    return argv


@pytest.mark.parametrize(
    "mode,security,delete,sieve,gmail",
    list(itertools.product(FOLDER_MODES, SECURITIES, DELETES, (False, True), (False, True))),
)
def test_build_argv_every_combination(tmp_path: Path, mode, security, delete, sieve, gmail) -> None:
    delete_remote, older, delete_local = DELETES[delete]
    plan = make_plan(
        tmp_path, source=Endpoint("imap.example.com", 993, security, "john@example.com"),
        folder_mode=mode, exclude=list(USER_EXCLUDES) if mode == "exclusion" else [],
        delete_remote=delete_remote, delete_remote_older=older, delete_local=delete_local,
        sieve_enabled=sieve and mode == "inbox", gmail=gmail,
    )
    if delete_local and delete_remote and mode != "inbox":
        with pytest.raises(ArgvError, match="cannot be combined"):
            build_argv(plan)
        return
    argv = build_argv(plan)
    assert argv == _expected(tmp_path, mode, security, delete, gmail)
    assert not any(REMOTE_PASSWORD in a or MASTER_PASSWORD in a for a in argv)
    assert not any(a.startswith(("--password", "--passfile1 ", "--passfile2 ")) for a in argv)
    assert "--delete1" not in argv  # imapsync would delete before a Sieve discard, or on a \\Deleted copy


def test_build_argv_custom_binary_and_pidfile(tmp_path: Path) -> None:
    argv = build_argv(make_plan(tmp_path), imapsync="/opt/bin/imapsync", pidfile=tmp_path / "run" / "x.pid")
    assert argv[0] == "/opt/bin/imapsync"
    assert f"--pidfile={tmp_path}/run/x.pid" in argv


def test_relative_paths_become_absolute(tmp_path: Path, monkeypatch) -> None:
    # imapsync changes its directory to /var/tmp/uid_N in a container
    monkeypatch.chdir(tmp_path)
    plan = make_plan(tmp_path)
    plan.source_password_file = Path("u1_abc123.pwd")
    assert f"--passfile1={tmp_path}/u1_abc123.pwd" in build_argv(plan, pidfile=Path("p.pid"))


@pytest.mark.parametrize("user,host,pattern", [
    ("-x", "imap.example.com", "^Junk$"),
    ("--delete2", "--delete2", "--delete2"),
    ("john --delete1", "-h", "a b \"c' d $(rm -rf /) `x` ;|&"),
    ("--passfile1=/etc/shadow", "--host2=evil", "--exclude=.*"),
])
def test_hostile_values_stay_single_inert_arguments(tmp_path: Path, user, host, pattern) -> None:
    plan = make_plan(tmp_path, source=Endpoint(host, 143, "tls", user), folder_mode="exclusion",
                     exclude=[pattern])
    argv = build_argv(plan)
    assert f"--user1={user}" in argv
    assert f"--host1={host}" in argv
    assert f"--exclude={pattern}" in argv
    # nothing the user typed is an element of its own, nor turned on a deletion
    assert user not in argv and host not in argv and pattern not in argv
    assert not {"--delete1", "--delete2", "--delete2folders"} & set(argv)
    assert sum(a.startswith("--host2=") for a in argv) == 1
    assert sum(a.startswith("--passfile1=") for a in argv) == 1


@pytest.mark.parametrize("field,value", [
    ("user", ""), ("host", ""), ("user", "john\nExiting with return value 0"), ("host", "a\rb"),
    ("exclude", "Junk\x00"),
])
def test_unsafe_values_are_refused(tmp_path: Path, field: str, value: str) -> None:
    user = value if field == "user" else "john"
    host = value if field == "host" else "imap.example.com"
    plan = make_plan(tmp_path, source=Endpoint(host, 143, "tls", user), folder_mode="exclusion",
                     exclude=[value] if field == "exclude" else [])
    with pytest.raises(ArgvError):
        build_argv(plan)


@pytest.mark.parametrize("port", [0, 65536, -1, True, "143"])
def test_bad_port_refused(tmp_path: Path, port) -> None:
    with pytest.raises(ArgvError):
        build_argv(make_plan(tmp_path, source=Endpoint("h", port, "tls", "u")))


def test_bad_security_and_mode_refused(tmp_path: Path) -> None:
    with pytest.raises(ArgvError):
        build_argv(make_plan(tmp_path, source=Endpoint("h", 143, "starttls", "u")))  # type: ignore[arg-type]
    with pytest.raises(ArgvError):
        build_argv(make_plan(tmp_path, folder_mode="some"))


def test_empty_exclusion_pattern_is_dropped(tmp_path: Path) -> None:
    # an empty regex matches every folder: it would exclude the whole mailbox
    argv = build_argv(make_plan(tmp_path, folder_mode="exclusion", exclude=["", "Junk"]))
    assert [a for a in argv if a.startswith("--exclude=")] == [
        f"--exclude={p}" for p in ALWAYS_EXCLUDE_ARGS] + ["--exclude=Junk"]


def test_inbox_mode_never_deletes_locally(tmp_path: Path) -> None:
    argv = build_argv(make_plan(tmp_path, folder_mode="inbox", delete_local=True, delete_remote=True))
    assert "--delete2" not in argv and "--delete2folders" not in argv
    assert "--delete1" not in argv


def test_user_excludes_ignored_outside_exclusion_mode(tmp_path: Path) -> None:
    argv = build_argv(make_plan(tmp_path, folder_mode="all", exclude=["Junk"]))
    assert "--exclude=Junk" not in argv


@pytest.mark.parametrize("pattern,variant", [
    ("^Junk$", None),
    ("Projets\\.Réunions", "Projets\\.R&AOk-unions"),
    ("^Документы$", "^&BBQEPgQ6BEMEPAQ1BD0EQgRL-$"),
    ("x&y", "x&-y"),
    ("[éè]", None),  # inside a class: encoding would change the meaning
    ("Ré+union", None),  # a quantifier on the last accented letter
    ("R\\é", "R\\&AOk-"),
])
def test_mutf7_variant(pattern: str, variant: str | None) -> None:
    assert mutf7_variant(pattern) == variant


def test_always_excluded_patterns_match_like_the_reference() -> None:
    import re

    for name in ("Shared", "Shared/bob/INBOX", "Public", "Public.team", "Shared\\x"):
        assert any(re.search(p, name) for p in ALWAYS_EXCLUDE_ARGS), name
    for name in ("SharedStuff", "INBOX.Shared", "Publications", "My Public"):
        assert not any(re.search(p, name) for p in ALWAYS_EXCLUDE_ARGS), name
    assert re.fullmatch(r"m\{.*\}", DELETE2FOLDERS_BUT_NOT)


# =========================================================================== the parser

# Expected error class of every captured scenario (spec section 4).
EXPECTED_CLASS = {
    "justconnect-ok": "",
    "justlogin-ok": "",
    "justlogin-bad-password-host1": "bad_user_credentials",
    "justlogin-bad-password-host2": "bad_master_credentials",  # host2 = the local master login
    "login-bad-password-both": "bad_user_credentials",  # 161 wins the tie
    "login-unknown-user-host1": "bad_user_credentials",
    "connect-refused-host1": "Check_hostname_or_tcp_port",
    "connect-refused-host2": "Check_hostname_or_tcp_port",
    "connect-unresolvable-host1": "Check_hostname_or_tcp_port",
    "justconnect-refused": "Check_hostname_or_tcp_port",
    "ssl-on-plain-port-host1": "SSL_encryption_error",  # 101, recognised by its SSL text
    "ssl-ok-imaps": "",
    "starttls-refused-host1": "STARTTLS_not_allowed_use_IMAPS",
    "starttls-refused-justconnect": "",
    "tls-forced-no-starttls-host1": "STARTTLS_not_allowed_use_IMAPS",
    "notls-auth-failed-host1": "bad_user_credentials",
    "bad-greeting-host1": "Check_hostname_or_tcp_port",
    "passfile-missing": "engine_error",  # 66
    "delete1-and-delete2": "engine_error",  # 64
    "pidfile-locked": "engine_error",  # 8
    "justfoldersizes": "",
    "dry-run": "",
    "sync-full": "",
    "sync-incremental": "",
    "justfoldersizes-after-sync": "",
    "sync-flags-changed": "",
    "sync-delete2": "",
    "sync-addheader": "",
    "folder-exclude-maxage": "",
    "search1-flagged": "",
    "justfolders-delete2folders-dry": "",
    "version": "",
    "debugimap-tiny-sync": "",
}

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
    updates = list(parser.feed_all(_lines(name)))
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
    both = parse_lines(_lines("login-bad-password-both"))
    assert [e.split(":")[0] for e in both.errors] == ["Host1 failure", "Host2 failure"]
    assert "Authentication failed" in both.reason
    assert "Connection refused" in parse_lines(_lines("connect-refused-host2")).errors[0]
    assert "STARTTLS refused" in parse_lines(_lines("starttls-refused-host1")).reason
    assert "--passfile1" in parse_lines(_lines("passfile-missing")).errors[0]
    assert "another imapsync" in " ".join(parse_lines(_lines("pidfile-locked")).errors)


def test_copied_messages_sync_full() -> None:
    parser = ImapsyncOutputParser()
    list(parser.feed_all(_lines("sync-full")))
    report = parser.finish()
    assert parser.copied[0] == CopiedMessage("&BBQEPgQ6BEMEPAQ1BD0EQgRL-", 1, 6998, "&BBQEPgQ6BEMEPAQ1BD0EQgRL-", 1)
    lists = [c for c in parser.copied if c.folder1 == "Lists.dev list"]
    assert [(c.folder2, c.uid1, c.uid2) for c in lists] == [("Lists/dev list", 1, 1), ("Lists/dev list", 2, 2)]
    assert sum(c.size for c in parser.copied) == report.copied_bytes == 7064096
    assert report.folders_created == 15  # INBOX already existed on host2
    assert report.reason == "297 message(s) copied, 4 already there"


def test_copied_messages_keep_host2_uids() -> None:
    parser = ImapsyncOutputParser()
    list(parser.feed_all(_lines("debugimap-tiny-sync")))
    assert CopiedMessage("INBOX", 4, 2654, "INBOX", 3) in parser.copied  # APPENDUID, not the host1 UID
    assert CopiedMessage("Projets.R&AOk-unions", 1, 8420, "Projets/R&AOk-unions", 1) in parser.copied


def test_dry_runs_count_nothing_as_done() -> None:
    dry = parse_lines(_lines("dry-run"))
    assert dry.copied == 0 and dry.folders_created == 0
    folders = parse_lines(_lines("justfolders-delete2folders-dry"))
    assert folders.folders_deleted_host2 == 0  # "Deleted OnlyOnHost2 (not really since --dry mode)"
    assert parse_lines(["Deleted OnlyOnHost2", "Exiting with return value 0 (EX_OK)"]).folders_deleted_host2 == 1


def test_progress_sync_full() -> None:
    parser = ImapsyncOutputParser()
    updates = list(parser.feed_all(_lines("sync-full")))
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
    updates = list(ImapsyncOutputParser().feed_all(_lines("search1-flagged")))
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


def test_killed_before_statistics_counts_copy_lines() -> None:
    lines = [line for line in _lines("sync-full") if not line.startswith(("Exiting", "++++ Statistics"))]
    lines = lines[: next(i for i, s in enumerate(lines) if s.startswith("Folder    4/16"))]
    parser = ImapsyncOutputParser()
    list(parser.feed_all(lines))
    report = parser.finish(-signal.SIGKILL, stop_requested=True)
    assert report.error_class == "stopped" and report.exit_code == 137
    assert report.copied == 10 + 28
    assert report.errors == ["imapsync was ended by signal SIGKILL"]


# =========================================================================== the engine (fake imapsync)

FAKE_HEAD = f"""#!{sys.executable}
import os, signal, subprocess, sys, time
args = sys.argv[1:]
opt = dict(a[2:].split("=", 1) for a in args if a.startswith("--") and "=" in a)
pidfile = opt["pidfile"]
with open(pidfile, "w") as f:
    f.write(f"{{os.getpid()}}\\n")
with open(os.path.join(os.path.dirname(pidfile), "argv.txt"), "w") as f:
    f.write("\\n".join(sys.argv))
def say(line):
    print(line, flush=True)
"""


@pytest.fixture(autouse=True)
def _no_poststeps(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    """The stand-ins here replay outputs for servers that do not exist, so the
    post-steps (completion, inbox, deletions: they talk to both servers) are left
    out; they are tested on real Dovecots in test_sync_poststeps,
    test_imapsync_completion and test_remote_deletion."""
    if "pair" not in request.fixturenames:
        monkeypatch.setattr(poststeps, "after_run", lambda *_a, **_k: None)


def write_fake(tmp_path: Path, body: str) -> Path:
    path = tmp_path / "bin" / "imapsync"
    path.parent.mkdir(exist_ok=True)
    path.write_text(FAKE_HEAD + textwrap.dedent(body))
    path.chmod(0o755)
    return path


def replay_fake(tmp_path: Path, name: str, code: int) -> Path:
    return write_fake(tmp_path, f"""
        for line in open({str(LOGS / (name + ".log"))!r}, encoding="utf-8", errors="replace"):
            sys.stdout.write(line)
        sys.stdout.flush()
        os.unlink(pidfile)
        sys.exit({code})
    """)


def run_engine(engine: ImapsyncEngine, plan: SyncPlan, stop: threading.Event | None = None):
    lines: list[str] = []
    updates: list[Progress] = []
    report = engine.run(plan, updates.append, stop or threading.Event(), lines.append)
    return report, lines, updates


def _group_alive(pgid: int) -> bool:
    """A live (non-zombie) process in the group; zombies wait for a reaper we do not control."""
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid and fields[0] != "Z":
            return True
    return False


@pytest.mark.parametrize("name,code", [("sync-full", 0), ("justlogin-bad-password-host2", 162),
                                       ("ssl-on-plain-port-host1", 101), ("sync-delete2", 0)])
def test_engine_streams_a_real_output(tmp_path: Path, name: str, code: int) -> None:
    fake = replay_fake(tmp_path, name, code)
    engine = ImapsyncEngine(imapsync=str(fake))
    report, lines, updates = run_engine(engine, make_plan(tmp_path))
    assert lines == _lines(name)
    expected = parse_lines(_lines(name), code)
    assert report == expected
    assert report.exit_code == code and report.error_class == EXPECTED_CLASS[name]
    if name == "sync-full":
        assert updates[-1].messages_done == 301 and len(engine.last_copied) == 297
    # the fake saw exactly build_argv's list, with no password in it
    argv = (tmp_path / "argv.txt").read_text().split("\n")
    assert argv[1:] == engine.last_argv[1:]
    assert not any(REMOTE_PASSWORD in a or MASTER_PASSWORD in a for a in argv)
    assert not (tmp_path / "u1_abc123.imapsync.pid").exists()


def test_engine_masks_passwords_a_server_echoes(tmp_path: Path) -> None:
    fake = write_fake(tmp_path, f"""
        say("Host1 failure: Error login on [h] with user [u] auth [LOGIN]: 4 BAD LOGIN u {REMOTE_PASSWORD}")
        say("Err 1/1: Host1 failure: Error login on [h]: BAD {REMOTE_PASSWORD} and {MASTER_PASSWORD}")
        say("Exiting with return value 161 (EXIT_AUTHENTICATION_FAILURE_USER1) 1/50 nb_errors/max_errors PID 1")
        sys.exit(161)
    """)
    report, lines, _ = run_engine(ImapsyncEngine(imapsync=str(fake)), make_plan(tmp_path))
    text = "\n".join(lines + report.errors)
    assert REMOTE_PASSWORD not in text and MASTER_PASSWORD not in text
    assert "MASKED" in lines[0] and report.error_class == "bad_user_credentials"


def test_redactor_masks_the_spellings_a_library_uses() -> None:
    secret = 'pa"ss\\wörd'
    redact = Redactor([secret, "abc"])  # 3 characters: too short to mask without mangling the log
    for text in (secret, repr(secret), repr(secret.encode()), 'LOGIN bob "pa\\"ss\\\\wörd"'):
        masked = redact(f"before {text} after")
        assert "ss" not in masked and "MASKED" in masked, text
    assert redact("abc def") == "abc def"


def test_engine_heartbeat_per_output_line(tmp_path: Path) -> None:
    """Each output line is a sign of life for the run's watchdog, progress or not."""
    fake = replay_fake(tmp_path, "sync-full", 0)
    beats: list[int] = []
    ImapsyncEngine(imapsync=str(fake)).run(make_plan(tmp_path), lambda p: None, threading.Event(),
                                           lambda line: None, heartbeat=beats.append)
    assert len(beats) == len(_lines("sync-full"))


def test_engine_stop_by_abort_file(tmp_path: Path) -> None:
    """imapsync sees <pidfile>abort<pid> before the next message and exits 7 with its statistics."""
    fake = write_fake(tmp_path, """
        abortfile = f"{pidfile}abort{os.getpid()}"
        say("++++ Looping on each one of 1 folders to sync")
        say("Folder    1/1 [INBOX]                             -> [INBOX]")
        for uid in range(1, 100000):
            if os.path.exists(abortfile):
                say(f"Asked to terminate by file {abortfile}")
                say("++++ Statistics")
                say(f"Messages transferred                    : {uid - 1} ")
                say("Exiting with return value 7 (EXIT_BY_FILE) 0/50 nb_errors/max_errors PID 1")
                os.unlink(abortfile); os.unlink(pidfile)
                sys.exit(7)
            say(f"msg INBOX/{uid} {{100}}            copied to INBOX/{uid}          9.00 msgs/s  1.000 KiB/s 1.000 KiB copied ETA: x  0 s  {100000 - uid}/100000 msgs left")
            time.sleep(0.01)
    """)
    stop = threading.Event()
    engine = ImapsyncEngine(imapsync=str(fake), abort_grace=30, term_grace=30)
    lines: list[str] = []

    def progress(p: Progress) -> None:
        if p.messages_done >= 5:
            stop.set()

    started = time.monotonic()
    report = engine.run(make_plan(tmp_path), progress, stop, lines.append)
    assert time.monotonic() - started < 20  # no grace period needed
    assert report.error_class == "stopped" and report.exit_code == 7
    assert report.copied >= 5 and report.copied == len(engine.last_copied)
    assert any(line.startswith("Asked to terminate by file") for line in lines)
    assert lines[-1] == "imapsync engine: stop requested (abort file)"
    assert not list(tmp_path.glob("*abort*"))


def test_engine_stop_by_sigterm_when_abort_file_is_not_seen(tmp_path: Path) -> None:
    """Busy in a long fetch: SIGTERM after the abort grace; imapsync prints its stats and kills itself."""
    fake = write_fake(tmp_path, """
        def bye(signum, frame):
            say("Got a signal TERM (my PID is 1 my PPID is 1). Asked to terminate")
            say("++++ Statistics")
            say("Messages transferred                    : 0 ")
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            os.kill(os.getpid(), signal.SIGTERM)
        signal.signal(signal.SIGTERM, bye)
        say("Host1: parsing headers of folder [INBOX]. It can take time for huge folders. Be patient.")
        time.sleep(60)
    """)
    stop = threading.Event()
    stop_timer = threading.Timer(0.5, stop.set)
    stop_timer.start()
    started = time.monotonic()
    report, lines, _ = run_engine(ImapsyncEngine(imapsync=str(fake), abort_grace=0.5, term_grace=30),
                                  make_plan(tmp_path), stop)
    assert time.monotonic() - started < 15
    assert report.error_class == "stopped" and report.exit_code == 128 + signal.SIGTERM
    assert "Asked to terminate" in lines[1]
    assert lines[-1] == "imapsync engine: stop requested (abort file, SIGTERM)"
    assert not (tmp_path / "u1_abc123.imapsync.pid").exists()  # killed: the engine removed it


def test_engine_stop_kills_the_whole_group(tmp_path: Path) -> None:
    """A process that ignores the abort file and SIGTERM, with a child: SIGKILL to the group."""
    fake = write_fake(tmp_path, """
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        child = subprocess.Popen(["sleep", "300"])
        say(f"PID is {os.getpid()} my PPID is {os.getppid()} child {child.pid}")
        while True:
            time.sleep(1)
    """)
    stop = threading.Event()
    lines: list[str] = []

    def log(line: str) -> None:
        lines.append(line)
        if line.startswith("PID is"):
            stop.set()

    report = ImapsyncEngine(imapsync=str(fake), abort_grace=0.3, term_grace=0.3).run(
        make_plan(tmp_path), lambda p: None, stop, log)
    pid, child = int(lines[0].split()[2]), int(lines[0].split()[-1])
    assert report.error_class == "stopped" and report.exit_code == 128 + signal.SIGKILL
    assert lines[-1] == "imapsync engine: stop requested (abort file, SIGTERM, SIGKILL)"
    deadline = time.monotonic() + 5
    while _group_alive(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _group_alive(pid)
    assert os.getpgid(os.getpid()) != pid  # it had its own group, not ours
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)  # reaped by the engine
    assert child != pid


def test_engine_kills_stragglers_after_a_normal_exit(tmp_path: Path) -> None:
    fake = write_fake(tmp_path, """
        child = subprocess.Popen(["sleep", "300"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        say(f"PID is {os.getpid()} child {child.pid}")
        say("Exiting with return value 0 (EX_OK: successful termination) 0/50 nb_errors/max_errors PID 1")
        os._exit(0)
    """)
    report, lines, _ = run_engine(ImapsyncEngine(imapsync=str(fake)), make_plan(tmp_path))
    assert report.ok
    pgid = int(lines[0].split()[2])
    deadline = time.monotonic() + 5
    while _group_alive(pgid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _group_alive(pgid)


def test_engine_stop_before_start_runs_nothing(tmp_path: Path) -> None:
    fake = replay_fake(tmp_path, "sync-full", 0)
    stop = threading.Event()
    stop.set()
    report, lines, _ = run_engine(ImapsyncEngine(imapsync=str(fake)), make_plan(tmp_path), stop)
    assert report.error_class == "stopped" and lines == []
    assert not (tmp_path / "argv.txt").exists()


def test_engine_failing_callback_leaves_no_process(tmp_path: Path) -> None:
    fake = write_fake(tmp_path, """
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        say(f"PID is {os.getpid()}")
        time.sleep(300)
    """)
    seen: list[str] = []

    def log(line: str) -> None:
        seen.append(line)
        raise OSError("disk full")

    started = time.monotonic()
    with pytest.raises(OSError, match="disk full"):
        ImapsyncEngine(imapsync=str(fake)).run(make_plan(tmp_path), lambda p: None, threading.Event(), log)
    assert time.monotonic() - started < 10
    assert not _group_alive(int(seen[0].split()[2]))


@pytest.mark.parametrize("binary", ["imapsync-not-installed-here", "/nonexistent/bin/imapsync"])
def test_engine_missing_binary(tmp_path: Path, binary: str) -> None:
    report, lines, _ = run_engine(ImapsyncEngine(imapsync=binary), make_plan(tmp_path))
    assert report.error_class == "engine_error" and not report.ok
    assert "imapsync is not installed" in report.reason and binary in report.reason
    assert lines == []


def test_engine_refuses_an_unsafe_plan(tmp_path: Path) -> None:
    fake = replay_fake(tmp_path, "sync-full", 0)
    plan = make_plan(tmp_path, delete_local=True, delete_remote=True)
    report, _, _ = run_engine(ImapsyncEngine(imapsync=str(fake)), plan)
    assert report.error_class == "validation_failed" and "cannot be combined" in report.reason
    assert not (tmp_path / "argv.txt").exists()


def test_stale_pidfile_cleared_but_a_live_run_kept(tmp_path: Path) -> None:
    import subprocess

    pidfile = tmp_path / "t.imapsync.pid"
    other = subprocess.Popen(["sleep", "30"])  # alive, but not an imapsync of this task (reused PID)
    try:
        pidfile.write_text(f"{other.pid}\n")
        clear_stale_pidfile(pidfile)
        assert not pidfile.exists()
    finally:
        other.kill()
        other.wait()
    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)", f"--pidfile={pidfile}"])
    try:
        # right after exec the kernel may not have set the new argv yet (cmdline reads empty)
        deadline = time.monotonic() + 5
        while not Path(f"/proc/{live.pid}/cmdline").read_bytes() and time.monotonic() < deadline:
            time.sleep(0.01)
        pidfile.write_text(f"{live.pid}\n")
        clear_stale_pidfile(pidfile)
        assert pidfile.exists()  # imapsync's --pidfilelocking will refuse the second run (exit 8)
    finally:
        live.kill()
        live.wait()


def test_engine_passes_no_secret_in_the_environment(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("IMAPSYNC_PASSWORD1", "from-env")
    monkeypatch.setenv("REDIS_PASSWORD", "redis-secret")
    fake = write_fake(tmp_path, """
        say("ENV " + " ".join(sorted(k for k in os.environ if "PASSWORD" in k or "SECRET" in k)))
        sys.exit(0)
    """)
    _, lines, _ = run_engine(ImapsyncEngine(imapsync=str(fake)), make_plan(tmp_path))
    assert lines[0] == "ENV "


# =========================================================================== the real imapsync

REAL_IMAPSYNC = [p for p in [shutil.which("imapsync")] if p]


def _seed(pair: Pair, user: str, count: int) -> None:
    client = open_session(pair.remote(user), pair.password(user))
    try:
        client.create_folder("Archive")
        for n in range(count):
            msg = (f"Message-ID: <imapsync-engine-{n}@test>\r\nSubject: engine {n}\r\n"
                   f"From: a@remote.test\r\n\r\nbody {n}\r\n").encode()
            client.append("INBOX" if n % 2 else "Archive", msg)
    finally:
        close_quietly(client)


@pytest.mark.skipif(not REAL_IMAPSYNC, reason="needs the real imapsync 2.229 on PATH (not installable from "
                                               "our registries: run it beside the project)")
def test_real_imapsync_against_the_local_dovecots(pair: Pair, tmp_path: Path) -> None:
    _real_sync_twice(REAL_IMAPSYNC[0], pair, tmp_path)


def _real_sync_twice(imapsync: str, pair: Pair, tmp_path: Path) -> None:
    _seed(pair, "user02", 6)
    plan = real_plan(pair, tmp_path)
    engine = ImapsyncEngine(imapsync=imapsync)
    first, lines, updates = run_engine(engine, plan)
    assert first.ok, "\n".join(lines[-40:])
    assert first.copied == 6 and len(engine.last_copied) == 6
    assert updates and updates[-1].messages_done >= 6
    assert not any(pair.password("user02") in line or pair.master_pass in line for line in lines)
    again, _, _ = run_engine(engine, plan)
    assert again.ok and again.copied == 0 and again.skipped >= 6


def real_plan(pair: Pair, tmp_path: Path) -> SyncPlan:
    plan = make_plan(tmp_path, source=pair.remote("user02"), target=pair.local("user02"))
    plan.source_password_file.write_text(pair.password("user02") + "\n")
    plan.target_password_file.write_text(pair.master_pass + "\n")
    return plan
