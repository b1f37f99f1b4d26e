"""A store's file is brought into the page cache in the background once a native node reads
misses through its mmap (``idr.store.readahead``): a first start on a file that left the cache
would otherwise wait for the disk on every miss. The asking is done by a child process: a
descriptor the node itself closed would drop SQLite's locks on the file."""

from __future__ import annotations

import ctypes
import mmap
import os
import time
from pathlib import Path

import pytest

from idr.model.value import HandleRecord, HandleValue
from idr.store import readahead
from idr.store.base import Write
from idr.store.sqlite import SqliteStore

SIZE = 3 * readahead.CHUNK + 4096  # several chunks and a partial one


_libc = ctypes.CDLL(None, use_errno=True)
PAGE = mmap.PAGESIZE


def _cached(path: Path, offset: int) -> bool:
    """Whether the page at ``offset`` is in the page cache (``mincore``, which reads nothing:
    a read that may not wait, ``RWF_NOWAIT``, starts the kernel's readahead when it misses)."""
    with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_COPY) as m:
        page = offset - offset % PAGE
        addr = ctypes.addressof(ctypes.c_char.from_buffer(m)) + page
        vec = (ctypes.c_ubyte * 1)()
        if _libc.mincore(ctypes.c_void_p(addr), ctypes.c_size_t(PAGE), vec) != 0:
            raise OSError(ctypes.get_errno(), "mincore")
        del addr
        return bool(vec[0] & 1)


def _evict(path: Path, offsets: tuple[int, ...]) -> None:
    """Drop the file from the page cache (``POSIX_FADV_DONTNEED`` may leave pages still on
    their way to the LRU lists: asked again), or skip when this system keeps them."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
        for _ in range(50):
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
            if not any(_cached(path, o) for o in offsets):
                return
            time.sleep(0.02)
    finally:
        os.close(fd)
    pytest.skip("the page cache keeps this file (tmpfs?): nothing to observe")


def _wait_cached(path: Path, offset: int, seconds: float = 30.0) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if _cached(path, offset):
            return True
        time.sleep(0.02)
    return False


def test_read_ahead_brings_every_chunk_of_a_file_into_the_page_cache(tmp_path: Path) -> None:
    path = tmp_path / "f"
    path.write_bytes(os.urandom(SIZE))
    _evict(path, (SIZE - 4096, 2 * readahead.CHUNK + 4096))
    assert readahead.read_ahead([tmp_path / "missing", path]) == SIZE
    # past the first chunk (one WILLNEED over the whole file stops at the device's readahead
    # window)
    assert _wait_cached(path, SIZE - 4096)
    assert _wait_cached(path, 2 * readahead.CHUNK + 4096)


def test_a_file_larger_than_its_share_of_available_memory_is_left_alone(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "f"
    path.write_bytes(os.urandom(SIZE))
    _evict(path, (2 * readahead.CHUNK + 4096,))
    monkeypatch.setattr(readahead, "mem_available", lambda: SIZE)  # share: half of it
    assert readahead.read_ahead([path]) == 0
    time.sleep(0.2)
    assert not _cached(path, 2 * readahead.CHUNK + 4096)


def test_the_first_raw_reads_of_a_store_reads_its_file_ahead_once_in_a_child(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "s.sqlite3")
    try:
        blob = os.urandom(2000)
        for i in range(0, 20_000, 1000):
            writes = [
                Write(f"88.100/X{j}", HandleRecord(f"88.100/x{j}", (HandleValue(1, "DESC", blob),)))
                for j in range(i, i + 1000)
            ]
            store.commit("create", "a", writes)
        store.close()
        path = tmp_path / "s.sqlite3"
        size = path.stat().st_size
        assert size > readahead.MIN_BYTES
        _evict(path, (size - 4096,))
        store = SqliteStore(path)
        assert store.read_ahead is None  # a store nobody reads misses from: nothing
        reads = store.raw_reads(lambda release: None)
        ahead = store.read_ahead
        assert ahead is not None and ahead.proc is not None
        assert ahead.proc.pid != os.getpid()
        store.raw_reads(lambda release: None)
        assert store.read_ahead is ahead  # once per store
        assert ahead.wait(30) == 0
        assert _wait_cached(path, size - 4096)  # (the reads it asked for complete on their own)
        # the node's own locks on the file are untouched: reads and writes go on
        assert reads.get("88.100/X19999") is not None
        y = HandleRecord("88.100/y", (HandleValue(1, "DESC", b"y"),))
        store.commit("create", "a", [Write("88.100/Y", y)])
        reads.release()
        assert reads.get("88.100/Y") is not None
    finally:
        store.close()
    assert store.read_ahead is not None and store.read_ahead.proc is not None
    assert store.read_ahead.proc.poll() is not None  # never outlives the store


def test_a_small_store_is_not_read_ahead(tmp_path: Path) -> None:
    """Below ``MIN_BYTES`` faulting the pages in costs little: no child process for it."""
    store = SqliteStore(tmp_path / "s.sqlite3")
    try:
        store.raw_reads(lambda release: None)
        assert store.read_ahead is not None and store.read_ahead.proc is None
    finally:
        store.close()
