"""Pre-encoded resolution answers: the hot path of the native front-ends.

Key: the request's bytes with the two fields that vary per request cut out — the envelope's
RequestId (bytes 8–11) and the header's ExpirationTime (bytes 36–39). Everything else that can
shape the answer (versions, session id, op flags, recursion count, the body with its filters) is
part of the key, so a hit is, by construction, a request the slow path already answered with
these exact bytes apart from the echoed RequestId and expiration, which are patched in by two
slice assignments. Only answers that depend on nothing else are stored: resolution without RD
(the digest covers the expiration), without a session or credential, from one datagram/frame,
with no identity (see ``Outcome.cacheable``).

Invalidation: ``NodeService.add_listener`` calls :meth:`invalidate` after every commit with the
normalised keys it changed (from the writer thread); an index key → cache keys drops exactly
the affected answers; a change of homed prefixes drops everything (301 answers depend on it). A
generation counter closes the race between a slow-path read and a concurrent commit: an answer
computed before a commit is never stored after it.

Warm cache and negative answers. :func:`idr.server.native.warm` fills the cache from a store
snapshot (every handle, for the common request shapes) and records the set of every handle key
the store holds (``known``). From then on the cache is *complete*: a plain resolution (no filters,
no credential) for a valid handle under a homed prefix that is neither ``known`` nor ``dirty``
(written since the warm started, existence not yet re-learned) does not exist, and is answered
from the HANDLE_NOT_FOUND answer the slow path once gave to a request of the same shape (that
answer has an empty body, so it does not depend on the handle). Without this, every miss would
cost a store SELECT (~22 µs), and misses are what random scanners send.

Shapes learned on first use. Warming every handle for every request shape a client *might*
send cost 84 s and 1.6 GB for 1M handles and three shapes; a deployment sees one or two. So the
start-up warm may fill no shape at all (it still builds ``known``), and the first plain
resolution of an existing handle in a new shape (:meth:`note_shape`, from the slow path) hands
the shape to ``on_new_shape`` (``native`` warms it in the background), at most ``max_shapes``.
A warm pass reads a snapshot that may be older than a commit it races with, so every key
written while a pass runs (``_written``; unlike ``dirty`` never forgotten by :meth:`learn`) is
skipped by :meth:`put_many`, and a pass started before a homed-set change (``epoch``) stores
nothing.
"""

from __future__ import annotations

import struct
import threading
from bisect import bisect_right
from collections.abc import Callable, Iterable, Sequence
from itertools import islice

from idr.codec.values import all_public
from idr.model.errors import HandleError
from idr.model.handle import MAX_HANDLE_LENGTH, Handle

HOMED_KEY_PREFIX = "0.HOMED/"  # idr.core.service.HOMED_PREFIX + "/"
PLAIN_TAIL = bytes(12)  # index count 0, type count 0, credential length 0
MAX_DIRTY = 100_000  # beyond this many unsettled writes the cache stops answering "not found"
SMALL_KEYS = 8  # cache keys of one handle kept in a tuple; more (filtered requests) in a set
MAX_SHAPES = 4  # plain-request shapes warmed on first use (each costs ~one answer per handle)
MAX_TEMPLATES = 64  # negative answers and splice heads kept, one per request shape
MAX_PREFIXES = 1024  # raw prefixes whose verdict (valid, ours) is remembered
ASKED_SLOTS = 1 << 22  # first asks remembered (one byte per slot, by hash; see ``miss``)
_ZERO4 = bytes(4)

RawReader = Callable[[str], "bytes | None"]  # a handle key's stored values (Store.raw_reads)


def cache_key(data: bytes) -> bytes:
    """The request bytes minus RequestId and ExpirationTime (a request is ≥ 44 bytes here)."""
    return data[:8] + data[12:36] + data[40:]


def shape_key(data: bytes) -> bytes:
    """A plain resolution request minus RequestId, lengths, expiration and the handle."""
    return data[:8] + data[12:16] + data[20:36]


_LENGTHS = struct.Struct(">I20xII")  # at 16: MessageLength; at 40: BodyLength, handle length


