"""Nodes as separate processes, started the way an operator starts them: ``idr init`` then
``idr serve --data DIR`` (its own config), on 127.0.0.1 ports picked free by the test.
Every process started here is stopped by ``ServeProc.stop`` (SIGTERM, then SIGKILL)."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.ports import free_port

IDR = [sys.executable, "-c", "from idr.cli import main; main()"]
START_TIMEOUT = 60.0


def idr(*args: str, timeout: float = 120.0) -> subprocess.CompletedProcess[str]:
    """Run the CLI; fail with its output when it fails."""
    r = subprocess.run([*IDR, *args], capture_output=True, text=True, timeout=timeout)
    assert r.returncode == 0, f"idr {' '.join(args)}: {r.stdout}{r.stderr}"
    return r


_INSECURE = ssl.create_default_context()
_INSECURE.check_hostname = False
_INSECURE.verify_mode = ssl.CERT_NONE


@dataclass
class ServeProc:
    """One ``idr serve`` process and the addresses it listens on."""

    data: Path
    https: int = field(default_factory=free_port)
    http: int = field(default_factory=free_port)
    native: int = field(default_factory=lambda: free_port(udp_too=True))
    proc: subprocess.Popen[bytes] | None = None

    @classmethod
    def init(cls, data: Path, *args: str) -> ServeProc:
        """``idr init`` a node listening on fresh ports (``args``: role, prefix, secret, store…)."""
        node = cls(data)
        idr("init", "--data", str(data), *node.listen_args(), *args)
        return node

    def listen_args(self) -> list[str]:
        return [
            "--https", f"127.0.0.1:{self.https}",
            "--http", f"127.0.0.1:{self.http}",
            "--native", f"127.0.0.1:{self.native}",
        ]  # fmt: skip

    def start(self, *args: str, ready_path: str = "/api/federation/info") -> ServeProc:
        """``idr serve`` (``args``: more of its options, e.g. ``--workers 2``), once it answers."""
        log = (self.data.parent / f"{self.data.name}.log").open("ab")
        cmd = [*IDR, "serve", "--data", str(self.data), *args]
        self.proc = subprocess.Popen(cmd, stdout=log, stderr=log)
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, f"idr serve exited: {self.log_tail()}"
            with contextlib.suppress(OSError):
                status, _ = self.get(ready_path, secure=False, timeout=1.0)
                if status < 500:
                    return self
            time.sleep(0.05)
        raise AssertionError(f"idr serve did not start in {START_TIMEOUT} s: {self.log_tail()}")

    def log_tail(self) -> str:
        with contextlib.suppress(OSError):
            return (self.data.parent / f"{self.data.name}.log").read_text(errors="replace")[-3000:]
        return ""

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)

    def stop_cleanly(self) -> None:
        """SIGTERM, and the process exits 0 having written what it buffered."""
        assert self.proc is not None
        self.proc.terminate()
        assert self.proc.wait(20) == 0, self.log_tail()

    # ------------------------------------------------------------------ HTTP(S)

    def url(self, path: str, *, secure: bool = True) -> str:
        return f"https://127.0.0.1:{self.https}{path}" if secure else f"http://127.0.0.1:{self.http}{path}"

    def get(self, path: str, *, secure: bool = True, timeout: float = 10.0) -> tuple[int, Any]:
        return self.call("GET", path, secure=secure, timeout=timeout)

    def call(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        auth: tuple[str, str] | None = None,
        secure: bool = True,
        timeout: float = 10.0,
    ) -> tuple[int, Any]:
        """(HTTP status, JSON answer) of one request; Basic ``auth`` = (identity, secret)."""
        headers = {"Content-Type": "application/json"}
        if auth is not None:
            from urllib.parse import quote

            token = base64.b64encode(f"{quote(auth[0], safe='')}:{auth[1]}".encode()).decode()
            headers["Authorization"] = f"Basic {token}"
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(self.url(path, secure=secure), data=data, method=method, headers=headers)
        try:
            with urllib.request.urlopen(req, timeout=timeout, context=_INSECURE if secure else None) as r:
                return r.status, json.loads(r.read() or b"null")
        except urllib.error.HTTPError as e:
            raw = e.read()
            try:
                return e.code, json.loads(raw or b"null")
            except ValueError:
                return e.code, raw.decode(errors="replace")

    # ------------------------------------------------------------------ native

    def resolve_native(self, handle: str, transport: str) -> tuple[int, list[tuple[int, str, bytes]]]:
        """(response code, [(index, type, data)]) over UDP or TCP with idr's client."""
        from idr.codec.bodies import ResolutionResponse
        from idr.resolver.client import HandleClient

        async def ask() -> tuple[int, list[tuple[int, str, bytes]]]:
            async with HandleClient("127.0.0.1", self.native, timeout=5.0) as c:
                msg = await c.resolve(handle, transport=transport)
            values = []
            if isinstance(msg.body, ResolutionResponse):
                values = [(v.index, v.type, v.data) for v in msg.body.values]
            return int(msg.response_code), values

        return asyncio.run(ask())


def serve_fresh(data: Path, attempts: int = 3) -> ServeProc:
    """``idr serve`` of an initialised node, its listeners moved to fresh ports (``--https``,
    ``--http``, ``--native``); a port a parallel suite takes before the bind means another try
    with other ports (bounded)."""
    for attempt in range(attempts):
        node = ServeProc(data)
        try:
            return node.start(*node.listen_args())
        except AssertionError as e:
            node.stop()
            if "address already in use" not in str(e).lower() or attempt == attempts - 1:
                raise
    raise AssertionError("unreachable")
