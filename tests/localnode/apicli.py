"""`api-cli`, as on an NS8 node: cluster credentials, redis endpoint, no role check.

Same syntax, output and exit codes as the real tool (spec section 4):
`api-cli run AGENT/ACTION [--data JSON|-] [--raw] [--nowait] [--verbose]`,
`-a/--agent AGENT` alternative syntax, `--data` defaulting to `null`, the
output printed with `json.dump` and the task's exit code as the process's.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

from localnode import cluster, redisd
from localnode.config import load


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="api-cli")
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run an action and wait for its result")
    run.add_argument("action", help="AGENT/ACTION, or ACTION with --agent")
    run.add_argument("-a", "--agent", default=None)
    run.add_argument("-d", "--data", default="null", help="input JSON; - reads standard input")
    run.add_argument("-r", "--raw", action="store_true", help="print the raw output")
    run.add_argument("-n", "--nowait", action="store_true", help="print the task path and exit")
    run.add_argument("-v", "--verbose", action="store_true", help="print the task error too")
    la = sub.add_parser("list-actions", help="list the actions of an agent")
    la.add_argument("agent", nargs="?", default="cluster")
    args = parser.parse_args(argv)

    cfg = load()
    sys.path.insert(0, str(cluster.AGENT_PYPKG))
    user, pw = redisd.cluster_credentials(cfg)
    os.environ.update({"REDIS_ADDRESS": cfg.redis_address, "REDIS_USER": user, "REDIS_PASSWORD": pw})
    from agent import tasks

    if args.command == "list-actions":
        agent_id, action, data = args.agent, "list-actions", None
    else:
        if args.agent:
            agent_id, action = args.agent, args.action
        else:
            if "/" not in args.action:
                parser.error("AGENT/ACTION expected, e.g. module/imapsync1/list-tasks")
            agent_id, action = args.action.rsplit("/", 1)
        raw = sys.stdin.read() if args.data == "-" else args.data
        try:
            data = json.loads(raw)
        except json.JSONDecodeError as exc:
            print(f"JSONDecodeError: {exc}", file=sys.stderr)
            return 1
    extra = {"title": f"{agent_id}/{action}", "description": "api-cli endpoint redis://cluster-leader",
             "isNotificationHidden": False}
    try:
        if args.command == "run" and args.nowait:
            print(tasks.run_nowait(agent_id, action, data, endpoint="redis://cluster-leader", extra=extra))
            return 0
        result = tasks.run(agent_id, action, data, endpoint="redis://cluster-leader", extra=extra)
    except Exception as exc:  # transport errors, as the real tool prints them
        print(f"{type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    if args.command == "run" and args.raw:
        print(str(result["output"]))
    else:
        json.dump(result["output"], sys.stdout)
        print()
    if result["exit_code"] != 0 or (args.command == "run" and args.verbose):
        print(result["error"], file=sys.stderr, end="")
    return result["exit_code"] & 0xFF


if __name__ == "__main__":
    sys.exit(main())