def plain_handle(data: bytes) -> bytes | None:
    """The handle bytes of a plain resolution request (no index/type filter, empty credential,
    consistent lengths), or None for anything else."""
    n = len(data)
    if n < 60:
        return None
    message, body, hl = _LENGTHS.unpack_from(data, 16)
    if n != 60 + hl or message != n - 20 or body != hl + 12 or not data.endswith(PLAIN_TAIL):
        return None
    return data[48 : 48 + hl]


def request_shape(data: bytes, ka: int = 0) -> bytes:
    """The 44-byte head of a plain resolution request with RequestId, the two lengths (they vary
    with the handle), expiration (and, for TCP's KA-neutral key, the keep-alive bit ``ka``)
    cleared: what :func:`idr.server.native.warm` takes."""
    out = bytearray(data[:44])
    for at in (8, 16, 36, 40):
        out[at : at + 4] = bytes(4)
    out[28] ^= ka
    return bytes(out)


# Four bytes written in place (RequestId at 8, ExpirationTime at 36): a slice assignment into a
# ``bytearray`` first copies the bytes it is given into a temporary ``bytearray``; ``pack_into``
# does not (copy and both fields of a 233-byte answer: 199 against 306 ns, ``timeit``). One
# format for both would write its pad bytes, zeros, over the 24 bytes between them.
put4 = struct.Struct("4s").pack_into  # (answer copy, offset, four bytes)


def patch(template: bytes, data: bytes) -> bytearray:
    """A cached answer with this request's RequestId and ExpirationTime."""
    out = bytearray(template)
    put4(out, 8, data[8:12])
    put4(out, 36, data[36:40])
    return out


def patched(template: bytes, data: bytes) -> bytes:
    """:func:`patch` as ``bytes`` (one join: what ``AnswerCache.miss`` returns)."""
    return b"".join((template[:8], data[8:12], template[12:36], data[36:40], template[40:]))


class Splice:
    """The SUCCESS answer to a plain resolution of one request shape, for any handle whose values
    are all public: a 44-byte head that differs between handles only in two lengths, then the
    body — the handle as asked, and the values exactly as the store keeps them (``encode_values``
    is their wire form) — then an empty credential. Nothing is decoded or encoded per handle."""

    __slots__ = ("_a0", "_a1", "_a2", "_h0", "_h1", "_k0", "_k1")

    def __init__(self, answer_head: bytes, request_head: bytes) -> None:
        self._h0 = bytes(answer_head[:16])
        self._h1 = bytes(answer_head[20:40])
        self._k0 = bytes(request_head[:8] + request_head[12:16])
        self._k1 = bytes(request_head[20:36])
        self._split()

    def _split(self) -> None:
        # the head around RequestId (8-12) and ExpirationTime (36-40), for ``answer_to``
        self._a0, self._a1, self._a2 = self._h0[:8], self._h0[12:], self._h1[:16]

    def answer(self, raw: bytes, values: bytes) -> bytes:
        """The answer for handle bytes ``raw`` (as the request spelled it) and stored values."""
        n = len(raw)
        body = 4 + n + len(values)
        h0, h1 = self._h0, self._h1
        return b"".join(
            (
                h0,
                (body + 28).to_bytes(4, "big"),
                h1,
                body.to_bytes(4, "big"),
                n.to_bytes(4, "big"),
                raw,
                values,
                _ZERO4,
            )
        )

    def answer_to(self, data: bytes, raw: bytes, values: bytes) -> bytes:
        """:meth:`answer` with request ``data``'s RequestId and ExpirationTime in place: the
        answer to send, built in one join (``answer`` and then ``patch``: two copies)."""
        n = len(raw)
        body = 4 + n + len(values)
        return b"".join(
            (
                self._a0,
                data[8:12],
                self._a1,
                (body + 28).to_bytes(4, "big"),
                self._a2,
                data[36:40],
                body.to_bytes(4, "big"),
                n.to_bytes(4, "big"),
                raw,
                values,
                _ZERO4,
            )
        )

    def parts(self) -> tuple[bytes, bytes, bytes, bytes]:
        """What :meth:`from_parts` rebuilds it from (``idr.server.snapshot``)."""
        return (self._h0, self._h1, self._k0, self._k1)

    @classmethod
    def from_parts(cls, parts: object) -> Splice:
        if not (isinstance(parts, tuple) and len(parts) == 4 and all(isinstance(p, bytes) for p in parts)):
            raise ValueError("splice parts malformed")
        s = cls.__new__(cls)
        s._h0, s._h1, s._k0, s._k1 = parts
        if len(s._h0) != 16 or len(s._h1) != 20:
            raise ValueError("splice parts malformed")
        s._split()
        return s

    def request_key(self, raw: bytes) -> bytes:
        """``cache_key`` of this shape's plain request for ``raw``."""
        n = len(raw)
        k0, k1 = self._k0, self._k1
        return b"".join(
            (
                k0,
                (40 + n).to_bytes(4, "big"),
                k1,
                (12 + n).to_bytes(4, "big"),
                n.to_bytes(4, "big"),
                raw,
                PLAIN_TAIL,
            )
        )


