"""The cluster side of the local node: installed modules, their agents and keys.

`add_module` does what NS8's cluster/node `add-module` does for a rootless
module (home, install dir, environment and agent.env files, Redis keys, roles,
authorizations, an ACL user) and then runs the module's `create-module`
action through its agent, as the real cluster does.
"""

from __future__ import annotations

import fnmatch
import json
import os
import pwd
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from localnode import redisd, usermanager
from localnode.config import LOCALNODE_SRC, REPO_ROOT, SYSTEM_VENV, NodeConfig
from localnode.runner import AgentSpec, read_envfile

BASE_ACTIONS = LOCALNODE_SRC / "base-actions"
AGENT_PYPKG = LOCALNODE_SRC / "pypkg"
HOST_VENV = REPO_ROOT / ".venv-host"
DEV_VENV = REPO_ROOT / ".venv"


@dataclass
class ModuleImage:
    """What a module image brings: its imageroot and its labels."""

    name: str
    url: str
    imageroot: Path
    images: list[str] = field(default_factory=list)
    authorizations: list[str] = field(default_factory=list)


IMAGES = {
    "imapsync": ModuleImage(
        name="imapsync",
        url="ghcr.io/nethserver/imapsync:localnode",
        imageroot=REPO_ROOT / "imageroot",
        images=["ghcr.io/nethserver/imapsync-binary:localnode"],
        authorizations=["mail@any:mailadm"],
    ),
    "mail": ModuleImage(
        name="mail",
        url="ghcr.io/nethserver/mail:localnode",
        imageroot=LOCALNODE_SRC / "modules" / "mail",
    ),
}


def registry_path(cfg: NodeConfig) -> Path:
    return cfg.state_dir / "modules.json"


def installed(cfg: NodeConfig) -> dict[str, dict]:
    p = registry_path(cfg)
    return json.loads(p.read_text()) if p.exists() else {}


def _save_registry(cfg: NodeConfig, reg: dict[str, dict]) -> None:
    p = registry_path(cfg)
    tmp = p.with_suffix(".tmp")
    tmp.write_text(json.dumps(reg, indent=2) + "\n")
    os.replace(tmp, p)


# ---------------------------------------------------------------------------
# environments
def node_path(cfg: NodeConfig, real_host: bool = False) -> str:
    """PATH of /etc/nethserver/agent.env, with the node's stand-in tools first
    (`real_host`: a Unix-user module, with the machine's podman and systemctl)."""
    return ":".join(
        [
            str((SYSTEM_VENV if real_host else HOST_VENV) / "bin"),
            *([] if real_host else [str(LOCALNODE_SRC / "hostbin")]),
            str(LOCALNODE_SRC / "bin"),
            "/usr/local/sbin",
            "/usr/local/bin",
            "/usr/sbin",
            "/usr/bin",
            "/sbin",
            "/bin",
        ]
    )


def node_agent_env(cfg: NodeConfig, real_host: bool = False) -> dict[str, str]:
    """/etc/nethserver/agent.env."""
    return {
        "PATH": node_path(cfg, real_host),
        "AGENT_BASEACTIONS_DIR": str(BASE_ACTIONS),
        "REDIS_ADDRESS": cfg.redis_address,
        "REDIS_REPLICA_ADDRESS": cfg.redis_address,
    }


def home_dir(cfg: NodeConfig, module_id: str) -> Path:
    return cfg.home_dir(module_id)


def runtime_dir(cfg: NodeConfig, module_id: str) -> Path:
    """XDG_RUNTIME_DIR (/run/user/<uid>) of the module's Unix user."""
    if module_id in cfg.unix_users:
        return Path("/run/user") / str(pwd.getpwnam(module_id).pw_uid)
    return cfg.run_dir / "user" / module_id


def api_credentials(cfg: NodeConfig) -> dict[str, str]:
    """The api-server's own Redis login, used by the agent.tasks stand-in where
    NS8 would POST to the api-server (roles are still checked). A Unix-user
    module's own processes cannot read the node's files: they have it from the
    environment their parent (agentd, the user's systemd) gave them."""
    try:
        user, pw = redisd.cluster_credentials(cfg)
    except PermissionError:
        names = ("LOCALNODE_API_REDIS_USER", "LOCALNODE_API_REDIS_PASSWORD")
        return {k: os.environ[k] for k in names if k in os.environ}
    return {"LOCALNODE_API_REDIS_USER": user, "LOCALNODE_API_REDIS_PASSWORD": pw}


