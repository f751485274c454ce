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
import secrets
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from localnode import redisd
from localnode.config import LOCALNODE_SRC, REPO_ROOT, NodeConfig
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
def node_path(cfg: NodeConfig) -> str:
    """PATH of /etc/nethserver/agent.env, with the node's stand-in tools first."""
    return ":".join(
        [
            str(HOST_VENV / "bin"),
            str(LOCALNODE_SRC / "hostbin"),
            str(LOCALNODE_SRC / "bin"),
            "/usr/local/sbin",
            "/usr/local/bin",
            "/usr/sbin",
            "/usr/bin",
            "/sbin",
            "/bin",
        ]
    )


def node_agent_env(cfg: NodeConfig) -> dict[str, str]:
    """/etc/nethserver/agent.env."""
    return {
        "PATH": node_path(cfg),
        "AGENT_BASEACTIONS_DIR": str(BASE_ACTIONS),
        "REDIS_ADDRESS": cfg.redis_address,
        "REDIS_REPLICA_ADDRESS": cfg.redis_address,
    }


def home_dir(cfg: NodeConfig, module_id: str) -> Path:
    return cfg.homes_dir / module_id


def runtime_dir(cfg: NodeConfig, module_id: str) -> Path:
    """XDG_RUNTIME_DIR (/run/user/<uid>) of the module's Unix user."""
    return cfg.run_dir / "user" / module_id


def module_env(cfg: NodeConfig, module_id: str) -> dict[str, str]:
    """The agent process environment of a module, before `environment` is read."""
    install = cfg.install_dir(module_id)
    env = {
        "LANG": "C.UTF-8",
        "HOME": str(home_dir(cfg, module_id)),
        "USER": module_id,
        "LOGNAME": module_id,
        "XDG_RUNTIME_DIR": str(runtime_dir(cfg, module_id)),
        # lets the stand-ins (podman, systemctl, api-cli) find this node
        "LOCALNODE_DIR": str(cfg.state_dir),
    }
    # the api-server's own Redis login, used by the agent.tasks stand-in where
    # NS8 would POST to the api-server (roles are still checked)
    api_user, api_pw = redisd.cluster_credentials(cfg)
    env.update({"LOCALNODE_API_REDIS_USER": api_user, "LOCALNODE_API_REDIS_PASSWORD": api_pw})
    env.update(node_agent_env(cfg))
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
        specs.append(
            AgentSpec(
                agent_id=f"module/{mid}",
                state_dir=install / "state",
                actions_dirs=[BASE_ACTIONS, install / "actions"],
                events_dir=install / "events",
                install_dir=install,
                env=module_env(cfg, mid),
            )
        )
    return specs


# ---------------------------------------------------------------------------
def install_agent_pth() -> None:
    """NS8 adds /usr/local/agent/pypkg to its venv with a .pth file; so do we."""
    for sp in HOST_VENV.glob("lib/python3*/site-packages"):
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


def add_module(cfg: NodeConfig, image: str) -> str:
    """Install a new instance of `image` (`imapsync` or `mail`); returns its module id."""
    img = IMAGES[image]
    rdb = redisd.connect(cfg)
    seq = rdb.incr(f"cluster/module_sequence/{img.name}")
    mid = f"{img.name}{seq}"
    module_uuid = str(uuid.uuid4())
    home = home_dir(cfg, mid)
    install = cfg.install_dir(mid)
    state = install / "state"
    home.mkdir(parents=True, exist_ok=True)
    home.chmod(0o700)
    install.mkdir(parents=True, exist_ok=True)
    # extract-image: the imageroot, linked so a developer's edits apply at once
    for entry in img.imageroot.iterdir():
        link = install / entry.name
        if entry.name == "state" or link.exists() or link.is_symlink():
            continue
        link.symlink_to(entry)
    state.mkdir(mode=0o700, exist_ok=True)
    (state / "CACHEDIR.TAG").write_text("Signature: 8a477f597d28d172789f06886806bc55\n")
    (home / ".local").mkdir(exist_ok=True)
    if not (home / ".local" / "state").exists():
        (home / ".local" / "state").symlink_to("../.config")
    runtime_dir(cfg, mid).mkdir(parents=True, exist_ok=True, mode=0o700)

    env_lines = {
        "IMAGE_ID": secrets.token_hex(32),
        "IMAGE_URL": img.url,
        "IMAGE_DIGEST": "sha256:" + secrets.token_hex(32),
        "IMAGE_REOPODIGEST": f"{img.url.rsplit(':', 1)[0]}@sha256:" + secrets.token_hex(32),
        "MODULE_ID": mid,
        "NODE_ID": str(cfg.node_id),
        "MODULE_UUID": module_uuid,
    }
    write_env(state / "environment", env_lines)
    redis_pw = str(uuid.uuid4())
    write_env(
        state / "agent.env",
        {
            "PATH": f"{install / 'bin'}:{node_path(cfg)}",
            "REDIS_USER": f"module/{mid}",
            "REDIS_PASSWORD": redis_pw,
            "PYTHONPATH": str(install / "pypkg"),
        },
    )
    _redis_acl_user(cfg, mid, redis_pw)

    rdb.hset("cluster/module_uuid", mid, module_uuid)
    rdb.hset("cluster/module_node", mid, str(cfg.node_id))
    rdb.sadd(f"module/{mid}/flags", "rootless")
    rdb.setnx(f"cluster/default_instance/{img.name}", mid)
    rdb.setnx(f"node/{cfg.node_id}/default_instance/{img.name}", mid)
    rdb.sadd(f"module/{mid}/roles/owner", "*")
    rdb.sadd(f"module/{mid}/roles/reader", "list-*", "get-*", "show-*", "read-*")
    rdb.hset("roles/admin", f"module/{mid}", "owner")
    rdb.sadd(f"cluster/authorizations/module/{mid}", "self:selfadm", *img.authorizations)

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
