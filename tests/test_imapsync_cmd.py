"""The imapsync command line for every option combination: no password, user values
inert, the deletions that lose mail refused (sync/imapsync_cmd.py)."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest
from imapsync_logs import MASTER_PASSWORD, REMOTE_PASSWORD, make_plan
from ns8_imapsync.imap.connection import Endpoint
from ns8_imapsync.sync.imapsync_cmd import (
    ALWAYS_EXCLUDE_ARGS,
    DELETE2FOLDERS_BUT_NOT,
    ArgvError,
    build_argv,
    mutf7_variant,
)

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


