"""The per-address pace of TLS handshakes (``HandshakePace``), with time moved by the test."""

from __future__ import annotations

import pytest

from idr.server.http_connections import HandshakePace


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_burst_then_one_per_interval() -> None:
    clock = Clock()
    pace = HandshakePace(rate=10.0, burst=3, clock=clock)
    assert [pace.wait("a", most=10.0) for _ in range(3)] == [0.0, 0.0, 0.0]
    assert pace.wait("a", most=10.0) == pytest.approx(0.1)
    assert pace.wait("a", most=10.0) == pytest.approx(0.2)
    assert pace.wait("b", most=10.0) == 0.0  # another address has its own burst
    clock.now += 0.3  # the turns given out are used up; the burst refills at the rate
    assert pace.wait("a", most=10.0) == pytest.approx(0.0)
    clock.now += 10.0
    assert [pace.wait("a", most=10.0) for _ in range(3)] == [0.0, 0.0, 0.0]


def test_a_turn_too_far_off_is_refused_and_takes_nothing() -> None:
    clock = Clock()
    pace = HandshakePace(rate=2.0, burst=1, clock=clock)
    assert pace.wait("a", most=0.6) == 0.0
    assert pace.wait("a", most=0.6) == pytest.approx(0.5)
    assert pace.wait("a", most=0.6) is None  # its turn would be 1.0 s away
    assert pace.wait("a", most=0.6) is None  # …and refusing it did not push the next turn
    clock.now += 0.5
    assert pace.wait("a", most=0.6) == pytest.approx(0.5)


def test_rate_zero_is_not_paced_and_the_table_is_bounded() -> None:
    off = HandshakePace(rate=0.0, burst=1)
    assert all(off.wait("a", most=0.0) == 0.0 for _ in range(1000))
    clock = Clock()
    pace = HandshakePace(rate=1.0, burst=1, capacity=100, clock=clock)
    for i in range(1000):
        pace.wait(f"10.0.{i // 256}.{i % 256}", most=10.0)
    assert len(pace._due) == 100
