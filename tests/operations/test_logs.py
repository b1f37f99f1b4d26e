"""Access and error logs of a node started by ``idr serve`` with its own idr.toml: one JSON line
per answer on every interface (UDP, TCP, HTTP, HTTPS), rotation by the standard library's
handlers and reopening on SIGHUP (logrotate), error records with their context, the buffer
bounded, and a full disk costing lines (counted) but never answers."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import logging
import os
import signal
import socket
import stat
import time
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
import tomli_w

from idr.core.config import LoggingConfig
from idr.operations.logs import LogSetup
from idr.server.accesslog import AccessLog, WriteTally
from idr.server.native import WARM_SHAPES, plain_request
from tests.procs import ServeProc, idr, serve_fresh

AUTH = ("300%3A0.NA/88.100", "s3cret-key")


def edit_config(data: Path, **sections: dict[str, Any]) -> None:
    path = data / "idr.toml"
    doc = tomllib.loads(path.read_text("utf-8"))
    for name, values in sections.items():
        doc.setdefault(name, {}).update(values)
    path.write_text(tomli_w.dumps(doc), "utf-8")


def access(node: ServeProc) -> list[dict[str, Any]]:
    path = node.data / "logs" / "access.log"
    return [json.loads(line) for line in path.read_text("utf-8").splitlines()]


def init(data: Path) -> None:
    idr("init", "--data", str(data), "--prefix", "88.100", "--admin-secret", "s3cret-key")


@pytest.fixture
def node(tmp_path: Path) -> Iterator[ServeProc]:
    data = tmp_path / "node"
    init(data)
    s = serve_fresh(data)
    try:
        yield s
    finally:
        s.stop_cleanly()


def udp_ask(port: int, handle: str) -> bytes:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u:
        u.settimeout(5)
        u.sendto(plain_request(WARM_SHAPES[1], handle.encode()), ("127.0.0.1", port))
        return u.recv(65536)


def tcp_ask(port: int, handle: str) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as t:
        t.sendall(plain_request(WARM_SHAPES[1], handle.encode()))
        out = b""
        while chunk := t.recv(65536):
            out += chunk
        return out


def test_access_log_has_a_json_line_per_answer_on_every_interface(node: ServeProc) -> None:
    t_start = dt.datetime.now(dt.UTC)
    session = requests.Session()
    session.trust_env = False
    session.verify = str(node.data / "tls" / "cert.pem")
    body = {"values": [{"index": 1, "type": "URL", "data": "https://example.org/a"}]}
    url = f"https://127.0.0.1:{node.https}/api/handles/88.100/a"
    put = session.put(url, json=body, auth=AUTH, timeout=10)
    assert put.status_code in (200, 201)
    got = session.get(f"http://127.0.0.1:{node.http}/api/handles/88.100/a", timeout=10)
    again = session.get(f"http://127.0.0.1:{node.http}/api/handles/88.100/a", timeout=10)  # fast path
    missing = session.get(f"http://127.0.0.1:{node.http}/api/handles/88.100/none", timeout=10)
    answers = [udp_ask(node.native, "88.100/a") for _ in range(3)]  # slow path once, then cached
    not_found = udp_ask(node.native, "88.100/none")
    over_tcp = tcp_ask(node.native, "88.100/a")
    node.stop_cleanly()  # SIGTERM: what is buffered is written before exit
    lines = access(node)
    for line in lines:
        assert set(line) == {"time", "client", "interface", "operation", "handle", "code", "bytes", "us"}
        assert line["client"] == "127.0.0.1" and line["us"] >= 0
        assert dt.datetime.fromisoformat(line["time"]) >= t_start - dt.timedelta(seconds=1)

    def find(**want: Any) -> list[dict[str, Any]]:
        return [ln for ln in lines if all(ln[k] == v for k, v in want.items())]

    assert find(interface="https", operation="PUT /api/handles/{handle}", handle="88.100/a")[0]["code"] == 200
    http = find(interface="http", operation="GET /api/handles/{handle}", handle="88.100/a")
    assert http[0]["code"] == 200 and http[0]["bytes"] > len(got.content)  # headers count too
    # the second was answered before routing (idr.server.http.fast_path): logged the same way
    assert len(http) == 2 and again.content == got.content and http[1]["bytes"] == http[0]["bytes"]
    assert find(interface="http", handle="88.100/none")[0]["code"] == missing.status_code == 404
    udp = find(interface="udp", operation="RESOLUTION", handle="88.100/a")
    assert len(udp) == 3 and all(u["code"] == 1 and u["bytes"] == len(answers[0]) for u in udp)
    assert find(interface="udp", handle="88.100/none")[0]["code"] == 100
    assert find(interface="udp", handle="88.100/none")[0]["bytes"] == len(not_found)
    tcp = find(interface="tcp", operation="RESOLUTION", handle="88.100/a")
    assert tcp[0]["code"] == 1 and tcp[0]["bytes"] == len(over_tcp)


def test_access_log_rotates(tmp_path: Path) -> None:
    data = tmp_path / "node"
    init(data)
    edit_config(data, logging={"rotate_bytes": 4000, "backups": 2})
    s = serve_fresh(data)
    try:
        for _ in range(6):  # six flushes of ~50 lines (~8 KB each): each overflows 4000 bytes
            for _ in range(50):
                udp_ask(s.native, "0.NA/88.100")
            time.sleep(0.5)
    finally:
        s.stop_cleanly()
    logs = sorted(p.name for p in (data / "logs").iterdir())
    assert logs == ["access.log", "access.log.1", "access.log.2"], logs
    kept = [json.loads(ln) for n in logs for ln in (data / "logs" / n).read_text().splitlines()]
    assert 0 < len(kept) <= 200  # the oldest flushes rotated away: at most `backups` + 1 files


def test_error_log_records_carry_their_context(tmp_path: Path) -> None:
    setup = LogSetup(tmp_path)
    setup.apply(LoggingConfig(file="logs/idr.log", access=""))
    try:
        log = logging.getLogger("idr.native.tcp")
        try:
            raise ValueError("boom")
        except ValueError:
            log.exception("native TCP request failed", extra={"client": "10.0.0.7", "handle": "88.100/x"})
        logging.getLogger("idr.test").debug("not at info level")
    finally:
        setup.close()
    path = tmp_path / "logs" / "idr.log"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600  # logs name clients: private, as secrets are
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    (line,) = [json.loads(ln) for ln in path.read_text().splitlines()]
    assert line["level"] == "error" and line["logger"] == "idr.native.tcp"
    assert line["client"] == "10.0.0.7" and line["handle"] == "88.100/x"
    assert "ValueError: boom" in line["exc"] and line["pid"] == os.getpid()


def test_buffer_is_bounded_and_says_so(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    sink = AccessLog(logging.getLogger("idr.access.test"), max_pending=3)
    for _ in range(5):
        sink.native("udp", 0, ("1.2.3.4", 1), b"", b"", 0)
    assert len(sink.pending) == 3 and sink.dropped == 2
    with caplog.at_level(logging.WARNING, "idr.accesslog"):
        sink.flush()
    assert "2 records dropped" in caplog.text and not sink.pending


def metrics(node: ServeProc) -> dict[str, float]:
    text = requests.get(f"http://127.0.0.1:{node.http}/metrics", timeout=10).text
    return {
        name: float(value)
        for name, _, value in (ln.partition(" ") for ln in text.splitlines())
        if name.startswith("idr_access_log_")
    }


def wait_for(what: str, check: Any, timeout: float = 20.0) -> Any:
    deadline = time.monotonic() + timeout
    while not (got := check()):
        assert time.monotonic() < deadline, f"no {what} within {timeout} s"
        time.sleep(0.05)
    return got


def lines_of(path: Path, interface: str = "") -> list[dict[str, Any]]:
    lines = [json.loads(ln) for ln in path.read_text("utf-8").splitlines()] if path.exists() else []
    return [ln for ln in lines if ln.get("interface", interface) == interface] if interface else lines


def test_sighup_reopens_the_logs_logrotate_moved(tmp_path: Path) -> None:
    """logrotate renames the files and sends SIGHUP: the node writes on in new files of the same
    names (private, as the first), every line before the signal in the old one, none lost."""
    data = tmp_path / "node"
    init(data)
    edit_config(data, logging={"file": "logs/idr.log"})
    logs = data / "logs"
    s = serve_fresh(data)
    try:
        for _ in range(3):
            udp_ask(s.native, "0.NA/88.100")
        wait_for("3 access lines", lambda: len(lines_of(logs / "access.log", "udp")) == 3)
        (logs / "access.log").rename(logs / "access.log.1")
        (logs / "idr.log").rename(logs / "idr.log.1")
        assert s.proc is not None
        s.proc.send_signal(signal.SIGHUP)
        wait_for("the reload in a new idr.log", lambda: any(
            e["message"].startswith("reloaded") for e in lines_of(logs / "idr.log")))  # fmt: skip
        for _ in range(2):
            udp_ask(s.native, "0.NA/88.100")
    finally:
        s.stop_cleanly()
    assert len(lines_of(logs / "access.log.1", "udp")) == 3
    new = lines_of(logs / "access.log", "udp")
    assert len(new) == 2 and all(ln["handle"] == "0.NA/88.100" for ln in new)
    for name in ("access.log", "idr.log"):
        assert stat.S_IMODE((logs / name).stat().st_mode) == 0o600


def test_a_full_disk_costs_lines_never_answers(tmp_path: Path) -> None:
    """The access log on a full disk (/dev/full: every write fails with ENOSPC): answers go on,
    the lost lines and failed writes are counted in /metrics, and the node still stops cleanly."""
    data = tmp_path / "node"
    init(data)
    (data / "logs").mkdir(mode=0o700, exist_ok=True)
    (data / "logs" / "access.log").symlink_to("/dev/full")
    s = serve_fresh(data)
    try:
        for _ in range(20):
            assert udp_ask(s.native, "0.NA/88.100")[24:28] == (1).to_bytes(4, "big")
        got = wait_for(
            "lost lines in /metrics", lambda: (m := metrics(s)).get("idr_access_log_lost", 0) >= 20 and m
        )
        assert got["idr_access_log_write_errors"] >= 1 and got["idr_access_log_dropped"] == 0
    finally:
        s.stop_cleanly()


def test_an_unwritable_access_log_costs_lines_never_the_start(tmp_path: Path) -> None:
    """A directory where the access log should be (as an unwritable file would be): the node
    starts and answers; every batch is lost and counted."""
    data = tmp_path / "node"
    init(data)
    (data / "logs" / "access.log").mkdir(parents=True)
    s = serve_fresh(data)
    try:
        for _ in range(5):
            assert udp_ask(s.native, "0.NA/88.100")[24:28] == (1).to_bytes(4, "big")
        got = wait_for(
            "lost lines in /metrics", lambda: (m := metrics(s)).get("idr_access_log_lost", 0) >= 5 and m
        )
        assert got["idr_access_log_write_errors"] >= 1 and got["idr_access_log_lines"] == 0
    finally:
        s.stop_cleanly()


def test_a_line_cut_short_is_ended_before_the_next(tmp_path: Path) -> None:
    """A kill -9 (or a full disk) mid-write leaves a last line without its end: the next writer
    starts on a new line, so every line after it parses."""
    logs = tmp_path / "logs"
    logs.mkdir()
    (logs / "access.log").write_text(
        '{"time":"2026-12-01T08:00:00.000001Z"}\n{"time":"2026-12-01T08:0', "utf-8"
    )
    setup = LogSetup(tmp_path)
    setup.apply(LoggingConfig(access="logs/access.log"))
    sink = setup.access
    assert sink is not None
    sink.native("udp", sink.clock(), ("10.0.0.7", 1), plain_request(WARM_SHAPES[1], b"88.100/x"), b"", 0)
    setup.close()
    text = (logs / "access.log").read_text("utf-8").splitlines()
    assert len(text) == 3 and json.loads(text[2])["handle"] == "88.100/x"


def test_a_writer_that_falls_behind_bounds_what_waits(caplog: pytest.LogCaptureFixture) -> None:
    """Lines handed to a writer that has not written them count against ``max_pending``: when
    the disk stalls, the newest records are dropped and counted, memory does not grow."""
    sink = AccessLog(logging.getLogger("idr.access.stalled"), max_pending=10)
    sink.tally = WriteTally()  # a writer that never finishes a batch
    request = plain_request(WARM_SHAPES[1], b"88.100/x")
    for _ in range(8):
        sink.record((sink.clock(), sink.clock(), ("1.2.3.4", 1), request, b""))
    sink.flush()
    assert sink.unwritten() == 8 and sink.dropped_total == 0
    for _ in range(5):
        sink.record((sink.clock(), sink.clock(), ("1.2.3.4", 1), request, b""))
    with caplog.at_level(logging.WARNING, "idr.accesslog"):
        sink.flush()
    assert sink.unwritten() == 10 and sink.dropped_total == 3 and "3 records dropped" in caplog.text
    sink.tally.written = 10  # the writer caught up: room again
    sink.record((sink.clock(), sink.clock(), ("1.2.3.4", 1), request, b""))
    sink.flush()
    assert sink.unwritten() == 1 and sink.dropped_total == 3
    assert sink.metrics()["idr_access_log_dropped"] == 3


def test_a_kill_9_loses_at_most_the_last_flush_interval(tmp_path: Path) -> None:
    """Lines are handed to the writer every flush_interval (0.2 s) + one 20 ms turn: answers
    older than that when the node is killed (-9, no chance to flush) are all in the file (the
    wait is 1 s: the bound plus room for a loaded machine's scheduling of the loop and writer)."""
    data = tmp_path / "node"
    init(data)
    s = serve_fresh(data)
    assert s.proc is not None
    try:
        for _ in range(30):
            udp_ask(s.native, "0.NA/88.100")
        time.sleep(1.0)
    finally:
        s.proc.kill()
        s.proc.wait(10)
    assert len(lines_of(data / "logs" / "access.log", "udp")) == 30


def test_records_are_formatted_every_20_ms_and_an_idle_log_sleeps() -> None:
    """Busy: a record is a line at the next 20 ms turn (while cache-warm), whatever the write
    interval; idle: the timer wakes once an interval, not fifty times a second (a record
    arriving then waits at most an interval, the bound a kill -9 is documented with)."""

    async def run() -> tuple[int, float, float]:
        sink = AccessLog(logging.getLogger("idr.access.ticks"), interval=1.0)
        ticks = 0
        tick = sink._tick

        def counted() -> None:
            nonlocal ticks
            ticks += 1
            tick()

        sink._tick = counted  # type: ignore[method-assign]
        request = plain_request(WARM_SHAPES[1], b"88.100/x")

        async def formatted() -> float:
            t0 = time.monotonic()
            sink.record((sink.clock(), sink.clock(), ("1.2.3.4", 1), request, b""))
            while sink.pending:
                await asyncio.sleep(0.002)
                assert time.monotonic() - t0 < 5
            return time.monotonic() - t0

        sink.start()
        first = await formatted()  # the first turn comes 20 ms after start
        busy = await formatted()  # the turn after a busy one: 20 ms later
        ticks = 0
        await asyncio.sleep(1.5)  # idle: one or two wake-ups (the busy turn's 20 ms, then 1 s)
        idle_ticks = ticks
        sink.stop()
        return idle_ticks, first, busy

    idle_ticks, first, busy = asyncio.run(run())
    assert first < 0.5 and busy < 0.5  # 20 ms each; an idle log's next wake-up would be 1 s
    assert idle_ticks <= 3  # 75 in 1.5 s at 20 ms
