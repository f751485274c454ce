"""Medians of repeated measurements, and the ratios that are compared with targets.

Absolute times vary by ±30 % between runs on this shared 2-vCPU machine, so
every figure is a median of repetitions and every ratio is taken between
medians of one run.
"""

from __future__ import annotations

import statistics
from collections.abc import Iterable

NUMERIC = ("wall_s", "client_cpu_s", "peak_rss_mb", "remote_server_cpu_s", "local_server_cpu_s",
           "machine_busy_pct", "dest_messages", "returned_s", "peak_process_rss_mb", "peak_total_rss_mb",
           "inside_s", "fixed_s")


def median_of(runs: Iterable[dict]) -> dict:
    """Median of each numeric field, with the wall time's min and max beside it."""
    runs = list(runs)
    out: dict = {"n": len(runs)}
    for key in NUMERIC:
        values = [r[key] for r in runs if isinstance(r.get(key), int | float)]
        if values:
            out[key] = round(statistics.median(values), 3)
    walls = [r["wall_s"] for r in runs if isinstance(r.get("wall_s"), int | float)]
    if walls:
        out["wall_min_s"], out["wall_max_s"] = min(walls), max(walls)
    out["all_ok"] = all(r.get("exit", 0) == 0 and not r.get("error") for r in runs)
    return out


def medians(tree: dict) -> dict:
    """The same nesting as ``tree``, each list of measurements replaced by its median."""
    out: dict = {}
    for key, value in tree.items():
        if isinstance(value, list):
            out[key] = median_of(value)
        elif isinstance(value, dict):
            out[key] = medians(value)
    return out


def ratio(a: float | None, b: float | None) -> float | None:
    """a / b, or None when either is missing (an engine not on PATH, a failed run)."""
    if a is None or b is None or b == 0:
        return None
    return round(a / b, 3)
