"""Task values, the task file format (ours and the reference module's), StateDir, cron files."""

from __future__ import annotations

import os
import stat

import pytest
from ns8_imapsync import schedule
from ns8_imapsync.statedir import StateDir
from ns8_imapsync.task import Task, TaskError, format_env, parse_env, validate_password

BASE = dict(localuser="u2", task_id="abc123", remotehostname="imap.example.org", remoteport=143,
            remoteusername="alice@example.org")


def test_round_trip_keeps_hostile_but_printable_values(tmp_path) -> None:
    task = Task(**BASE, exclude=["^Junk$", "Sent Items", r"^Archive/20\d\d$"], cron="5m",
                foldersynchronization="exclusion", delete_remote=True, delete_remote_older=30)
    task.remoteusername = 'o\'brien "q" $HOME;`x`, y'
    state = StateDir(tmp_path / "imapsync", tmp_path / "cron")
    state.save(task, 'p a,s"s\'w$rd`\\')
    back = state.load("u2", "abc123")
    assert back == task
    assert state.read_password(task) == 'p a,s"s\'w$rd`\\'
    for path in (state.files(task.name).env, state.files(task.name).password):
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(tmp_path / "imapsync").st_mode) == 0o700


def test_empty_password_on_edit_keeps_the_stored_one(tmp_path) -> None:
    state = StateDir(tmp_path / "imapsync", tmp_path / "cron")
    task = Task(**BASE)
    state.save(task, "first")
    task.remoteport = 993
    state.save(task, None)
    assert state.read_password(task) == "first"
    assert state.load("u2", "abc123").remoteport == 993


@pytest.mark.parametrize("field,value", [
    ("localuser", "../etc"), ("localuser", "u2;rm"), ("localuser", "U2"), ("localuser", "x" * 33),
    ("task_id", "../../x"), ("task_id", "a b"), ("task_id", "-x"), ("task_id", ""),
    ("remotehostname", "host\nEVIL=1"), ("remoteusername", "a\x00b"), ("cron", "2d"), ("cron", "60m"),
    ("cron", "24h"), ("cron", "*/5 * * * *"), ("security", "starttls"), ("foldersynchronization", "some"),
    ("remoteport", 0), ("remoteport", 70000), ("exclude", ["(unclosed"]), ("exclude", ["a\nb"]),
])
def test_bad_values_name_the_field(field, value) -> None:
    with pytest.raises(TaskError) as exc:
        Task(**{**BASE, field: value})
    assert exc.value.field == field


def test_newline_never_reaches_the_file() -> None:
    with pytest.raises(TaskError):
        format_env({"REMOTEHOSTNAME": "a\nCRON=1m"})


def test_reference_module_files_are_read() -> None:
    ref = parse_env(
        "\nTASK_ID=28ofi1\nLOCALUSER=u2\nREMOTEUSERNAME=u3\nREMOTEHOSTNAME=10.5.4.1\nREMOTEPORT=143\n"
        "SECURITY=--tls1\nDELETE_LOCAL=\nDELETEFOLDER=\nEXCLUDE=,Junk,Drafts\n"
        "DELETE_REMOTE=--delete1older=15\nSIEVE_ENABLED=1\nEXPUNGE_REMOTE=\nCRON=5m\n"
        "FOLDER_INBOX=--folder\\ 'INBOX'\nFOLDERSYNCHRONIZATION=inbox\n")
    task = Task.from_env(ref)
    assert (task.security, task.delete_remote, task.delete_remote_older) == ("tls", True, 15)
    assert task.exclude == ["Junk", "Drafts"] and task.cron == "5m"
    assert (task.foldersynchronization, task.sieve_enabled) == ("inbox", True)
    assert Task.from_env(parse_env(format_env(task.to_env()))) == task
    plain = Task.from_env({**ref, "SECURITY": "--ssl1", "DELETE_REMOTE": "--delete1", "SIEVE_ENABLED": ""})
    assert (plain.security, plain.delete_remote, plain.delete_remote_older, plain.sieve_enabled) == \
        ("ssl", True, 0, False)


def test_api_shape() -> None:
    api = Task(**BASE, exclude=["Junk", "Drafts"], cron="1h").to_api()
    assert api["remotepassword"] == "" and api["remoteport"] == "143" and api["exclude"] == "Junk,Drafts"
    assert Task.from_request({**api, "remoteport": 143}) == Task(**BASE, exclude=["Junk", "Drafts"], cron="1h")


def test_cron_files(tmp_path) -> None:
    state = StateDir(tmp_path / "imapsync", tmp_path / "cron")
    state.save(Task(**{**BASE, "task_id": "facta1"}, cron="5m"), "pw")
    state.save(Task(**{**BASE, "task_id": "every2"}, cron="2h"), "pw")
    state.save(Task(**{**BASE, "task_id": "manual"}), "pw")
    (tmp_path / "cron").joinpath("u2_gone.cron").write_text("stale")
    assert schedule.expand(state, "10.5.4.1") == ["u2_every2", "u2_facta1"]
    text = (tmp_path / "cron" / "u2_facta1.cron").read_text()
    assert text.splitlines()[:2] == ["MAIL_HOST=10.5.4.1", "SYNC_START=queue"]
    assert "*/5 * * * * root /usr/local/bin/syncctl start u2_facta1" in text.splitlines()
    assert "0 */2 * * * root /usr/local/bin/syncctl start u2_every2" in \
        (tmp_path / "cron" / "u2_every2.cron").read_text().splitlines()
    assert sorted(p.name for p in (tmp_path / "cron").iterdir()) == ["u2_every2.cron", "u2_facta1.cron"]


