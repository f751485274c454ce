"""The package's two import rules (DEVELOPERS.md):

- host-side modules (everything outside the container-only subpackages) import
  with only the standard library, `agent`, redis, jsonschema, requests and the
  pure-Python extras of requirements-pypkg.txt: proved by importing each one in
  `.venv-host`, which has nothing else;
- only `ns8_imapsync.ns8` imports NS8's `agent` library.
"""

from __future__ import annotations

import ast
import subprocess
from pathlib import Path

from localnode.cluster import AGENT_PYPKG, HOST_VENV

PKG_ROOT = Path(__file__).resolve().parents[1] / "imageroot" / "pypkg"
PKG = PKG_ROOT / "ns8_imapsync"
CONTAINER_ONLY = ("imap", "sync", "bulk")


def module_name(path: Path) -> str:
    rel = path.relative_to(PKG_ROOT).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def host_modules() -> list[str]:
    mods = []
    for path in sorted(PKG.rglob("*.py")):
        rel = path.relative_to(PKG)
        if rel.parts[0] in CONTAINER_ONLY or (rel.parts[0] == "cli" and rel.stem == "syncctl"):
            continue
        mods.append(module_name(path))
    return mods


def test_host_modules_import_in_the_agent_environment() -> None:
    mods = host_modules()
    assert "ns8_imapsync.ns8" in mods and "ns8_imapsync.actions.configuration" in mods
    code = "import importlib, sys\nfor m in sys.argv[1:]:\n    importlib.import_module(m)\nprint('ok')\n"
    proc = subprocess.run(
        [str(HOST_VENV / "bin" / "python"), "-I", "-c",
         f"import sys; sys.path[:0] = [{str(PKG_ROOT)!r}, {str(AGENT_PYPKG)!r}]\n" + code, *mods],
        capture_output=True, text=True,
    )
    assert proc.returncode == 0, proc.stderr
    # and the host venv really lacks the container-side dependencies
    proc = subprocess.run([str(HOST_VENV / "bin" / "python"), "-I", "-c", "import imapclient"],
                          capture_output=True, text=True)
    assert proc.returncode != 0


def test_only_ns8_module_imports_agent() -> None:
    offenders = []
    for path in PKG.rglob("*.py"):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            if any(n == "agent" or n.startswith("agent.") for n in names):
                offenders.append(module_name(path))
    assert sorted(set(offenders)) == ["ns8_imapsync.ns8"]


def test_action_steps_are_thin_entry_points() -> None:
    """Logic lives in the package; a step or helper is a few lines that call into it."""
    root = PKG_ROOT.parent
    for path in list((root / "actions").rglob("*")) + list((root / "bin").iterdir()) + list((root / "events").rglob("*")):
        if path.is_file() and not path.name.endswith(".json"):
            lines = [ln for ln in path.read_text().splitlines() if ln.strip() and not ln.startswith("#")]
            assert len(lines) <= 12, f"{path} has logic: move it into ns8_imapsync"
