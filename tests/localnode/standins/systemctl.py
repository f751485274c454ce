"""A `systemctl --user` stand-in that runs a module's own unit files.

It reads `~/.config/systemd/user/<unit>`, expands the specifiers and
`${VAR}`s systemd would, loads `EnvironmentFile=`s, runs `ExecStartPre=`,
`ExecStart=` (forking units are expected to detach, as `podman run --detach`
does), `ExecStop=` and `ExecStopPost=` in `WorkingDirectory=`. Enough of
systemd for a module's actions to manage their service unchanged.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

from localnode.config import LOCALNODE_SRC

HOSTBIN = LOCALNODE_SRC / "hostbin"
JOB_VERBS = ("start", "stop", "restart", "try-restart", "reload-or-restart", "enable", "disable")


def home() -> Path:
    return Path(os.environ["HOME"])


def unit_dir() -> Path:
    return home() / ".config" / "systemd" / "user"


def state_dir() -> Path:
    d = Path(os.environ.get("XDG_RUNTIME_DIR", home() / ".run")) / "localnode-systemd"
    d.mkdir(parents=True, exist_ok=True)
    return d


def enabled_dir() -> Path:
    d = home() / ".localnode-systemd" / "enabled"
    d.mkdir(parents=True, exist_ok=True)
    return d


def parse_unit(path: Path) -> dict[str, list[str]]:
    """[Service] keys as lists (repeatable keys, `\\` continuations joined)."""
    text = re.sub(r"\\\n", " ", path.read_text())
    section = ""
    keys: dict[str, list[str]] = {}
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            section = line.strip("[]")
            continue
        if section != "Service" or "=" not in line:
            continue
        k, v = line.split("=", 1)
        keys.setdefault(k.strip(), []).append(v.strip())
    return keys


def specifiers(unit: str) -> dict[str, str]:
    h = home()
    return {
        "%n": unit,
        "%N": unit.rsplit(".", 1)[0],
        "%E": str(h / ".config"),
        "%S": str(h / ".local" / "state"),
        "%h": str(h),
        "%u": os.environ.get("USER", "root"),
        "%t": os.environ.get("XDG_RUNTIME_DIR", str(h / ".run")),
        "%%": "%",
    }


def expand_spec(value: str, spec: dict[str, str]) -> str:
    return re.sub(r"%[nNEShut%]", lambda m: spec[m.group(0)], value)


def unit_env(keys: dict[str, list[str]], spec: dict[str, str]) -> dict[str, str]:
    env = dict(os.environ)
    for item in keys.get("Environment", []):
        for tok in shlex.split(expand_spec(item, spec)):
            if "=" in tok:
                k, v = tok.split("=", 1)
                env[k] = v
    for item in keys.get("EnvironmentFile", []):
        optional = item.startswith("-")
        path = Path(expand_spec(item.lstrip("-"), spec))
        if not path.exists():
            if optional:
                continue
            raise RuntimeError(f"EnvironmentFile {path} not found")
        for line in path.read_text().splitlines():
            if "=" in line and not line.lstrip().startswith("#"):
                k, v = line.split("=", 1)
                env[k.strip()] = v
    return env


def command_argv(line: str, spec: dict[str, str], env: dict[str, str]) -> tuple[list[str], bool]:
    """One Exec line: `-` prefix means failure is ignored; ${VAR} and $VAR expanded."""
    ignore = False
    while line[:1] in "-@+!:":
        ignore = ignore or line[0] == "-"
        line = line[1:]
    line = expand_spec(line, spec)
    argv = []
    for tok in shlex.split(line):
        tok = re.sub(r"\$\{(\w+)\}", lambda m: env.get(m.group(1), ""), tok)
        if re.fullmatch(r"\$(\w+)", tok):
            argv.extend(env.get(tok[1:], "").split())
            continue
        argv.append(tok)
    prog = argv[0]
    # /usr/bin/podman and friends are the node's stand-ins
    if (HOSTBIN / os.path.basename(prog)).exists():
        argv[0] = str(HOSTBIN / os.path.basename(prog))
    elif "/" not in prog:
        found = shutil.which(prog, path=env.get("PATH"))
        if found:
            argv[0] = found
    return argv, ignore


def run_lines(keys: dict[str, list[str]], key: str, spec: dict[str, str], env: dict[str, str], cwd: Path) -> int:
    for line in keys.get(key, []):
        argv, ignore = command_argv(line, spec, env)
        try:
            rc = subprocess.run(argv, env=env, cwd=cwd).returncode
        except FileNotFoundError:
            rc = 203
        if rc != 0 and not ignore:
            print(f"{key} {argv[0]} failed with {rc}", file=sys.stderr)
            return rc
    return 0


def read_state(unit: str) -> dict:
    p = state_dir() / f"{unit}.json"
    return json.loads(p.read_text()) if p.exists() else {"active": False}


def write_state(unit: str, st: dict) -> None:
    (state_dir() / f"{unit}.json").write_text(json.dumps(st))


def main_pid_alive(st: dict) -> bool:
    pid = st.get("pid")
    if not pid:
        return False
    try:
        os.kill(pid, 0)
        stat = Path(f"/proc/{pid}/stat").read_text()
        return stat.rsplit(")", 1)[1].split()[0] != "Z"
    except (ProcessLookupError, FileNotFoundError):
        return False


def is_active(unit: str) -> bool:
    st = read_state(unit)
    return bool(st.get("active")) and main_pid_alive(st)


def context(unit: str) -> tuple[dict[str, list[str]], dict[str, str], dict[str, str], Path]:
    path = unit_dir() / unit
    if not path.exists():
        raise FileNotFoundError(f"Unit {unit} not found.")
    keys = parse_unit(path)
    spec = specifiers(unit)
    env = unit_env(keys, spec)
    cwd = Path(expand_spec(keys.get("WorkingDirectory", [str(home())])[-1], spec))
    return keys, spec, env, cwd


def start(unit: str) -> int:
    if is_active(unit):
        return 0
    keys, spec, env, cwd = context(unit)
    rc = run_lines(keys, "ExecStartPre", spec, env, cwd)
    if rc != 0:
        write_state(unit, {"active": False, "result": "exit-code"})
        return 1
    kind = keys.get("Type", ["simple"])[-1]
    argv, _ = command_argv(keys["ExecStart"][-1], spec, env)
    if kind == "forking":
        rc = subprocess.run(argv, env=env, cwd=cwd, stdout=subprocess.DEVNULL).returncode
        if rc != 0:
            run_lines(keys, "ExecStopPost", spec, env, cwd)
            write_state(unit, {"active": False, "result": "exit-code"})
            return 1
        pid = 0
        if "PIDFile" in keys:
            pidfile = Path(expand_spec(keys["PIDFile"][-1], spec))
            for _ in range(50):
                if pidfile.exists() and pidfile.read_text().strip():
                    pid = int(pidfile.read_text().strip())
                    break
                time.sleep(0.1)
    else:
        pid = subprocess.Popen(argv, env=env, cwd=cwd, start_new_session=True,
                               stdin=subprocess.DEVNULL).pid
    write_state(unit, {"active": True, "pid": pid, "since": time.time()})
    return 0


def stop(unit: str) -> int:
    st = read_state(unit)
    try:
        keys, spec, env, cwd = context(unit)
    except FileNotFoundError:
        return 0
    if st.get("active"):
        run_lines(keys, "ExecStop", spec, env, cwd)
        if main_pid_alive(st):
            try:
                os.killpg(st["pid"], signal.SIGTERM)
            except ProcessLookupError:
                pass
        run_lines(keys, "ExecStopPost", spec, env, cwd)
    write_state(unit, {"active": False})
    return 0


def main(argv: list[str] | None = None) -> int:
    args = [a for a in (sys.argv[1:] if argv is None else argv) if a not in ("--user", "--quiet", "-q", "--now", "--no-block")]
    now = "--now" in (sys.argv[1:] if argv is None else argv)
    if not args:
        print("systemctl: missing verb", file=sys.stderr)
        return 1
    verb, units = args[0], args[1:]
    if verb == "daemon-reload":
        return 0
    if not units:
        print(f"Too few arguments: systemctl {verb} needs a unit name.", file=sys.stderr)
        return 1
    units = [u if "." in u else u + ".service" for u in units]
    rc = 0
    unit = units[0]
    try:
        for unit in units:
            # systemd runs one job at a time per unit: a restart asked while
            # another runs comes after it, and sees the environment as it is then
            if verb in JOB_VERBS:
                job_lock = open(state_dir() / f"{unit}.job.lock", "w")  # closed (unlocked) on the next unit
                fcntl.flock(job_lock, fcntl.LOCK_EX)
            if verb == "start":
                rc |= start(unit)
            elif verb == "stop":
                rc |= stop(unit)
            elif verb in ("restart", "reload-or-restart"):
                stop(unit)
                rc |= start(unit)
            elif verb == "try-restart":
                if is_active(unit):
                    stop(unit)
                    rc |= start(unit)
            elif verb == "enable":
                (enabled_dir() / unit).touch()
                if now:
                    rc |= start(unit)
            elif verb == "disable":
                (enabled_dir() / unit).unlink(missing_ok=True)
                if now:
                    rc |= stop(unit)
            elif verb == "is-active":
                active = is_active(unit)
                print("active" if active else "inactive")
                rc |= 0 if active else 3
            elif verb == "is-enabled":
                en = (enabled_dir() / unit).exists()
                print("enabled" if en else "disabled")
                rc |= 0 if en else 1
            elif verb == "status":
                st = read_state(unit)
                active = is_active(unit)
                print(f"* {unit}\n   Active: {'active (running)' if active else 'inactive (dead)'}"
                      + (f"\n Main PID: {st.get('pid')}" if active else ""))
                rc |= 0 if active else 3
            else:
                print(f"systemctl (local node): unsupported verb {verb}", file=sys.stderr)
                return 1
    except FileNotFoundError as exc:
        print(f"Failed to {verb} {unit}: {exc}", file=sys.stderr)
        return 5
    return rc


if __name__ == "__main__":
    sys.exit(main())
