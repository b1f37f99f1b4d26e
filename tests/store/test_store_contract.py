"""Behaviour every Store engine must have; written against the interface only."""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable, Iterator

import pytest

from idr.model.handle import normalize_key
from idr.model.value import (
    PERM_ADMIN_READ,
    PERM_SECRET,
    HandleRecord,
    HandleValue,
    TtlType,
    ValueReference,
)
from idr.store import Store, StoreError, Write


def rec(handle: str, tag: str = "v1") -> HandleRecord:
    return HandleRecord(handle, (HandleValue(1, "URL", f"https://example.cn/{handle}/{tag}".encode()),))


def put(handle: str, tag: str = "v1") -> Write:
    return Write(normalize_key(handle), rec(handle, tag))


def rich_record(handle: str) -> HandleRecord:
    """Every field of a value away from its default, plus awkward bytes and text."""
    return HandleRecord(
        handle,
        (
            HandleValue(1, "URL", "https://例子.cn/电池".encode()),
            HandleValue(
                2,
                "HS_VLIST",
                b"\x00\x00\x00\x00",
                ttl=-1,
                ttl_type=TtlType.ABSOLUTE,
                timestamp=0xFFFFFFFF,
                permissions=PERM_ADMIN_READ,
                references=(ValueReference("88.118.1/电芯-0001", 7), ValueReference("0.NA/88.118", 300)),
            ),
            HandleValue(3, "", b""),
            HandleValue(4, "HS_SECKEY", bytes(range(256)) * 400, ttl=0, permissions=PERM_SECRET),
            HandleValue(100, "HS_ADMIN", b"\x0f\xff\x00\x00\x00\x0a0.NA/88.100\x00\x00\x01\x2c", 3600),
            HandleValue(-5, "自定义.类型", "中文\x00数据".encode(), timestamp=1_700_000_000, permissions=0),
        ),
    )


# -- get / commit -----------------------------------------------------------------------


def test_empty_store(store: Store) -> None:
    assert store.get("88.100/NONE") is None
    assert store.get_many(["88.100/NONE"]) == {}
    assert store.count() == 0
    assert store.count("88.100") == 0
    assert store.list_handles("88.100") == []
    assert store.prefixes() == []
    assert store.last_seq() == 0
    assert store.log_since(0) == []


@pytest.mark.parametrize("handle", ["88.100/Car-VIN-LFV3A23C1K3000001", "88.118.1/电池包/①-Ä", "0.NA/88.100"])
def test_round_trip_every_value_field(store: Store, handle: str) -> None:
    record = rich_record(handle)
    store.commit("create", "300:0.NA/88.100", [Write(normalize_key(handle), record)])
    got = store.get(normalize_key(handle))
    assert got == record
    assert got is not None and got.handle == handle  # as first written, not the key


def test_replace_keeps_only_new_record(store: Store) -> None:
    store.commit("create", "a", [put("88.100/Pack-1", "old")])
    newer = HandleRecord("88.100/PACK-1", (HandleValue(7, "EMAIL", b"ops@example.cn"),))
    store.commit("modify", "a", [Write("88.100/PACK-1", newer)])
    assert store.get("88.100/PACK-1") == newer
    assert store.count() == 1
    assert store.list_handles("88.100") == ["88.100/PACK-1"]


def test_delete(store: Store) -> None:
    store.commit("create", "a", [put("88.100/a"), put("88.100/b")])
    seq = store.commit("delete", "a", [Write("88.100/A", None)])
    assert store.get("88.100/A") is None
    assert store.get("88.100/B") == rec("88.100/b")
    assert store.count("88.100") == 1
    assert store.list_handles("88.100") == ["88.100/b"]
    # Deleting what is not there is not the engine's business to refuse; it is logged.
    seq2 = store.commit("delete", "a", [Write("88.100/NEVER", None)])
    assert seq2 > seq
    assert store.log_since(seq)[0].writes == (Write("88.100/NEVER", None),)


