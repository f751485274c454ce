"""ns8-imapsync: migrate mailboxes from remote IMAP servers into an NS8 mail module.

Host side (actions, bin/ helpers) may import only the standard library,
`agent` (through `ns8_imapsync.ns8` alone), redis, jsonschema, requests and
the pure-Python extras of requirements-pypkg.txt. Container side (the sync
engines, the bulk migrator) lives in the `imap`, `sync` and `bulk`
subpackages and may use the package's full dependencies.
"""

__version__ = "0.1.0"
