"""The cyclic garbage collector's pace in a server process (``idr serve``).

Python collects its youngest generation every 700 net container allocations. A node writing
for 64 HTTPS clients holds thousands of young objects at any instant (each request in flight:
its aiohttp request, headers, task, coroutine frames, the write job), so nearly every young
collection promotes them, and the older generations — a full collection every few seconds,
walking everything not frozen since the start (records cached since, sessions, tables) — are
paid for objects that reference counting frees a moment later anyway. Measured on an
``idr serve`` SQLite node at 64 writers (bench/write_throughput.py, 2026-12-02): the collector
took ~0.9 s of a 7 s run, ~65 µs of the 0.33–0.5 ms of CPU per write, five full collections
of ~85 ms each; with the youngest generation collected every 20,000 allocations, 0.12 s (eight
young collections of ~11 ms, one of the middle generation, no full one). Cyclic garbage is
still collected, in rarer and bigger passes. Only server processes change the pace: the
library and the tests keep Python's defaults.
"""

from __future__ import annotations

import gc

SERVER_THRESHOLDS = (20_000, 10, 10)


def pace_for_server() -> None:
    """Set this process's collector to the server pace (``idr serve`` calls it at start)."""
    gc.set_threshold(*SERVER_THRESHOLDS)


def collector_metrics() -> dict[str, float]:
    """Gauges for ``/metrics``: this process's collections per generation and the youngest
    generation's threshold (what it runs at: 20,000 under ``idr serve``)."""
    out = {f"idr_gc_collections_gen{i}": float(s["collections"]) for i, s in enumerate(gc.get_stats())}
    out["idr_gc_threshold_gen0"] = float(gc.get_threshold()[0])
    return out


__all__ = ["SERVER_THRESHOLDS", "collector_metrics", "pace_for_server"]
