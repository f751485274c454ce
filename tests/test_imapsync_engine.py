"""The imapsync engine's process handling with a fake ``imapsync`` (stop by abort
file, SIGTERM, kill; stragglers; masking; no secret in argv or environment), and
the real imapsync against the local Dovecots when one is on PATH (sync/imapsync_engine.py)."""

from __future__ import annotations

import os
import shutil
import signal
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest
from imapsync_logs import EXPECTED_CLASS, LOGS, MASTER_PASSWORD, REMOTE_PASSWORD, lines_of, make_plan
from localnode.imap_pair import Pair
from ns8_imapsync.imap.connection import close_quietly, open_session
from ns8_imapsync.sync import poststeps
from ns8_imapsync.sync.imapsync_engine import ImapsyncEngine, clear_stale_pidfile
from ns8_imapsync.sync.imapsync_output import parse_lines
from ns8_imapsync.sync.plan import SyncPlan
from ns8_imapsync.sync.redact import Redactor
from ns8_imapsync.sync.report import Progress

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
    assert lines == lines_of(name)
    expected = parse_lines(lines_of(name), code)
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
    assert len(beats) == len(lines_of("sync-full"))


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

