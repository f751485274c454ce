"""What the module ships: shell scripts, build-images.sh, the sync image, the unit.

- every shell script of the repository passes shellcheck;
- build-images.sh, run with a recording stand-in for buildah (the real pip
  installs the extras), builds the images NS8 expects: the sync image from
  imapsync-container/Containerfile, and the module image FROM scratch with
  imageroot/ at /imageroot (no byte-code, no egg-info, python-crontab added to
  /imageroot/pypkg), the labels add-module reads, REPOBASE and IMAGETAG
  honoured, nothing pulled and the Debian base asked for with LOCAL_BASE;
- the Containerfile copies only what exists, nothing of tests/, and its paths
  are the ones the unit, the package and the cron files use;
- every helper the unit runs and every action step exists and is executable.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SKIP_DIRS = {".git", ".venv", ".venv-host", ".venv-robot", "node_modules", ".localnode", "outputs", "dist",
             "__pycache__", ".pytest_cache", ".ruff_cache"}
SHEBANG = re.compile(rb"^#!\s*(/usr)?/bin/(env\s+)?(ba|da|k)?sh\b")


def shell_scripts() -> list[Path]:
    """Files named *.sh or starting with a sh/bash shebang, outside venvs and build output."""
    found = []
    for root, dirs, files in os.walk(REPO):
        dirs[:] = [d for d in dirs if d not in SKIP_DIRS and not d.endswith(".egg-info")]
        for name in files:
            path = Path(root, name)
            if path.is_symlink() or not path.is_file():
                continue
            with open(path, "rb") as f:
                head = f.read(80)
            if name.endswith(".sh") or SHEBANG.match(head):
                found.append(path)
    return sorted(found)


def test_every_shell_script_passes_shellcheck() -> None:
    scripts = shell_scripts()
    names = {p.relative_to(REPO).as_posix() for p in scripts}
    # the scripts this test must see, or it checks nothing
    assert {"build-images.sh", "test-module.sh", ".ci/run", "scripts/install-deps.sh",
            "imageroot/actions/configure-module/80start_services", "imapsync-container/install-packages.sh",
            "tests/containers/prepare-host.sh"} <= names, names
    assert shutil.which("shellcheck"), "shellcheck is missing: scripts/install-deps.sh installs it"
    proc = subprocess.run(["shellcheck", "--format=gcc", *map(str, scripts)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr


# ---------------------------------------------------------------------------
# build-images.sh with a recording buildah
BUILDAH_STUB = r'''#!/usr/bin/env python3
import json, os, shutil, sys
root = os.environ["BUILDAH_STUB_ROOT"]
args = sys.argv[1:]
with open(os.path.join(root, "calls.jsonl"), "a") as f:
    f.write(json.dumps(args) + "\n")
plain = [a for a in args[1:] if not a.startswith("--")]
if args[0] == "from":
    n = len(os.listdir(os.path.join(root, "ctrs")))
    os.makedirs(os.path.join(root, "ctrs", f"ctr{n}"))
    print(f"ctr{n}")
elif args[0] in ("add", "copy"):
    ctr, src, dest = plain
    target = os.path.join(root, "ctrs", ctr, dest.lstrip("/"))
    shutil.copytree(src, target, symlinks=True, dirs_exist_ok=True)
elif args[0] == "inspect":
    sys.exit(0 if os.environ.get("BUILDAH_STUB_HAS_BASE") == "1" else 1)
'''


def run_build(tmp_path: Path, **env: str) -> tuple[subprocess.CompletedProcess, list[list[str]], Path]:
    stub_bin = tmp_path / "bin"
    stub_bin.mkdir()
    (stub_bin / "buildah").write_text(BUILDAH_STUB)
    (stub_bin / "buildah").chmod(0o755)
    (tmp_path / "ctrs").mkdir()
    full_env = {**os.environ, "PATH": f"{stub_bin}:{os.environ['PATH']}", "BUILDAH_STUB_ROOT": str(tmp_path),
                "SKIP_UI": "1", **env}
    proc = subprocess.run([str(REPO / "build-images.sh")], cwd=REPO, env=full_env, capture_output=True, text=True,
                          timeout=300)
    calls_file = tmp_path / "calls.jsonl"
    calls = [json.loads(line) for line in calls_file.read_text().splitlines()] if calls_file.exists() else []
    return proc, calls, tmp_path / "ctrs"


def shipped_tree(top: Path) -> set[str]:
    return {p.relative_to(top).as_posix() for p in top.rglob("*") if not p.is_dir()}


def expected_imageroot() -> set[str]:
    """imageroot/ as it is in the repository, minus byte-code and egg-info."""
    out = set()
    for p in (REPO / "imageroot").rglob("*"):
        rel = p.relative_to(REPO / "imageroot")
        if p.is_dir() or "__pycache__" in rel.parts or p.suffix == ".pyc" or \
                any(part.endswith(".egg-info") for part in rel.parts):
            continue
        out.add(rel.as_posix())
    return out


def labels_of(config_call: list[str]) -> dict[str, str]:
    return dict(a.removeprefix("--label=").split("=", 1) for a in config_call if a.startswith("--label="))


def test_build_images_makes_the_images_ns8_installs(tmp_path: Path) -> None:
    proc, calls, ctrs = run_build(tmp_path, REPOBASE="registry.test/acme", IMAGETAG="9.9")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    sync, module = "registry.test/acme/imapsync-binary:9.9", "registry.test/acme/imapsync:9.9"
    assert proc.stdout.splitlines()[-2:] == [f"Built: {sync}", f"Built: {module}"]
    bud = [c for c in calls if c[0] == "bud"]
    assert len(bud) == 1 and bud[0][-1] == "."
    assert ["-f", "imapsync-container/Containerfile"] == bud[0][bud[0].index("-f"):bud[0].index("-f") + 2]
    assert bud[0][bud[0].index("-t") + 1] == sync
    assert not any(a.startswith("BASE=") for a in bud[0]), "production builds on the Containerfile's own base"
    config = next(c for c in calls if c[0] == "config")
    assert "--entrypoint=/" in config
    assert labels_of(config) == {
        "org.nethserver.rootfull": "0",
        "org.nethserver.authorizations": "mail@any:mailadm",
        "org.nethserver.min-core": "3.20.1",
        "org.nethserver.images": sync,
    }
    commit = next(c for c in calls if c[0] == "commit")
    assert commit[-1] == module and commit[-2] == config[-1]
    assert [c for c in calls if c[0] == "from"] == [["from", "scratch"]]
    assert not [c for c in calls if c[0] in ("pull", "run")], "nothing pulled, no UI without ui/ (SKIP_UI)"
    # the module image's content: imageroot, plus the extras, nothing else
    image = ctrs / config[-1]
    assert sorted(p.name for p in image.iterdir()) == ["imageroot"]
    shipped = shipped_tree(image / "imageroot")
    extras = {p for p in shipped - expected_imageroot() if p.startswith("pypkg/")}
    assert shipped - expected_imageroot() == extras
    assert "pypkg/crontab.py" in extras, "python-crontab is installed into /imageroot/pypkg"
    assert expected_imageroot() <= shipped
    assert not [p for p in shipped if "__pycache__" in p or p.endswith(".pyc") or ".egg-info/" in p]
    assert not [p for p in shipped if p.startswith("pypkg/bin/")]
    for rel in ("actions/configure-module/80start_services", "bin/reveal-master-secret"):
        assert os.access(image / "imageroot" / rel, os.X_OK), rel
    assert not list((REPO / "imageroot" / "pypkg").glob("crontab*")), "the extras never land in the repository"


def test_build_images_local_base_builds_on_debian_without_a_registry(tmp_path: Path) -> None:
    proc, calls, _ = run_build(tmp_path, LOCAL_BASE="1", BUILDAH_STUB_HAS_BASE="1")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    bud = next(c for c in calls if c[0] == "bud")
    assert "--pull=never" in bud
    args = {bud[i + 1] for i, a in enumerate(bud) if a == "--build-arg"}
    assert args == {"BASE=localhost/ns8-imapsync-debian:bookworm", "ENGINES=native", "CRON=builtin"}
    assert "reusing the base localhost/ns8-imapsync-debian:bookworm" in proc.stdout
    labels = labels_of(next(c for c in calls if c[0] == "config"))
    assert labels["org.nethserver.images"] == "ghcr.io/nethserver/imapsync-binary:latest"


# ---------------------------------------------------------------------------
# static checks of the image definition and the unit
def containerfile() -> str:
    return re.sub(r"\\\n", " ", (REPO / "imapsync-container" / "Containerfile").read_text())


def test_containerfile_copies_only_existing_sources_and_nothing_of_tests() -> None:
    copies = [line.split()[1:] for line in containerfile().splitlines() if line.startswith("COPY ")]
    assert copies
    for *sources, _dest in copies:
        for src in sources:
            assert (REPO / src).exists(), src
            assert not src.startswith("tests"), src
    ignore = (REPO / "imapsync-container" / "containerignore").read_text().split()
    assert {"**/__pycache__", "**/*.egg-info"} <= set(ignore)


def test_containerfile_paths_agree_with_the_unit_the_package_and_the_labels() -> None:
    from ns8_imapsync import container, schedule

    text = containerfile()
    cmd = json.loads(re.search(r"^CMD (.+)$", text, re.M).group(1))
    assert cmd == ["/usr/local/bin/syncctl", "serve"]
    assert "COPY imapsync-container/syncctl /usr/local/bin/syncctl" in text
    assert container.SYNCCTL == schedule.SYNCCTL == "/usr/local/bin/syncctl"
    env = dict(re.findall(r"(\w+)=(\S+)", re.search(r"^ENV (.+)$", text, re.M).group(1)))
    unit = (REPO / "imageroot" / "systemd" / "user" / "imapsync.service").read_text()
    volumes = dict(re.findall(r"--volume=\./(\w+):(/[\w./]+):Z", unit))
    assert volumes == {"imapsync": env["IMAPSYNC_DIR"], "cron": env["CRON_DIR"]}
    assert re.search(r"^ARG BASE=docker\.io/library/alpine:", text, re.M)
    assert 'org.nethserver.imapsync.engines="${ENGINES}"' in text and 'ARG ENGINES="imapsync native"' in text


def test_the_unit_runs_helpers_that_ship_and_the_image_create_module_names() -> None:
    unit = (REPO / "imageroot" / "systemd" / "user" / "imapsync.service").read_text()
    helpers = re.findall(r"^ExecStartPre=runagent (\S+)", unit, re.M)
    assert helpers == ["reveal-master-secret", "expand-cron"]
    for name in helpers:
        assert os.access(REPO / "imageroot" / "bin" / name, os.X_OK), name
    # create-module's 05pullimages names the variable after the image: imapsync-binary -> IMAPSYNC_BINARY_IMAGE
    assert "${IMAPSYNC_BINARY_IMAGE}" in unit
    for key in ("Restart=always", "StartLimitIntervalSec=0", "SuccessExitStatus=143", "--init", "--network=host"):
        assert key in unit, key


def test_every_action_step_and_helper_is_executable_with_a_shebang() -> None:
    steps = [p for d in ("actions", "events", "update-module.d", "bin") for p in (REPO / "imageroot" / d).rglob("*")
             if p.is_file() and not p.name.endswith(".json")]
    assert len(steps) > 20
    for p in steps:
        assert os.access(p, os.X_OK), p
        assert p.read_bytes().startswith(b"#!"), p
    for schema in (REPO / "imageroot").rglob("validate-*.json"):
        json.loads(schema.read_text())


@pytest.mark.parametrize("path", ["imageroot", "imapsync-container"])
def test_nothing_shipped_points_into_tests(path: str) -> None:
    for p in (REPO / path).rglob("*"):
        if p.is_symlink():
            assert (REPO / path) in p.resolve().parents, f"{p} -> {os.readlink(p)}"
        elif p.is_file() and "__pycache__" not in p.parts and p.suffix != ".pyc":
            assert b"tests/localnode" not in p.read_bytes(), p
