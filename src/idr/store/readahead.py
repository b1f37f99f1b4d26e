"""Bring a store's file into the page cache in the background, for a node's first seconds.

A native node answers each miss with one point read through an mmap of the SQLite file
(``SqliteStore.raw_reads``). On a first start after the file left the page cache (a reboot,
a copied store, memory pressure), each of those reads is a major fault: the kernel reads a
few pages around the one asked for and the loop waits for the disk. Measured on the bench's
1M-handle store (868 MB) with its pages dropped, plain ``idr serve``: 7,663 answers/s at
48 µs CPU each in its first second, 12,000-13,700/s after, against ~30,000/s at 24 µs with
the file cached. Asking the kernel to read the whole file ahead (``POSIX_FADV_WILLNEED``, no
copy into the process) took 0.25 s of one core and had all of it cached 0.5 s later; a file
already cached costs ~20 ms of checks.

The kernel reads at most its device's readahead window per call (8 MiB here: one
``WILLNEED`` over the whole file brought in 8 MB), so the file is asked for in chunks. A file
larger than half the memory the kernel calls available is left alone: reading it ahead would
evict what others use, and most of it again.

The asking happens in a child process (``python -I -S`` running this file: ~20 ms to start,
no import of idr), never in the node's own: closing *any* descriptor of a file drops every
POSIX (``fcntl``) lock the process holds on it, and SQLite's locks on the database file are
such locks — a first version, a thread that opened and closed the file, made SQLite fail with
"disk I/O error" in a node whose worker processes share the file. A child's descriptors and
locks are its own.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

CHUNK = 8 << 20  # bytes asked for per call (at least the usual device readahead window)
NICE = 10  # the child yields the CPU to everything else (as the warm-up helper does)
MIN_BYTES = 32 << 20  # smaller stores: faulting their pages in costs little, no child for them
SHARE = 0.5  # of MemAvailable: a larger file is not read ahead


def mem_available() -> int | None:
    """The kernel's estimate of memory available without swapping (Linux), in bytes."""
    try:
        with open("/proc/meminfo", "rb") as f:
            for line in f:
                if line.startswith(b"MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def read_ahead(paths: Sequence[Path | str]) -> int:
    """Ask the kernel to cache each existing file in ``paths`` (in order); returns the bytes
    asked for. Opens and closes the files: never in a process that has one open in SQLite."""
    advise = getattr(os, "posix_fadvise", None)
    available = mem_available()
    if advise is None or available is None:
        return 0
    budget = int(available * SHARE)
    asked = 0
    for path in paths:
        try:
            fd = os.open(path, os.O_RDONLY)
        except OSError:
            continue
        try:
            size = os.fstat(fd).st_size
            if asked + size > budget:
                continue
            for offset in range(0, size, CHUNK):
                advise(fd, offset, CHUNK, os.POSIX_FADV_WILLNEED)
            asked += size
        except OSError:
            continue
        finally:
            os.close(fd)
    return asked


class ReadAhead:
    """``read_ahead`` of ``paths`` in a child process, started at once when they hold at least
    ``MIN_BYTES``."""

    def __init__(self, paths: Sequence[Path]) -> None:
        self.proc: subprocess.Popen[bytes] | None = None
        sizes = []
        for path in paths:
            with contextlib.suppress(OSError):
                sizes.append(path.stat().st_size)
        if not hasattr(os, "posix_fadvise") or sum(sizes) < MIN_BYTES:
            return
        try:
            self.proc = subprocess.Popen(
                [sys.executable, "-I", "-S", __file__, *map(str, paths)],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
        except OSError:
            self.proc = None  # nothing read ahead: the reads fault the pages in as before

    def wait(self, timeout: float) -> int | None:
        """The child's exit status once it is done (None: still running after ``timeout``)."""
        if self.proc is None:
            return 0
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            return None

    def close(self) -> None:
        """Stop it if it still runs."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


def leave_the_serving_cores(nice: int) -> None:
    """A helper process of a server pinned to some cores (``taskset``) inherited that mask: it
    moves to the other cores when there are any (it exists to leave the loop's core), else
    stays where it is, and either way yields to everything else (``nice``). Used by this
    file's child and by the warm-up helper (``idr.server.warmhelper``)."""
    with contextlib.suppress(OSError):
        os.nice(nice)
    try:
        mine = os.sched_getaffinity(0)
        others = set(range(os.cpu_count() or 1)) - mine
        if others:
            os.sched_setaffinity(0, others)
    except (OSError, AttributeError):  # not Linux, or a cpuset that does not allow them
        pass


if __name__ == "__main__":
    leave_the_serving_cores(NICE)
    read_ahead(sys.argv[1:])
