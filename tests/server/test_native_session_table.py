"""The native session table's bounds: nobody unauthenticated can fill it or push others out."""

from __future__ import annotations

import pytest

from idr.model.errors import HandleError, ResponseCode
from idr.model.value import ValueReference
from idr.server.native_sessions import Session, SessionTable

ME = ValueReference("0.NA/88.100", 300)


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def keyed(table: SessionTable, source: str, timeout: float = 3600) -> Session:
    return table.open_keyed(source, (2, 11), timeout=timeout, mode=4, key=b"k" * 32, key_alg=3, claimed=ME)


def test_a_source_over_its_limit_loses_only_its_own_oldest() -> None:
    t = SessionTable(per_source=3)
    other = keyed(t, "10.0.0.2")
    mine = [keyed(t, "10.0.0.1") for _ in range(5)]
    assert t.find(other.id) is other
    assert [t.find(s.id) is s for s in mine] == [False, False, True, True, True]


def test_a_flood_from_many_sources_is_refused_not_evicting() -> None:
    t = SessionTable(anonymous_capacity=10, per_source=2)
    first = keyed(t, "10.0.0.1")
    for i in range(9):
        keyed(t, f"10.0.1.{i}")
    with pytest.raises(HandleError) as e:
        keyed(t, "10.0.2.1")
    assert e.value.code == ResponseCode.SERVER_TOO_BUSY
    assert t.find(first.id) is first


def test_authenticated_sessions_are_never_evicted_by_anonymous_ones() -> None:
    t = SessionTable(anonymous_capacity=4, per_source=100)
    s = keyed(t, "10.0.0.1")
    assert t.authenticate(s, ME)
    for _ in range(4):
        keyed(t, "10.6.6.6")
    assert t.find(s.id) is s and s.authenticated


def test_a_full_authenticated_tier_promotes_nobody_and_logs_nobody_out() -> None:
    t = SessionTable(capacity=2, per_source=100)
    a, b, c = keyed(t, "10.0.0.1"), keyed(t, "10.0.0.2"), keyed(t, "10.0.0.3")
    assert t.authenticate(a, ME) and t.authenticate(b, ME)
    assert not t.authenticate(c, ME) and not c.authenticated
    assert t.find(a.id) is a and t.find(b.id) is b and t.find(c.id) is c


def test_per_source_cap_on_authenticated_sessions() -> None:
    t = SessionTable(per_source_authenticated=1)
    a, b = keyed(t, "10.0.0.1"), keyed(t, "10.0.0.1")
    assert t.authenticate(a, ME) and not t.authenticate(b, ME)


def test_idle_expiry_short_until_authenticated_then_the_clients_timeout() -> None:
    clock = Clock()
    t = SessionTable(anonymous_idle=60, max_idle=600, clock=clock)
    anon, auth, long = keyed(t, "a"), keyed(t, "b", timeout=300), keyed(t, "c", timeout=10**9)
    assert t.authenticate(auth, ME) and t.authenticate(long, ME)
    assert long.timeout == 600  # capped
    clock.t += 61
    assert t.find(anon.id) is None
    assert t.find(auth.id) is auth
    t.touch(auth)  # its owner used it (a verified MAC): the idle clock restarts
    clock.t += 299
    assert t.find(auth.id) is auth  # found, but not touched: a stranger naming it keeps nothing alive
    clock.t += 2
    assert t.find(auth.id) is None
    t.touch(long)
    clock.t += 601
    assert t.find(auth.id) is None
    assert t.find(long.id) is None and len(t) == 0


def test_replay_window() -> None:
    s = Session(1, "a", (2, 11))
    assert s.accept_counter(1) and s.accept_counter(3) and s.accept_counter(2)
    assert not s.accept_counter(2) and not s.accept_counter(0) and not s.accept_counter(-5)
    for n in range(4, 600):
        assert s.accept_counter(n)
    assert not s.accept_counter(100)  # fell out of the window: too old is refused too
    assert s.next_counter() == 1 and s.next_counter() == 2


def test_connection_sessions_are_found_only_on_their_connection_and_end_with_it() -> None:
    t = SessionTable(per_connection=2)
    c1, c2 = object(), object()
    s = t.open_scoped(c1, 10001, "10.0.0.1", (2, 11))
    assert t.open_scoped(c1, 10001, "10.0.0.1", (2, 11)) is s
    assert t.find(10001, c1) is s and t.find(10001, c2) is None and t.find(10001) is None
    other = t.open_scoped(c2, 10001, "10.0.0.1", (2, 11))  # every SDK process starts at 10001
    assert other is not s and t.holds(c1) and t.holds(c2)
    t.open_scoped(c1, 10002, "10.0.0.1", (2, 11))
    with pytest.raises(HandleError):
        t.open_scoped(c1, 10003, "10.0.0.1", (2, 11))
    assert t.authenticate(s, ME) and s.authenticated
    t.drop_scope(c1)
    assert t.find(10001, c1) is None and not t.holds(c1) and not t.authenticate(s, ME)
    assert t.find(10001, c2) is other


def test_a_connection_session_shadows_a_keyed_one_with_the_same_id() -> None:
    t = SessionTable()
    k = keyed(t, "10.0.0.1")
    conn = object()
    s = t.open_scoped(conn, k.id, "10.0.0.9", (2, 11))
    assert t.find(k.id, conn) is s and t.find(k.id, object()) is k


def test_matches_claim() -> None:
    s = Session(1, "a", (2, 11), claimed=ValueReference("0.na/88.100", 300))
    assert s.matches_claim(ValueReference("0.NA/88.100", 300))
    assert not s.matches_claim(ValueReference("0.NA/88.100", 301))
    assert not Session(2, "a", (2, 11)).matches_claim(ME)