def test_writes_in_one_commit_apply_in_order(store: Store) -> None:
    store.commit("x", "a", [put("88.100/k", "1"), Write("88.100/K", None), put("88.100/k", "3")])
    assert store.get("88.100/K") == rec("88.100/k", "3")
    store.commit("x", "a", [put("88.100/k", "4"), Write("88.100/K", None)])
    assert store.get("88.100/K") is None


def test_keys_are_case_normalised_ascii_only(store: Store) -> None:
    store.commit("create", "a", [put("88.100/Battery-Pack"), put("88.100/Ä")])
    assert store.get(normalize_key("88.100/battery-PACK")) == rec("88.100/Battery-Pack")
    assert store.get("88.100/BATTERY-PACK") is not None
    assert store.get("88.100/Battery-Pack") is None  # keys are exact; callers normalise
    # No Unicode case folding (RFC 3651 compares ASCII case-insensitively only).
    assert store.get(normalize_key("88.100/ä")) is None
    assert store.get(normalize_key("88.100/Ä")) == rec("88.100/Ä")


def test_get_many(store: Store) -> None:
    handles = [f"88.100/item-{i}" for i in range(1200)]
    store.bulk_load(rec(h) for h in handles)
    keys = [normalize_key(h) for h in handles[::2]] + ["88.100/ABSENT", normalize_key(handles[0])]
    got = store.get_many(keys)
    assert set(got) == {normalize_key(h) for h in handles[::2]}
    for key, record in got.items():
        assert normalize_key(record.handle) == key
        assert record == rec(record.handle)
    assert store.get_many([]) == {}


# -- listing ------------------------------------------------------------------------------


def _page_all(store: Store, prefix: str, page: int) -> list[str]:
    out: list[str] = []
    after: str | None = None
    for _ in range(10_000):  # bounded: a listing that repeats itself must fail, not hang
        chunk = store.list_handles(prefix, after=after, limit=page)
        assert len(chunk) <= page
        if not chunk:
            return out
        assert after is None or normalize_key(chunk[0]) > after, "page repeats or goes back"
        out += chunk
        after = normalize_key(chunk[-1])
    raise AssertionError("listing never ended")


def test_list_handles_pages_by_key_without_misses_or_duplicates(store: Store) -> None:
    rng = random.Random(7)
    mine = [
        f"88.100/{rng.choice(['sn', 'SN', 'Lot', 'lot'])}-{i:05d}-{rng.randrange(10**6)}" for i in range(2500)
    ]
    neighbours = ["88.1000/sn-1", "88.10/sn-1", "88.100.1/sn-1", "88.1001/x", "88.099/x", "0.NA/88.100"]
    batch = [rec(h) for h in mine + neighbours]
    rng.shuffle(batch)
    store.bulk_load(batch[:1000])
    store.bulk_load(batch[1000:])

    listed = _page_all(store, "88.100", 100)
    assert listed == sorted(mine, key=normalize_key)  # exact set, key order, as written
    assert len(set(listed)) == 2500
    assert _page_all(store, "88.1000", 100) == ["88.1000/sn-1"]
    assert _page_all(store, "88.10", 7) == ["88.10/sn-1"]
    assert store.list_handles("88.100", limit=5000) == listed
    assert store.count("88.100") == 2500
    assert store.count("88.1000") == 1
    assert store.count() == 2500 + len(neighbours)


def test_list_handles_after_continues_exactly(store: Store) -> None:
    store.bulk_load(rec(f"88.100/{s}") for s in ["b", "A", "c", "D", "e"])
    assert store.list_handles("88.100") == ["88.100/A", "88.100/b", "88.100/c", "88.100/D", "88.100/e"]
    assert store.list_handles("88.100", after="88.100/B", limit=2) == ["88.100/c", "88.100/D"]
    # ``after`` need not exist: listing resumes at the next key.
    assert store.list_handles("88.100", after="88.100/BB", limit=2) == ["88.100/c", "88.100/D"]
    assert store.list_handles("88.100", after="88.100/E") == []
    assert store.list_handles("88.100", after="88.1000/A") == []
    assert store.list_handles("88.100", limit=0) == []


