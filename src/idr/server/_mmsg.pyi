"""UDP bursts in one system call each way (``recvmmsg``, ``sendmmsg``; Linux, IPv4 sockets)."""

from typing import Any

MAX_BURST: int

def recv_burst(fd: int, count: int, /) -> list[tuple[bytes, tuple[str, int]]]: ...
def send_burst(fd: int, items: list[tuple[Any, Any]], start: int, /) -> int: ...
