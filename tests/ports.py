"""Free loopback ports for tests that start nodes in other processes (which must be told a port)."""

from __future__ import annotations

import socket


def free_port() -> int:
    """A port free for both TCP and UDP on 127.0.0.1 (a Handle protocol port is both; a small
    race with other tests is accepted)."""
    for _ in range(50):
        with socket.socket() as t, socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u:
            t.bind(("127.0.0.1", 0))
            port = int(t.getsockname()[1])
            try:
                u.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError("no free port")