def test_delete_removes_every_file(tmp_path) -> None:
    state = StateDir(tmp_path / "imapsync", tmp_path / "cron")
    task = Task(**BASE, cron="5m")
    state.save(task, "pw")
    schedule.write(state, task, "h")
    state.files(task.name).log.write_text("log")
    assert state.delete("u2", "abc123") is True
    assert list((tmp_path / "imapsync").iterdir()) == [] and list((tmp_path / "cron").iterdir()) == []
    assert state.delete("u2", "abc123") is False


@pytest.mark.parametrize("every", [1, 5, 7, 15, 45, 59])
def test_minute_schedules_fire_every_n_minutes_from_midnight(tmp_path, every: int) -> None:
    """`*/45` would fire at :00 and :45 (15 minutes apart); the schedule keeps the
    interval all day, with one shorter gap at midnight, read as cron reads it."""
    from datetime import datetime, timedelta

    from localnode import crond

    state = StateDir(tmp_path / "imapsync", tmp_path / "cron")
    state.save(Task(**BASE, cron=f"{every}m"), "pw")
    schedule.expand(state, "h")
    lines = [ln.split(None, 5) for ln in (tmp_path / "cron" / "u2_abc123.cron").read_text().splitlines()
             if ln and "=" not in ln.split()[0]]
    assert all(ln[5] == "root /usr/local/bin/syncctl start u2_abc123" for ln in lines)
    start = datetime(2026, 11, 22)
    fired = [i for i in range(1440) if any(crond.due(ln[:5], start + timedelta(minutes=i)) for ln in lines)]
    assert fired == list(range(0, 1440, every))


def test_custom_cron_files_are_kept_and_run(tmp_path, monkeypatch) -> None:
    """An administrator's `cron/*.custom` (e.g. a sync with other options) survives
    expand-cron and is run by the scheduler like the generated files."""
    import json
    from datetime import datetime

    from localnode import crond

    state = StateDir(tmp_path / "imapsync", tmp_path / "cron")
    state.save(Task(**BASE, cron="5m"), "pw")
    (tmp_path / "cron").mkdir(exist_ok=True)
    (tmp_path / "cron" / "night.custom").write_text("FOO=bar\n30 2 * * * root /usr/local/bin/syncctl start u2_abc123\n")
    schedule.expand(state, "10.5.4.1")
    assert sorted(p.name for p in (tmp_path / "cron").iterdir()) == ["night.custom", "u2_abc123.cron"]
    monkeypatch.setenv("LOCALNODE_MOUNTS", json.dumps([[str(tmp_path / "cron"), "/etc/cron.d"]]))
    at_230 = crond.jobs(datetime(2026, 11, 22, 2, 30))
    assert (["/usr/local/bin/syncctl", "start", "u2_abc123"], {"FOO": "bar"}) in at_230
    assert (["/usr/local/bin/syncctl", "start", "u2_abc123"], {"MAIL_HOST": "10.5.4.1", "SYNC_START": "queue"}) in at_230
    assert crond.jobs(datetime(2026, 11, 22, 2, 31)) == []


def test_write_atomic_without_overwrite_never_replaces(tmp_path) -> None:
    from ns8_imapsync import files

    target = tmp_path / "conf.json"
    files.write_atomic(target, "first", 0o600, overwrite=False)
    with pytest.raises(FileExistsError):
        files.write_atomic(target, "second", 0o600, overwrite=False)
    assert target.read_text() == "first" and stat.S_IMODE(target.stat().st_mode) == 0o600
    assert [p.name for p in tmp_path.iterdir()] == ["conf.json"]  # no temporary file left


@pytest.mark.parametrize("sep", ["\u2028", "\u2029", "\x85", "\x9b"])
def test_unicode_line_separators_are_refused_and_never_split_the_file(sep: str) -> None:
    """str.splitlines ends lines at these: a value holding one could have added a
    line (DELETE_LOCAL=1) to the task file for a reader that splits that way."""
    with pytest.raises(TaskError) as exc:
        Task(**{**BASE, "remoteusername": f"a{sep}DELETE_LOCAL=1"})
    assert exc.value.field == "remoteusername"
    assert parse_env(f"EXCLUDE=x{sep}DELETE_LOCAL=1\nTASK_ID=a\r\n") == {"EXCLUDE": f"x{sep}DELETE_LOCAL=1",
                                                                          "TASK_ID": "a"}


@pytest.mark.parametrize("password", ["pw\r\nZ1 NOOP", "pw\nx", "p\x00w", "p\u2028w"])
def test_a_password_with_control_characters_is_refused_without_echo(password: str) -> None:
    with pytest.raises(TaskError) as exc:
        validate_password(password)
    assert (exc.value.field, exc.value.value) == ("remotepassword", "")
    assert validate_password('p a,s"s\'w$rd`\\ é') == 'p a,s"s\'w$rd`\\ é'
