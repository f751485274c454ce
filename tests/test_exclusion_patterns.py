"""Folder exclusion patterns: the comma list (one splitter for API, CSV and task
file), the input check against catastrophic backtracking, and the container's
time limit per match, down to `discover()` on a real Dovecot pair."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from localnode.imap_pair import Pair
from ns8_imapsync.exclusion import check_backtracking, join_patterns, split_patterns
from ns8_imapsync.imap.connection import close_quietly, open_session
from ns8_imapsync.imap.folders import MATCH_TIMEOUT, ExclusionTimeout, compile_pattern, is_excluded
from ns8_imapsync.statedir import StateDir
from ns8_imapsync.sync.folderpairs import discover
from ns8_imapsync.sync.plan import SyncPlan
from ns8_imapsync.task import Task, TaskError, format_env, parse_env

BASE = dict(localuser="u2", task_id="abc123", remotehostname="imap.example.org", remoteport=143,
            remoteusername="alice@example.org")


# ---------------------------------------------------------------------------------- splitting
@pytest.mark.parametrize("text,patterns", [
    ("^Junk$,Sent Items", ["^Junk$", "Sent Items"]),
    (r"^Archive/[0-9]{4,}$", [r"^Archive/[0-9]{4,}$"]),  # a quantifier's comma
    (r"^Archive/[0-9]{4,}$,^Junk$", [r"^Archive/[0-9]{4,}$", "^Junk$"]),
    ("a{2,3}b{,4},c", ["a{2,3}b{,4}", "c"]),
    ("(Junk|Spam,Ham),Trash", ["(Junk|Spam,Ham)", "Trash"]),  # inside a group
    ("((a,b),(c,d)),e", ["((a,b),(c,d))", "e"]),  # nested groups
    ("(a{1,2}),b", ["(a{1,2})", "b"]),  # a quantifier inside a group
    (r"a\,b,c", [r"a\,b", "c"]),  # escaped: stays, backslash included
    (r"a\\,b", [r"a\\", "b"]),  # an escaped backslash does not escape the comma
    (r"\(,x", [r"\(", "x"]),  # an escaped parenthesis opens nothing
    ("[,],x", ["[,]", "x"]),  # inside a character class
    ("[]],y", ["[]]", "y"]),  # `]` first in a class is a literal
    ("[^]],z", ["[^]]", "z"]),  # ... and after `^`
    ("[]a,b],c", ["[]a,b]", "c"]),
    (r"[\],],q", [r"[\],]", "q"]),  # an escaped `]` does not close the class
    ("[(],w", ["[(]", "w"]),  # `(` inside a class opens nothing
    ("[{],v", ["[{]", "v"]),
    ("x)y,z", ["x)y", "z"]),  # a stray closer changes nothing
    (",,a,,b,", ["a", "b"]),  # empty items dropped (the reference wrote `,a,b`)
    ("", []),
    (",", []),
    ("a{,b,c", ["a{,b,c"]),  # never closed: the rest is its pattern
    (" a , b", [" a ", " b"]),  # spaces are part of a regex
])
def test_split_patterns(text: str, patterns: list[str]) -> None:
    assert split_patterns(text) == patterns
    assert split_patterns(join_patterns(patterns)) == patterns


def test_a_list_the_file_could_not_give_back_is_refused() -> None:
    with pytest.raises(TaskError) as exc:
        Task(**BASE, exclude=["a,b"])  # written as "a,b", read back as two patterns
    assert (exc.value.field, exc.value.error) == ("exclude", "exclude_is_not_a_valid_list")
    assert Task(**BASE, exclude=[r"a\,b", "(c,d)"]).exclude == [r"a\,b", "(c,d)"]


PATTERNS = [r"^Archive/[0-9]{4,}$", "(Junk|Spam,Ham)", r"a\,b", "[,]", "[]]x", "Sent Items"]


def test_task_file_and_api_give_the_same_patterns_back(tmp_path) -> None:
    task = Task(**BASE, exclude=PATTERNS, foldersynchronization="exclusion")
    assert Task.from_env(parse_env(format_env(task.to_env()))).exclude == PATTERNS
    state = StateDir(tmp_path / "imapsync", tmp_path / "cron")
    state.save(task, "pw")
    assert state.load("u2", "abc123").exclude == PATTERNS
    api = task.to_api()
    assert api["exclude"] == ",".join(PATTERNS)
    assert Task.from_request({**api, "remoteport": 143}).exclude == PATTERNS


def test_reference_module_file_keeps_a_quantifier_whole() -> None:
    env = parse_env("TASK_ID=28ofi1\nLOCALUSER=u2\nREMOTEUSERNAME=u3\nREMOTEHOSTNAME=10.5.4.1\nREMOTEPORT=143\n"
                    "SECURITY=--tls1\nEXCLUDE=,^Archive\\.[0-9]{4,}$,Junk\nFOLDERSYNCHRONIZATION=exclusion\n")
    assert Task.from_env(env).exclude == [r"^Archive\.[0-9]{4,}$", "Junk"]


def test_sync_plan_has_the_pattern_whole(tmp_path) -> None:
    task = Task.from_request({**BASE, "exclude": r"^Archive/[0-9]{4,}$,^Junk$",
                              "foldersynchronization": "exclusion"})
    plan = SyncPlan.from_task(task, tmp_path, "127.0.0.2", 143)
    assert plan.exclude == [r"^Archive/[0-9]{4,}$", "^Junk$"]
    assert is_excluded("Archive/2024", plan.exclude) and not is_excluded("Archive/old", plan.exclude)


# ---------------------------------------------------------------------- refused at input time
HOSTILE = [r"(a+)+$", r"(a*)*", r"(.*)*", r"^(\w+\s?)+$", r"(?:x+y)*z", r"(a+){2,}", r"((a|b)+c?)+",
           r"([^/]+/)*Trash$", r"(?=a+)+", r"x(a|b*)+"]
ORDINARY = [r"^Junk$", "Sent Items", r"^Archive/[0-9]{4,}$", r"^Archive\.20(2[0-3])$", r"^(Junk|Spam)$",
            r"^Shared(/.*)?$", r"^INBOX\.(old|older)/.*", r".*Trash.*", r"^Lists/[a-z-]+/[0-9]+$",
            r"(a|aa)+", r"(?>a+)+", r"(a++)+", r"(ab{1,3})+", r"R&AOk-unions", r"Réunions$", r"[,]", r"a\,b"]


@pytest.mark.parametrize("pattern", HOSTILE)
def test_nested_unbounded_repeats_are_refused(pattern: str) -> None:
    with pytest.raises(TaskError) as exc:
        check_backtracking(pattern)
    assert (exc.value.field, exc.value.error, exc.value.value) == \
        ("exclude", "exclude_backtracks_catastrophically", pattern)
    with pytest.raises(TaskError) as exc:
        Task.from_request({**BASE, "exclude": f"^Junk$,{pattern}", "foldersynchronization": "exclusion"})
    assert exc.value.error == "exclude_backtracks_catastrophically"


@pytest.mark.parametrize("pattern", ORDINARY)
def test_ordinary_patterns_are_accepted(pattern: str) -> None:
    check_backtracking(pattern)
    assert Task.from_request({**BASE, "exclude": pattern}).exclude == [pattern]


def test_a_stored_hostile_pattern_is_still_read(tmp_path) -> None:
    """An old file is read as it is (the run's time limit protects it), so the
    task stays listed and can be edited or deleted."""
    env = {**Task(**BASE).to_env(), "EXCLUDE": "(a+)+$", "FOLDERSYNCHRONIZATION": "exclusion"}
    assert Task.from_env(env).exclude == ["(a+)+$"]


def test_a_pattern_too_deep_to_compile_is_invalid_not_a_crash() -> None:
    with pytest.raises(TaskError) as exc:
        Task.from_request({**BASE, "exclude": "(" * 2000 + ")" * 2000})
    assert exc.value.error == "exclude_is_not_a_valid_regex"


# --------------------------------------------------------------------- the container's limit
@pytest.mark.timeout(30)
@pytest.mark.parametrize("pattern,name", [
    (r"(a+)+$", "a" * 5000 + "!"),
    (r"(a|aa)+$", "a" * 60 + "!"),  # passes the input check: only the time limit stops it
])
def test_a_hostile_match_ends_within_a_second(pattern: str, name: str) -> None:
    started = time.monotonic()
    with pytest.raises(ExclusionTimeout) as exc:
        is_excluded(name, ["^Junk$", pattern])
    assert time.monotonic() - started < 1.0
    assert (exc.value.name, exc.value.pattern) == (name, pattern)
    # a pattern that does decide wins: the folder is excluded, nothing to report
    assert is_excluded(name, [pattern, "^a"]) is True


def test_matching_keeps_re_semantics() -> None:
    assert is_excluded("Sent Items", ["Sent"]) and not is_excluded("Sent Items", ["^Sent$"])
    assert is_excluded("Archive/2024", [r"^Archive/\d{4,}$"]) and not is_excluded("Archive/202", [r"\d{4,}"])
    assert is_excluded("a,b", [r"a\,b"]) and is_excluded("x,", ["[,]"])
    assert is_excluded("Réunions", [r"^\w+$"])  # Unicode classes, as re on str
    assert compile_pattern("(?i)junk").search("JUNK")
    with pytest.raises(ValueError):
        compile_pattern("(")


# ------------------------------------------------------------------ discover() on real servers
HOSTILE_FOLDER = "a" * 60 + "!"


@pytest.fixture
def sessions(pair: Pair):
    c1 = open_session(pair.remote("user02"), pair.password("user02"))
    c2 = open_session(pair.local("user02"), pair.master_pass)
    c1.create_folder(HOSTILE_FOLDER)
    c1.create_folder("Junk")
    try:
        yield c1, c2
    finally:
        for name in (HOSTILE_FOLDER, "Junk"):
            c1.delete_folder(name)
        close_quietly(c1)
        close_quietly(c2)


def _plan(pair: Pair, exclude: list[str]) -> SyncPlan:
    return SyncPlan(task_name="u2_expat1", source=pair.remote("user02"), target=pair.local("user02"),
                    source_password_file=Path("/nonexistent"), target_password_file=Path("/nonexistent"),
                    folder_mode="exclusion", exclude=exclude)


@pytest.mark.timeout(60)
def test_discover_reports_a_folder_whose_exclusion_timed_out(pair: Pair, sessions) -> None:
    c1, c2 = sessions
    lines: list[str] = []
    started = time.monotonic()
    found = discover(c1, c2, _plan(pair, ["^Junk$", r"(a|aa)+$"]), lines.append)
    assert time.monotonic() - started < 10 * MATCH_TIMEOUT + 5
    names = [p.folder.name for p in found.pairs]
    assert HOSTILE_FOLDER not in names and "Junk" not in names and "INBOX" in names
    (problem,) = found.problems
    assert HOSTILE_FOLDER in problem and "(a|aa)+$" in problem and "not synced" in problem
    assert problem in lines
    assert HOSTILE_FOLDER in found.kept_targets  # delete_local keeps its local copy
    # decided by another pattern: excluded, no problem
    found = discover(c1, c2, _plan(pair, [r"(a|aa)+$", r"^a+!$"]), lines.append)
    assert found.problems == [] and HOSTILE_FOLDER not in [p.folder.name for p in found.pairs]
