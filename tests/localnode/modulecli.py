"""`add-module IMAGE [NODE]` and `remove-module [--no-preserve] [--force] ID`, as on NS8.

The node's own commands (/usr/local/sbin on a real node): add-module prints
the cluster action's output as a Python dict (Robot suites parse it with
Evaluate), remove-module runs destroy-module and removes the module.
"""

from __future__ import annotations

import argparse
import sys

from localnode import cluster
from localnode.config import load


def image_name(url: str) -> str:
    """ghcr.io/nethserver/imapsync:latest -> imapsync (NS8's get_image_name_from_url)."""
    return url.rsplit("/", 1)[-1].split("@", 1)[0].split(":", 1)[0]


def add_main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="add-module", description="install a module instance")
    parser.add_argument("image", help="image URL, e.g. ghcr.io/nethserver/imapsync:latest")
    parser.add_argument("node", nargs="?", default="1", help="node id (this node only)")
    args = parser.parse_args(argv)
    cfg = load()
    name = image_name(args.image)
    if name not in cluster.IMAGES or args.node != str(cfg.node_id):
        print(f"add-module: {args.image} on node {args.node}: not available on the local node", file=sys.stderr)
        return 1
    mid = cluster.add_module(cfg, name)
    info = cluster.installed(cfg)[mid]
    print({"module_id": mid, "module_uuid": info["module_uuid"], "image_name": name, "image_url": args.image})
    return 0


def remove_main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="remove-module", description="remove a module instance")
    parser.add_argument("--no-preserve", action="store_true", help="delete the module's data too")
    parser.add_argument("--force", action="store_true", help="accepted, as on NS8")
    parser.add_argument("module_id")
    args = parser.parse_args(argv)
    cfg = load()
    try:
        cluster.remove_module(cfg, args.module_id, preserve=not args.no_preserve)
    except KeyError as exc:
        print(f"remove-module: {exc.args[0]}", file=sys.stderr)
        return 1
    return 0

