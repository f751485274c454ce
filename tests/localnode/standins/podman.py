"""A `podman` stand-in: containers are processes of the local node.

No registry and no container runtime are needed: an image is known by its
name (`imapsync-binary` is the sync image built from `imapsync-container/`),
its environment and default command are read from its Containerfile, and its
programs come from `tests/localnode/images/<image>/bin`. Bind mounts are
applied by rewriting paths: any environment value or argument that starts with
a mount's container path is rewritten to the host path, so code inside the
"container" reads `/etc/imapsync` as the module's `state/imapsync`.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

from localnode.config import LOCALNODE_SRC, REPO_ROOT, load

IMAGES_DIR = LOCALNODE_SRC / "images"
CONTAINERFILES = {"imapsync-binary": REPO_ROOT / "imapsync-container" / "Containerfile"}


def image_key(ref: str) -> str:
    name = ref.rsplit("/", 1)[-1].split("@", 1)[0].split(":", 1)[0]
    if name not in CONTAINERFILES:
        raise SystemExit(f"Error: localhost/{name}: image not known to the local node")
    return name


def image_config(key: str) -> tuple[dict[str, str], list[str]]:
    """ENV and CMD of the image, from its Containerfile."""
    env: dict[str, str] = {}
    cmd: list[str] = []
    text = CONTAINERFILES[key].read_text()
    text = re.sub(r"\\\n", " ", text)
    for line in text.splitlines():
        line = line.strip()
        if line.startswith("ENV "):
            for tok in shlex.split(line[4:]):
                if "=" in tok:
                    k, v = tok.split("=", 1)
                    env[k] = v
        elif line.startswith("CMD "):
            arg = line[4:].strip()
            cmd = json.loads(arg) if arg.startswith("[") else ["/bin/sh", "-c", arg]
    return env, cmd


def containers_dir() -> Path:
    cfg = load()
    owner = os.environ.get("USER", "root")
    d = cfg.state_dir / "containers" / owner
    d.mkdir(parents=True, exist_ok=True)
    return d


def record_path(name: str) -> Path:
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", name):
        raise SystemExit(f"Error: invalid container name {name!r}")
    return containers_dir() / f"{name}.json"


def load_record(name_or_cidfile: str, by_cidfile: bool = False) -> dict | None:
    if by_cidfile:
        try:
            cid = Path(name_or_cidfile).read_text().strip()
        except FileNotFoundError:
            return None
        for p in containers_dir().glob("*.json"):
            rec = json.loads(p.read_text())
            if rec["id"] == cid:
                return rec
        return None
    p = record_path(name_or_cidfile)
    return json.loads(p.read_text()) if p.exists() else None


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie is not alive
        stat = Path(f"/proc/{pid}/stat").read_text()
        return stat.rsplit(")", 1)[1].split()[0] != "Z"
    except (FileNotFoundError, IndexError):
        return False


def rewrite(value: str, mounts: list[tuple[str, str]]) -> str:
    for src, dst in sorted(mounts, key=lambda m: -len(m[1])):
        if value == dst or value.startswith(dst.rstrip("/") + "/"):
            return src + value[len(dst.rstrip("/")) :]
        # KEY=/path forms in arguments
        m = re.match(r"^([^=/]+=)(.*)$", value)
        if m and (m.group(2) == dst or m.group(2).startswith(dst.rstrip("/") + "/")):
            return m.group(1) + src + m.group(2)[len(dst.rstrip("/")) :]
    return value


def container_log(name: str) -> Path:
    return load().log_dir / f"container-{name}.log"


def image_extras() -> str:
    """``:<dir>`` of the programs the node lends the sync image (see node.link_image_extras)."""
    extras = load().image_extras_dir
    return f":{extras}" if extras.is_dir() else ""


def container_env(rec: dict) -> dict[str, str]:
    # the container's PID 1 stdout is what podman sends to the journal: here, its log file
    mounts = [tuple(m) for m in rec["mounts"]] + [(str(container_log(rec["name"])), "/proc/1/fd/1")]
    env = {k: rewrite(v, mounts) for k, v in rec["env"].items()}
    bindir = IMAGES_DIR / rec["image_key"] / "bin"
    env["PATH"] = f"{bindir}:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin" + image_extras()
    env["LOCALNODE_MOUNTS"] = json.dumps(rec["mounts"])
    env["LOCALNODE_DIR"] = str(load().state_dir)
    env.setdefault("HOME", "/root")
    return env


def resolve_argv(rec: dict, argv: list[str]) -> list[str]:
    mounts = [tuple(m) for m in rec["mounts"]]
    argv = [rewrite(a, mounts) for a in argv]
    bindir = IMAGES_DIR / rec["image_key"] / "bin"
    prog = argv[0]
    candidate = bindir / os.path.basename(prog)
    if candidate.exists():
        argv[0] = str(candidate)
    return argv


def parse_run(args: list[str]) -> dict:
    opts: dict = {"env": {}, "mounts": [], "detach": False, "replace": False, "name": None}
    i = 0
    with_value = {"--name", "--env", "-e", "--volume", "-v", "--conmon-pidfile", "--cidfile", "--network",
                  "--log-driver", "--log-opt", "--cgroups", "--sdnotify", "--pull", "--label", "--workdir",
                  "--user", "--hostname", "--env-file", "--stop-timeout", "--memory", "--publish", "-p"}
    while i < len(args):
        a = args[i]
        if not a.startswith("-"):
            break
        if "=" in a and a.startswith("--"):
            key, val = a.split("=", 1)
        elif a in with_value:
            key, val = a, args[i + 1]
            i += 1
        else:
            key, val = a, None
        if key in ("-d", "--detach"):
            opts["detach"] = True
        elif key == "--replace":
            opts["replace"] = True
        elif key == "--name":
            opts["name"] = val
        elif key in ("--env", "-e"):
            assert val is not None
            if "=" in val:
                k, v = val.split("=", 1)
            else:  # --env NAME takes the caller's value
                k, v = val, os.environ.get(val)
            if v is not None:
                opts["env"][k] = v
        elif key in ("--volume", "-v"):
            assert val is not None
            parts = val.split(":")
            src = os.path.abspath(parts[0]) if parts[0].startswith((".", "/")) else parts[0]
            opts["mounts"].append([src, parts[1]])
        elif key in ("--conmon-pidfile", "--cidfile"):
            opts[key.lstrip("-")] = val
        i += 1
    opts["image"] = args[i]
    opts["cmd"] = args[i + 1 :]
    return opts


def cmd_run(args: list[str]) -> int:
    opts = parse_run(args)
    key = image_key(opts["image"])
    img_env, img_cmd = image_config(key)
    name = opts["name"] or f"ctr-{secrets.token_hex(4)}"
    old = load_record(name)
    if old is not None:
        if alive(old["pid"]) and not opts["replace"]:
            print(f"Error: the container name \"{name}\" is already in use", file=sys.stderr)
            return 125
        _stop(old, 10)
    env = dict(img_env)
    env.update(opts["env"])
    rec = {
        "id": secrets.token_hex(32),
        "name": name,
        "image": opts["image"],
        "image_key": key,
        "env": env,
        "mounts": opts["mounts"],
        "cmd": opts["cmd"] or img_cmd,
        "pid": 0,
        "started": time.time(),
    }
    cfg = load()
    cfg.log_dir.mkdir(parents=True, exist_ok=True)
    log = open(container_log(name), "ab")
    proc = subprocess.Popen(
        resolve_argv(rec, rec["cmd"]),
        env=container_env(rec),
        cwd="/",
        stdin=subprocess.DEVNULL,
        stdout=log if opts["detach"] else None,
        stderr=subprocess.STDOUT if opts["detach"] else None,
        start_new_session=True,
    )
    rec["pid"] = proc.pid
    record_path(name).write_text(json.dumps(rec))
    if opts.get("conmon-pidfile"):
        Path(opts["conmon-pidfile"]).write_text(f"{proc.pid}\n")
    if opts.get("cidfile"):
        Path(opts["cidfile"]).write_text(rec["id"])
    if opts["detach"]:
        print(rec["id"])
        return 0
    return proc.wait()


def cmd_exec(args: list[str]) -> int:
    i = 0
    extra_env: dict[str, str] = {}
    while i < len(args) and args[i].startswith("-"):
        if args[i] in ("-e", "--env"):
            k, _, v = args[i + 1].partition("=")
            extra_env[k] = v
            i += 1
        i += 1
    name, argv = args[i], args[i + 1 :]
    rec = load_record(name)
    if rec is None or not alive(rec["pid"]):
        print(f"Error: no container with name or ID \"{name}\" found: no such container", file=sys.stderr)
        return 125
    env = container_env(rec)
    env.update(extra_env)
    try:
        return subprocess.run(resolve_argv(rec, argv), env=env, cwd="/").returncode
    except FileNotFoundError:
        print(f"Error: crun: executable file `{argv[0]}` not found in $PATH", file=sys.stderr)
        return 127


def _stop(rec: dict, timeout: float) -> None:
    pid = rec["pid"]
    if not alive(pid):
        return
    try:
        os.killpg(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and alive(pid):
        time.sleep(0.05)
    if alive(pid):
        try:
            os.killpg(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    try:  # reap it if it is our child (it is not, usually)
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass


def _target(args: list[str]) -> tuple[dict | None, list[str], dict]:
    flags: dict = {"ignore": False, "time": 10.0, "force": False}
    rest: list[str] = []
    i = 0
    rec = None
    while i < len(args):
        a = args[i]
        if a in ("--ignore", "-i"):
            flags["ignore"] = True
        elif a in ("-f", "--force"):
            flags["force"] = True
        elif a in ("-t", "--time"):
            flags["time"] = float(args[i + 1])
            i += 1
        elif a.startswith("--time="):
            flags["time"] = float(a.split("=", 1)[1])
        elif a == "--cidfile":
            rec = load_record(args[i + 1], by_cidfile=True)
            flags["named"] = True
            i += 1
        elif a.startswith("--cidfile="):
            rec = load_record(a.split("=", 1)[1], by_cidfile=True)
            flags["named"] = True
        else:
            rest.append(a)
        i += 1
    if rec is None and rest:
        rec = load_record(rest[0])
        flags["named"] = True
    return rec, rest, flags


def cmd_stop(args: list[str]) -> int:
    rec, _, flags = _target(args)
    if rec is None:
        if flags["ignore"]:
            return 0
        print("Error: no such container", file=sys.stderr)
        return 125
    _stop(rec, flags["time"])
    print(rec["name"])
    return 0


def cmd_rm(args: list[str]) -> int:
    rec, _, flags = _target(args)
    if rec is None:
        return 0 if flags["ignore"] else 1
    if alive(rec["pid"]):
        if not flags["force"]:
            print(f"Error: cannot remove container {rec['name']} as it is running", file=sys.stderr)
            return 2
        _stop(rec, 0)
    record_path(rec["name"]).unlink(missing_ok=True)
    print(rec["id"])
    return 0


def cmd_ps(args: list[str]) -> int:
    show_all = "-a" in args or "--all" in args
    print("CONTAINER ID  IMAGE  COMMAND  STATUS  NAMES")
    for p in sorted(containers_dir().glob("*.json")):
        rec = json.loads(p.read_text())
        up = alive(rec["pid"])
        if up or show_all:
            print(f"{rec['id'][:12]}  {rec['image']}  {' '.join(rec['cmd'])}  {'Up' if up else 'Exited'}  {rec['name']}")
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv:
        print("Error: missing command", file=sys.stderr)
        return 125
    verb, args = argv[0], argv[1:]
    if verb == "run":
        return cmd_run(args)
    if verb == "exec":
        return cmd_exec(args)
    if verb == "stop":
        return cmd_stop(args)
    if verb == "rm":
        return cmd_rm(args)
    if verb == "ps":
        return cmd_ps(args)
    if verb in ("pull", "image") :
        return 0
    print(f"Error: unrecognized command `podman {verb}` on the local node", file=sys.stderr)
    return 125


if __name__ == "__main__":
    sys.exit(main())