def locator_env(cfg: NodeConfig) -> dict[str, str]:
    """What lets the node's tools find this node (node.json is root's, 0600)."""
    env = {"LOCALNODE_DIR": str(cfg.state_dir)}
    if cfg.unix_users:
        env.update({"LOCALNODE_PORT_BASE": str(cfg.port_base), "LOCALNODE_UNIX_USERS": ",".join(cfg.unix_users),
                    "LOCALNODE_PYTHON": str(SYSTEM_VENV / "bin" / "python")})  # for bin/_localnode-python
    return env


def module_env(cfg: NodeConfig, module_id: str) -> dict[str, str]:
    """The agent process environment of a module, before `environment` is read."""
    install = cfg.install_dir(module_id)
    env = {
        "LANG": "C.UTF-8",
        "HOME": str(home_dir(cfg, module_id)),
        "USER": module_id,
        "LOGNAME": module_id,
        "XDG_RUNTIME_DIR": str(runtime_dir(cfg, module_id)),
    }
    # lets the stand-ins (podman, systemctl, api-cli) find this node
    env.update(locator_env(cfg))
    env.update(api_credentials(cfg))
    env.update(node_agent_env(cfg, module_id in cfg.unix_users))
    env.update(
        {
            "AGENT_INSTALL_DIR": str(install),
            "AGENT_STATE_DIR": str(install / "state"),
            "AGENT_ID": f"module/{module_id}",
        }
    )
    env.update(read_envfile(install / "state" / "agent.env"))
    return env


def cluster_env(cfg: NodeConfig) -> dict[str, str]:
    user, pw = redisd.cluster_credentials(cfg)
    env = {"LANG": "C.UTF-8", "LOCALNODE_DIR": str(cfg.state_dir), "HOME": str(cfg.state_dir / "cluster")}
    env.update(node_agent_env(cfg))
    env.update(
        {
            "AGENT_INSTALL_DIR": str(cfg.state_dir / "cluster"),
            "AGENT_STATE_DIR": str(cfg.state_dir / "cluster" / "state"),
            "AGENT_ID": "cluster",
            "REDIS_USER": user,
            "REDIS_PASSWORD": pw,
            "PYTHONPATH": str(AGENT_PYPKG),
        }
    )
    return env


def agent_specs(cfg: NodeConfig) -> list[AgentSpec]:
    cstate = cfg.state_dir / "cluster" / "state"
    cstate.mkdir(parents=True, exist_ok=True)
    specs = [
        AgentSpec(
            agent_id="cluster",
            state_dir=cstate,
            actions_dirs=[BASE_ACTIONS, LOCALNODE_SRC / "modules" / "cluster" / "actions"],
            env=cluster_env(cfg),
        )
    ]
    for mid in installed(cfg):
        install = cfg.install_dir(mid)
        if mid in cfg.unix_users and not _user_exists(mid):
            continue  # being removed, or deleted behind the node's back
        specs.append(
            AgentSpec(
                agent_id=f"module/{mid}",
                state_dir=install / "state",
                actions_dirs=[BASE_ACTIONS, install / "actions"],
                events_dir=install / "events",
                install_dir=install,
                env=module_env(cfg, mid),
                user=mid if mid in cfg.unix_users else None,
            )
        )
    return specs


# ---------------------------------------------------------------------------
def install_agent_pth() -> None:
    """NS8 adds /usr/local/agent/pypkg to its venv with a .pth file; so do we."""
    for venv in (HOST_VENV, SYSTEM_VENV):
        for sp in venv.glob("lib/python3*/site-packages"):
            (sp / "localnode-agent.pth").write_text(str(AGENT_PYPKG) + "\n")


def seed_cluster_keys(cfg: NodeConfig) -> None:
    rdb = redisd.connect(cfg)
    nid = str(cfg.node_id)
    rdb.hset("cluster/environment", "NODE_ID", nid)
    rdb.hset(f"node/{nid}/vpn", mapping={"ip_address": cfg.vpn_ip, "public_ip": cfg.vpn_ip, "endpoint": ""})
    rdb.set("cluster/network", "10.5.4.0/24")
    rdb.setnx("cluster/node_sequence", nid)
    rdb.hset("roles/admin", "cluster", "owner")
    rdb.hset("roles/admin", f"node/{nid}", "owner")


