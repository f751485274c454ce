"""The start queue's dispatcher: turns queued starts into runs, at most the caps.

`syncctl start --detach` (start-task, start-all-tasks, create-task, cron)
only writes a queue entry (`runstate.enqueue`) and makes sure one dispatcher
runs.  A run is a process of its own, so starting a thousand tasks must not
mean a thousand processes waiting for a slot: the dispatcher starts a run
only when the node and the run's remote host have a free slot, oldest entry
first, skipping (not waiting behind) entries whose host is full.  The run
takes its entry out of the queue under its task lock; an entry removed
meanwhile (stopped while queued) makes the run give up.

One dispatcher at a time (a lock in the queue directory); it exits when the
queue is empty, and checks once more after releasing its lock so that an
entry added while it was leaving is never stranded.  The slots themselves
are the runs' own lock files (`runctl.Slots`), so a run started in the
foreground, outside the queue, is counted too.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

from ns8_imapsync import layout, runstate
from ns8_imapsync.runstate import QueueEntry
from ns8_imapsync.statedir import StateDir
from ns8_imapsync.sync.runctl import Caps, Slots, host_slot_prefix, mailbox_slot_prefix

POLL = 0.5  # seconds between looks at the queue and the slots

Spawn = Callable[[QueueEntry], subprocess.Popen]


def _child_env() -> dict[str, str]:
    """Our environment without cron's ``SYNC_START=queue``: it asks *this* start to
    be queued, and a run inheriting it would queue itself again instead of running."""
    return {k: v for k, v in os.environ.items() if k != "SYNC_START"}


def spawn_run(entry: QueueEntry) -> subprocess.Popen:
    """A run of the entry's task, detached from the dispatcher (it outlives it)."""
    return subprocess.Popen(
        [sys.executable, "-m", "ns8_imapsync.cli.syncctl", "start", entry.name, "--trigger", entry.trigger,
         "--from-queue", str(entry.queued_at)],
        start_new_session=True, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        env=_child_env(),
    )


def ensure_dispatcher(state: StateDir) -> None:
    """Start a dispatcher in the background unless one is running."""
    if runstate.lock_held(layout.queue_dir(state.tasks_dir) / layout.DISPATCHER_LOCK):
        return
    subprocess.Popen([sys.executable, "-m", "ns8_imapsync.cli.syncctl", "dispatch"], start_new_session=True,
                     stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                     env=_child_env())


@dataclass
class Starting:
    """A run the dispatcher started that has not taken its slots yet."""

    proc: subprocess.Popen
    entry: QueueEntry


class Dispatcher:
    def __init__(self, state: StateDir, spawn: Spawn = spawn_run, poll: float = POLL) -> None:
        self.state = state
        self.spawn = spawn
        self.poll = poll
        caps = Caps.from_env()
        self.node_cap, self.host_cap = caps.node, caps.per_host
        self.slots = Slots(state.tasks_dir)
        self.starting: list[Starting] = []
        self.started = 0

    def run(self) -> int:
        """Dispatch until the queue is empty; returns how many runs were started."""
        lock_path = layout.queue_dir(self.state.tasks_dir) / layout.DISPATCHER_LOCK
        layout.queue_dir(self.state.tasks_dir).mkdir(mode=0o700, parents=True, exist_ok=True)
        while True:
            fd = runstate.acquire(lock_path, patience=0)
            if fd is None:
                return self.started  # another dispatcher has the queue
            try:
                while runstate.queued(self.state.tasks_dir) or self.starting:
                    self.tick()
                    time.sleep(self.poll)
            finally:
                os.close(fd)
            if not runstate.queued(self.state.tasks_dir):
                return self.started

    def _still_starting(self) -> None:
        """Forget runs that took their slots (or ended, or gave up).

        A run that exited leaving its entry queued, while no other run holds
        the task, could not take it (task deleted, broken files): the entry is
        dropped instead of being retried forever."""
        keep = []
        for s in self.starting:
            if s.proc.poll() is not None:
                tf = runstate.TaskFiles(self.state.tasks_dir, s.entry.name)
                if runstate.is_queued(self.state.tasks_dir, s.entry.name) and not runstate.lock_held(tf.lock):
                    runstate.dequeue(self.state.tasks_dir, s.entry.name)
                continue
            st = runstate.read_status(runstate.TaskFiles(self.state.tasks_dir, s.entry.name))
            if st.state == "running":
                continue
            keep.append(s)
        self.starting = keep

    def tick(self) -> None:
        """Start what the free slots allow, oldest entry first."""
        self._still_starting()
        free = self.node_cap - self.slots.busy("node", self.node_cap) - len(self.starting)
        if free <= 0:
            return
        host_used: Counter[str] = Counter(s.entry.host for s in self.starting)
        host_busy: dict[str, int] = {}
        running = {s.entry.name for s in self.starting}
        mailboxes = {s.entry.local_user for s in self.starting}
        for entry in runstate.queued(self.state.tasks_dir):
            if free <= 0:
                break
            if entry.name in running:
                continue
            host = entry.host.lower()
            if host not in host_busy:
                host_busy[host] = self.slots.busy(host_slot_prefix(host), self.host_cap)
            if host_busy[host] + host_used[host] >= self.host_cap:
                continue  # this host is full: later entries for other hosts go first
            if entry.local_user in mailboxes or self.slots.busy(mailbox_slot_prefix(entry.local_user), 1):
                continue  # a run writes into this local mailbox: one at a time
            if runstate.lock_held(runstate.TaskFiles(self.state.tasks_dir, entry.name).lock):
                continue  # a run of this task is going: the entry waits for it to end
            self.starting.append(Starting(self.spawn(entry), entry))
            mailboxes.add(entry.local_user)
            host_used[host] += 1
            free -= 1
            self.started += 1
