"""`python -m localnode {up|down|status|info}` (the Makefile's `make up` / `make down`)."""

from __future__ import annotations

import argparse
import json
import sys

from localnode import adminapi, node
from localnode.config import load


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="localnode", description="The ns8-imapsync local NS8 node")
    parser.add_argument("--state-dir", default=None, help="default: $LOCALNODE_DIR or .localnode/")
    parser.add_argument("verb", choices=["up", "down", "status", "info"])
    parser.add_argument("--no-imapsync", action="store_true",
                        help="up: leave imapsync uninstalled (a test installs it with add-module)")
    args = parser.parse_args(argv)
    cfg = load(args.state_dir)
    if args.verb == "up":
        node.up(cfg, with_imapsync=not args.no_imapsync)
        print(f"local node up: state in {cfg.state_dir}, endpoints in {cfg.node_json}")
        print("  PATH=$PWD/tests/localnode/bin:$PATH api-cli run module/imapsync1/get-configuration")
        print(f"  admin UI: {adminapi.url(cfg)} (user {adminapi.ADMIN_USER}, password {adminapi.ADMIN_PASSWORD})")
        return 0
    if args.verb == "down":
        node.down(cfg)
        print("local node down")
        return 0
    if args.verb == "status":
        st = node.status(cfg)
        for k, v in st.items():
            print(f"{k:8} {'running' if v else 'stopped'}")
        return 0 if all(st.values()) else 3
    json.dump(cfg.to_json(), sys.stdout, indent=2)
    print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
