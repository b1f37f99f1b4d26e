"""The replication half of the Store contract: a mirror holds the primary's log, same seqs."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from idr.model.handle import normalize_key
from idr.model.value import HandleRecord, HandleValue, TtlType, ValueReference
from idr.store import Store, StoreError, Write
from idr.store.base import REPLICA_COPY_OP, LogEntry


def rec(handle: str, tag: str = "v1") -> HandleRecord:
    return HandleRecord(
        handle,
        (
            HandleValue(1, "URL", f"https://example.cn/{tag}".encode(), ttl_type=TtlType.ABSOLUTE),
            HandleValue(2, "HS_VLIST", b"", references=(ValueReference("88.100/电池", 3),)),
        ),
    )


def put(handle: str, tag: str = "v1") -> Write:
    return Write(normalize_key(handle), rec(handle, tag))


def state(s: Store) -> tuple[object, ...]:
    keys = [normalize_key(h) for p in s.prefixes() for h in s.list_handles(p, limit=10**6)]
    return (s.last_seq(), s.log_since(0, limit=10**6), s.prefixes(), s.get_many(keys), s.count())


def fill_primary(s: Store) -> None:
    s.commit("create", "300:0.NA/88.100", [put("88.100/a"), put("88.100/B")])
    s.bulk_load(rec(f"88.118/sn-{i}") for i in range(30))
    s.commit("delete", "300:0.NA/88.100", [Write("88.100/A", None), put("88.100/b", "v2")])
    s.commit("noop", "x", [])


def test_apply_entry_reproduces_the_primary(store: Store, other_store: Store) -> None:
    fill_primary(store)
    for entry in store.log_since(0):
        assert other_store.apply_entry(entry) is True
    assert state(other_store) == state(store)
    # Re-sent entries are harmless.
    for entry in store.log_since(0):
        assert other_store.apply_entry(entry) is False
    assert state(other_store) == state(store)
    # A mirror's own commit (after promotion) continues the sequence.
    assert other_store.commit("create", "x", [put("88.100/c")]) == store.last_seq() + 1


def test_apply_entry_refuses_a_gap_and_bad_entries(store: Store, other_store: Store) -> None:
    fill_primary(store)
    e1, e2, e3, *_ = store.log_since(0)
    assert other_store.apply_entry(e1)
    before = state(other_store)
    with pytest.raises(StoreError):
        other_store.apply_entry(e3)
    assert state(other_store) == before
    bad = LogEntry(
        e2.seq,
        e2.timestamp,
        e2.op,
        e2.actor,
        (put("88.100/x"), Write("88.100/Y", HandleRecord("88.100/y", (HandleValue(2**40, "URL", b""),)))),
    )
    with pytest.raises(StoreError):
        other_store.apply_entry(bad)
    assert state(other_store) == before
    assert other_store.apply_entry(e2)


def test_snapshot_is_one_consistent_point(store: Store) -> None:
    fill_primary(store)
    expected = {
        normalize_key(h): store.get(normalize_key(h)) for h in store.list_handles("88.118", limit=100)
    }
    expected["88.100/B"] = store.get("88.100/B")
    seq, rows = store.snapshot()
    try:
        assert seq == store.last_seq()
        # Writes after the snapshot was taken are not in it.
        store.commit("create", "x", [put("88.100/late"), Write("88.118/SN-1", None)])
        got = dict(rows)
    finally:
        rows.close()  # type: ignore[attr-defined]
    assert got == expected


def test_replace_all_installs_a_snapshot(store: Store, other_store: Store) -> None:
    fill_primary(store)
    other_store.commit("create", "stale", [put("88.999/stale"), put("88.100/a", "stale")])
    seq, rows = store.snapshot()
    other_store.replace_all(rows, seq)

    assert other_store.last_seq() == seq
    (marker,) = other_store.log_since(0)
    assert (marker.seq, marker.op, marker.writes) == (seq, REPLICA_COPY_OP, ())
    assert state(other_store)[2:] == state(store)[2:]
    assert other_store.get("88.999/STALE") is None

    store.commit("modify", "x", [put("88.100/b", "v3")])
    (nxt,) = store.log_since(seq)
    assert other_store.apply_entry(nxt)
    assert other_store.get("88.100/B") == rec("88.100/b", "v3")
    assert other_store.last_seq() == store.last_seq()


def test_failed_replace_all_leaves_the_old_contents(store: Store, other_store: Store) -> None:
    fill_primary(other_store)
    before = state(other_store)

    def broken() -> Iterator[tuple[str, HandleRecord]]:
        yield "88.100/NEW", rec("88.100/new")
        raise RuntimeError("primary went away mid-snapshot")

    with pytest.raises(StoreError):
        other_store.replace_all(broken(), 99)
    assert state(other_store) == before
