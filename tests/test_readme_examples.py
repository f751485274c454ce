"""Every README "Module usage" example runs as written and returns the documented shape.

The examples are written for `make up`'s node, so this test starts a fresh
node on the default port base (in a temporary state dir): stop a `make up`
node before running the suite. Each ```sh block runs in bash, in order; the
```json block after it is the documented output: same keys at every level,
same value types (a documented `null` may be anything), and the same `error`/`field`/`parameter`/`status` values.
"""

from __future__ import annotations

import json
import os
import re
import subprocess

import pytest
from localnode import node
from localnode.config import DEFAULT_PORT_BASE, LOCALNODE_SRC, REPO_ROOT, NodeConfig

EXACT_KEYS = {"error", "field", "parameter", "status"}


def examples() -> list[tuple[str, object | None]]:
    text = (REPO_ROOT / "README.md").read_text()
    region = text.split("<!-- examples:begin -->", 1)[1].split("<!-- examples:end -->", 1)[0]
    blocks = re.findall(r"```(sh|json)\n(.*?)```", region, re.S)
    pairs: list[tuple[str, object | None]] = []
    for kind, body in blocks:
        if kind == "sh":
            pairs.append((body, None))
        else:
            assert pairs and pairs[-1][1] is None, "a json block must follow a sh block"
            pairs[-1] = (pairs[-1][0], json.loads(body))
    return pairs


def same_shape(actual: object, documented: object, where: str = "$") -> None:
    if isinstance(documented, dict):
        assert isinstance(actual, dict), f"{where}: expected an object, got {actual!r}"
        assert set(actual) == set(documented), f"{where}: keys {sorted(actual)} != {sorted(documented)}"
        for k, v in documented.items():
            if k in EXACT_KEYS:
                assert actual[k] == v, f"{where}.{k}: {actual[k]!r} != {v!r}"
            same_shape(actual[k], v, f"{where}.{k}")
    elif isinstance(documented, list):
        assert isinstance(actual, list), f"{where}: expected a list, got {actual!r}"
        if documented and actual:
            same_shape(actual[0], documented[0], f"{where}[0]")
    elif documented is not None:  # a documented null means "may be null"
        assert type(actual) is type(documented), f"{where}: {actual!r} is not like {documented!r}"


def last_json(stdout: str) -> object:
    for line in reversed(stdout.splitlines()):
        try:
            return json.loads(line)
        except json.JSONDecodeError:
            continue
    raise AssertionError(f"no JSON in output: {stdout!r}")


@pytest.fixture(scope="module")
def default_node():
    with node.throwaway(DEFAULT_PORT_BASE, "localnode-readme-") as cfg:
        yield cfg


def test_readme_examples_run_as_written(default_node: NodeConfig) -> None:
    pairs = examples()
    assert len(pairs) >= 10
    env = dict(os.environ, LOCALNODE_DIR=str(default_node.state_dir))
    env["PATH"] = f"{LOCALNODE_SRC / 'bin'}:{env['PATH']}"
    env.pop("PYTHONPATH", None)
    for script, documented in pairs:
        proc = subprocess.run(["bash", "-e", "-o", "pipefail", "-c", script], cwd=REPO_ROOT, env=env,
                              capture_output=True, text=True, timeout=120)
        assert proc.returncode == 0, f"{script}\nfailed: {proc.stderr}"
        if documented is not None:
            same_shape(last_json(proc.stdout), documented, script.strip().splitlines()[0][:60])
