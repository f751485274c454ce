"""The local node's two Dovecots as a remote/local pair, for IMAP-level tests.

Only Dovecot runs (no Redis, no agents), in a fresh directory per test
module: `conftest.py`'s `pair` fixture starts and stops it.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from ns8_imapsync.imap.connection import Endpoint

from localnode import dovecot
from localnode.config import NodeConfig

# Test users of the pair: the same name on both sides, mapped to the local
# node's users (remote provider addresses, mail1 accounts).
REMOTE_OF = {"user01": "alice@remote.test", "user02": "bob@remote.test", "user03": "dave@remote.test"}
LOCAL_OF = {"user01": "u1", "user02": "u2", "user03": "u3"}


@dataclass
class Pair:
    """The local node's two Dovecots (localnode.dovecot), as a remote/local pair."""

    cfg: NodeConfig

    @property
    def remote_host(self) -> str:
        return self.cfg.remote.host

    @property
    def remote_imap(self) -> int:
        return self.cfg.remote.imap_port

    @property
    def remote_imaps(self) -> int:
        return self.cfg.remote.imaps_port

    @property
    def master_pass(self) -> str:
        return str(self.cfg.mail1.master_password)

    @property
    def ca_file(self) -> str:
        return self.cfg.remote.ca_cert

    @property
    def state_dir(self) -> Path:
        return self.cfg.state_dir

    def remote(self, user: str, security: str = "tls", **kw: object) -> Endpoint:
        port = self.remote_imaps if security == "ssl" else self.remote_imap
        return Endpoint(self.remote_host, port, security, REMOTE_OF[user], **kw)  # type: ignore[arg-type]

    def local(self, user: str, security: str = "tls", **kw: object) -> Endpoint:
        m = self.cfg.mail1
        port = m.imaps_port if security == "ssl" else m.imap_port
        return Endpoint(m.host, port, security, f"{LOCAL_OF[user]}*{m.master_user}", **kw)  # type: ignore[arg-type]

    def password(self, user: str) -> str:
        return self.cfg.remote.users[REMOTE_OF[user]]


def start_pair(port_base: int = 24000, *, mail1_uidplus: bool = True) -> Pair:
    """Both Dovecots of a local node in a fresh directory (no Redis, no agents);
    ``mail1_uidplus=False``: mail1 does not announce UIDPLUS (``dovecot.start``)."""
    root = Path(tempfile.mkdtemp(prefix="imap-layer-test-", dir="/tmp"))
    root.chmod(0o755)  # the mail user must traverse it when run as root
    pair = Pair(NodeConfig(state_dir=root, port_base=port_base))
    try:
        dovecot.start(pair.cfg, mail1_uidplus=mail1_uidplus)
    except Exception:
        stop_pair(pair)
        raise
    return pair


def stop_pair(pair: Pair) -> None:
    try:
        dovecot.stop(pair.cfg)
    finally:
        shutil.rmtree(pair.cfg.state_dir, ignore_errors=True)


@contextmanager
def running_pair(port_base: int = 24000, *, mail1_uidplus: bool = True) -> Iterator[Pair]:
    """start_pair ... stop_pair, for a fixture."""
    started = start_pair(port_base, mail1_uidplus=mail1_uidplus)
    try:
        yield started
    finally:
        stop_pair(started)