def _redis_acl_user(cfg: NodeConfig, module_id: str, password: str) -> None:
    rdb = redisd.connect(cfg)
    rdb.execute_command("ACL", "SETUSER", f"module/{module_id}", "reset", "on", f">{password}", "~*", "&*", "+@all", "-@admin")
    rdb.execute_command("ACL", "SAVE")


def refresh_permissions(cfg: NodeConfig) -> None:
    """Apply every stored `X@any:role` authorization, as cluster.grants does."""
    rdb = redisd.connect(cfg)
    for mid in installed(cfg):
        for auth in rdb.smembers(f"cluster/authorizations/module/{mid}"):
            target, _, role = auth.partition(":")
            if target == "self":
                rdb.hset(f"roles/module/{mid}", f"module/{mid}", role)
                continue
            img, _, scope = target.partition("@")
            if scope != "any":
                continue
            for other in installed(cfg):
                if fnmatch.fnmatchcase(other, f"{img}*") and other[len(img):].isdigit():
                    if rdb.exists(f"module/{other}/roles/{role}"):
                        rdb.hset(f"roles/module/{mid}", f"module/{other}", role)


def add_module(cfg: NodeConfig, image: str, source: ModuleImage | None = None) -> str:
    """Install a new instance of `image` (`imapsync` or `mail`); returns its module id.

    `source` replaces the built-in image: an imageroot extracted from a real
    module image, with that image's labels (the container suite). A module
    listed in `cfg.unix_users` is installed as NS8 installs a rootless module:
    a Unix user, its files copied, its `systemd --user` started, its extra
    images loaded into its own podman storage."""
    img = source or IMAGES[image]
    rdb = redisd.connect(cfg)
    mid = f"{img.name}{rdb.incr(f'cluster/module_sequence/{img.name}')}"
    module_uuid = str(uuid.uuid4())
    unix = mid in cfg.unix_users
    if unix:
        _create_unix_user(mid)
    _make_home(cfg, mid, img.imageroot, copy=unix)
    _write_agent_files(cfg, mid, img, module_uuid)
    _register(cfg, rdb, mid, img, module_uuid)
    if unix:
        _chown_tree(cfg.home_dir(mid), mid)
        usermanager.start(cfg, mid, {**locator_env(cfg), **api_credentials(cfg)})
        load_images(mid, img.images)
    reg = installed(cfg)
    reg[mid] = {"image": img.name, "image_url": img.url, "module_uuid": module_uuid}
    _save_registry(cfg, reg)
    wait_agent(cfg, f"module/{mid}")
    result = run_task(cfg, f"module/{mid}", "create-module", {"images": img.images, "volumes": {}})
    if result["exit_code"] != 0:
        raise RuntimeError(f"create-module of {mid} failed: {result['error']}")
    refresh_permissions(cfg)
    rdb.publish("cluster/event/module-added", json.dumps({"module": mid, "node": cfg.node_id}))
    return mid


def _user_exists(name: str) -> bool:
    try:
        pwd.getpwnam(name)
    except KeyError:
        return False
    return True


def _create_unix_user(mid: str) -> None:
    """useradd -m, as the node's add-module does (fills /etc/subuid too)."""
    try:
        pwd.getpwnam(mid)
    except KeyError:
        subprocess.run(["useradd", "-m", "-s", "/usr/sbin/nologin", mid], check=True, capture_output=True)


def _make_home(cfg: NodeConfig, mid: str, imageroot: Path, copy: bool) -> None:
    """Home (0700), install dir with the imageroot, state dir, ~/.local/state -> ../.config.

    extract-image copies; the developer's node links each entry instead, so
    edits apply at once."""
    home, install = cfg.home_dir(mid), cfg.install_dir(mid)
    home.mkdir(parents=True, exist_ok=True)
    home.chmod(0o700)
    install.mkdir(parents=True, exist_ok=True)
    for entry in imageroot.iterdir():
        target = install / entry.name
        if entry.name == "state" or target.exists() or target.is_symlink():
            continue
        if not copy:
            target.symlink_to(entry)
        elif entry.is_dir() and not entry.is_symlink():
            shutil.copytree(entry, target, symlinks=True)
        else:
            shutil.copy2(entry, target, follow_symlinks=False)
    state = install / "state"
    state.mkdir(mode=0o700, exist_ok=True)
    (state / "CACHEDIR.TAG").write_text("Signature: 8a477f597d28d172789f06886806bc55\n")
    (home / ".local").mkdir(exist_ok=True)
    if not (home / ".local" / "state").exists():
        (home / ".local" / "state").symlink_to("../.config")
    if mid not in cfg.unix_users:
        runtime_dir(cfg, mid).mkdir(parents=True, exist_ok=True, mode=0o700)


