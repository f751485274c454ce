"""Set-up of the container suite (conftest.py has the fixtures): names, the
image build, the module image's imageroot and the /usr/local/bin/runagent link."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
PORT_BASE = int(os.environ.get("CONTAINER_SUITE_PORT_BASE", "30700"))
REPOBASE = os.environ.get("CONTAINER_SUITE_REPOBASE", "localhost/ns8-imapsync-ct")
TAG = os.environ.get("CONTAINER_SUITE_TAG", "ct")
MODULE = "imapsync1"
RUNAGENT_LINK = Path("/usr/local/bin/runagent")


@dataclass
class Images:
    module: str
    sync: str
    labels: dict[str, str]
    build_seconds: float


def image_id(name: str) -> str | None:
    proc = subprocess.run(["podman", "image", "inspect", "--format", "{{.Id}}", name], capture_output=True,
                          text=True)
    return proc.stdout.strip() if proc.returncode == 0 else None


def build_images() -> Images:
    """Both images, built by build-images.sh from the local Debian base (nothing pulled).

    The images a previous run built under the same names are removed once
    replaced (they would pile up untagged); the Debian base and the layer
    cache stay, so a second run builds in seconds."""
    module, sync = f"{REPOBASE}/imapsync:{TAG}", f"{REPOBASE}/imapsync-binary:{TAG}"
    previous = {image_id(module), image_id(sync)} - {None}
    env = dict(os.environ, LOCAL_BASE="1", REPOBASE=REPOBASE, IMAGETAG=TAG)
    env.pop("PYTHONPATH", None)
    started = time.monotonic()
    proc = subprocess.run([str(REPO / "build-images.sh")], cwd=REPO, env=env, capture_output=True, text=True)
    elapsed = time.monotonic() - started
    if proc.returncode != 0:
        raise AssertionError(f"build-images.sh failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    for old in previous - {image_id(module), image_id(sync)}:
        subprocess.run(["podman", "rmi", old], capture_output=True)
    if f"Built: {sync}\nBuilt: {module}" not in proc.stdout:
        raise AssertionError(f"build-images.sh did not say what it built:\n{proc.stdout}")
    labels = json.loads(subprocess.run(["podman", "image", "inspect", "--format", "{{json .Labels}}", module],
                                       check=True, capture_output=True, text=True).stdout)
    print(f"\nbuild-images.sh (LOCAL_BASE=1): {elapsed:.0f} s")
    return Images(module, sync, labels, elapsed)


def extract_imageroot(image: str, dest: Path) -> Path:
    """What extract-image does: the image's /imageroot, copied out."""
    mnt = subprocess.run(["podman", "image", "mount", image], check=True, capture_output=True,
                         text=True).stdout.strip()
    try:
        shutil.copytree(Path(mnt) / "imageroot", dest, symlinks=True)
    finally:
        subprocess.run(["podman", "image", "unmount", image], capture_output=True)
    return dest


def link_runagent() -> bool:
    """/usr/local/bin/runagent -> the local node's runagent (systemd resolves the unit's
    `runagent` there, as on NS8); True when this call made the link (and must remove it)."""
    target = REPO / "tests" / "localnode" / "bin" / "runagent"
    if RUNAGENT_LINK.exists() and not RUNAGENT_LINK.is_symlink():
        raise RuntimeError(f"{RUNAGENT_LINK} exists and is not a link: is this a real NS8 node?")
    if RUNAGENT_LINK.is_symlink() and Path(os.readlink(RUNAGENT_LINK)) == target:
        return False
    RUNAGENT_LINK.unlink(missing_ok=True)
    RUNAGENT_LINK.symlink_to(target)
    return True
