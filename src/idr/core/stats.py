"""Durable counters kept by the one write path: what a node reports to its parent (数据上报).

A write job that registers or deletes an identifier, allocates or files a prefix calls
:func:`count` while it is planned; the counts ride on the job's staged commit and are
committed in the same transaction as the records they count (``NodeService._commit_planned``
adds one record per transaction), so a figure is exact — a job that fails, or whose group
is retried, counts once or not at all — and survives restarts and log compaction (nothing
is re-read from the transaction log).

Each writer process keeps its own record, ``0.STATS/W.<writer>`` (JSON totals since that
writer started), so two processes writing one store (``idr import`` into a running node,
two ``idr serve`` on one PostgreSQL database) never overwrite each other's counts; the
node's figure is the sum of every writer's record (:func:`durable_counts`). The records
replicate with the log, so a promoted mirror goes on from the same figures.
"""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Iterator, Mapping, Sequence
from typing import TYPE_CHECKING

from idr.core.jsonvalues import json_of
from idr.core.writes import PLANNING
from idr.model.handle import normalize_key
from idr.model.value import HandleRecord, HandleValue

if TYPE_CHECKING:
    from idr.store.base import Store

# Reserved prefix no request can reach (like 0.HOMED, 0.PREFIXAPP, 0.FILING).
STATS_PREFIX = "0.STATS"
WRITER_PART = "W."  # 0.STATS/W.<writer>: one writer's counters
COUNTERS_TYPE = "IDR.COUNTERS"

REGISTERED = "registered"
DELETED = "deleted"
PREFIXES_ALLOCATED = "prefixes_allocated"
PREFIXES_FILED = "prefixes_filed"
COUNTER_NAMES = (REGISTERED, DELETED, PREFIXES_ALLOCATED, PREFIXES_FILED)


def count(name: str, n: int = 1) -> None:
    """Inside a write job: add ``n`` to counter ``name``, committed with the job's writes
    (nothing is counted if the job fails or stages nothing)."""
    plan = PLANNING.get()
    if plan is None:
        raise RuntimeError("count() outside a write job")
    if n:
        plan.counts[name] = plan.counts.get(name, 0) + n


def new_writer_id() -> str:
    """A writer's name: start time and randomness (sorted by start, never reused)."""
    return f"{int(time.time()):010d}.{secrets.token_hex(4).upper()}"


def writer_key(writer: str) -> str:
    return normalize_key(f"{STATS_PREFIX}/{WRITER_PART}{writer}")


_WRITER_HEAD = writer_key("")


def is_counter_key(key: str) -> bool:
    return key.startswith(_WRITER_HEAD)


def counters_record(writer: str, totals: Mapping[str, int]) -> HandleRecord:
    data = json.dumps(dict(sorted(totals.items())), separators=(",", ":")).encode()
    return HandleRecord(f"{STATS_PREFIX}/{WRITER_PART}{writer}", (HandleValue(1, COUNTERS_TYPE, data),))


def add_counts(into: dict[str, int], counts: Mapping[str, int]) -> dict[str, int]:
    for k, v in counts.items():
        into[k] = into.get(k, 0) + v
    return into


def sum_counts(parts: Sequence[Mapping[str, int]]) -> dict[str, int]:
    out: dict[str, int] = {}
    for p in parts:
        add_counts(out, p)
    return out


def records_under(store: Store, head: str, page: int = 1000) -> Iterator[tuple[str, HandleRecord]]:
    """(key, record) of every record whose key starts with ``head`` (a key under
    ``STATS_PREFIX``: one table of the statistics), in key order, a page at a time."""
    prefix = normalize_key(STATS_PREFIX)
    after: str | None = head[:-1]  # the key just before the table's first
    while True:
        keys = [normalize_key(h) for h in store.list_handles(prefix, after, page)]
        mine = [k for k in keys if k.startswith(head)]
        found = store.get_many(mine)
        for k in mine:
            rec = found.get(k)
            if rec is not None:
                yield k, rec
        if len(keys) < page or (keys[-1] > head and not keys[-1].startswith(head)):
            return
        after = keys[-1]


def durable_counts(store: Store) -> dict[str, int]:
    """The node's counters: every writer's record summed (a few records per restart)."""
    total = dict.fromkeys(COUNTER_NAMES, 0)
    for _, rec in records_under(store, writer_key("")):
        obj = json_of(rec, COUNTERS_TYPE)
        if obj:
            add_counts(total, {k: int(v) for k, v in obj.items() if isinstance(v, int)})
    return total
