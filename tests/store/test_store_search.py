"""Reverse lookup, the store half: what is indexed, how patterns match, and that every write
path (commit, bulk load, replicated entry, re-copy, reopen) keeps the index equal to the
records — on both engines."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import pytest

from idr.model.handle import normalize_key
from idr.model.value import PERM_ADMIN_READ, PERM_SECRET, HandleRecord, HandleValue
from idr.store import Store, StoreError, Write
from idr.store.base import Commit
from idr.store.search import MAX_DATA, SearchError, make_terms


def rec(handle: str, *values: tuple[str, str]) -> HandleRecord:
    return HandleRecord(handle, tuple(HandleValue(i + 1, t, d.encode()) for i, (t, d) in enumerate(values)))


def put(handle: str, *values: tuple[str, str]) -> Write:
    return Write(normalize_key(handle), rec(handle, *values))


def find(store: Store, *pairs: tuple[str, str], limit: int = 1000, offset: int = 0) -> list[str]:
    return store.search(make_terms(pairs), limit, offset)


def expected(store: Store, pairs: Sequence[tuple[str, str]]) -> list[str]:
    """The same search done the slow way: every record decoded and matched in Python."""
    import fnmatch

    out = []
    for prefix in store.prefixes():
        if prefix.startswith("0.") and prefix != "0.NA":
            continue
        for h in store.list_handles(prefix, limit=10**6):
            r = store.get(normalize_key(h))
            assert r is not None

            def holds(t: str, pat: str, r: HandleRecord = r) -> bool:
                regex = fnmatch.translate(pat.replace("[", "[[]").replace("?", "[?]"))
                return any(
                    v.type.upper() == t.upper()
                    and v.public_read
                    and fnmatch.re.fullmatch(regex, v.data.decode("utf-8", "replace")) is not None  # type: ignore[attr-defined]
                    for v in r.values
                )

            if all(holds(t, p) for t, p in pairs):
                out.append(h)
    return sorted(out, key=normalize_key)


def fill(store: Store) -> None:
    store.commit(
        "create",
        "a",
        [
            put("88.100/a1", ("URL", "https://example.org/objects/1"), ("EMAIL", "ops@example.org")),
            put("88.100/A2", ("URL", "https://example.org/objects/2"), ("EMAIL", "ops@example.org")),
            put("88.100/b", ("URL", "https://other.example/objects/1"), ("DESC", "battery pack")),
            put("88.118/电池-1", ("URL", "https://例子.cn/电池/1"), ("DESC", "Battery Pack")),
            put("88.118/x", ("URL", "http://x.test/100%_done?[a]\\b"), ("CHECKSUM", "c0ffee")),
            put("0.NA/88.100", ("DESC", "Chongqing automotive")),
        ],
    )


QUERIES: list[tuple[tuple[str, str], ...]] = [
    (("URL", "https://example.org/objects/1"),),  # exact
    (("URL", "https://example.org/*"),),  # literal prefix
    (("URL", "*/objects/1"),),  # suffix (substring index)
    (("URL", "*objects*"),),  # infix
    (("URL", "https://*/objects/1"),),  # prefix and more
    (("URL", "*"),),  # every value of the type
    (("URL", "*1"),),  # short run: type scan
    (("url", "*example*"), ("email", "ops@*")),  # two terms, types any case
    (("DESC", "battery*"),),  # data is case-sensitive
    (("DESC", "Battery*"),),
    (("URL", "*电池*"),),
    (("URL", "http://x.test/100%_done?[a]\\b"),),  # LIKE/GLOB specials are literal
    (("URL", "*100%_done?[a]\\b"),),
    (("URL", "*100__done*"),),
    (("URL", "*x.test/100%*"),),
    (("URL", "nothing*"),),
    (("NOSUCHTYPE", "*"),),
    (("DESC", "Chongqing*"),),  # 0.NA prefix handles are real handles
    (("URL", "*"), ("EMAIL", "ops@example.org"), ("URL", "*/objects/*")),  # three terms, one type twice
    (("EMAIL", "*"), ("URL", "*/1")),
]


@pytest.mark.parametrize("pairs", QUERIES, ids=[repr(q) for q in QUERIES])
def test_patterns_match_as_the_slow_way(store: Store, pairs: tuple[tuple[str, str], ...]) -> None:
    fill(store)
    assert find(store, *pairs) == expected(store, pairs)


def test_pattern_results(store: Store) -> None:
    fill(store)
    assert find(store, ("URL", "https://example.org/*")) == ["88.100/a1", "88.100/A2"]
    assert find(store, ("url", "*/OBJECTS/1")) == []
    assert find(store, ("URL", "*/objects/1")) == ["88.100/a1", "88.100/b"]
    assert find(store, ("DESC", "battery*")) == ["88.100/b"]
    assert find(store, ("URL", "*电池*")) == ["88.118/电池-1"]
    assert find(store, ("URL", "*100%_done?[a]\\b")) == ["88.118/x"]
    assert find(store, ("URL", "*100__done*")) == []
    assert find(store, ("URL", "*example*"), ("EMAIL", "ops@*")) == ["88.100/a1", "88.100/A2"]
    assert find(store, ("URL", "*example*"), ("DESC", "*")) == ["88.100/b"]


def test_pages_in_key_order_without_gaps_or_repeats(store: Store) -> None:
    store.bulk_load(
        rec(
            f"88.100/sn-{i:04d}",
            ("URL", f"https://example.org/p/{i % 7}"),
            ("URL2", f"https://example.org/q/{i}"),
        )
        for i in range(500)
    )
    everything = find(store, ("URL", "https://example.org/*"), limit=10000)
    assert len(everything) == 500 and everything == sorted(everything, key=normalize_key)
    pages = [find(store, ("URL", "https://example.org/*"), limit=64, offset=o) for o in range(0, 500, 64)]
    assert [h for page in pages for h in page] == everything
    # Two values of one handle matching the same term count once.
    assert len(find(store, ("URL2", "*example.org/*"), limit=10000)) == 500


def test_what_is_not_searchable(store: Store) -> None:
    secret = HandleValue(2, "HS_SECKEY", b"hunter2", permissions=PERM_SECRET)
    private = HandleValue(3, "EMAIL", b"private@example.org", permissions=PERM_ADMIN_READ)
    binary = HandleValue(4, "BLOB", b"\x00\x01binary\xff")
    control = HandleValue(5, "NOTE", b"line\x01one")
    long = HandleValue(6, "URL", b"https://example.org/" + b"x" * MAX_DATA)
    store.commit(
        "create",
        "a",
        [
            Write("88.100/P", HandleRecord("88.100/p", (secret, private, binary, control, long))),
            # idr's internal records (homed prefixes, applications with applicants' contacts)
            put("0.HOMED/88.100", ("DESC", "internal")),
            put("0.PREFIXAPP/1", ("EMAIL", "applicant@example.org")),
        ],
    )
    assert find(store, ("HS_SECKEY", "*")) == []
    assert find(store, ("EMAIL", "*")) == []
    assert find(store, ("BLOB", "*")) == []
    assert find(store, ("NOTE", "*")) == []
    assert find(store, ("URL", "https://example.org/*")) == []
    assert find(store, ("DESC", "internal")) == []


def test_every_write_keeps_the_index(store: Store) -> None:
    fill(store)
    # modify: the old value is gone, the new one found
    store.commit("modify", "a", [put("88.100/a1", ("URL", "https://moved.example/1"))])
    assert find(store, ("URL", "https://example.org/objects/1")) == []
    assert find(store, ("URL", "*moved*")) == ["88.100/a1"]
    assert find(store, ("EMAIL", "ops@example.org")) == ["88.100/A2"]
    # delete
    store.commit("delete", "a", [Write("88.100/A2", None)])
    assert find(store, ("EMAIL", "*")) == []
    # one commit writing, deleting and writing one key again: the last state counts
    store.commit(
        "x",
        "a",
        [put("88.100/c", ("URL", "u:1")), Write("88.100/C", None), put("88.100/c", ("URL", "u:3"))],
    )
    assert (find(store, ("URL", "u:*")), find(store, ("URL", "u:1"))) == (["88.100/c"], [])
    # a group commit: several commits in one transaction, a key written by two of them
    store.commit_many(
        [
            Commit("create", "a", (put("88.100/g1", ("URL", "grp:1")), put("88.100/g2", ("URL", "grp:2")))),
            Commit("modify", "a", (put("88.100/g1", ("URL", "grp:1b")),)),
            Commit("delete", "a", (Write("88.100/G2", None),)),
        ]
    )
    assert (find(store, ("URL", "grp:*")), find(store, ("URL", "*grp:1*"))) == (["88.100/g1"], ["88.100/g1"])
    assert find(store, ("URL", "grp:1")) == []
    # bulk load: replaces, and within one batch the last record of a key wins
    store.bulk_load(
        [
            rec("88.100/b", ("URL", "bulk:old")),
            rec("88.100/d", ("URL", "bulk:d")),
            rec("88.100/B", ("URL", "bulk:new")),
        ]
    )
    assert find(store, ("URL", "bulk:*")) == ["88.100/B", "88.100/d"]
    assert find(store, ("URL", "*bulk:old*")) == []
    assert find(store, ("DESC", "battery pack")) == []
    for pairs in QUERIES:
        assert find(store, *pairs) == expected(store, pairs), pairs


def test_a_large_group_keeps_records_log_and_index(store: Store, other_store: Store) -> None:
    """A group of more rows than one statement takes (the SQLite engine writes a group in
    chunks of up to 128 rows): every row, log entry and index entry is there, on the primary
    and on a mirror applying the entries as one batch."""
    fill(store)
    first = store.last_seq()
    commits = [
        Commit("create", "a", (put(f"88.100/n{i}", ("URL", f"https://n.example/{i}")),)) for i in range(300)
    ]
    commits += [
        Commit("modify", "a", (put(f"88.100/n{i}", ("URL", f"https://m.example/{i}")),))
        for i in range(0, 300, 7)
    ]
    commits.append(Commit("delete", "a", tuple(Write(f"88.100/N{i}", None) for i in range(1, 300, 50))))
    seqs = store.commit_many(commits)
    assert seqs == list(range(first + 1, first + 1 + len(commits)))
    assert [e.seq for e in store.log_since(first)] == seqs
    assert store.get("88.100/N7") == rec("88.100/n7", ("URL", "https://m.example/7"))
    assert store.get("88.100/N51") is None and store.get("88.100/N299") == rec(
        "88.100/n299", ("URL", "https://n.example/299")
    )
    for pairs in [
        *QUERIES,
        (("URL", "https://n.example/*"),),
        (("URL", "*m.example*"),),
        (("URL", "https://n.example/7"),),
    ]:
        assert find(store, *pairs) == expected(store, pairs), pairs
    for entry in store.log_since(0)[: -len(commits)]:
        other_store.apply_entry(entry)
    assert other_store.apply_entries(store.log_since(first)) == len(commits)
    assert other_store.last_seq() == store.last_seq()
    for pairs in [*QUERIES, (("URL", "https://n.example/*"),), (("URL", "*m.example*"),)]:
        assert find(other_store, *pairs) == find(store, *pairs), pairs


def test_a_failed_write_leaves_the_index(store: Store) -> None:
    fill(store)
    before = [find(store, *q) for q in QUERIES]
    bad = HandleRecord("88.100/bad", (HandleValue(1, "URL", b"x" * 10, ttl=2**40),))  # ttl unencodable
    with pytest.raises(StoreError):
        store.commit("x", "a", [put("88.100/a1", ("URL", "changed")), Write("88.100/BAD", bad)])
    with pytest.raises(StoreError):
        store.bulk_load([rec("88.100/a1", ("URL", "changed")), bad])
    assert [find(store, *q) for q in QUERIES] == before


def test_replication_paths_keep_the_index(store: Store, other_store: Store) -> None:
    fill(store)
    store.commit("modify", "a", [put("88.100/b", ("URL", "https://b.example/2"))])
    store.bulk_load(rec(f"88.119/n{i}", ("URL", f"https://n.example/{i}")) for i in range(20))
    for entry in store.log_since(0):
        other_store.apply_entry(entry)
    for pairs in [*QUERIES, (("URL", "https://n.example/*"),), (("URL", "*b.example*"),)]:
        assert find(other_store, *pairs) == find(store, *pairs), pairs
    # a re-copy replaces everything, index included
    other_store.commit("create", "a", [put("88.100/only-on-mirror", ("URL", "https://stale.example/"))])
    seq, rows = store.snapshot()
    other_store.replace_all(rows, seq)
    assert find(other_store, ("URL", "*stale*")) == []
    for pairs in QUERIES:
        assert find(other_store, *pairs) == find(store, *pairs), pairs


def test_index_mode_is_kept_changed_and_built_on_open(
    store: Store, reopen_with: Callable[[str | None], Store]
) -> None:
    fill(store)
    assert store.search_mode == "full"
    store.close()
    off = reopen_with("off")
    assert off.search_mode == "off"
    with pytest.raises(SearchError):
        find(off, ("URL", "*"))
    # writes while the index is off are not lost to it: turning it on builds it from the records
    off.commit("create", "a", [put("88.100/late", ("URL", "https://late.example/x"))])
    off.close()
    assert reopen_with(None).search_mode == "off"  # None keeps what the store has
    exact = reopen_with("exact")
    assert exact.search_mode == "exact"
    for pairs in [*QUERIES, (("URL", "*late*"),)]:
        assert find(exact, *pairs) == expected(exact, pairs), pairs
    exact.close()
    full = reopen_with("full")
    assert find(full, ("URL", "*late.example*")) == ["88.100/late"]
    for pairs in QUERIES:
        assert find(full, *pairs) == expected(full, pairs), pairs


def test_bad_searches_are_refused_clearly() -> None:
    with pytest.raises(SearchError, match="at least one"):
        make_terms([])
    with pytest.raises(SearchError, match="control character"):
        make_terms([("URL", "a\x00b")])
    with pytest.raises(SearchError, match="not a value type"):
        make_terms([(" ", "x")])
    with pytest.raises(SearchError, match="at most"):
        make_terms([("URL", "x")] * 9)
