"""Free loopback ports for tests that must name a port before something binds it (another
process, a site's list of servers, a config file).

Picked below the kernel's ephemeral range, not by binding port 0: a port the kernel hands out
for port 0 comes from the range it also hands to outgoing connections, so the suite's own
clients often took it again before the node bound it ("address already in use" in full-suite
runs). The kernel never gives out a port below that range by itself; only another test picking
the same random port can collide, and each pick is checked free for TCP and UDP first.
"""

from __future__ import annotations

import os
import random
import socket
from pathlib import Path

LOWEST = 10_000
_pick = random.Random(os.urandom(16))  # its own generator: pytest-randomly reseeds `random`


def _ephemeral_low() -> int:
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def _free(port: int, kind: socket.SocketKind) -> bool:
    with socket.socket(socket.AF_INET, kind) as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_port(udp_too: bool = True) -> int:
    """A port free on 127.0.0.1 now, for TCP (and UDP: a Handle protocol port is both)."""
    top = _ephemeral_low()
    if top - LOWEST < 1000:  # an unusual range: fall back on the kernel's pick
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            return int(s.getsockname()[1])
    for _ in range(500):
        port = _pick.randrange(LOWEST, top)
        if _free(port, socket.SOCK_STREAM) and (not udp_too or _free(port, socket.SOCK_DGRAM)):
            return port
    raise OSError("no free port")