def test_prefixes(store: Store) -> None:
    store.bulk_load(rec(h) for h in ["88.100/a", "88.100/b", "88.1000/a", "0.NA/88.100", "88.118.1/x"])
    assert store.prefixes() == ["0.NA", "88.100", "88.1000", "88.118.1"]
    store.commit("delete", "a", [Write("88.1000/A", None)])
    assert store.prefixes() == ["0.NA", "88.100", "88.118.1"]


# -- the log ----------------------------------------------------------------------------------


def test_seq_is_monotonic_and_log_holds_exact_writes(store: Store) -> None:
    t0 = time.time()
    expected: list[tuple[int, str, str, tuple[Write, ...]]] = []
    last = store.last_seq()
    for i in range(30):
        writes: tuple[Write, ...] = (Write(normalize_key(f"88.100/r{i}"), rich_record(f"88.100/r{i}")),)
        if i % 3 == 2:
            writes += (Write(normalize_key(f"88.100/r{i - 1}"), None), put(f"88.100/other{i}"))
        seq = store.commit(f"op{i}", f"{i}:0.NA/88.100", writes)
        assert seq > last
        assert store.last_seq() == seq
        last = seq
        expected.append((seq, f"op{i}", f"{i}:0.NA/88.100", writes))

    entries = store.log_since(0)
    assert [(e.seq, e.op, e.actor, e.writes) for e in entries] == expected
    assert all(t0 - 1 <= e.timestamp <= time.time() + 1 for e in entries)
    assert [e.timestamp for e in entries] == sorted(e.timestamp for e in entries)

    assert [e.seq for e in store.log_since(expected[9][0], limit=5)] == [s for s, *_ in expected[10:15]]
    assert store.log_since(last) == []
    assert store.log_since(0, limit=0) == []


def test_empty_commit_is_logged(store: Store) -> None:
    seq = store.commit("noop", "a", [])
    assert store.log_since(0)[0].writes == () and store.last_seq() == seq


def test_truncate_log_keeps_records_newest_entry_and_numbering(store: Store) -> None:
    assert store.first_seq() == 0 and store.truncate_log(100) == 0
    seqs = [store.commit("create", "a", [put(f"88.100/T{i}")]) for i in range(10)]
    assert store.first_seq() == seqs[0]
    assert store.truncate_log(seqs[4], limit=2) == 2  # bounded per call
    assert store.first_seq() == seqs[2]
    assert store.truncate_log(seqs[4]) == 2
    assert store.first_seq() == seqs[4] and [e.seq for e in store.log_since(0)] == seqs[4:]
    assert store.log_since(seqs[1])[0].seq == seqs[4]  # a reader further back sees the gap
    assert store.truncate_log(10**9) == 5  # everything but the newest entry
    assert store.first_seq() == store.last_seq() == seqs[-1]
    assert store.count() == 10 and store.get(normalize_key("88.100/T0")) == rec("88.100/T0")
    assert store.commit("create", "a", [put("88.100/T10")]) == seqs[-1] + 1  # numbering goes on
    assert store.truncate_log(0) == 0 and store.truncate_log(seqs[-1], limit=0) == 0


# -- failures ---------------------------------------------------------------------------------


def _unencodable(handle: str) -> HandleRecord:
    """A record whose values cannot be encoded (index beyond int32): fails mid-transaction."""
    return HandleRecord(handle, (HandleValue(2**40, "URL", b"x"),))


def _snapshot(store: Store) -> tuple[object, ...]:
    return (
        store.last_seq(),
        store.log_since(0),
        store.count(),
        store.list_handles("88.100"),
        store.get_many(["88.100/KEEP", "88.100/NEW", "88.100/BAD"]),
    )


