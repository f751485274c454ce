"""import-csv-tasks on the local node, run exactly as an administrator does:
`runagent -m imapsync1 import-csv-tasks < users.csv` (and the pipe form),
checked through list-tasks and the module's state files. Remote logins are
real (the remote Dovecot); local users are the mail server's (u4 is disabled).
"""

from __future__ import annotations

import csv
import io
import json
import os
import re
import stat
import subprocess
from pathlib import Path

import pytest
from localnode.config import NodeConfig
from ns8_imapsync.statedir import StateDir

HEADER = "localusername,remoteusername,remotepassword,remotehostname,remoteport,security"
CAROL = "carol@remote.test"  # her password holds quotes, spaces, commas, `;`, `$` and a backslash


@pytest.fixture
def clean(cli, localnode, configured):
    """Every test starts and ends with no task (deleted with delete-task, found from the task files
    to spare a list-tasks round trip per test)."""
    def wipe() -> None:
        for env in (state_dir(localnode) / "imapsync").glob("*.env"):
            values = dict(line.split("=", 1) for line in env.read_text().splitlines() if "=" in line)
            cli.api_ok("module/imapsync1/delete-task", {"localuser": values["LOCALUSER"], "task_id": values["TASK_ID"]})
    wipe()
    yield
    wipe()


def q(value: str) -> str:
    """A CSV field as a spreadsheet writes it (quoted, inner quotes doubled)."""
    return '"' + value.replace('"', '""') + '"'


def row(localnode: NodeConfig, localuser: str, remoteuser: str, *, password: str | None = None,
        port: int | None = None, security: str = "tls", host: str | None = None) -> str:
    r = localnode.remote
    password = r.users[remoteuser.lower()] if password is None else password
    port = r.imap_port if port is None else port
    return f"{localuser},{remoteuser},{q(password)},{host or r.host},{port},{security}"


def secrets_of(localnode: NodeConfig) -> list[str]:
    return list(localnode.remote.users.values()) + ["Wrong,Secret9"]


def run_import(cli, localnode: NodeConfig, body: str | bytes, *args: str, tmp_path: Path) -> subprocess.CompletedProcess:
    """`runagent -m imapsync1 import-csv-tasks ARGS < users.csv`; no password may appear in its output."""
    csv_path = tmp_path / "users.csv"
    csv_path.write_bytes(body.encode() if isinstance(body, str) else body)
    with open(csv_path, "rb") as f:
        proc = subprocess.run(["runagent", "-m", "imapsync1", "import-csv-tasks", *args], stdin=f,
                              capture_output=True, env=cli.env, timeout=180)
    out = subprocess.CompletedProcess(proc.args, proc.returncode, proc.stdout.decode(), proc.stderr.decode())
    for secret in secrets_of(localnode):
        assert secret not in out.stdout + out.stderr, "a password reached the output"
    return out


def tasks(cli) -> list[dict]:
    return cli.api_ok("module/imapsync1/list-tasks")["user_properties"]


def state_dir(localnode: NodeConfig) -> Path:
    return localnode.module_state_dir("imapsync1")


def task_files(localnode: NodeConfig) -> dict[str, bytes]:
    """Every task definition (.env, .pwd, .cron) and anything an import may leave behind."""
    found = {}
    for sub in ("imapsync", "cron"):
        d = state_dir(localnode) / sub
        if d.is_dir():
            for p in d.iterdir():
                if p.name.startswith(".import-") or p.suffix in (".env", ".pwd", ".cron") and p.name != "vmail.pwd":
                    found[f"{sub}/{p.name}"] = p.read_bytes() if p.is_file() else b"<dir>"
    return found


def assert_nothing_created(cli, localnode: NodeConfig) -> None:
    assert tasks(cli) == []
    assert task_files(localnode) == {}


