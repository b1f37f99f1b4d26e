"""The recursion engine's network: one Handle-protocol query to one server (UDP, then TCP).

Queries share one UDP socket per address family (:class:`_Mux`): each is a datagram with its
own RequestId, matched with its answer by (server address, RequestId), so a burst of cold walks
costs no socket set-up per query and is pipelined to each upstream server — at most
``per_server`` queries in flight to one server at once; the rest wait for a slot (a flood of
distinct names cannot turn into a flood at one upstream). A query is sent again once inside its
timeout; a multi-datagram answer is reassembled; a truncated answer (TC: too large, or the
upstream's amplification budget) is asked again over TCP, as is any server not named by an IP
address (:class:`~idr.resolver.client.HandleClient`, one connection per query).

Answers are turned into the core's ``Response`` — referrals included — so the engine reasons in
one vocabulary everywhere.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import secrets
import socket
import time
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

from idr.codec.bodies import ErrorResponse, ResolutionRequest, ResolutionResponse, ServiceReferral
from idr.codec.envelope import ENVELOPE_SIZE, EnvFlag, OpCode, OpFlag
from idr.codec.message import Message, decode_message, encode_message
from idr.codec.udp import MAX_UDP_PACKET, Reassembler
from idr.codec.wire import ProtocolError
from idr.core.request import Request, Response
from idr.model.errors import ResponseCode
from idr.model.site import ServerInfo, SiteInfo
from idr.resolver.client import EXPIRATION, ClientError, HandleClient, ResponseError
from idr.resolver.recursive import server_address

PER_SERVER = 32  # queries in flight to one upstream server
MAX_SERVERS = 4096  # upstream servers whose slots are kept (idle ones forgotten beyond this)


class _Mux(asyncio.DatagramProtocol):
    """One UDP socket for every query of one address family; answers by (host, port, RequestId)."""

    def __init__(self) -> None:
        self.waiting: dict[tuple[str, int, int], asyncio.Future[bytes]] = {}
        self.reassembler = Reassembler(max_pending=1024, timeout=10.0)
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: Any) -> None:
        if len(data) < ENVELOPE_SIZE:
            return
        key = (addr[0], addr[1], int.from_bytes(data[8:12], "big"))
        fut = self.waiting.get(key)
        if fut is None or fut.done():
            return
        try:
            whole = self.reassembler.feed(key[:2], data, time.monotonic())
        except ProtocolError:
            return
        if whole is not None:
            fut.set_result(whole)

    def error_received(self, exc: Exception) -> None:  # ICMP unreachable: the query times out
        pass

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None


class NativeTransport:
    """Resolution over the shared UDP socket, TCP when the answer is truncated (see module)."""

    def __init__(self, *, retries: int = 1, per_server: int = PER_SERVER) -> None:
        self.retries = retries
        self.per_server = per_server
        self._mux: dict[tuple[int, asyncio.AbstractEventLoop], _Mux] = {}
        self._slots: dict[tuple[str, int], asyncio.Semaphore] = {}
        self._opening: dict[tuple[int, asyncio.AbstractEventLoop], asyncio.Task[_Mux]] = {}

    async def query(self, server: ServerInfo, request: Request, timeout: float) -> Response:
        host, port = server_address(server)
        try:
            ip = ipaddress.ip_address(host)
        except ValueError:
            return await self._tcp_or_udp(host, port, request, timeout, "udp")
        raw = await self._udp(str(ip), ip.version, port, request, timeout)
        if raw[2] & EnvFlag.TC:
            return await self._tcp_or_udp(str(ip), port, request, timeout, "tcp")
        try:
            msg = decode_message(raw)
        except ProtocolError as e:
            raise ConnectionError(f"unreadable answer from {host}:{port}: {e.message}") from e
        return _response(msg, request)

    async def _udp(self, host: str, family: int, port: int, request: Request, timeout: float) -> bytes:
        mux = await self._endpoint(family)
        slot = self._slot(host, port)
        async with slot:
            rid = secrets.randbelow(0x7FFFFFFF) + 1
            while (host, port, rid) in mux.waiting:
                rid = secrets.randbelow(0x7FFFFFFF) + 1
            body = ResolutionRequest(request.handle, tuple(request.indexes), tuple(request.types))
            msg = Message(
                OpCode.RESOLUTION, body, 0, OpFlag.PO, rid, 0, expiration=int(time.time()) + EXPIRATION
            )
            data = encode_message(msg)
            if len(data) > MAX_UDP_PACKET:
                raise ConnectionError("request too large for one datagram")  # names are ≤ 2 KiB: never
            key = (host, port, rid)
            fut: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
            mux.waiting[key] = fut
            try:
                per_try = timeout / (1 + self.retries)
                for _ in range(1 + max(0, self.retries)):
                    if mux.transport is None:
                        break
                    mux.transport.sendto(data, (host, port))
                    try:
                        return await asyncio.wait_for(asyncio.shield(fut), per_try)
                    except TimeoutError:
                        continue
                raise ConnectionError(f"no answer from {host}:{port} over UDP")
            finally:
                mux.waiting.pop(key, None)
                fut.cancel()

    async def _endpoint(self, family: int) -> _Mux:
        loop = asyncio.get_running_loop()
        key = (family, loop)
        mux = self._mux.get(key)
        if mux is not None and mux.transport is not None:
            return mux
        opening = self._opening.get(key)
        if opening is None:  # the first of a burst opens the socket; the others wait for it
            opening = self._opening[key] = loop.create_task(self._open(family))
        try:
            return await asyncio.shield(opening)
        finally:
            if opening.done():
                self._opening.pop(key, None)

    async def _open(self, family: int) -> _Mux:
        loop = asyncio.get_running_loop()
        fam = socket.AF_INET6 if family == 6 else socket.AF_INET
        local = ("::", 0) if family == 6 else ("0.0.0.0", 0)
        try:
            _, mux = await loop.create_datagram_endpoint(_Mux, local_addr=local, family=fam)
        except OSError as e:
            raise ConnectionError(f"cannot open a UDP socket: {e}") from e
        self._mux[(family, loop)] = mux
        return mux

    def _slot(self, host: str, port: int) -> asyncio.Semaphore:
        slot = self._slots.get((host, port))
        if slot is None:
            if len(self._slots) >= MAX_SERVERS:  # forget idle servers' slots (none in use)
                for k in [k for k, s in self._slots.items() if s._value == self.per_server]:
                    del self._slots[k]
            slot = self._slots[(host, port)] = asyncio.Semaphore(self.per_server)
        return slot

    async def _tcp_or_udp(self, host: str, port: int, request: Request, timeout: float, how: str) -> Response:
        """One query through its own :class:`HandleClient` (a host name, or TCP after TC)."""
        per_try = timeout / (1 + self.retries)
        client = HandleClient(host, port, timeout=per_try, retries=self.retries)
        try:
            msg = await client.resolve(
                request.handle, indexes=request.indexes, types=request.types, transport=how
            )
        except ClientError as e:
            raise ConnectionError(str(e)) from e
        finally:
            await client.close()
        return _response(msg, request)

    def close(self) -> None:
        for mux in self._mux.values():
            if mux.transport is not None:
                with contextlib.suppress(Exception):
                    mux.transport.close()
        self._mux.clear()


def _response(msg: Message, request: Request) -> Response:
    code = _code(msg.response_code)
    body = msg.body
    if isinstance(body, ResolutionResponse):
        return Response(code, body.handle, body.values)
    if isinstance(body, ServiceReferral):
        return Response(code, body.handle, body.values or ())
    message = body.message if isinstance(body, ErrorResponse) else ""
    return Response(code, request.handle, message=message)


def _code(value: int) -> ResponseCode:
    try:
        return ResponseCode(value)
    except ValueError:
        return ResponseCode.ERROR


async def root_sites(addresses: Sequence[tuple[str, int]], timeout: float = 2.0) -> list[SiteInfo]:
    """The top service's sites, as a Handle client learns them before its first walk.

    Handle.Net clients start from ``root_info``: the HS_SITE values of ``0.NA/0.NA``, every
    site of the root service (primary and mirrors). So: those values at the first address
    that has them; else each address's own site (GET_SITE_INFO: its real servers, so a
    multi-server site is hashed as it is); else a one-server site at the address. The first
    address answering is the primary. ``ClientError`` when none answers."""
    from idr.core.federation import loopback_site, sites_of

    found: list[SiteInfo] = []
    failures: list[str] = []
    for host, port in addresses:
        try:
            async with HandleClient(host, port, timeout=timeout, retries=1) as client:
                msg = await client.resolve("0.NA/0.NA", types=("HS_SITE", "HS_SITE.6"))
                if isinstance(msg.body, ResolutionResponse):
                    sites = sites_of(msg.body.values)
                    if sites:
                        return sites
                site = await client.site_info()
        except ResponseError:  # it answers, but publishes no site: the address is the site
            site = loopback_site(f"root {host}:{port}", native=port, host=host)
        except ClientError as e:
            failures.append(f"{host}:{port}: {e}")
            continue
        found.append(replace(site, primary=not found))
    if not found:
        raise ClientError("no root server answered: " + "; ".join(failures))
    return found