def test_failed_commit_leaves_nothing(store: Store) -> None:
    store.commit("create", "a", [put("88.100/keep")])
    before = _snapshot(store)
    writes = [put("88.100/new"), Write("88.100/KEEP", None), Write("88.100/BAD", _unencodable("88.100/bad"))]
    with pytest.raises(StoreError):
        store.commit("create", "a", writes)
    assert _snapshot(store) == before
    # The store is still usable and the next entry follows on.
    seq = store.commit("create", "a", [put("88.100/new")])
    assert seq > before[0]  # type: ignore[operator]
    assert [e.seq for e in store.log_since(0)][-1] == seq
    assert store.get("88.100/KEEP") == rec("88.100/keep")


def test_failed_bulk_load_leaves_nothing(store: Store) -> None:
    store.commit("create", "a", [put("88.100/keep")])
    before = _snapshot(store)

    def records() -> Iterator[HandleRecord]:
        yield rec("88.100/new")
        yield from (rec(f"88.100/n{i}") for i in range(500))
        raise RuntimeError("importer source broke")

    with pytest.raises(StoreError):
        store.bulk_load(records())
    assert _snapshot(store) == before
    with pytest.raises(StoreError):
        store.bulk_load([rec("88.100/new"), _unencodable("88.100/bad")])
    assert _snapshot(store) == before


def test_closed_store_refuses(store: Store) -> None:
    store.commit("create", "a", [put("88.100/x")])
    store.close()
    with pytest.raises(StoreError):
        store.get("88.100/X")
    with pytest.raises(StoreError):
        store.commit("create", "a", [put("88.100/y")])
    store.close()  # idempotent


# -- bulk load, reopen ------------------------------------------------------------------------


def test_bulk_load(store: Store) -> None:
    store.commit("create", "a", [put("88.100/sn-00005", "old")])
    records = [rec(f"88.100/sn-{i:05d}", "bulk") for i in range(10_000)]
    seq = store.bulk_load(iter(records), op="import", actor="importer")
    assert seq == store.last_seq()
    assert store.count("88.100") == 10_000
    assert store.get("88.100/SN-00005") == records[5]  # replaced
    assert store.get_many([normalize_key(r.handle) for r in records[::997]]) == {
        normalize_key(r.handle): r for r in records[::997]
    }
    (entry,) = store.log_since(seq - 1)
    assert (entry.seq, entry.op, entry.actor) == (seq, "import", "importer")
    assert entry.writes == tuple(Write(normalize_key(r.handle), r) for r in records)


def test_reopen_keeps_everything(store: Store, reopen: Callable[[], Store]) -> None:
    store.commit("create", "a", [Write("88.100/R", rich_record("88.100/r"))])
    store.bulk_load(rec(f"88.100/b{i}") for i in range(50))
    store.commit("delete", "a", [Write("88.100/B7", None)])
    state = (store.last_seq(), store.log_since(0), store.list_handles("88.100"), store.prefixes())
    store.close()
    again = reopen()
    assert (again.last_seq(), again.log_since(0), again.list_handles("88.100"), again.prefixes()) == state
    assert again.get("88.100/R") == rich_record("88.100/r")
    assert again.commit("create", "a", [put("88.100/after")]) > state[0]


# -- concurrency ------------------------------------------------------------------------------