class Shelf:
    """One warm pass's chunks in key order: ``bounds[i]`` is the first handle key of
    ``chunks[i]`` (its answers by cache key, and its index by handle key)."""

    __slots__ = ("bounds", "chunks")

    def __init__(self) -> None:
        self.bounds: list[str] = []
        self.chunks: list[tuple[dict[bytes, bytes], dict[str, bytes | tuple[bytes, ...]]]] = []


class AnswerCache:
    """Bounded map cache key → complete response bytes; FIFO eviction (O(1), no LRU bookkeeping
    on hits, so a hit is one dict lookup)."""

    def __init__(self, capacity: int = 500_000) -> None:
        self.capacity = capacity
        self.data: dict[bytes, bytes] = {}  # read lock-free on the hot path (dict ops are atomic)
        self._owner: dict[bytes, str] = {}  # cache key → normalised handle key
        # normalised handle key → its cache key (one shape, the usual case), a tuple of a few (a
        # set costs 216 bytes, a 2-tuple 56: with 1M handles warmed for two shapes, 160 MB), or a
        # set beyond SMALL_KEYS
        self._index: dict[str, bytes | tuple[bytes, ...] | set[bytes]] = {}
        self._lock = threading.Lock()
        self.generation = 0
        self.hits = 0  # counted by the front-ends when they want to
        self.stores = 0
        # completeness (see module docstring)
        self.tracking = False  # a warm started: commits go to ``dirty``
        self.complete = False
        self.known: set[str] = set()
        self.dirty: set[str] = set()
        self.negative: dict[bytes, bytes] = {}  # shape key → HANDLE_NOT_FOUND answer
        self.responsible: Callable[[Handle], bool] = lambda h: False
        self.negative_hits = 0
        # answers spliced from one store row (see ``miss``)
        self.read_raw: RawReader | None = None  # Store.raw_reads when a read never waits, else None
        # ends the store snapshot the reads share (Store.raw_reads): before any read that
        # follows a commit's invalidation, so no read sees less than an announced commit
        self.read_release: Callable[[], None] | None = None
        self._read_generation = 0
        self.heads: dict[bytes, Splice | None] = {}  # shape key → splice (None: does not splice)
        self.spliced = 0
        # handle keys spliced once already, by hash (a slot shared by two keys only stores the
        # second one's answer at its first ask, as before); forgotten when half full
        self._asked = bytearray(ASKED_SLOTS)
        self._asked_set = 0
        self._prefixes: dict[str, bool] = {}  # prefix as spelled → valid and ours (``_plain_key``)
        # shapes learned on first use, and warm passes in flight (see module docstring)
        self.on_new_shape: Callable[[bytes], None] | None = None
        self.max_shapes = MAX_SHAPES
        self.shapes: set[bytes] = set()  # request_shape() of every shape warmed or being warmed
        self.epoch = 0  # bumped when everything is dropped (homed set changed)
        self._passes = 0
        self._written: set[str] = set()
        self._shelves: list[Shelf] = []  # warm passes' chunks, kept as shipped (``shelve``)
        self.shelved = 0
        self.unshelved = 0  # misses answered from a shelf

    def __len__(self) -> int:
        return len(self.data)

    def put(self, key: bytes, answer: bytes, handle_key: str, generation: int) -> bool:
        """Store unless a commit happened since ``generation`` was read (the answer may be stale)."""
        if self.capacity <= 0:
            return False
        with self._lock:
            if generation != self.generation:
                return False
            self._put(key, answer, handle_key)
            return True

    def _put(self, key: bytes, answer: bytes, handle_key: str) -> None:
        if key not in self.data:
            while len(self.data) >= self.capacity:
                self._drop(next(iter(self.data)))
            keys = self._index.get(handle_key)
            if keys is None:
                self._index[handle_key] = key
            elif isinstance(keys, bytes):
                self._index[handle_key] = (keys, key)
            elif isinstance(keys, tuple):
                self._index[handle_key] = (*keys, key) if len(keys) < SMALL_KEYS else {*keys, key}
            else:
                keys.add(key)
            self._owner[key] = handle_key
        self.data[key] = answer
        self.stores += 1

    def put_many(self, items: Iterable[tuple[bytes, bytes, str]], epoch: int | None = None) -> int:
        """Warm-up insert: skips handles written since the pass began (their answers may be
        stale), and everything when the cache was cleared since ``epoch``."""
        n = 0
        with self._lock:
            if epoch is not None and epoch != self.epoch:
                return 0
            dirty, written = self.dirty, self._written
            for key, answer, handle_key in items:
                if (
                    handle_key in dirty
                    or handle_key in written
                    or (key not in self.data and len(self.data) >= self.capacity)
                ):
                    continue
                self._put(key, answer, handle_key)
                n += 1
        return n

    def export(
        self,
    ) -> tuple[list[bytes], list[bytes], list[str], dict[str, tuple[bytes, ...] | set[bytes]]]:
        """Every answer held (the map, oldest first, then the shelves) for a snapshot
        (``idr.server.snapshot``): cache keys, answers and their handle keys side by side, and
        the index entries of handles with more than one cache key."""
        with self._lock:
            keys = list(self.data)
            answers = list(self.data.values())
            owner = self._owner
            owned = list(owner)  # in the map's order (both change together), checked at C speed
            owners = list(owner.values()) if owned == keys else [owner[k] for k in keys]
            del owned
            multi = {h: ks for h, ks in self._index.items() if not isinstance(ks, bytes)}
            for shelf in self._shelves:
                for chunk, index in shelf.chunks:
                    for hkey, cks in index.items():
                        for ck in (cks,) if isinstance(cks, bytes) else cks:
                            answer = chunk.get(ck)
                            if answer is None or ck in self.data:
                                continue
                            keys.append(ck)
                            answers.append(answer)
                            owners.append(hkey)
                        if not isinstance(cks, bytes):
                            multi[hkey] = tuple(cks)
            if len(keys) > self.capacity:
                del keys[self.capacity :], answers[self.capacity :], owners[self.capacity :]
        return keys, answers, owners, multi

    def restore(
        self,
        keys: list[bytes],
        answers: list[bytes],
        owners: list[str],
        multi: dict[str, tuple[bytes, ...] | set[bytes]],
        changed: set[str],
        heads: dict[bytes, Splice],
        negative: dict[bytes, bytes],
    ) -> int:
        """Fill an empty cache from a snapshot (:meth:`export`'s lists) but for the answers of
        the handles in ``changed``, then at most ``capacity`` answers (the oldest go first). Runs
        before any front-end reads the cache. Returns how many answers were left out."""
        with self._lock:
            if self.data or self._shelves:
                raise ValueError("restore into a cache that is in use")
            data = dict(zip(keys, answers, strict=True))
            owner = dict(zip(keys, owners, strict=True))
            index: dict[str, bytes | tuple[bytes, ...] | set[bytes]] = dict(zip(owners, keys, strict=True))
            for hkey, cks in multi.items():  # handles with several cache keys (shapes, filters)
                live = tuple(ck for ck in cks if ck in data)
                if len(live) > 1:
                    index[hkey] = live if len(live) <= SMALL_KEYS else set(live)
                elif live:
                    index[hkey] = live[0]
            dropped = 0
            for hkey in changed:
                gone = index.pop(hkey, None)
                for ck in () if gone is None else (gone,) if isinstance(gone, bytes) else gone:
                    if data.pop(ck, None) is not None:
                        dropped += 1
                    owner.pop(ck, None)
            self.data.update(data)
            self._owner.update(owner)
            self._index.update(index)
            self.heads.update(heads)
            self.negative.update(negative)
            excess = max(0, len(self.data) - self.capacity)
            for ck in list(islice(self.data, excess)):
                self._drop(ck)
            return dropped + excess

    def open_shelf(self) -> Shelf:
        """A shelf for one warm pass's chunks (``idr.server.warmhelper``), searched on a miss."""
        shelf = Shelf()
        with self._lock:
            self._shelves.append(shelf)
        return shelf

    def shelve(
        self,
        shelf: Shelf,
        first: str,
        answers: dict[bytes, bytes],
        index: dict[str, bytes | tuple[bytes, ...]],
        epoch: int,
    ) -> int:
        """Keep a warm pass's ready chunk (cache key → answer, handle key → its cache keys,
        every handle key ≥ ``first`` and above the shelf's previous chunk's) as it is: nothing
        is inserted per handle, a miss finds the answer by ``bisect`` (:meth:`_shelved`) and
        moves it into the map. Handles written since the pass began (or unsettled, ``dirty``)
        are taken out first, as :meth:`put_many` skips them; nothing when the cache was cleared
        since ``epoch`` or the chunk would pass the capacity. The maps given are kept."""
        with self._lock:
            if epoch != self.epoch or shelf not in self._shelves:
                return 0
            for stale in (self._written.intersection(index), self.dirty.intersection(index)):
                for hkey in stale:
                    cks = index.pop(hkey, None)
                    for ck in () if cks is None else (cks,) if isinstance(cks, bytes) else cks:
                        answers.pop(ck, None)
            if not answers or len(self.data) + self.shelved + len(answers) > self.capacity:
                return 0
            if shelf.bounds and first <= shelf.bounds[-1]:
                return 0  # out of order: the bisect would not find it
            shelf.bounds.append(first)
            shelf.chunks.append((answers, index))
            self.shelved += len(answers)
            return len(answers)

    def _shelved(self, ck: bytes, key: str) -> bytes | None:
        """The shelved answer for cache key ``ck`` of handle key ``key``, if a pass shipped it."""
        for shelf in self._shelves:
            i = bisect_right(shelf.bounds, key) - 1
            if i >= 0:
                answer = shelf.chunks[i][0].get(ck)
                if answer is not None:
                    return answer
        return None

    def peek(self, ck: bytes, key: str) -> bytes | None:
        """What the cache holds for ``ck`` (the map or a shelf), without moving anything."""
        answer = self.data.get(ck)
        return answer if answer is not None else self._shelved(ck, key)

    def _unshelve(self, key: str) -> None:
        for shelf in self._shelves:
            i = bisect_right(shelf.bounds, key) - 1
            if i >= 0:
                answers, index = shelf.chunks[i]
                cks = index.pop(key, None)
                for ck in () if cks is None else (cks,) if isinstance(cks, bytes) else cks:
                    if answers.pop(ck, None) is not None:
                        self.shelved -= 1

    def begin_pass(self, shape: bytes | None = None) -> int:
        """A warm pass starts (for ``shape``, when it is a learned one): returns the epoch to
        hand to :meth:`put_many`."""
        with self._lock:
            if self._passes == 0:
                self._written.clear()
            self._passes += 1
            if shape is not None:
                self.shapes.add(shape)
            return self.epoch

    def end_pass(self) -> None:
        with self._lock:
            self._passes = max(0, self._passes - 1)
            if self._passes == 0:
                self._written.clear()

    def note_shape(self, data: bytes, ka: int = 0) -> None:
        """The slow path answered a plain resolution for an existing handle: a shape not warmed
        yet goes to ``on_new_shape`` (once, at most ``max_shapes``)."""
        hook = self.on_new_shape
        if hook is None or len(self.shapes) >= self.max_shapes or plain_handle(data) is None:
            return
        shape = request_shape(data, ka)
        if shape in self.shapes:
            return
        self.shapes.add(shape)
        hook(shape)

    def learn(self, data: bytes, answer: bytes, handle_key: str, exists: bool, generation: int) -> bool:
        """What a slow-path resolution taught: whether ``handle_key`` exists, and, for a
        not-found answer to a plain request, the negative answer for that request shape.
        True when the negative template now covers ``data``: then the answer is not stored
        (a scanner's misses would otherwise evict real answers from the FIFO)."""
        with self._lock:
            if generation != self.generation:
                return False
            self.dirty.discard(handle_key)
            if exists:
                self.known.add(handle_key)
                return False
            self.known.discard(handle_key)
            if plain_handle(data) is None:
                return False
            shape = shape_key(data)
            if shape not in self.negative and len(self.negative) < MAX_TEMPLATES:
                self.negative[shape] = answer
            return self.complete and shape in self.negative

    def not_found(self, data: bytes) -> bytes | None:
        """The HANDLE_NOT_FOUND answer template for ``data`` when the complete cache proves the
        handle absent; None when only the store or the slow path can tell."""
        if not self.complete:
            return None
        raw = plain_handle(data)
        if raw is None:
            return None
        key = self._plain_key(raw)
        if key is None or key in self.known or key in self.dirty:
            return None
        template = self.negative.get(data[:8] + data[12:16] + data[20:36])
        if template is not None:
            self.negative_hits += 1
        return template

    def miss(self, data: bytes, limit: int) -> bytes | None:
        """The answer to send (``data``'s RequestId and expiration in place) for a request the
        hot map does not hold, when memory or one store row settles it; None: the slow path
        answers.

        Only a plain resolution (``plain_handle``) of a valid handle under a prefix of ours
        qualifies. Absent — ``known`` says so on a complete cache, else ``read_raw`` finds no
        row — it is the shape's learned HANDLE_NOT_FOUND answer. Present, its values all public
        (``all_public``, judged on the stored bytes) and the shape's splice learned, it is the
        spliced answer, stored in the hot map for next time. This is what makes a node fast from
        its first second: one key lookup instead of decode, core and encode (~7 µs against
        ~50 µs with SQLite on this machine).

        A spliced answer is stored when its handle is asked the second time (``_asked``, one
        byte per hash slot), not the first: storing costs ~3 µs (three inserts into maps of a
        million entries that miss the CPU caches, and the lock), as much as the row read, and a
        handle asked once — most of a cold node's first seconds under uniform load, a scanner's
        names always — never repays it nor should evict answers that are asked again; a handle
        asked again pays one more row read."""
        raw = plain_handle(data)
        if raw is None:
            return None
        key = self._plain_key(raw)
        if key is None:
            return None
        shape = data[:8] + data[12:16] + data[20:36]
        if self.complete and key not in self.known and key not in self.dirty:
            template = self.negative.get(shape)
            if template is not None:
                self.negative_hits += 1
                return patched(template, data)
        if self.shelved:
            ck = data[:8] + data[12:36] + data[40:]
            answer = self._shelved(ck, key)
            if answer is not None and len(answer) <= limit:
                self.put(ck, answer, key, self.generation)  # a hit from now on
                self.unshelved += 1
                return patched(answer, data)
        read = self.read_raw
        if read is None:
            return None
        generation = self.generation
        if generation != self._read_generation:
            self._fresh_reads(generation)
        try:
            values = read(key)
        except Exception:  # the slow path reports store trouble properly
            return None
        if values is None:
            template = self.negative.get(shape)
            if template is None:
                return None
            self.negative_hits += 1
            return patched(template, data)
        splice = self.heads.get(shape)
        # (52 + the handle + the values: exactly the spliced answer's length)
        if splice is None or 52 + len(raw) + len(values) > limit or not all_public(values):
            return None
        answer = splice.answer_to(data, raw, values)  # stored as it is: a hit patches both fields
        self.spliced += 1
        asked, slot = self._asked, hash(key) & (ASKED_SLOTS - 1)
        if asked[slot]:
            self.put(data[:8] + data[12:36] + data[40:], answer, key, generation)
        else:
            asked[slot] = 1
            self._asked_set += 1
            if self._asked_set > ASKED_SLOTS // 2:  # mostly names asked once: start again
                self._asked = bytearray(ASKED_SLOTS)
                self._asked_set = 0
        return answer

    def _fresh_reads(self, generation: int) -> None:
        """A commit was announced since the store snapshot in use (if any) began: end it."""
        self._read_generation = generation
        if self.read_release is not None:
            self.read_release()

    def _plain_key(self, raw: bytes) -> str | None:
        """The store key of handle bytes ``raw`` when they are an ASCII handle ``Handle.parse``
        accepts under a prefix this node answers for (not a prefix handle), else None (the slow
        path then gives the precise answer). The verdict on the prefix is remembered per spelling
        (bounded), so this is a few byte operations."""
        if len(raw) > MAX_HANDLE_LENGTH or not raw.isascii():
            return None
        text = raw.decode("ascii")
        if not text.isprintable():  # for ASCII: exactly the control characters Handle.parse refuses
            return None
        prefix, _, suffix = text.partition("/")
        ok = self._prefixes.get(prefix)
        if ok is None:
            try:
                h = Handle.parse(prefix + "/x")
                ok = not h.is_prefix_handle and self.responsible(h)
            except HandleError:
                ok = False
            if len(self._prefixes) < MAX_PREFIXES:
                self._prefixes[prefix] = ok
        if not ok or not suffix:
            return None
        return text.upper()

    def learn_splice(self, data: bytes, answer: bytes, handle_key: str) -> None:
        """The slow path answered a plain resolution of an existing handle with ``answer``: learn
        the shape's splice, checked once against that answer and the handle's stored row."""
        shape = data[:8] + data[12:16] + data[20:36]
        read = self.read_raw
        if read is None or shape in self.heads or len(self.heads) >= MAX_TEMPLATES:
            return
        raw = plain_handle(data)
        if self.generation != self._read_generation:
            self._fresh_reads(self.generation)
        try:
            values = read(handle_key)
        except Exception:
            return
        if raw is None or values is None or not all_public(values):
            return  # another handle will teach it
        splice = Splice(answer[:44], data[:44])
        if splice.answer(raw, values) == answer:  # else a write raced the slow path, or the shape
            self.heads[shape] = splice  # does not splice: the next answer tries again

    def _drop(self, key: bytes) -> None:
        self.data.pop(key, None)
        owner = self._owner.pop(key, None)
        if owner is not None:
            keys = self._index.get(owner)
            if keys == key:
                del self._index[owner]
            elif isinstance(keys, tuple):
                rest = tuple(k for k in keys if k != key)
                if len(rest) == 1:
                    self._index[owner] = rest[0]
                elif rest:
                    self._index[owner] = rest
                else:
                    del self._index[owner]
            elif isinstance(keys, set):
                keys.discard(key)
                if not keys:
                    del self._index[owner]

    def start_tracking(self) -> int:
        """Begin a warm-up: from now on commits are remembered in ``dirty``."""
        with self._lock:
            self.tracking = True
            self.dirty.clear()
            return self.generation

    def finish_warm(self, known: set[str]) -> None:
        with self._lock:
            self.known = known | self.known  # keep what the slow path learned meanwhile
            self.complete = self.tracking and len(self.dirty) <= MAX_DIRTY

    def invalidate(self, keys: Sequence[str]) -> None:
        """Listener for ``NodeService.add_listener``: drop answers about the changed handles."""
        with self._lock:
            self.generation += 1
            if any(k.startswith(HOMED_KEY_PREFIX) for k in keys):
                self._clear()
                return
            if self._passes:
                self._written.update(keys)
            if self.tracking:
                self.dirty.update(keys)
                if len(self.dirty) > MAX_DIRTY:
                    self.complete = False
            for k in keys:
                if self.shelved:
                    self._unshelve(k)
                cks = self._index.pop(k, None)
                if cks is None:
                    continue
                for ck in (cks,) if isinstance(cks, bytes) else cks:
                    self.data.pop(ck, None)
                    self._owner.pop(ck, None)

    def _clear(self) -> None:
        self._shelves.clear()
        self.shelved = 0
        self.data.clear()
        self._owner.clear()
        self._index.clear()
        # 301 vs 100 depends on the homed set: nothing negative can be claimed until re-warmed.
        self.complete = False
        self.tracking = False
        self.known = set()
        self.dirty.clear()
        self.negative.clear()
        self.heads.clear()  # the site serial in their heads may have changed too
        self._prefixes.clear()
        self.epoch += 1
        self.shapes.clear()  # re-learned on next use

    def clear(self) -> None:
        with self._lock:
            self.generation += 1
            self._clear()
