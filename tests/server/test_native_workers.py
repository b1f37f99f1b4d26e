"""``idr serve --workers N``: the extra UDP workers answer what worker 0 last committed, and the
processes start and stop together (none left behind, even when worker 0 is SIGKILLed).

Real processes on 127.0.0.1: the CLI is started as a user would, writes go over native TCP
(worker 0) with the admin's secret key, reads over UDP from many source ports so the kernel's
SO_REUSEPORT hash sends them to every worker.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from idr.cli.node import init_node
from idr.codec.bodies import ResolutionRequest, ResolutionResponse
from idr.codec.envelope import OpCode
from idr.codec.message import decode_message, encode_message
from idr.model.errors import ResponseCode
from idr.model.value import HandleValue, ValueReference
from idr.resolver.client import HandleClient, SecretKeyAuth, build_request
from tests.ports import free_port
from tests.server.test_metrics import metric

SECRET = "worker-secret"
AUTH = SecretKeyAuth(ValueReference("0.NA/88.100", 300), SECRET.encode())
# 32 source ports over 2 workers: the chance that the 4-tuple hash sends all to one is 2^-31.
SOURCES = 32
START_TIMEOUT = 60.0
STOP_TIMEOUT = 15.0
# Extra workers poll the log every 5 ms; 3 s leaves room for a loaded CI machine while still
# failing outright if a worker never learns of the write (it would answer stale forever).
COHERENCE_BOUND = 3.0


def _children(pid: int) -> set[int]:
    """The worker processes of ``pid`` (not a warm-up helper it may run meanwhile)."""
    out: set[int] = set()
    for task in Path(f"/proc/{pid}/task").glob("*"):
        with contextlib.suppress(OSError):
            for c in (task / "children").read_text().split():
                with contextlib.suppress(OSError):
                    if b"worker_main" in Path(f"/proc/{c}/cmdline").read_bytes():
                        out.add(int(c))
    return out


def _alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rpartition(")")[2].split()[0] != "Z"


class Served:
    """``idr serve --workers N --warm`` in its own session; stderr drained by a thread."""

    def __init__(self, data: Path, port: int, workers: int, http: str = "") -> None:
        self.port = port
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "idr",
                "serve",
                "--data",
                str(data),
                "--https",
                "",
                "--http",
                http,
                "--native",
                f"127.0.0.1:{port}",
                "--workers",
                str(workers),
                "--warm",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,
        )
        self.ready = threading.Event()
        self.lines: list[str] = []
        threading.Thread(target=self._drain, daemon=True).start()
        if not self.ready.wait(START_TIMEOUT):
            self.stop(signal.SIGKILL)
            raise AssertionError(f"idr serve did not start: {self.lines[-20:]}")

    def _drain(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.lines.append(line)
            if "UDP workers" in line:
                self.ready.set()

    def stop(self, sig: int = signal.SIGTERM) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            return self.proc.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)
            raise


@pytest.fixture
def node_dir(tmp_path: Path) -> Iterator[tuple[Path, int]]:
    port = free_port()
    init_node(tmp_path / "node", "88.100", secret=SECRET, https="", native=f"127.0.0.1:{port}")
    yield tmp_path / "node", port


def _resolve_all(socks: list[socket.socket], port: int, handle: str) -> list[tuple[int, bytes | None]]:
    """(response code, URL value or None) as seen through each source socket."""
    out = []
    for i, s in enumerate(socks):
        msg = build_request(OpCode.RESOLUTION, ResolutionRequest(handle))
        data = bytearray(encode_message(msg))
        data[8:12] = (0x100 + i).to_bytes(4, "big")
        got: tuple[int, bytes | None] = (-1, None)
        for _ in range(3):  # UDP: a datagram may be lost on a loaded machine
            s.sendto(bytes(data), ("127.0.0.1", port))
            try:
                ans = decode_message(s.recv(65536))
            except TimeoutError:
                continue
            url = None
            if isinstance(ans.body, ResolutionResponse):
                url = next((v.data for v in ans.body.values if v.type == "URL"), None)
            got = (int(ans.response_code), url)
            break
        out.append(got)
    return out


def test_workers_answer_worker_0_writes(node_dir: tuple[Path, int]) -> None:
    data, port = node_dir
    socks = [socket.socket(socket.AF_INET, socket.SOCK_DGRAM) for _ in range(SOURCES)]
    for s in socks:
        s.settimeout(1.0)
    served = Served(data, port, 2)
    try:
        workers = _children(served.proc.pid)
        assert len(workers) == 1, workers

        async def write(first: bool) -> None:
            async with HandleClient("127.0.0.1", port, auth=AUTH, timeout=10) as c:
                if first:
                    await c.create("88.100/w", [HandleValue(1, "URL", b"https://example.org/v1")])
                else:
                    await c.modify_values("88.100/w", [HandleValue(1, "URL", b"https://example.org/v2")])
                    await c.create("88.100/w-new", [HandleValue(1, "URL", b"https://example.org/new")])

        asyncio.run(write(True))
        ok, missing = ResponseCode.SUCCESS, ResponseCode.HANDLE_NOT_FOUND
        # Every worker caches the old state first: v1, and "not found" from the complete cache.
        deadline = time.monotonic() + COHERENCE_BOUND
        while _resolve_all(socks, port, "88.100/w") != [(ok, b"https://example.org/v1")] * SOURCES:
            assert time.monotonic() < deadline, "a worker never saw the create"
        assert _resolve_all(socks, port, "88.100/w-new") == [(missing, None)] * SOURCES
        assert _resolve_all(socks, port, "88.100/w") == [(ok, b"https://example.org/v1")] * SOURCES

        asyncio.run(write(False))
        t0 = time.monotonic()
        while True:
            a = _resolve_all(socks, port, "88.100/w")
            b = _resolve_all(socks, port, "88.100/w-new")
            if (
                a == [(ok, b"https://example.org/v2")] * SOURCES
                and b == [(ok, b"https://example.org/new")] * SOURCES
            ):
                break
            assert time.monotonic() - t0 < COHERENCE_BOUND, f"stale answers: {set(a)} {set(b)}"
    finally:
        for s in socks:
            s.close()
        assert served.stop() == 0
    assert not any(_alive(w) for w in workers), "a worker outlived idr serve"


def test_workers_stop_with_serve_even_when_killed(node_dir: tuple[Path, int]) -> None:
    data, port = node_dir
    served = Served(data, port, 3)
    workers = _children(served.proc.pid)
    try:
        assert len(workers) == 2 and all(_alive(w) for w in workers)
    finally:
        served.stop(signal.SIGKILL)  # no chance to clean up: the workers must notice alone
    deadline = time.monotonic() + STOP_TIMEOUT
    while any(_alive(w) for w in workers) and time.monotonic() < deadline:
        time.sleep(0.05)
    left = [w for w in workers if _alive(w)]
    for w in left:
        os.kill(w, signal.SIGKILL)
    assert not left, "workers orphaned by a killed idr serve"


def test_every_workers_answers_reach_metrics(node_dir: tuple[Path, int]) -> None:
    """Answers of the extra workers (their hot paths included) reach worker 0's /metrics."""
    import requests

    data, port = node_dir
    http_port = free_port()
    socks = [socket.socket(socket.AF_INET, socket.SOCK_DGRAM) for _ in range(SOURCES)]
    for s in socks:
        s.settimeout(1.0)
    served = Served(data, port, 2, http=f"127.0.0.1:{http_port}")
    try:

        async def create() -> None:
            async with HandleClient("127.0.0.1", port, auth=AUTH, timeout=10) as c:
                await c.create("88.100/m", [HandleValue(1, "URL", b"https://example.org/m")])

        asyncio.run(create())
        deadline = time.monotonic() + COHERENCE_BOUND
        while any(code != ResponseCode.SUCCESS for code, _ in _resolve_all(socks, port, "88.100/m")):
            assert time.monotonic() < deadline, "a worker never saw the create"
        answered = 0
        for _ in range(5):
            answered += sum(code == ResponseCode.SUCCESS for code, _ in _resolve_all(socks, port, "88.100/m"))
        assert answered >= 5 * SOURCES - 3
        deadline = time.monotonic() + 10  # extra workers report every second
        counted = 0.0
        while time.monotonic() < deadline:
            text = requests.get(f"http://127.0.0.1:{http_port}/metrics", timeout=5).text
            counted = metric(text, "idr_answers_total", frontend="udp", op="resolution", code="SUCCESS")
            if counted >= answered:
                break
            time.sleep(0.2)
        assert answered <= counted <= 5 * SOURCES * 3, (answered, counted)
    finally:
        for s in socks:
            s.close()
        assert served.stop() == 0
