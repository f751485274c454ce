r"""The native sync engine: copies folders and messages itself, over IMAP, with IMAPClient.

It gives the task options the same meaning as the imapsync engine, so a task can
switch engine without copying anything twice.  The rules, in one place:

Identity
    Per folder pair (host1 folder F -> host2 folder F'), a message is identified by
    imapsync's default header signature (Message-Id + Received lines, see
    ``imap.identity``).  A message with neither header -- imapsync would skip it --
    is copied and identified by ``sha256:`` of its content, line endings
    normalised to CRLF (Dovecot stores LF and serves CRLF, so bare LFs would
    otherwise change the hash).
Duplicates
    Matching is a multiset: n host1 messages with one key need n host2 messages
    with that key.  Exact duplicates inside a folder are therefore all copied
    (imapsync copies only the first); host2 ends up with what host1 has.  A
    message already on host2 (copied by imapsync or present before) is claimed,
    not copied again.
Flags
    A copy gets host1's flags (minus ``\Recent``) and INTERNALDATE.  On later
    runs only *changes made on host1 since the last sync* reach host2: a flag newly
    set on host1 is added, a flag newly cleared on host1 is removed, except
    ``\Seen`` (never removed) and ``\Deleted`` (never propagated after the copy).
    So whatever the local user does to a message (reads it, marks it unread,
    unflags it) is never reverted by a later run (NethServer/dev#8107).  When the
    engine has no memory of a message (first run after imapsync, lost state), it
    changes no flag and takes host1's current flags as the baseline.
Inbox mode
    Only the host1 INBOX, only messages without ``\Seen``.  Each is marked
    ``\Seen`` on host1 once it is on host2 (copied, or found there), and
    remembered: it is never copied again, even if the local copy is deleted.  No
    flag sync in this mode (the message was "delivered").  A ``\Deleted`` flag is
    not copied into the local INBOX.
Sieve (inbox mode)
    After each batch of APPENDs to INBOX: ``UID FILTER SIEVE DELIVERY UID <set>``
    (a bare set would mean sequence numbers).  Dovecot's imap_filter_sieve runs the
    user's active script; a ``fileinto``/``discard`` cancels the implicit keep and
    Dovecot marks the INBOX original ``\Deleted`` (the filed copy is in the target
    folder).  We then UID EXPUNGE exactly those originals, so the message exists
    once, where the script filed it.  A script that keeps the message leaves it in
    INBOX.  Messages found already on host2 (not copied by this engine) are not
    filtered again.
delete_remote[_older]
    The rule both engines share (``deletion``): a host1 message is deleted only
    while a copy with its identity is found on host2 right now -- read from host2
    just before, not ``\Deleted`` -- in the mapped folder (the UID where this
    engine put it is checked first), or with Sieve in any local folder; with
    delete_remote_older N, only when its INTERNALDATE is before today-N days.  A
    message the script discarded, or whose copy the user deleted, stays on host1
    and the log says so.  Combined with delete_local it is refused (imapsync
    refuses --delete1 with --delete2 too): together they would erase both sides.
delete_local
    host2 messages that stand for no host1 message of the mapped folders are
    expunged, and host2 folders that no host1 folder maps to are deleted, after all
    folders were synced without error -- unless the brake trips: a host1 folder
    with 0 messages while host2 has some, or more than ``delete_local_max_share`` of
    a host2 folder going (a whole non-empty folder counts as 100 %).  Then nothing
    at all is deleted and the run ends with ``delete_local_brake``.  INBOX,
    special-use folders, folders with children and the Shared/Public namespaces
    are never deleted.  Ignored in inbox mode.

What a run answers for
    Each folder's tally (``FolderTally``): the host1 messages of the folder (in
    inbox mode: the unseen and the already handled ones), and how many of them
    the acknowledged state places on host2.  A run with fewer found than listed
    is not a success.  A message the server lists but does not deliver (a UID
    missing from a FETCH reply while UID SEARCH still shows it) is an error, and
    its folder is not recorded as synced; a listing with fewer entries than the
    folder has disables every deletion of that folder for the run.

Crash safety and cheap re-runs: see ``syncstate``; a flag change enters the state
only once host2 acknowledged its STORE.  The copy itself (``transfer``): large
messages are read in partial FETCHes into an unlinked temporary file, smaller ones
in batches, each bounded by the size the server announced; a local server without
UIDPLUS works too (the new UID is found back by identity).  The destination
folder is SELECTed before APPENDs (Dovecot spends twice the CPU otherwise).
"""

from __future__ import annotations

from .run import NativeEngine

__all__ = ["NativeEngine"]