def _write_agent_files(cfg: NodeConfig, mid: str, img: ModuleImage, module_uuid: str) -> None:
    """state/environment and state/agent.env, and the module's Redis ACL user."""
    install = cfg.install_dir(mid)
    state = install / "state"
    write_env(state / "environment", {
        "IMAGE_ID": secrets.token_hex(32),
        "IMAGE_URL": img.url,
        "IMAGE_DIGEST": "sha256:" + secrets.token_hex(32),
        "IMAGE_REOPODIGEST": f"{img.url.rsplit(':', 1)[0]}@sha256:" + secrets.token_hex(32),
        "MODULE_ID": mid,
        "NODE_ID": str(cfg.node_id),
        "MODULE_UUID": module_uuid,
    })
    redis_pw = str(uuid.uuid4())
    write_env(state / "agent.env", {
        "PATH": f"{install / 'bin'}:{node_path(cfg, mid in cfg.unix_users)}",
        "REDIS_USER": f"module/{mid}",
        "REDIS_PASSWORD": redis_pw,
        "PYTHONPATH": str(install / "pypkg"),
    })
    _redis_acl_user(cfg, mid, redis_pw)


def _register(cfg: NodeConfig, rdb, mid: str, img: ModuleImage, module_uuid: str) -> None:
    """The cluster's keys for a new module: uuid, node, flags, default instance, roles."""
    rdb.hset("cluster/module_uuid", mid, module_uuid)
    rdb.hset("cluster/module_node", mid, str(cfg.node_id))
    rdb.sadd(f"module/{mid}/flags", "rootless")
    rdb.setnx(f"cluster/default_instance/{img.name}", mid)
    rdb.setnx(f"node/{cfg.node_id}/default_instance/{img.name}", mid)
    rdb.sadd(f"module/{mid}/roles/owner", "*")
    rdb.sadd(f"module/{mid}/roles/reader", "list-*", "get-*", "show-*", "read-*")
    rdb.hset("roles/admin", f"module/{mid}", "owner")
    rdb.sadd(f"cluster/authorizations/module/{mid}", "self:selfadm", *img.authorizations)


def _chown_tree(top: Path, user: str) -> None:
    pw = pwd.getpwnam(user)
    os.lchown(top, pw.pw_uid, pw.pw_gid)
    for root, dirs, files in os.walk(top):
        for name in dirs + files:
            os.lchown(os.path.join(root, name), pw.pw_uid, pw.pw_gid)


STORAGE_CONF = '[storage]\ndriver = "overlay"\n'


def load_images(mid: str, images: list[str]) -> None:
    """What create-module's 05pullimages pulls on NS8: here the "registry" is
    root's podman storage (the images build-images.sh made), copied into the
    user's rootless storage with podman save / podman load."""
    cfg_dir = Path(pwd.getpwnam(mid).pw_dir) / ".config" / "containers"
    cfg_dir.mkdir(parents=True, exist_ok=True)
    conf = cfg_dir / "storage.conf"
    if not conf.exists():
        conf.write_text(STORAGE_CONF)  # the default, vfs, copies every layer
    _chown_tree(cfg_dir, mid)
    for url in images:
        if subprocess.run(["podman", "image", "exists", url]).returncode != 0:
            continue
        with tempfile.TemporaryDirectory(prefix="localnode-image-") as tmp:
            archive = Path(tmp) / "image.tar"
            subprocess.run(["podman", "save", "-q", "-o", str(archive), url], check=True)
            os.chmod(tmp, 0o755)
            archive.chmod(0o644)
            usermanager.run_as(mid, ["podman", "load", "-q", "-i", str(archive)], check=True,
                               capture_output=True)


def start_user_managers(cfg: NodeConfig) -> None:
    """Each Unix-user module's `systemd --user`, as linger starts it at boot."""
    for mid in installed(cfg):
        if mid in cfg.unix_users and _user_exists(mid):
            usermanager.start(cfg, mid, {**locator_env(cfg), **api_credentials(cfg)})


def stop_user_managers(cfg: NodeConfig) -> None:
    """As at shutdown: each manager stops its units, then the users' processes end."""
    for mid in cfg.unix_users:
        if _user_exists(mid):
            usermanager.stop(cfg, mid)


