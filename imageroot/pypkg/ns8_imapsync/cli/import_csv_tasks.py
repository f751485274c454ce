"""bin/import-csv-tasks: create sync tasks in bulk from a CSV file on stdin.

Run as `runagent -m imapsync1 import-csv-tasks < users.csv`; the logic is in
`ns8_imapsync.csvimport`. The CSV comes on stdin only, so passwords never
appear in a command line.
"""

from __future__ import annotations

import argparse
import os
import sys

from ns8_imapsync.csvimport import importer
from ns8_imapsync.csvimport.parse import OPTIONAL, REQUIRED

DESCRIPTION = f"""\
Create one sync task per row of a CSV file read on standard input, with the
same rules as create-task: every row is checked (values, local mailbox, remote
login) before any task is written; a row with an error changes nothing unless
--continue-on-error is given.

CSV format:
  header row naming the columns, in any order (comma-separated; a header
  separated by ';' or a tab is detected and used for every row)
  required columns: {','.join(REQUIRED)}
  every value is mandatory except security (empty: no encryption);
  remoteport is a number (143 for tls/STARTTLS, 993 for ssl/IMAPS);
  security is tls, ssl or empty; quote a value holding a comma: "p@ss,word"
  optional columns: {', '.join(OPTIONAL)}
  empty lines are skipped; rows are numbered as lines of the file (header = 1)

Defaults of the fields without a column (or with an empty value):
  cron "" (no schedule; e.g. 5m, 1h), foldersynchronization all
  (all, inbox, exclusion), exclude "" (comma-separated folder regexes),
  delete_remote false, delete_remote_older 0 (days), sieve_enabled false,
  delete_local false; booleans are true/false (or yes/no, 1/0)
  task_id: a random 6-character [a-z0-9] id, unique on this module

A row whose local user, remote user and remote host (case-insensitive) are
already a task is skipped, or with --update applied to that task in place
(same id; a refused login keeps the previous settings and password). A row
repeated in the file is imported once. Created and updated tasks start their
first sync at once (queued behind the module's limits) unless --no-start.
"""

EPILOG = """\
examples:
  runagent -m imapsync1 import-csv-tasks < users.csv
  cat users.csv | runagent -m imapsync1 import-csv-tasks
  runagent -m imapsync1 import-csv-tasks -c < users.csv        # check only
  runagent -m imapsync1 import-csv-tasks -u < users.csv        # update existing tasks
  runagent -m imapsync1 import-csv-tasks --report /tmp/import-report.csv < users.csv
  runagent -m imapsync1 cat ../examples/users.csv             # an example file

The summary line is "N created, N updated, N skipped, N failed"; the exit code
is 1 when any row failed. A relative --report path is relative to the module
state directory (runagent's working directory).
"""


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="import-csv-tasks", description=DESCRIPTION, epilog=EPILOG,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("-c", "--check", action="store_true",
                   help="check every row (remote logins included) and say what would be done; change nothing")
    p.add_argument("-u", "--update", action="store_true",
                   help="apply rows to the tasks already configured for them instead of skipping them")
    p.add_argument("--continue-on-error", action="store_true",
                   help="import the valid rows even if other rows failed")
    p.add_argument("--no-start", action="store_true", help="do not start the first sync of the imported tasks")
    p.add_argument("--report", metavar="FILE", help="write one CSV line per row with its outcome (no passwords)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if sys.stdin is None or sys.stdin.isatty():
        print("Error: give the CSV file on standard input: import-csv-tasks < users.csv (see -h)", file=sys.stderr)
        return 2
    if args.report and not os.access(os.path.dirname(os.path.abspath(args.report)), os.W_OK):
        # found before the import, not after its tasks were written
        print(f"Error: --report {args.report}: its directory does not exist or is not writable", file=sys.stderr)
        return 2
    opts = importer.Options(check=args.check, update=args.update, continue_on_error=args.continue_on_error,
                            start=not args.no_start, report=args.report)
    return importer.run(importer.read_stdin(), opts)


if __name__ == "__main__":
    sys.exit(main())
