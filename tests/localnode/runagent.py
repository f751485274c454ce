"""`runagent [-m MODULE_ID] [-c] [COMMAND [ARGS...]]`, as on an NS8 node.

Loads the node agent.env, the module's state/agent.env and state/environment,
sets AGENT_INSTALL_DIR/AGENT_STATE_DIR/AGENT_ID, changes to the state dir
(unless -c) and execs COMMAND, so its stdout, stderr and exit code are its own.
"""

from __future__ import annotations

import argparse
import os
import pwd
import shutil
import sys
from pathlib import Path

from localnode import cluster
from localnode.config import NodeConfig, load
from localnode.runner import read_envfile


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="runagent")
    parser.add_argument("-m", "--module-id", default=None)
    parser.add_argument("-c", "--current-dir", action="store_true", help="do not change to the state dir")
    parser.add_argument("-l", "--list-modules", action="store_true", help="list the agents of this node")
    parser.add_argument("command", nargs=argparse.REMAINDER)
    args = parser.parse_args(argv)
    cfg = load()
    if args.list_modules:
        print("cluster")
        for mid in cluster.installed(cfg):
            print(mid)
        return 0
    if args.module_id is None:
        args.module_id = own_module(cfg)
    if args.module_id == "cluster":
        env = cluster.cluster_env(cfg)
    else:
        if args.module_id not in cluster.installed(cfg):
            print(f"runagent: module {args.module_id} not found on this node", file=sys.stderr)
            return 2
        env = cluster.module_env(cfg, args.module_id)
    state = env["AGENT_STATE_DIR"]
    env.update(read_envfile(Path(state) / "environment"))
    env["AGENT_ID"] = env.get("REDIS_USER", env["AGENT_ID"])
    env.pop("AGENT_COMFD", None)
    command = args.command
    if not command:
        if not sys.stdin.isatty():
            print("runagent: no command given and no terminal", file=sys.stderr)
            return 2
        command = ["bash", "-l"]
    exe = shutil.which(command[0], path=env["PATH"]) if "/" not in command[0] else command[0]
    if exe is None:
        print(f"runagent: {command[0]}: command not found", file=sys.stderr)
        return 127
    if not args.current_dir:
        os.chdir(state)
    if args.module_id in cfg.unix_users and os.geteuid() == 0:
        become(args.module_id)  # as NS8's runagent re-executes itself with runuser
    os.execve(exe, command, env)
    return 0  # not reached


def own_module(cfg: NodeConfig) -> str:
    """As the module's own Unix user (its units, its shell), runagent serves that module."""
    home = Path(os.environ.get("HOME", "/")).resolve()
    for mid in cluster.installed(cfg):
        if cfg.home_dir(mid).resolve() == home:
            return mid
    return "cluster"


def become(user: str) -> None:
    pw = pwd.getpwnam(user)
    os.setgroups([])
    os.setgid(pw.pw_gid)
    os.setuid(pw.pw_uid)


if __name__ == "__main__":
    sys.exit(main())
