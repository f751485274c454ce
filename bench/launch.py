"""Run one command and write its wall time and rusage as JSON: a small parent on purpose.

    python -S -E bench/launch.py RESULT.json -- ARGV...

Linux keeps a process's peak RSS across fork and exec: a command forked from
the bench (a Python process of some 45 MB) reports at least 45 MB as its
``ru_maxrss``, whatever it really used (doveadm uses about 20). Forked from
this launcher (about 8 MB, nothing imported), the command's own peak shows.
The wall time is taken here too, so the launcher's start-up is not counted.
"""

import json
import os
import sys
import time


def main() -> int:
    """Run ARGV and write its wait4 rusage to RESULT.json (the parent measures only this child)."""
    result, sep, argv = sys.argv[1], sys.argv[2], sys.argv[3:]
    if sep != "--" or not argv:
        sys.exit("usage: launch.py RESULT.json -- ARGV...")
    start = time.perf_counter()
    pid = os.posix_spawnp(argv[0], argv, os.environ)
    _pid, status, usage = os.wait4(pid, 0)
    wall = time.perf_counter() - start
    with open(result, "w") as f:
        json.dump({"returncode": os.waitstatus_to_exitcode(status), "wall_s": wall,
                   "cpu_s": usage.ru_utime + usage.ru_stime, "maxrss_kb": usage.ru_maxrss}, f)
    return 0


if __name__ == "__main__":
    sys.exit(main())
