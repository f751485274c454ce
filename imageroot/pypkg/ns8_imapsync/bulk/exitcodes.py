"""Exit codes shared by `imapsync-bulk-migrator` and `directadmin-indexer`.

Distinct codes let a migration script tell "fix your config" from "the server
is down" from "the data does not match" without parsing output.
"""

OK = 0
ENVIRONMENT = 2  # bad flags, unreadable or invalid config, not enough disk, wrong Python
CONNECTIVITY = 3  # an IMAP server or the DirectAdmin panel could not be reached or refused us
AUDIT_FAILED = 4  # the exported files do not match the source
VALIDATION_MISMATCH = 5  # the target misses messages of the export, or has extra ones
INTERRUPTED = 130  # Ctrl-C