def remove_module(cfg: NodeConfig, mid: str, preserve: bool = False) -> None:
    """remove-module: destroy-module, then what the node does (stop the
    module's processes, delete its user and home unless `preserve`), then the
    cluster's keys, and the module-removed event."""
    if mid not in installed(cfg):
        raise KeyError(f"module {mid} is not installed")
    result = run_task(cfg, f"module/{mid}", "destroy-module", {"module_id": mid, "preserve_data": preserve})
    if result["exit_code"] != 0:
        print(f"remove-module: destroy-module of {mid} exited {result['exit_code']}", file=sys.stderr)
    reg = installed(cfg)
    reg.pop(mid)
    _save_registry(cfg, reg)  # agentd retires the module's agent
    if mid in cfg.unix_users:
        usermanager.stop(cfg, mid)
        subprocess.run(["userdel", "-f", *([] if preserve else ["-r"]), mid], capture_output=True)
    else:
        stop_standin_services(cfg, mid)
        if not preserve:
            shutil.rmtree(cfg.home_dir(mid), ignore_errors=True)
    _unregister(cfg, mid)
    redisd.connect(cfg).publish("cluster/event/module-removed", json.dumps({"module": mid, "node": cfg.node_id}))


def _unregister(cfg: NodeConfig, mid: str) -> None:
    """Every key of the module, its roles, its cluster entries and its ACL user."""
    rdb = redisd.connect(cfg)
    for key in rdb.scan_iter(match=f"module/{mid}/*", count=500):
        rdb.delete(key)
    rdb.delete(f"roles/module/{mid}", f"cluster/authorizations/module/{mid}")
    for key in rdb.scan_iter(match="roles/*", count=500):
        rdb.hdel(key, f"module/{mid}")
    rdb.hdel("cluster/module_uuid", mid)
    rdb.hdel("cluster/module_node", mid)
    for key in rdb.scan_iter(match="*default_instance/*", count=500):
        if rdb.get(key) == mid:
            rdb.delete(key)
    rdb.execute_command("ACL", "DELUSER", f"module/{mid}")
    rdb.execute_command("ACL", "SAVE")


def stop_standin_services(cfg: NodeConfig, mid: str) -> None:
    """A stand-in module's units stopped through the systemctl stand-in, and
    any of its "containers" left behind killed."""
    env = module_env(cfg, mid)
    udir = cfg.install_dir(mid) / "systemd" / "user"
    if udir.is_dir():
        for unit in sorted(p.name for p in udir.iterdir() if p.suffix == ".service"):
            subprocess.run([str(LOCALNODE_SRC / "hostbin" / "systemctl"), "--user", "stop", unit], env=env,
                           cwd=env["AGENT_STATE_DIR"], stdout=subprocess.DEVNULL)
    for rec_path in (cfg.state_dir / "containers" / mid).glob("*.json"):
        try:
            os.killpg(json.loads(rec_path.read_text())["pid"], signal.SIGKILL)
        except (ProcessLookupError, PermissionError, ValueError, KeyError):
            pass
        rec_path.unlink(missing_ok=True)


def write_env(path: Path, values: dict[str, str]) -> None:
    """An agent env file: sorted KEY=VALUE lines, 0600, replaced atomically."""
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        for k in sorted(values):
            f.write(f"{k}={values[k]}\n")
    os.replace(tmp, path)


def wait_agent(cfg: NodeConfig, agent_id: str, timeout: float = 20) -> None:
    """Wait until agentd serves `agent_id` (its named connection shows up)."""
    rdb = redisd.connect(cfg)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if any(c.get("name") == agent_id for c in rdb.client_list()):
            return
        time.sleep(0.1)
    raise RuntimeError(f"agent {agent_id} did not connect; is agentd running? see {cfg.log_dir}/agentd.log")


def run_task(cfg: NodeConfig, agent_id: str, action: str, data: object) -> dict:
    """Submit a task with cluster credentials (as api-cli does) and wait for it."""
    if str(AGENT_PYPKG) not in sys.path:
        sys.path.insert(0, str(AGENT_PYPKG))
    user, pw = redisd.cluster_credentials(cfg)
    os.environ.update({"REDIS_ADDRESS": cfg.redis_address, "REDIS_USER": user, "REDIS_PASSWORD": pw})
    from agent import tasks  # the node's stand-in of NS8's agent package

    return tasks.run(agent_id, action, data, endpoint="redis://cluster-leader")
