"""Scenarios on one mailbox: first copy, unchanged re-run, re-run after 1 % changed.

Engines are interleaved within each repetition (and the order rotates from
one repetition to the next), so a slow minute of this shared machine hits
every engine alike and the ratios of one run stay comparable.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import engines
import mutate
from engines import Mailbox
from fill import Account

FIRST, RERUN, CHANGED = "first", "rerun", "changed"


def _native(box: Mailbox, scenario: str, logs: Path, rep: int) -> dict:
    """The native engine, its state kept across the repetition's three runs."""
    return engines.native(box, box.tmp / f"native-state-{rep}", logs / f"native-{scenario}-{rep}.log")


def _imapsync(box: Mailbox, scenario: str, logs: Path, rep: int) -> dict:
    """imapsync with its defaults."""
    return engines.imapsync(box, logs / f"imapsync-{scenario}-{rep}.log")


def _doveadm(box: Mailbox, scenario: str, logs: Path, rep: int) -> dict:
    """doveadm backup, the fastest peer."""
    return engines.doveadm_backup(box, logs / f"doveadm-{scenario}-{rep}.log")


def _raw(box: Mailbox, scenario: str, logs: Path, rep: int) -> dict:
    """The raw ceiling, first copy only."""
    return engines.raw(box, logs / f"raw-{scenario}-{rep}.log")


Runner = Callable[[Mailbox, str, Path, int], dict]
# engine -> (runner, scenarios it has: the raw ceiling only copies)
ENGINES: dict[str, tuple[Runner, tuple[str, ...]]] = {
    "native": (_native, (FIRST, RERUN, CHANGED)),
    "imapsync": (_imapsync, (FIRST, RERUN, CHANGED)),
    "doveadm": (_doveadm, (FIRST, RERUN, CHANGED)),
    "raw": (_raw, (FIRST,)),
}


def engine_names() -> list[str]:
    """The engines this machine can run (imapsync only when one is on PATH)."""
    return [name for name in ENGINES if name != "imapsync" or engines.imapsync_path()]


def one_engine(box: Mailbox, account: Account, name: str, rep: int, logs: Path, say) -> dict[str, dict]:
    """The engine's scenarios in order, from a wiped local mailbox and a fresh engine state."""
    runner, scenarios = ENGINES[name]
    engines.wipe_local(box)
    shutil.rmtree(box.tmp / f"native-state-{rep}", ignore_errors=True)
    out: dict[str, dict] = {}
    for scenario in scenarios:
        change = mutate.apply(account, seed=rep) if scenario == CHANGED else None
        try:
            out[scenario] = runner(box, scenario, logs, rep)
            if change is not None:
                out[scenario]["change"] = change.summary()
        finally:
            if change is not None:
                mutate.restore(account, change)
        r = out[scenario]
        say(f"  {name:9} {scenario:8} {r['wall_s']:8.2f} s  exit {r.get('exit')}  "
            f"dest {r.get('dest_messages')}  rss {r.get('peak_rss_mb')} MB  busy {r.get('machine_busy_pct')} %"
            + (f"  ERROR {r['error']}" if r.get("error") else ""))
    return out


def run(box: Mailbox, account: Account, reps: int, logs: Path, say,
        only: list[str] | None = None) -> dict[str, dict[str, list[dict]]]:
    """{engine: {scenario: [one measurement per repetition]}} for one corpus; ``only`` limits the
    engines (imapsync's first copy of 100,000 messages alone takes most of an hour here)."""
    names = [n for n in engine_names() if only is None or n in only]
    results: dict[str, dict[str, list[dict]]] = {n: {s: [] for s in ENGINES[n][1]} for n in names}
    for rep in range(reps):
        order = names[rep % len(names):] + names[:rep % len(names)]
        say(f" repetition {rep + 1}/{reps}: {', '.join(order)}")
        for name in order:
            for scenario, measured in one_engine(box, account, name, rep, logs, say).items():
                results[name][scenario].append(measured)
    engines.wipe_local(box)
    return results