# ---- the README's behaviours ---------------------------------------------------
def test_import_from_file_creates_tasks_with_defaults(cli, localnode, clean, tmp_path) -> None:
    r = localnode.remote
    body = "\n".join([HEADER, row(localnode, "u1", "alice@remote.test"),
                      row(localnode, "u2", CAROL, port=r.imaps_port, security="ssl")]) + "\n"
    proc = run_import(cli, localnode, body, tmp_path=tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "2 created, 0 updated, 0 skipped, 0 failed" in proc.stdout
    items = sorted(tasks(cli), key=lambda t: t["localuser"])
    assert [(t["localuser"], t["remoteusername"], t["remoteport"], t["security"]) for t in items] == [
        ("u1", "alice@remote.test", str(r.imap_port), "tls"), ("u2", CAROL, str(r.imaps_port), "ssl")]
    for t in items:
        assert re.fullmatch(r"[a-z0-9]{6}", t["task_id"]), t["task_id"]
        assert {k: t[k] for k in ("cron", "foldersynchronization", "exclude", "delete_local", "delete_remote",
                                  "delete_remote_older", "sieve_enabled")} == {
            "cron": "", "foldersynchronization": "all", "exclude": "", "delete_local": False,
            "delete_remote": False, "delete_remote_older": 0, "sieve_enabled": False}
        assert f"row {2 if t['localuser'] == 'u1' else 3}: Created task {t['localuser']}_{t['task_id']}" in proc.stdout
    assert items[0]["task_id"] != items[1]["task_id"]
    # the password exactly as quoted in the file, 0600
    pwd = state_dir(localnode) / "imapsync" / f"u2_{items[1]['task_id']}.pwd"
    assert pwd.read_text() == r.users[CAROL] + "\n"
    assert stat.S_IMODE(pwd.stat().st_mode) == 0o600
    assert not list((state_dir(localnode) / "imapsync").glob(".import-*"))
    # the first sync was queued by the import, as create-task does for one task
    status = json.loads((state_dir(localnode) / "imapsync" / f"u1_{items[0]['task_id']}.status.json").read_text())
    assert status["trigger"] == "import"


def test_pipe_form_any_column_order_optional_columns_empty_lines(cli, localnode, clean, tmp_path) -> None:
    r = localnode.remote
    body = (
        "security,remoteport,remotehostname,remotepassword,remoteusername,localusername,cron,"
        "foldersynchronization,exclude,delete_remote,delete_remote_older\n"
        "\n"
        f",{r.imap_port},{r.host},{q(r.users['bob@remote.test'])},bob@remote.test,u3,5m,exclusion,"
        f"\"^Junk$,Sent Items\",true,30\n"
        "\n"
        f"tls,{r.imap_port},{r.host},{q(r.users['dave@remote.test'])},dave@remote.test,u1,,,,,\n"
    )
    (tmp_path / "users.csv").write_text(body)
    cat = subprocess.Popen(["cat", str(tmp_path / "users.csv")], stdout=subprocess.PIPE)
    proc = subprocess.run(["runagent", "-m", "imapsync1", "import-csv-tasks"], stdin=cat.stdout,
                          capture_output=True, text=True, env=cli.env, timeout=180)
    cat.wait()
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "2 created" in proc.stdout and "2 empty line(s) skipped" in proc.stdout
    by_user = {t["localuser"]: t for t in tasks(cli)}
    bob = by_user["u3"]
    assert (bob["security"], bob["cron"], bob["foldersynchronization"], bob["exclude"], bob["delete_remote"],
            bob["delete_remote_older"]) == ("", "5m", "exclusion", "^Junk$,Sent Items", True, 30)
    dave = by_user["u1"]  # empty optional values take the defaults
    assert (dave["cron"], dave["foldersynchronization"], dave["delete_remote"]) == ("", "all", False)
    cron = (state_dir(localnode) / "cron" / f"u3_{bob['task_id']}.cron").read_text()
    assert f"*/5 * * * * root /usr/local/bin/syncctl start u3_{bob['task_id']}" in cron
    assert not (state_dir(localnode) / "cron" / f"u1_{dave['task_id']}.cron").exists()


def test_check_mode_explains_each_row_and_changes_nothing(cli, localnode, clean, tmp_path) -> None:
    first = run_import(cli, localnode, f"{HEADER}\n{row(localnode, 'u1', 'alice@remote.test')}\n", "--no-start",
                       tmp_path=tmp_path)
    assert first.returncode == 0, first.stdout
    before = task_files(localnode)
    body = "\n".join([HEADER, row(localnode, "u1", "alice@remote.test"), row(localnode, "u2", "bob@remote.test")])
    report = tmp_path / "check.csv"
    proc = run_import(cli, localnode, body + "\n", "-c", "--report", str(report), tmp_path=tmp_path)
    assert proc.returncode == 0, proc.stdout
    outcomes = [(x["row"], x["outcome"], x["task_id"]) for x in csv.DictReader(io.StringIO(report.read_text()))]
    assert outcomes == [("2", "would-skip", tasks(cli)[0]["task_id"]), ("3", "would-create", "")]
    assert "row 2: Would be skipped: u1 already syncs alice@remote.test" in proc.stdout
    assert "--update" in proc.stdout
    assert "row 3: OK, would create a task for u2: bob@remote.test@" in proc.stdout
    assert "nothing was changed" in proc.stdout
    assert task_files(localnode) == before and len(tasks(cli)) == 1
    # a refused login is found by the check too
    bad = run_import(cli, localnode, f"{HEADER}\n{row(localnode, 'u3', 'bob@remote.test', password='Wrong,Secret9')}\n",
                     "--check", tmp_path=tmp_path)
    assert bad.returncode == 1
    assert "row 2: Error: the remote server refused the user or password" in bad.stdout
    assert task_files(localnode) == before


def test_help_lists_columns_defaults_and_examples(cli, localnode, configured) -> None:
    for flag in ("-h", "--help"):
        proc = cli.run("runagent", "-m", "imapsync1", "import-csv-tasks", flag)
        assert proc.returncode == 0, proc.stderr
        for text in (HEADER, "security", "optional columns: cron, foldersynchronization, exclude",
                     "foldersynchronization all", "delete_remote_older 0", "--check", "--update",
                     "--continue-on-error", "--report", "import-csv-tasks < users.csv",
                     "cat users.csv | runagent -m imapsync1 import-csv-tasks"):
            assert text in proc.stdout, text


def test_example_file_is_installed_where_the_readme_says(cli, localnode, configured, tmp_path) -> None:
    proc = cli.run("runagent", "-m", "imapsync1", "cat", "../examples/users.csv")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines()[0] == HEADER
    rows = list(csv.DictReader(io.StringIO(proc.stdout)))
    assert len(rows) == 3 and all(r["remotepassword"] for r in rows)
    # its users do not exist here: every row is refused by name, nothing written
    check = run_import(cli, localnode, proc.stdout, "-c", tmp_path=tmp_path)
    assert check.returncode == 1
    assert check.stdout.count("is not an enabled mailbox of the mail server") == 3


# ---- beyond the README -----------------------------------------------------------
def test_rerun_skips_update_keeps_id_refused_update_keeps_old(cli, localnode, clean, tmp_path) -> None:
    r = localnode.remote
    one = f"{HEADER}\n{row(localnode, 'u2', 'alice@remote.test')}\n"
    assert run_import(cli, localnode, one, tmp_path=tmp_path).returncode == 0
    (task,) = tasks(cli)
    env_path = state_dir(localnode) / "imapsync" / f"u2_{task['task_id']}.env"
    pwd_path = env_path.with_suffix(".pwd")

    again = run_import(cli, localnode, one, tmp_path=tmp_path)
    assert again.returncode == 0 and "Skipped: u2 already syncs alice@remote.test" in again.stdout
    assert "0 created, 0 updated, 1 skipped, 0 failed" in again.stdout
    recased = f"{HEADER}\n{row(localnode, 'U2', 'ALICE@Remote.Test', host=r.host.upper())}\n"
    proc = run_import(cli, localnode, recased, tmp_path=tmp_path)
    assert proc.returncode == 0 and "Skipped" in proc.stdout and len(tasks(cli)) == 1

    # --update: same id, stored spelling, new port and security
    upd = f"{HEADER}\n{row(localnode, 'U2', 'ALICE@REMOTE.TEST', port=r.imaps_port, security='ssl')}\n"
    proc = run_import(cli, localnode, upd, "--update", tmp_path=tmp_path)
    assert proc.returncode == 0, proc.stdout
    assert "Updating 1 task(s)" in proc.stdout and "0 created, 1 updated" in proc.stdout
    (after,) = tasks(cli)
    assert (after["task_id"], after["localuser"], after["remoteusername"]) == (task["task_id"], "u2",
                                                                                "alice@remote.test")
    assert (after["remoteport"], after["security"]) == (str(r.imaps_port), "ssl")
    # the same file again changes nothing
    proc = run_import(cli, localnode, upd, "-u", tmp_path=tmp_path)
    assert proc.returncode == 0 and "already has these exact settings" in proc.stdout

    # a refused update keeps the previous settings and password byte for byte
    env_before, pwd_before = env_path.read_bytes(), pwd_path.read_bytes()
    bad = f"{HEADER}\n{row(localnode, 'u2', 'alice@remote.test', password='Wrong,Secret9', port=r.imap_port)}\n"
    proc = run_import(cli, localnode, bad, "-u", tmp_path=tmp_path)
    assert proc.returncode == 1
    assert f"refused the user or password (bad_user_credentials): alice@remote.test@{r.host}:{r.imap_port} tls" \
        in proc.stdout
    assert (env_path.read_bytes(), pwd_path.read_bytes()) == (env_before, pwd_before)
    assert len(tasks(cli)) == 1


def test_exclude_column_keeps_commas_inside_patterns(cli, localnode, clean, tmp_path) -> None:
    body = (f"{HEADER},foldersynchronization,exclude\n"
            f"{row(localnode, 'u1', 'alice@remote.test')},exclusion,\"^Archive\\.[0-9]{{4,}}$,(Junk|Spam),[,;]\"\n")
    proc = run_import(cli, localnode, body, "--no-start", tmp_path=tmp_path)
    assert proc.returncode == 0, proc.stdout
    (task,) = tasks(cli)
    assert task["exclude"] == r"^Archive\.[0-9]{4,}$,(Junk|Spam),[,;]"
    env = (state_dir(localnode) / "imapsync" / f"u1_{task['task_id']}.env").read_text()
    assert "EXCLUDE=^Archive\\.[0-9]{4,}$,(Junk|Spam),[,;]\n" in env
    stored = StateDir(state_dir(localnode) / "imapsync").load("u1", task["task_id"])
    assert stored.exclude == [r"^Archive\.[0-9]{4,}$", "(Junk|Spam)", "[,;]"]  # what a run matches


REFERENCE_ENV = ("TASK_ID={id}\nLOCALUSER={user}\nREMOTEUSERNAME=alice@remote.test\nREMOTEHOSTNAME={host}\n"
                 "REMOTEPORT={port}\nSECURITY=--tls1\nDELETE_LOCAL=\nEXCLUDE=\nDELETE_REMOTE=\nCRON=\n")


def test_update_reaches_a_reference_task_and_never_a_misnamed_copy(cli, localnode, clean, tmp_path) -> None:
    """A reference-module task (`_` in its id) is updated in place; a copy of a
    task file under another name is nobody's task: the update must neither
    follow it to the files of the task it names nor create them."""
    r = localnode.remote
    d = state_dir(localnode) / "imapsync"
    (d / "u1_ab_cd12.env").write_text(REFERENCE_ENV.format(id="ab_cd12", user="u1", host=r.host, port=r.imap_port))
    (d / "u1_ab_cd12.pwd").write_text(r.users["alice@remote.test"] + "\n")
    copy = d / "u3_copy01.env"
    copy.write_text(REFERENCE_ENV.format(id="zz9999", user="u3", host=r.host, port=r.imap_port))
    before = copy.read_bytes()
    try:
        body = "\n".join([HEADER, row(localnode, "u1", "alice@remote.test", port=r.imaps_port, security="ssl"),
                          row(localnode, "u3", "alice@remote.test")]) + "\n"
        proc = run_import(cli, localnode, body, "--update", "--no-start", tmp_path=tmp_path)
        assert proc.returncode == 0, proc.stdout
        assert "1 created, 1 updated" in proc.stdout
        by_user = {t["localuser"]: t for t in tasks(cli)}
        assert (by_user["u1"]["task_id"], by_user["u1"]["remoteport"]) == ("ab_cd12", str(r.imaps_port))
        assert "TASK_ID=ab_cd12\n" in (d / "u1_ab_cd12.env").read_text()
        assert by_user["u3"]["task_id"] != "zz9999" and not list(d.glob("u3_zz9999*"))
        assert copy.read_bytes() == before
    finally:
        copy.unlink()


def test_repeated_row_is_imported_once(cli, localnode, clean, tmp_path) -> None:
    line = row(localnode, "u1", "bob@remote.test")
    recased = line.replace("u1,bob@remote.test", "U1,BOB@Remote.Test")
    proc = run_import(cli, localnode, f"{HEADER}\n{line}\n{recased}\n{line}\n", "--no-start", tmp_path=tmp_path)
    assert proc.returncode == 0, proc.stdout
    for n in (3, 4):
        assert f"row {n}: Skipped: bob@remote.test" in proc.stdout or f"row {n}: Skipped: BOB@Remote.Test" \
            in proc.stdout
    assert proc.stdout.count("appears twice in this file (first on row 2)") == 2
    assert "1 created, 0 updated, 2 skipped, 0 failed" in proc.stdout
    assert len(tasks(cli)) == 1


def test_repeat_with_other_values_is_an_error(cli, localnode, clean, tmp_path) -> None:
    r = localnode.remote
    body = "\n".join([HEADER, row(localnode, "u1", "bob@remote.test"),
                      row(localnode, "u1", "bob@remote.test", port=r.imaps_port, security="ssl")]) + "\n"
    proc = run_import(cli, localnode, body, tmp_path=tmp_path)
    assert proc.returncode == 1
    assert "row 3: Error: bob@remote.test@" in proc.stdout and "also on row 2 with other values" in proc.stdout
    assert_nothing_created(cli, localnode)


def test_refused_row_creates_nothing_unless_continue_on_error(cli, localnode, clean, tmp_path) -> None:
    r = localnode.remote
    body = "\n".join([HEADER, row(localnode, "u1", "alice@remote.test"),
                      row(localnode, "u2", "dave@remote.test", password="Wrong,Secret9", port=r.imap_port)]) + "\n"
    proc = run_import(cli, localnode, body, tmp_path=tmp_path)
    assert proc.returncode == 1
    assert f"row 3: Error: the remote server refused the user or password (bad_user_credentials): " \
           f"dave@remote.test@{r.host}:{r.imap_port} tls" in proc.stdout
    assert "row 2: not imported (other rows failed)" in proc.stdout
    assert "0 created, 0 updated, 0 skipped, 1 failed" in proc.stdout and "Nothing was imported" in proc.stdout
    assert_nothing_created(cli, localnode)

    report = tmp_path / "report.csv"
    proc = run_import(cli, localnode, body, "--continue-on-error", "--no-start", "--report", str(report),
                      tmp_path=tmp_path)
    assert proc.returncode == 1
    assert "1 created, 0 updated, 0 skipped, 1 failed" in proc.stdout
    (task,) = tasks(cli)
    assert task["localuser"] == "u1"
    lines = list(csv.DictReader(io.StringIO(report.read_text())))
    assert [(x["row"], x["localusername"], x["outcome"], x["task_id"]) for x in lines] == [
        ("2", "u1", "created", task["task_id"]), ("3", "u2", "failed", "")]
    assert "refused the user or password" in lines[1]["message"]
    assert "Wrong,Secret9" not in report.read_text()
    assert stat.S_IMODE(report.stat().st_mode) == 0o600


def test_bom_crlf_and_semicolon_are_handled(cli, localnode, clean, tmp_path) -> None:
    r = localnode.remote
    body = "\r\n".join([HEADER.replace(",", ";"),
                        f"u3;alice@remote.test;{q(r.users['alice@remote.test'])};{r.host};{r.imap_port};tls",
                        f"u1;{CAROL};{q(r.users[CAROL])};{r.host};{r.imap_port};tls"]) + "\r\n"
    proc = run_import(cli, localnode, b"\xef\xbb\xbf" + body.encode(), "--no-start", tmp_path=tmp_path)
    assert proc.returncode == 0, proc.stdout
    assert "byte order mark" in proc.stdout and "semicolon" in proc.stdout
    by_user = {t["localuser"]: t for t in tasks(cli)}
    assert sorted(by_user) == ["u1", "u3"]
    pwd = state_dir(localnode) / "imapsync" / f"u1_{by_user['u1']['task_id']}.pwd"
    assert pwd.read_text() == r.users[CAROL] + "\n"  # no \r, quotes undone, `;` inside kept
    # --no-start: defined, scheduled as asked, not run
    assert "No sync started (--no-start)" in proc.stdout
    assert not list((state_dir(localnode) / "imapsync").glob("*.status.json"))


def test_unwritable_report_is_refused_before_anything(cli, localnode, clean, tmp_path) -> None:
    proc = run_import(cli, localnode, f"{HEADER}\n{row(localnode, 'u1', 'alice@remote.test')}\n",
                      "--report", "/nonexistent-dir/report.csv", tmp_path=tmp_path)
    assert proc.returncode == 2 and "--report /nonexistent-dir/report.csv" in proc.stderr
    assert_nothing_created(cli, localnode)


def test_one_import_at_a_time(cli, localnode, clean, tmp_path) -> None:
    import fcntl

    lock = state_dir(localnode) / "imapsync" / ".import.lock"
    with open(lock, "a") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        proc = run_import(cli, localnode, f"{HEADER}\n{row(localnode, 'u1', 'alice@remote.test')}\n",
                          tmp_path=tmp_path)
    assert proc.returncode == 1
    assert "another import-csv-tasks is running" in proc.stdout and "Nothing was imported" in proc.stdout
    assert_nothing_created(cli, localnode)


def test_leftover_staging_dir_of_a_crashed_import_is_removed(cli, localnode, clean, tmp_path) -> None:
    left = state_dir(localnode) / "imapsync" / ".import-crashed0123"
    left.mkdir(mode=0o700)
    (left / "u1_zzzzzz.pwd").write_text("left behind\n")
    proc = run_import(cli, localnode, f"{HEADER}\n{row(localnode, 'u1', 'alice@remote.test')}\n", "--no-start",
                      tmp_path=tmp_path)
    assert proc.returncode == 0, proc.stdout
    assert not left.exists()
    assert not list((state_dir(localnode) / "imapsync").glob(".import-*"))


# ---- malformed input: a clear, row-numbered error, and nothing created -------------------
def _malformed(localnode: NodeConfig) -> dict[str, tuple[bytes, str]]:
    ok = row(localnode, "u1", "alice@remote.test")
    r = localnode.remote
    pw = q(r.users["alice@remote.test"])
    return {
        "missing column": (f"{HEADER.rsplit(',', 1)[0]}\n{ok.rsplit(',', 1)[0]}\n".encode(),
                           "row 1: Missing required column(s): security"),
        "non-numeric port": (f"{HEADER}\nu1,alice@remote.test,{pw},{r.host},notaport,tls\n".encode(),
                             "row 2: Error: Invalid port number 'notaport'"),
        "port out of range": (f"{HEADER}\n{ok}\nu2,bob@remote.test,{pw},{r.host},70000,tls\n".encode(),
                              "row 3: Error: Invalid port number '70000'"),
        "missing value": (f"{HEADER}\nu1,alice@remote.test,,{r.host},143,tls\n".encode(),
                          "row 2: Error: Missing required value(s): remotepassword"),
        "bad security": (f"{HEADER}\n{ok.rsplit(',', 1)[0]},starttls1\n".encode(), "row 2: Error: Invalid security"),
        "unquoted comma": (f"{HEADER}\n{ok}\nu2,bob@remote.test,pass,word,{r.host},143,tls\n".encode(),
                           "row 3: Error: has 7 values but the header has 6 columns"),
        "bad quoting": (f"{HEADER}\n{ok}\nu2,bob@remote.test,\"pass\"word,{r.host},143,tls\n".encode(),
                        "row 3: a closing quote must be followed by ','"),
        "unclosed quote": (f"{HEADER}\n{ok}\nu2,bob@remote.test,\"password,{r.host},143,tls\n{ok}\n".encode(),
                           "row 3: a quote opened on this row is not closed on its line"),
        "binary garbage": (os.urandom(64) + b"\0" + os.urandom(4096), "this is not a CSV text file"),
        "not utf-8": (f"{HEADER}\n".encode() + b"u1,alice@remote.test,\xe9t\xe9,host,143,tls\n",
                      "row 2: is not valid UTF-8"),
        "utf-16": (("\ufeff" + f"{HEADER}\n{ok}\n").encode("utf-16-le"), "UTF-16"),
        "10 MB line": (f"{HEADER}\n{ok}\nu2,bob@remote.test,{'x' * (10 * 1024 * 1024)},{r.host},143,tls\n".encode(),
                       "row 3: a value is longer than"),
        "unknown column": (f"{HEADER},crom\n{ok},5m\n".encode(), "row 1: unknown column(s): 'crom'"),
        "empty input": (b"\n\n", "the input is empty"),
        "header only": (f"{HEADER}\n".encode(), "no task row"),
        "semicolon in data only": (f"{HEADER}\n{ok.replace(',', ';')}\n".encode(),
                                   "row 2: Error: has 1 values but the header has 6 columns"),
        "disabled local user": (f"{HEADER}\n{row(localnode, 'u4', 'alice@remote.test')}\n".encode(),
                                "row 2: Error: local user 'u4' is not an enabled mailbox"),
        "bad cron": (f"{HEADER},cron\n{ok},5x\n".encode(), "row 2: Error: Invalid cron"),
        "backtracking exclude": (f"{HEADER},foldersynchronization,exclude\n{ok},exclusion,\"^Junk$,(a+)+$\"\n".encode(),
                                 "row 2: Error: Invalid exclude: exclude_backtracks_catastrophically"),
        "delete pair": (f"{HEADER},delete_local,delete_remote\n{ok},true,true\n".encode(),
                        "row 2: Error: Invalid delete_local: delete_local_and_delete_remote_are_exclusive"),
        "bad local user name": (f"{HEADER}\n{row(localnode, 'John Doe', 'alice@remote.test')}\n".encode(),
                                "row 2: Error: Invalid localusername"),
        "bad hostname": (f"{HEADER}\nu1,alice@remote.test,{pw},bad host!,143,tls\n".encode(),
                         "row 2: Error: Invalid remotehostname"),
        "line break in password": (f"{HEADER}\nu1,alice@remote.test,\"pass\nword\",{r.host},143,tls\n".encode(),
                                   "row 2: Error: Invalid remotepassword: it holds a line break"),
    }


MALFORMED = ["missing column", "non-numeric port", "port out of range", "missing value", "bad security",
             "unquoted comma", "bad quoting", "unclosed quote", "binary garbage", "not utf-8", "utf-16",
             "10 MB line", "unknown column", "empty input", "header only", "semicolon in data only",
             "disabled local user", "bad cron", "backtracking exclude", "delete pair", "bad local user name", "bad hostname",
             "line break in password"]


@pytest.mark.parametrize("case", MALFORMED)
def test_malformed_input_is_refused_and_creates_nothing(cli, localnode, clean, tmp_path, case) -> None:
    body, expected = _malformed(localnode)[case]
    proc = run_import(cli, localnode, body, tmp_path=tmp_path)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert expected in proc.stdout, proc.stdout
    assert "Traceback" not in proc.stdout + proc.stderr
    assert task_files(localnode) == {}  # list-tasks reads these files: checked once in the other tests