def test_reader_never_sees_part_of_a_transaction(store: Store) -> None:
    """The writer commits pairs; a reader thread must always see both or neither."""
    pairs = 400
    stop = threading.Event()
    failures: list[str] = []
    reads = 0

    def reader() -> None:
        nonlocal reads
        rng = random.Random(1)
        while not stop.is_set():
            n = store.count("88.100")
            if n % 2:
                failures.append(f"odd count {n}")
            i = rng.randrange(pairs)
            got = store.get_many([f"88.100/A{i}", f"88.100/B{i}"])
            if len(got) == 1:
                failures.append(f"pair {i}: only {list(got)}")
            page = store.list_handles("88.100", limit=10_000)
            if len(page) % 2:
                failures.append(f"odd listing {len(page)}")
            reads += 1

    t = threading.Thread(target=reader)
    t.start()
    try:
        for i in range(pairs):
            store.commit("create", "w", [put(f"88.100/a{i}"), put(f"88.100/b{i}")])
            if i % 50 == 49:  # and replace pairs in place, which must also look atomic
                store.commit("modify", "w", [Write(f"88.100/A{i}", None), Write(f"88.100/B{i}", None)])
                store.commit("create", "w", [put(f"88.100/a{i}"), put(f"88.100/b{i}")])
    finally:
        stop.set()
        t.join(10)
    assert not failures, failures[:5]
    assert reads > 10
    assert store.count("88.100") == 2 * pairs


def test_reads_do_not_wait_for_a_long_write(store: Store) -> None:
    """While a bulk load is inside its transaction, reads answer from the last commit."""
    seq = store.commit("create", "a", [put("88.100/existing")])
    inside = threading.Event()
    release = threading.Event()
    result: list[object] = []

    def records() -> Iterator[HandleRecord]:
        yield from (rec(f"88.100/bulk{i}") for i in range(100))
        inside.set()
        release.wait(10)
        yield rec("88.100/bulk-last")

    def load() -> None:
        try:
            result.append(store.bulk_load(records()))
        except BaseException as e:  # reported by the assertion below
            result.append(e)

    t = threading.Thread(target=load)
    t.start()
    try:
        assert inside.wait(10)
        start = time.monotonic()
        assert store.get("88.100/EXISTING") == rec("88.100/existing")
        assert store.get("88.100/BULK1") is None
        assert store.count() == 1
        assert store.last_seq() == seq
        assert time.monotonic() - start < 2  # far below any lock wait
    finally:
        release.set()
        t.join(10)
    assert isinstance(result[0], int)
    assert store.count() == 102
    assert store.get("88.100/BULK-LAST") == rec("88.100/bulk-last")


def test_a_group_commit_is_its_commits_in_order(store: Store) -> None:
    """``commit_many``: one seq per commit, consecutive and in order, each log entry with its
    own writes, and the rows as if the commits had been applied one after the other (a key
    written by two of them holds the later write; one deleted later is gone)."""
    from idr.store.base import Commit

    first = store.commit("create", "a", [put("88.100/old")])
    seqs = store.commit_many(
        [
            Commit("create", "a", (put("88.100/g1"), put("88.100/g2"))),
            Commit("modify", "b", (put("88.100/g1", "v2"), put("88.100/old", "v2"))),
            Commit("delete", "c", (Write("88.100/G2", None), Write("88.100/OLD", None))),
            Commit("create", "d", (put("88.100/g3"),)),
        ]
    )
    assert seqs == [first + 1, first + 2, first + 3, first + 4]
    entries = store.log_since(first)
    assert [(e.seq, e.op, e.actor) for e in entries] == [
        (first + 1, "create", "a"),
        (first + 2, "modify", "b"),
        (first + 3, "delete", "c"),
        (first + 4, "create", "d"),
    ]
    assert [w.key for w in entries[1].writes] == ["88.100/G1", "88.100/OLD"]
    assert entries[1].writes[0].record == rec("88.100/g1", "v2")
    assert [w.record for w in entries[2].writes] == [None, None]
    assert store.get("88.100/G1") == rec("88.100/g1", "v2")
    assert store.get("88.100/G2") is None and store.get("88.100/OLD") is None
    assert store.get("88.100/G3") == rec("88.100/g3")
    assert store.last_seq() == first + 4
    assert store.commit("create", "a", [put("88.100/after")]) == first + 5
