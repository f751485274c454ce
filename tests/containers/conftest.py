"""The container suite: the module's real images, unit file and rootless containers.

`make test-containers` runs it (NS8_CONTAINER_SUITE=1), after
tests/containers/prepare-host.sh: it builds both images with build-images.sh
from the local Debian base, installs the module as NS8 does (a Unix user
`imapsync1`, `~/.config` = install dir, `~/.config/state` = state dir, its own
`systemd --user`, its images in its own podman storage), runs its actions
through the local node's agent as that user, and drives the real unit with
`systemctl --user`. `make test` does not collect it: it changes system
settings and takes a Unix user.

Everything it starts is ended by pid at the end, also when a test fails: the
module's `systemd --user`, the processes of its user (rootless podman's pause
process), the user itself, the node's daemons, and the /usr/local/bin/runagent
link the unit needs.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

if os.environ.get("NS8_CONTAINER_SUITE") != "1":
    collect_ignore_glob = ["test_*.py"]


@pytest.fixture(scope="session")
def images():
    from ctsuite import build_images

    return build_images()


@pytest.fixture(scope="session")
def ctnode(images) -> Iterator[object]:
    """A local node whose imapsync1 is a Unix user running the real images."""
    from ctsuite import MODULE, PORT_BASE, RUNAGENT_LINK, extract_imageroot, link_runagent
    from localnode import cluster, node, usermanager
    from localnode.config import NodeConfig

    state = Path(tempfile.mkdtemp(prefix="ns8-ct-node-"))
    state.chmod(0o755)  # the module's user reads modules.json and runs the node's tools
    cfg = NodeConfig(state_dir=state, port_base=PORT_BASE, unix_users=(MODULE,))
    linked = link_runagent()
    try:
        node.up(cfg, with_imapsync=False)
        source = cluster.ModuleImage(
            name="imapsync", url=images.module,
            imageroot=extract_imageroot(images.module, state / "extracted-imageroot"),
            images=images.labels["org.nethserver.images"].split(),
            authorizations=images.labels["org.nethserver.authorizations"].split())
        assert cluster.add_module(cfg, "imapsync", source=source) == MODULE
        yield cfg
    finally:
        try:
            if MODULE in cluster.installed(cfg):
                cluster.remove_module(cfg, MODULE)
        finally:
            node.down(cfg)
            usermanager.stop(cfg, MODULE)
            subprocess.run(["userdel", "-f", "-r", MODULE], capture_output=True)
            if linked:
                RUNAGENT_LINK.unlink(missing_ok=True)
            shutil.rmtree(state, ignore_errors=True)
