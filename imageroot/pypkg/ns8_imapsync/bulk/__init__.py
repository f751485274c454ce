"""The bulk migrator: export, audit, import, validate and test many mailboxes
through local files, plus the DirectAdmin indexer and provisioning.

A standalone command-line tool (`imapsync-bulk-migrator`, `directadmin-indexer`),
installed with pip from this repository and present in the sync image. It shares
the IMAP layer (`ns8_imapsync.imap`) with the native sync engine.
"""
