"""The warm pass in a helper process: ready answers built off the serving loop's core.

A warm pass on the loop cost ~5 µs per handle (read a row, splice it under each shape's head,
insert it), all of it taken from serving: on a loaded 2-core machine a 1M-handle pass held the
node at 0.04–0.24× its warm rate for 10 s and more. Here a child process (``helper_main``)
opens the same store (``Store.reopen_spec``: an SQLite file, a PostgreSQL DSN), reads one
snapshot of undecoded rows (``snapshot_raw``), splices each record's values under the heads the
server gives it (:class:`~idr.server.hotcache.Splice`) and writes ready chunks to a pipe
(1 MiB: a 64 KiB pipe made the two processes ping-pong): ``marshal`` frames of 1,000 records,
each a map cache key → answer, a map handle key → its cache keys and the handle keys seen.

The server keeps each chunk as it arrives, on a key-ordered shelf per pass
(:meth:`~idr.server.hotcache.AnswerCache.shelve`); a miss finds its chunk by ``bisect`` and
moves the answer into the hot map. Inserting every answer into the cache's three maps instead
(measured first: ``dict.update`` per chunk) cost the loop ~3 µs per handle at 1M handles —
each insert into a map of a million entries misses the CPU caches —, more than the loop can
spare while it also answers cold misses; shelving costs only the ``marshal.loads`` (~0.55 µs
per handle) and the keys (~0.3 µs, the first pass only).

Correctness: the server opens the pass (``AnswerCache.begin_pass``) *before* it starts the
helper, so the snapshot is never older than the pass; every key a commit announces while the
pass is open (``_written``, and ``dirty`` while the warm-up tracks) is taken out of each chunk
before it is shelved, and an announcement after that takes the handle off every shelf
(``invalidate``): an answer read from the snapshot never hides a later commit. Which prefixes
the node answers for is judged on the server (``is_responsible``, once per prefix and chunk: a
chunk never spans two prefixes), and the splice is checked byte for byte against the codec's
own encoding on the first answers of each shape before anything is shelved. Any failure of the
helper (it died, the store could not be opened, a splice differs) makes the caller run the pass
on the loop as before.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import marshal
import struct
import sys
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from idr.codec.values import all_public
from idr.model.errors import HandleError
from idr.model.handle import Handle, normalize_key
from idr.server.hotcache import AnswerCache, Splice
from idr.store.readahead import leave_the_serving_cores

log = logging.getLogger("idr.native")

CHUNK = 1000  # records per frame: ~0.6 ms of marshal.loads on the loop, short enough to keep serving
CHECKS = 8  # answers per shape checked against the codec before the first chunk is shelved
_FRAME = struct.Struct(">I")
_STREAM_LIMIT = 1 << 20
PIPE_SIZE = 1 << 20
HELPER_NICE = 10  # bytes (Linux caps it at /proc/sys/fs/pipe-max-size, 1 MiB by default)


# ---------------------------------------------------------------------------- helper process


def helper_main() -> int:
    """Entry point of the helper process: the pass description (JSON) on stdin, frames on stdout."""
    from idr.server.native import _die_with_parent

    _die_with_parent()
    _leave_the_serving_cores()
    spec = json.loads(sys.stdin.buffer.read())
    store = _open(spec["engine"], spec["location"])
    splices = [Splice(bytes.fromhex(answer), bytes.fromhex(request)) for request, answer in spec["shapes"]]
    out = sys.stdout.buffer
    try:  # a larger pipe: the server reads it once per turn of its loop, in fewer, larger reads
        import fcntl

        fcntl.fcntl(out.fileno(), 1031, PIPE_SIZE)  # F_SETPIPE_SZ (Linux)
    except (OSError, ImportError, ValueError):
        pass
    keys_wanted = bool(spec.get("keys", True))
    try:
        seq, rows = store.snapshot_raw()
        try:
            _write(out, ("S", seq))
            for frame in chunks(rows, splices, int(spec.get("chunk", CHUNK)), keys_wanted):
                _write(out, frame)
            _write(out, ("E",))
        finally:
            close = getattr(rows, "close", None)
            if close is not None:
                close()
    finally:
        store.close()
    out.flush()
    return 0


def _leave_the_serving_cores() -> None:
    """Off a pinned server's cores and at ``nice`` ``HELPER_NICE`` (``leave_the_serving_cores``):
    the warm-up is worth only the CPU nobody else wants — on a 2-core machine at full load, the
    helper at normal priority took the load generator's core and the node answered fewer
    requests than without a warm-up."""
    leave_the_serving_cores(HELPER_NICE)


def _open(engine: str, location: str) -> Any:
    if engine == "sqlite":
        from idr.store.sqlite import SqliteStore

        return SqliteStore(location)
    if engine == "postgres":
        from idr.store.postgres import PostgresStore

        return PostgresStore(location, read_only=True, pool_size=2)
    raise ValueError(f"unknown store engine {engine!r}")


def _write(out: Any, frame: tuple[Any, ...]) -> None:
    body = marshal.dumps(frame, 4)  # version ≥ 3 keeps shared objects shared (each key once)
    out.write(_FRAME.pack(len(body)))
    out.write(body)


def chunks(
    rows: Iterator[tuple[str, str, bytes]],
    splices: Sequence[Splice],
    size: int = CHUNK,
    keys_wanted: bool = True,
) -> Iterator[tuple[Any, ...]]:
    """``("C", probe, first, keys, answers, index, checks)`` frames from key-ordered rows, one
    prefix per frame (every 0.NA record alone: each is judged on its own). ``probe`` is a handle
    of the frame that parses (None: no answers in it), ``first`` its first handle key, ``keys``
    every handle key and stored key
    seen, ``checks`` ``(handle, values, answers)`` of the first ``CHECKS`` answered records."""
    keys: list[str] = []
    answers: dict[bytes, bytes] = {}
    first = ""
    index: dict[str, bytes | tuple[bytes, ...]] = {}
    checks: list[tuple[str, bytes, list[bytes]]] = []
    checked = 0
    group: str | None = None
    probe: str | None = None
    rows_in = 0
    for stored_key, handle, values in rows:
        hkey = normalize_key(handle)
        prefix = hkey.partition("/")[0]
        g = hkey if prefix == "0.NA" else prefix
        if rows_in and (g != group or rows_in >= size):
            yield ("C", probe, first, keys, answers, index, checks)
            keys, answers, index, checks = [], {}, {}, []
            probe = None
            rows_in = 0
        if rows_in == 0:
            first = hkey
        group = g
        rows_in += 1
        if keys_wanted:
            keys.append(hkey)
            if stored_key != hkey:
                keys.append(stored_key)
        if not splices:
            continue
        if probe is None:
            try:
                Handle.parse(handle)
            except HandleError:  # not a handle (internal rows): says nothing about its prefix
                continue
            probe = handle
        if not all_public(values):
            continue  # left to the slow path
        raw = handle.encode("utf-8")
        built = []
        for splice in splices:
            ck = splice.request_key(raw)
            answer = splice.answer(raw, values)
            built.append(answer)
            answers[ck] = answer
            had = index.get(hkey)
            if had is None:
                index[hkey] = ck
            elif isinstance(had, bytes):
                index[hkey] = (had, ck)
            else:
                index[hkey] = (*had, ck)
        if checked < CHECKS:
            checked += 1
            checks.append((handle, values, built))
    if rows_in:
        yield ("C", probe, first, keys, answers, index, checks)


# ---------------------------------------------------------------------------- server side


async def helper_fill(
    cache: AnswerCache,
    spec: tuple[str, str],
    shapes: Sequence[tuple[bytes, bytes]],
    responsible: Callable[[str], bool],
    verify: Callable[[int, str, bytes, bytes], bool],
    known: set[str] | None,
    epoch: int,
    chunk: int = CHUNK,
) -> int | None:
    """One warm pass through a helper process over the store ``spec`` names, for ``shapes``
    (``(request head, answer head)`` of each splice). ``responsible(handle)``: the node answers
    for it; ``verify(shape index, handle, values, answer)``: the splice equals the codec's
    encoding. Returns the answers stored, or None when the helper failed (nothing it sent was
    wrong, but the pass is incomplete: the caller runs it on the loop)."""
    engine, location = spec
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        "import sys; from idr.server.warmhelper import helper_main; sys.exit(helper_main())",
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        limit=_STREAM_LIMIT,
    )
    assert proc.stdin is not None and proc.stdout is not None
    stored = 0
    verdicts: dict[str, bool] = {}
    shelf = cache.open_shelf()
    try:
        desc = {
            "engine": engine,
            "location": location,
            "shapes": [(r.hex(), a.hex()) for r, a in shapes],
            "chunk": chunk,
            "keys": known is not None,
        }
        proc.stdin.write(json.dumps(desc).encode())
        await proc.stdin.drain()
        proc.stdin.close()
        while True:
            head = await proc.stdout.readexactly(_FRAME.size)
            frame = marshal.loads(await proc.stdout.readexactly(_FRAME.unpack(head)[0]))
            if frame[0] == "E":
                await _reap(proc)
                break
            if frame[0] != "C":
                continue
            _, probe, first, keys, answers, index, checks = frame
            if known is not None:
                known.update(keys)
            if probe is None or not answers:
                continue
            for handle, values, built in checks:
                if not all(verify(i, handle, values, answer) for i, answer in enumerate(built)):
                    log.warning("warm-up helper: spliced answer differs for %s; warming on the loop", handle)
                    return None
            prefix = normalize_key(probe).partition("/")[0]
            ok = verdicts.get(prefix)
            if ok is None:
                try:
                    ok = responsible(probe)
                except HandleError:
                    ok = False
                if prefix != "0.NA":
                    verdicts[prefix] = ok
            if ok:
                stored += cache.shelve(shelf, first, answers, index, epoch)
            await asyncio.sleep(0)  # the datagrams that arrived meanwhile first
    except (asyncio.IncompleteReadError, ValueError, EOFError, TypeError, OSError) as e:
        code = await _reap(proc)
        log.error(
            "warm-up helper failed (%s, exit code %s); warming on the loop", e or type(e).__name__, code
        )
        return None
    finally:
        if proc.returncode is None:  # cancelled, or gave up on it: it may be blocked writing
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await proc.wait()
    return stored


async def _reap(proc: asyncio.subprocess.Process, timeout: float = 5.0) -> int | None:
    """Its exit code, once it has closed its store (killed if it does not within ``timeout``)."""
    if proc.returncode is None:
        try:
            await asyncio.wait_for(proc.wait(), timeout)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await proc.wait()
    return proc.returncode
