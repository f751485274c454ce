"""Where every piece of the local node lives: paths, addresses, ports, users.

One `NodeConfig` is derived from the state directory and a port base, so two
nodes (a developer's `make up` and a test session) can run side by side with
different state dirs and port bases. `node.json` is this object serialised, for
tools outside Python (and for humans).
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
LOCALNODE_SRC = Path(__file__).resolve().parent

DEFAULT_STATE_DIR = REPO_ROOT / ".localnode"
# The agent environment of Unix-user modules: a venv of the system's python3 with
# requirements-agent-env.txt + requirements-pypkg.txt, as NS8's /usr/local/agent/pyenv
# (the development venvs may use an interpreter other users cannot run, under /root);
# made by tests/containers/prepare-host.sh.
SYSTEM_VENV = Path(os.environ.get("LOCALNODE_SYSTEM_VENV", "/var/cache/ns8-imapsync/agent-venv"))
DEFAULT_PORT_BASE = 16000

# Fixed test credentials: this node only ever listens on loopback.
MAIL1_USERS = {"u1": "Nethesis,1234", "u2": "Nethesis,1234", "u3": "Nethesis,1234", "u4": "Nethesis,1234"}
MAIL1_DISABLED_USERS = ["u4"]
MASTER_USER = "vmail"
MASTER_PASSWORD = "vmail-master-Secret9"
# Remote provider users log in with a full address, as on most hosting servers.
# carol's password holds every character a shell or a CSV would trip over.
REMOTE_USERS = {
    "alice@remote.test": "alice-Secret1",
    "bob@remote.test": "bob-Secret2",
    "carol@remote.test": "c a,r\"o'l$`\\;|&<>*?",
    "dave@remote.test": "dave-Secret4",
}


@dataclass
class ImapServer:
    """One Dovecot instance as clients see it."""

    name: str
    host: str
    imap_port: int
    imaps_port: int
    separator: str
    users: dict[str, str]
    disabled_users: list[str] = field(default_factory=list)
    sieve_port: int | None = None
    master_user: str | None = None
    master_password: str | None = None
    master_separator: str | None = None
    dir: str = ""
    config: str = ""
    ca_cert: str = ""


@dataclass
class NodeConfig:
    state_dir: Path
    port_base: int = DEFAULT_PORT_BASE
    node_id: int = 1
    # modules installed as NS8 installs a rootless module: a Unix user of their own
    # (/home/<id>), real rootless podman and `systemd --user` (the container suite);
    # the others live under state_dir/home and use the node's podman/systemctl stand-ins
    unix_users: tuple[str, ...] = ()
    # The node's "VPN" address: where the mail module publishes its IMAP endpoint.
    vpn_ip: str = "127.0.0.2"
    remote_ip: str = "127.0.0.3"

    # ---- derived paths -------------------------------------------------
    @property
    def redis_dir(self) -> Path:
        return self.state_dir / "redis"

    @property
    def redis_port(self) -> int:
        return self.port_base + 379

    @property
    def redis_address(self) -> str:
        return f"127.0.0.1:{self.redis_port}"

    @property
    def homes_dir(self) -> Path:
        """Module homes, as /home/<module_id> on a real node."""
        return self.state_dir / "home"

    def home_dir(self, module_id: str) -> Path:
        """The module's home: /home/<id> for a Unix-user module, as useradd -m makes it."""
        if module_id in self.unix_users:
            return Path("/home") / module_id
        return self.homes_dir / module_id

    def install_dir(self, module_id: str) -> Path:
        """AGENT_INSTALL_DIR of a module (~/.config on a real node)."""
        return self.home_dir(module_id) / ".config"

    def module_state_dir(self, module_id: str) -> Path:
        """AGENT_STATE_DIR of a module (~/.config/state on a real node)."""
        return self.install_dir(module_id) / "state"

    @property
    def run_dir(self) -> Path:
        """Pid files and sockets of the node's own daemons."""
        return self.state_dir / "run"

    @property
    def log_dir(self) -> Path:
        return self.state_dir / "log"

    @property
    def image_extras_dir(self) -> Path:
        """Programs of the machine the sync "container" may run (an imapsync beside the project)."""
        return self.state_dir / "image-extras"

    @property
    def dovecot_dir(self) -> Path:
        return self.state_dir / "dovecot"

    @property
    def ssl_dir(self) -> Path:
        return self.state_dir / "ssl"

    @property
    def node_json(self) -> Path:
        return self.state_dir / "node.json"

    # ---- servers -------------------------------------------------------
    @property
    def mail1(self) -> ImapServer:
        """The NS8 mail module `mail1`: `/` separator, master user, FILTER=SIEVE."""
        d = self.dovecot_dir / "mail1"
        return ImapServer(
            name="mail1",
            host=self.vpn_ip,
            imap_port=self.port_base + 143,
            imaps_port=self.port_base + 993,
            sieve_port=self.port_base + 190,
            separator="/",
            users=dict(MAIL1_USERS),
            disabled_users=list(MAIL1_DISABLED_USERS),
            master_user=MASTER_USER,
            master_password=MASTER_PASSWORD,
            master_separator="*",
            dir=str(d),
            config=str(d / "dovecot.conf"),
            ca_cert=str(self.ssl_dir / "cert.pem"),
        )

    @property
    def remote(self) -> ImapServer:
        """A remote hosting provider: `.` separator (Maildir++), STARTTLS and IMAPS."""
        d = self.dovecot_dir / "remote"
        return ImapServer(
            name="remote",
            host=self.remote_ip,
            imap_port=self.port_base + 1143,
            imaps_port=self.port_base + 1993,
            separator=".",
            users=dict(REMOTE_USERS),
            dir=str(d),
            config=str(d / "dovecot.conf"),
            ca_cert=str(self.ssl_dir / "cert.pem"),
        )

    def to_json(self) -> dict:
        return {
            "state_dir": str(self.state_dir),
            "port_base": self.port_base,
            "node_id": self.node_id,
            "unix_users": list(self.unix_users),
            "redis": {"host": "127.0.0.1", "port": self.redis_port, "address": self.redis_address},
            "mail1": asdict(self.mail1),
            "remote": asdict(self.remote),
            "modules": {
                mid: {"install_dir": str(self.install_dir(mid)), "state_dir": str(self.module_state_dir(mid))}
                for mid in ("imapsync1", "mail1")
            },
            "bin": str(LOCALNODE_SRC / "bin"),
        }

    def write_node_json(self) -> None:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        tmp = self.node_json.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump(self.to_json(), f, indent=2)
            f.write("\n")
        os.replace(tmp, self.node_json)


def load(state_dir: str | os.PathLike | None = None) -> NodeConfig:
    """The node of `state_dir` (default: $LOCALNODE_DIR, else `.localnode/`).

    The port base and the Unix-user modules come from node.json when the node
    was already set up, else from $LOCALNODE_PORT_BASE and $LOCALNODE_UNIX_USERS
    (comma-separated module ids), else the defaults.
    """
    sd = Path(state_dir or os.environ.get("LOCALNODE_DIR") or DEFAULT_STATE_DIR).resolve()
    base = int(os.environ.get("LOCALNODE_PORT_BASE", DEFAULT_PORT_BASE))
    users = tuple(u for u in os.environ.get("LOCALNODE_UNIX_USERS", "").split(",") if u)
    try:  # a module's own Unix user cannot read it (0600): it has the variables
        saved = json.loads((sd / "node.json").read_text())
        base = int(saved["port_base"])
        users = tuple(saved.get("unix_users", []))
    except (OSError, ValueError, KeyError, TypeError):
        pass
    return NodeConfig(state_dir=sd, port_base=base, unix_users=users)
