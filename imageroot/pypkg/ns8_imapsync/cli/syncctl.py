"""syncctl: the sync container's entry point (see the README).

`syncctl {start|stop|status|validation|list-informations} <localuser>_<task_id>`.
"""

from __future__ import annotations

import argparse
import os
import sys

from ns8_imapsync import __version__


def state_dir() -> str:
    """Where the task files are mounted (the image sets IMAPSYNC_DIR)."""
    return os.environ.get("IMAPSYNC_DIR", "/etc/imapsync")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="syncctl", description="Run and inspect mailbox sync tasks")
    parser.add_argument("--version", action="version", version=f"syncctl {__version__}")
    sub = parser.add_subparsers(dest="command")
    sub.add_parser("info", help="print the container's task directory and mail server")
    args = parser.parse_args(argv)
    if args.command == "info":
        print(f"tasks: {state_dir()}")
        print(f"mail server: {os.environ.get('MAIL_HOST', '')}:{os.environ.get('MAIL_PORT', '143')}")
        return 0
    parser.print_help(sys.stderr)
    return 2
