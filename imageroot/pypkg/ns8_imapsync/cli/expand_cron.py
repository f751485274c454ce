"""bin/expand-cron: rebuild cron/*.cron from the task files (service start).

Run at every service start so a changed MAIL_HOST or a restored backup
reaches every schedule, and a cron file without a task disappears.
"""

from __future__ import annotations

import sys

from ns8_imapsync import ns8, schedule
from ns8_imapsync.statedir import StateDir


def main() -> int:
    scheduled = schedule.expand(StateDir(), ns8.env_get("MAIL_HOST") or "")
    ns8.log(f"expand-cron: {len(scheduled)} scheduled task(s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
