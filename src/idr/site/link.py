"""The site link: a server's listener (asyncio) and its client to the others (blocking).

Messages, each one sealed frame (``idr.replication.wire``), answered in order on their
connection:

* ``{"op": "get", "keys": [...]}`` → a CHUNK frame with the records held (absent ones left out);
* ``{"op": "call", "req": {...}}`` → ``{"resp": {...}}``: a request the receiver answers as
  its own (``Request.relay`` False: never relayed again);
* a CHUNK frame → ``{"n": N}``: records the receiver stores (re-sharing), with their values
  and timestamps as they are; ``{"op": "delete", "keys": [...]}`` → ``{"n": N}``;
* any failure → ``{"error": "...", "code": RC}``.

The client is blocking on purpose: the core reads another server's record where it would
read its store (a reader or the writer thread), like a PostgreSQL read. Each thread keeps its
own connection to each server; a broken one is reopened once per call.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import logging
import socket
import struct
import threading
import time
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import replace
from typing import TYPE_CHECKING, Any

import orjson

from idr.codec.values import decode_values, encode_values
from idr.core.request import Op, Request, Response
from idr.core.site import ServerSpec
from idr.model.errors import HandleError, ResponseCode
from idr.model.value import HandleRecord, ValueReference
from idr.replication.wire import (
    CHUNK,
    FRAME_MAX,
    JSON,
    PRE_AUTH_MAX,
    Channel,
    LinkError,
    Sealer,
    client_answer,
    client_hello,
    decode_chunk,
    encode_chunk,
    server_handshake,
)
from idr.store.cache import MISSING

if TYPE_CHECKING:
    from idr.core.service import NodeService

log = logging.getLogger("idr.site")

PURPOSE = b"idr-site"  # the handshake's label: a replication key opens no site link, and back
CACHE_ENTRIES = 100_000  # records read from other servers kept (each for ``ttl`` seconds)
_LEN = struct.Struct(">I")


def site_digest(servers: Sequence[str], hash_option: str) -> str:
    """What a server believes its site is (servers in order, the hash): equal on every server."""
    canon = [str(ServerSpec.parse(s)) for s in servers]
    return hashlib.sha256(orjson.dumps([canon, hash_option])).hexdigest()[:16]


def _announce(index: int, digest: str) -> str:
    return orjson.dumps({"index": index, "site": digest}).decode()


def _announced(text: str) -> tuple[int, str]:
    try:
        doc = orjson.loads(text)
        return int(doc["index"]), str(doc["site"])
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError) as e:
        raise LinkError(f"the peer did not say which server of which site it is: {text!r}") from e


# --------------------------------------------------------------------------- requests as JSON


def _values(data: str) -> Any:
    return decode_values(base64.b64decode(data))


def request_to_json(req: Request) -> dict[str, Any]:
    return {
        "op": int(req.op),
        "handle": req.handle,
        "indexes": list(req.indexes),
        "types": list(req.types),
        "values": base64.b64encode(encode_values(req.values)).decode(),
        "identity": str(req.identity) if req.identity is not None else None,
        "overwrite": req.overwrite,
        "mint": req.mint,
        "public_only": req.public_only,
        "authoritative": req.authoritative,
        "page": req.page,
        "page_size": req.page_size,
        "after": req.after,
        "terms": [list(t) for t in req.terms],
        "offset": req.offset,
    }


def request_from_json(doc: dict[str, Any]) -> Request:
    identity = doc.get("identity")
    return Request(
        Op(int(doc["op"])),
        str(doc["handle"]),
        tuple(int(i) for i in doc["indexes"]),
        tuple(str(t) for t in doc["types"]),
        _values(doc["values"]),
        ValueReference.parse(identity) if identity else None,
        overwrite=bool(doc["overwrite"]),
        mint=bool(doc["mint"]),
        public_only=bool(doc["public_only"]),
        authoritative=bool(doc["authoritative"]),
        page=doc["page"],
        page_size=doc["page_size"],
        after=doc["after"],
        relay=False,
        terms=tuple((str(t), str(p)) for t, p in doc.get("terms", ())),
        offset=int(doc.get("offset", 0)),
    )


def response_to_json(resp: Response) -> dict[str, Any]:
    plain = (str, int, float, bool, type(None))
    return {
        "code": int(resp.code),
        "handle": resp.handle,
        "values": base64.b64encode(encode_values(resp.values)).decode(),
        "message": resp.message,
        "handles": list(resp.handles),
        "total": resp.total,
        "seq": resp.seq,
        "extra": {k: v for k, v in resp.extra.items() if isinstance(v, plain)},
    }


def response_from_json(doc: dict[str, Any]) -> Response:
    return Response(
        ResponseCode(int(doc["code"])),
        str(doc["handle"]),
        _values(doc["values"]),
        str(doc["message"]),
        tuple(str(h) for h in doc["handles"]),
        doc["total"],
        int(doc["seq"]),
        dict(doc["extra"]),
    )


# --------------------------------------------------------------------------- the listener


class SiteLinkServer:
    """A server's end of the site link: the others read, relay to and re-share into it."""

    def __init__(self, service: NodeService, secret: bytes, index: int, digest: str) -> None:
        self.service = service
        self.secret = secret
        self.index = index
        self.digest = digest
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self.served = 0  # messages answered (a test reads it)

    async def start(self, host: str, port: int) -> tuple[str, int]:
        self._server = await asyncio.start_server(self._conn, host, port, reuse_address=True)
        bound = self._server.sockets[0].getsockname()
        return str(bound[0]), int(bound[1])

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            for t in list(self._tasks):
                t.cancel()
            with contextlib.suppress(Exception):
                await self._server.wait_closed()
            self._server = None

    async def _conn(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._tasks.add(task)
        peer = writer.get_extra_info("peername")
        try:
            async with asyncio.timeout(10.0):
                ch = await server_handshake(
                    reader, writer, self.secret, _announce(self.index, self.digest), PURPOSE
                )
            index, digest = _announced(ch.peer)
            if digest != self.digest:
                await ch.send_json(
                    {"error": "different [site] servers or hash", "code": int(ResponseCode.ERROR)}
                )
                raise LinkError(f"server {index} at {peer} has a different [site] (servers, order or hash)")
            while True:
                kind, payload = await ch.recv()
                await self._answer(ch, kind, payload)
        except (LinkError, OSError, TimeoutError, asyncio.IncompleteReadError) as e:
            if not isinstance(e, LinkError) or "closed by peer" not in str(e):
                log.warning("site link from %s: %s", peer, e)
        except asyncio.CancelledError:
            pass
        finally:
            writer.close()
            if task is not None:
                self._tasks.discard(task)

    async def _answer(self, ch: Channel, kind: int, payload: bytes) -> None:
        service = self.service
        self.served += 1
        try:
            if kind == CHUNK:
                n = await service.take_records(decode_chunk(payload))
                await ch.send_json({"n": n})
                return
            if kind != JSON:
                raise LinkError(f"unexpected frame kind {kind}")
            msg = orjson.loads(payload)
            op = msg.get("op") if isinstance(msg, dict) else None
            if op == "get":
                keys = [str(k) for k in msg["keys"]]
                found = await service.read_local(keys)
                await ch.send(CHUNK, encode_chunk([(k, r) for k, r in found.items() if r is not None]))
            elif op == "call":
                resp = await service.submit(request_from_json(msg["req"]))
                await ch.send_json({"resp": response_to_json(resp)})
            elif op == "delete":
                n = await service.take_records([(str(k), None) for k in msg["keys"]])
                await ch.send_json({"n": n})
            elif op == "reshare":
                await ch.send_json(await reshare(service))
            else:
                raise LinkError(f"unknown site link operation {op!r}")
        except HandleError as e:
            await ch.send_json({"error": e.message, "code": int(e.code)})
        except (KeyError, TypeError, ValueError, orjson.JSONDecodeError) as e:
            await ch.send_json(
                {"error": f"bad site link message: {e}", "code": int(ResponseCode.PROTOCOL_ERROR)}
            )


# --------------------------------------------------------------------------- re-sharing


async def reshare(service: NodeService, batch: int = 500) -> dict[str, int]:
    """Move every record this server holds that the site's hash (its current ``[site]``) gives
    another server: each batch stored at its new owner as it is (values, timestamps), then
    deleted here, one logged transaction each — an interrupted run leaves every record on
    one server or both, never none, and running it again finishes the move."""
    from idr.model.handle import NA_PREFIX, normalize_key

    peers = service.peers
    if service.share is None or not isinstance(peers, SitePeers):
        raise HandleError(ResponseCode.OPERATION_NOT_SUPPORTED, "this server is not one of a site of several")
    store = service.store
    scopes = [normalize_key(NA_PREFIX), *(normalize_key(p) for p in service.homed_prefixes())]
    moved = kept = 0
    for scope in dict.fromkeys(scopes):
        after: str | None = None
        while True:
            names = await asyncio.to_thread(store.list_handles, scope, after, batch)
            if not names:
                break
            after = normalize_key(names[-1])
            keys = [normalize_key(n) for n in names]
            by_owner: dict[int, list[str]] = {}
            for k in keys:
                owner = service.site_owner(k)
                if owner is None:
                    kept += 1
                else:
                    by_owner.setdefault(owner, []).append(k)
            for owner, move in by_owner.items():
                found = await asyncio.to_thread(store.get_many, move)
                records = [(k, found[k]) for k in move if k in found]
                await asyncio.to_thread(peers.put, owner, records)
                await service.take_records([(k, None) for k, _ in records])
                moved += len(records)
    log.info("re-sharing: %d records moved to other servers of the site, %d kept", moved, kept)
    return {"moved": moved, "kept": kept}


# --------------------------------------------------------------------------- the client


class _Conn:
    """One blocking, authenticated, sealed connection to one server of the site."""

    def __init__(self, address: tuple[str, int], secret: bytes, me: str, timeout: float) -> None:
        self.sock = socket.create_connection(address, timeout=timeout)
        try:
            self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            nc, hello = client_hello(me)
            self.sock.sendall(hello)
            challenge = orjson.loads(self._frame(PRE_AUTH_MAX))
            if not isinstance(challenge, dict):
                raise LinkError("handshake message is not an object")
            auth, send_key, recv_key, self.peer = client_answer(challenge, secret, nc, PURPOSE)
            self.sock.sendall(auth)
            self.send_seal, self.recv_seal = Sealer(send_key), Sealer(recv_key)
        except BaseException:
            self.sock.close()
            raise

    def _frame(self, cap: int) -> bytes:
        (n,) = _LEN.unpack(self._exactly(4))
        if n > cap:
            raise LinkError(f"frame of {n} bytes exceeds {cap}")
        return self._exactly(n)

    def _exactly(self, n: int) -> bytes:
        buf = bytearray()
        while len(buf) < n:
            chunk = self.sock.recv(n - len(buf))
            if not chunk:
                raise LinkError("connection closed by peer")
            buf += chunk
        return bytes(buf)

    def exchange(self, kind: int, payload: bytes) -> tuple[int, bytes]:
        self.sock.sendall(self.send_seal.seal(kind, payload))
        return self.recv_seal.open(self._frame(FRAME_MAX + 64))

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.close()


class SitePeers:
    """The other servers of this site (``idr.core.site.Peers``): their records, read over the
    link and kept ``ttl`` seconds, and requests relayed to them."""

    def __init__(
        self,
        servers: Sequence[str],
        index: int,
        secret: bytes,
        hash_option: str = "whole",
        *,
        ttl: float = 5.0,
        timeout: float = 2.0,
        clock: Any = time.monotonic,
    ) -> None:
        self.specs = [ServerSpec.parse(s) for s in servers]
        self.index = index
        self.secret = secret
        self.digest = site_digest(servers, hash_option)
        self.ttl = ttl
        self.timeout = timeout
        self.clock = clock
        self._me = _announce(index, self.digest)
        self._local = threading.local()
        self._all: list[_Conn] = []
        self._lock = threading.Lock()
        self._cache: OrderedDict[tuple[int, str], tuple[float, HandleRecord | None]] = OrderedDict()
        self.reads = 0  # records read over the link (not from the cache)
        self.calls = 0  # requests relayed

    # ------------------------------------------------------------------ Peers

    def cached(self, index: int, key: str) -> object:
        with self._lock:
            hit = self._cache.get((index, key))
        if hit is None or hit[0] < self.clock():
            return MISSING
        return hit[1]

    def get(self, index: int, keys: Sequence[str]) -> dict[str, HandleRecord | None]:
        out: dict[str, HandleRecord | None] = {}
        wanted = []
        for k in keys:
            hit = self.cached(index, k)
            if hit is MISSING:
                wanted.append(k)
            else:
                out[k] = hit  # type: ignore[assignment]
        if wanted:
            kind, payload = self._exchange(index, JSON, orjson.dumps({"op": "get", "keys": wanted}))
            if kind != CHUNK:
                self._fail(index, payload)
            found = dict(decode_chunk(payload))
            expires = self.clock() + self.ttl
            with self._lock:
                for k in wanted:
                    out[k] = found.get(k)
                    self._cache[(index, k)] = (expires, out[k])
                    self._cache.move_to_end((index, k))
                while len(self._cache) > CACHE_ENTRIES:
                    self._cache.popitem(last=False)
            self.reads += len(wanted)
        return out

    def call(self, index: int, req: Request) -> Response:
        msg = {"op": "call", "req": request_to_json(replace(req, relay=False))}
        doc = self._json(index, JSON, orjson.dumps(msg))
        self.calls += 1
        return response_from_json(doc["resp"])

    # ------------------------------------------------------------------ re-sharing

    def put(self, index: int, records: Sequence[tuple[str, HandleRecord]]) -> int:
        """Store ``records`` at server ``index`` as they are (values, timestamps)."""
        return int(self._json(index, CHUNK, encode_chunk(records))["n"])

    def delete(self, index: int, keys: Sequence[str]) -> int:
        return int(self._json(index, JSON, orjson.dumps({"op": "delete", "keys": list(keys)}))["n"])

    def reshare(self, index: int) -> dict[str, int]:
        """Have server ``index`` move what the site's hash now gives others (``reshare``)."""
        doc = self._json(index, JSON, orjson.dumps({"op": "reshare"}))
        return {"moved": int(doc["moved"]), "kept": int(doc["kept"])}

    # ------------------------------------------------------------------ plumbing

    def _json(self, index: int, kind: int, payload: bytes) -> dict[str, Any]:
        rkind, rpayload = self._exchange(index, kind, payload)
        doc = orjson.loads(rpayload) if rkind == JSON else None
        if not isinstance(doc, dict) or "error" in doc:
            self._fail(index, rpayload)
        assert isinstance(doc, dict)
        return doc

    def _fail(self, index: int, payload: bytes) -> Any:
        try:
            doc = orjson.loads(payload)
            code, message = ResponseCode(int(doc["code"])), str(doc["error"])
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
            code, message = ResponseCode.ERROR, "an answer the site link does not know"
        raise HandleError(code, f"server {index} of this site: {message}")

    def _conns(self) -> dict[int, _Conn]:
        conns: dict[int, _Conn] | None = getattr(self._local, "conns", None)
        if conns is None:
            conns = self._local.conns = {}
        return conns

    def _exchange(self, index: int, kind: int, payload: bytes) -> tuple[int, bytes]:
        if index == self.index or not 0 <= index < len(self.specs):
            raise HandleError(ResponseCode.ERROR, f"server {index} is not another server of this site")
        conns = self._conns()
        spec = self.specs[index]
        address = (spec.host, spec.link)
        for attempt in (1, 2):  # a kept connection the peer closed (restart): once more, fresh
            conn = conns.get(index)
            try:
                if conn is None:
                    conn = conns[index] = self._connect(index, address)
                return conn.exchange(kind, payload)
            except (OSError, LinkError) as e:
                conns.pop(index, None)
                if conn is not None:
                    conn.close()
                if attempt == 2 or (isinstance(e, LinkError) and "different [site]" in str(e)):
                    raise HandleError(
                        ResponseCode.ERROR, f"server {index} of this site ({spec}) does not answer: {e}"
                    ) from e
        raise AssertionError("unreachable")

    def _connect(self, index: int, address: tuple[str, int]) -> _Conn:
        conn = _Conn(address, self.secret, self._me, self.timeout)
        peer, digest = _announced(conn.peer)
        if peer != index or digest != self.digest:
            conn.close()
            raise LinkError(
                f"different [site]: {address[0]}:{address[1]} says it is server {peer} of site "
                f"{digest}, this server expects server {index} of site {self.digest} "
                "(every server needs the same servers, in the same order, and the same hash)"
            )
        with self._lock:
            self._all.append(conn)
        return conn

    def close(self) -> None:
        with self._lock:
            conns, self._all = self._all, []
        for c in conns:
            c.close()
