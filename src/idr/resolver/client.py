"""The Handle protocol client: send one request to one server, get its ``Message`` back.

``HandleClient.request(msg, transport=...)`` is the central primitive every later feature
(recursion, site selection, failover) builds on. Around it:

- UDP: the request (fragmented into 512-byte datagrams if longer, TC set, as Handle.Net clients
  do) is sent up to ``1 + retries`` times, each attempt waiting ``timeout`` seconds; a multi-packet
  answer is reassembled; an answer with TC set in its envelope (a server's "too large for UDP")
  makes the client ask again over TCP, as DNS clients do.
- TCP: one connection per request (the reference server closes after each answer), or one
  persistent connection with ``keep_alive=True`` (KA set on every request). Multi-part answers
  (CN flag) are collected until the last part.
- Authentication: when the server answers 402 and the client has an ``Authenticator``, the client
  first checks that the challenge's digest really is the digest of the request it sent (so nobody
  can make it sign another operation), then answers with OC_RESPONSE_TO_CHALLENGE on the same
  connection, echoing the challenge's SessionId (``HandleResolver`` behaviour).
- HTTP: ``resolve_http`` reads ``GET /api/handles/<handle>`` of the REST API.

Errors: ``ClientError`` (unreachable, timeout, garbage from the server) and ``ResponseError``
(the server answered with an error code; ``.code`` and ``.message``).
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import ssl
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Protocol
from urllib.parse import quote

from idr.codec import rest
from idr.codec.auth import MAC_HMAC_SHA256, secret_key_mac, sign_challenge
from idr.codec.bodies import (
    AddValueRequest,
    Body,
    ChallengeAnswerRequest,
    ChallengeResponse,
    CreateHandleRequest,
    CreateHandleResponse,
    ErrorResponse,
    GenericRequest,
    ListHandlesRequest,
    ListHandlesResponse,
    ListHomedNAsResponse,
    ModifyValueRequest,
    RemoveValueRequest,
    ResolutionRequest,
    ResolutionResponse,
    SiteInfoResponse,
)
from idr.codec.envelope import ENVELOPE_SIZE, MAX_MESSAGE_LENGTH, EnvFlag, OpCode, OpFlag, decode_envelope
from idr.codec.keys import PrivateKey, default_hash_alg
from idr.codec.message import Message, decode_message, encode_message, request_digest
from idr.codec.udp import MAX_UDP_PACKET, Reassembler, fragment
from idr.codec.wire import ProtocolError
from idr.model.errors import HandleError, ResponseCode
from idr.model.site import SiteInfo, TransportProtocol
from idr.model.value import HandleValue, ValueReference
from idr.resolver.session import ClientSession, SessionError, Setup, check_certified, finish, setup_body

DEFAULT_PORT = 2641
DEFAULT_TIMEOUT = 5.0
DEFAULT_RETRIES = 2
MAX_PARTS = 100_000  # bound on the parts of a multi-part (CN) answer
EXPIRATION = 43200  # Handle.Net AbstractMessage: requests expire 12 h after they are sent


class ClientError(Exception):
    """The exchange failed: server unreachable, no answer in time, or an unreadable answer."""


class ResponseError(ClientError):
    """The server answered with an error response code."""

    def __init__(self, code: int, message: str = "") -> None:
        self.code = code
        self.message = message
        try:
            name = ResponseCode(code).name
        except ValueError:
            name = f"code {code}"
        super().__init__(f"{name} ({code})" + (f": {message}" if message else ""))


class Authenticator(Protocol):
    """Answers a 402 challenge as ``identity``."""

    @property
    def identity(self) -> ValueReference: ...

    @property
    def auth_type(self) -> str: ...

    def answer(self, nonce: bytes, digest: bytes, version: tuple[int, int]) -> bytes: ...


@dataclass(frozen=True)
class PublicKeyAuth:
    """HS_PUBKEY: sign ``nonce || digest`` with the private key (RSA PKCS#1 v1.5, DSA, Ed25519, or
    SM2 with SM3 as China's SDKs do)."""

    identity: ValueReference
    key: PrivateKey
    hash_alg: str | None = None
    auth_type: str = "HS_PUBKEY"

    def answer(self, nonce: bytes, digest: bytes, version: tuple[int, int]) -> bytes:
        return sign_challenge(self.key, nonce, digest, self.hash_alg or default_hash_alg(self.key, version))


@dataclass(frozen=True)
class SecretKeyAuth:
    """HS_SECKEY: a MAC of ``nonce || digest`` keyed with the shared secret (HMAC-SHA256 default)."""

    identity: ValueReference
    secret: bytes
    mac_alg: int = MAC_HMAC_SHA256
    auth_type: str = "HS_SECKEY"

    def answer(self, nonce: bytes, digest: bytes, version: tuple[int, int]) -> bytes:
        alg = self.mac_alg if version >= (2, 1) else 0
        return secret_key_mac(alg, self.secret, nonce, digest)


def _new_id() -> int:
    return secrets.randbelow(0x7FFFFFFF) + 1


def build_request(opcode: int, body: Body, *, flags: int = 0, session_id: int = 0) -> Message:
    return Message(opcode, body, 0, flags, _new_id(), session_id, expiration=int(time.time()) + EXPIRATION)


def _check(msg: Message) -> Message:
    if msg.response_code != ResponseCode.SUCCESS:
        text = msg.body.message if isinstance(msg.body, ErrorResponse) else ""
        raise ResponseError(msg.response_code, text)
    return msg


# --------------------------------------------------------------------------- transports


class _UdpExchange(asyncio.DatagramProtocol):
    def __init__(self, request_id: int) -> None:
        self.request_id = request_id
        self.reassembler = Reassembler(max_pending=4, timeout=60.0)
        self.done: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()

    def datagram_received(self, data: bytes, addr: object) -> None:
        if self.done.done() or len(data) < ENVELOPE_SIZE:
            return
        try:
            env = decode_envelope(data)
            if env.request_id != self.request_id:
                return
            whole = self.reassembler.feed("server", data, time.monotonic())
        except ProtocolError:
            return
        if whole is not None:
            self.done.set_result(whole)

    def error_received(self, exc: Exception) -> None:
        if not self.done.done():
            self.done.set_exception(ClientError(f"server unreachable: {exc}"))


class _TcpChannel:
    """One TCP connection: write a message, read complete messages back."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, timeout: float) -> None:
        self.reader = reader
        self.writer = writer
        self.timeout = timeout

    @classmethod
    async def open(cls, host: str, port: int, timeout: float) -> _TcpChannel:
        try:
            reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), timeout)
        except TimeoutError as e:
            raise ClientError(f"timed out connecting to {host}:{port} over TCP") from e
        except OSError as e:
            raise ClientError(f"cannot connect to {host}:{port} over TCP: {e.strerror or e}") from e
        return cls(reader, writer, timeout)

    async def send(self, data: bytes) -> None:
        self.writer.write(data)
        try:
            await asyncio.wait_for(self.writer.drain(), self.timeout)
        except (OSError, TimeoutError) as e:
            raise ClientError(f"TCP send failed: {e}") from e

    async def read(self) -> bytes:
        try:
            head = await asyncio.wait_for(self.reader.readexactly(ENVELOPE_SIZE), self.timeout)
            length = int.from_bytes(head[16:20], "big")
            if length > MAX_MESSAGE_LENGTH:
                raise ClientError(f"server sent a message of {length} bytes")
            rest_ = await asyncio.wait_for(self.reader.readexactly(length), self.timeout)
        except TimeoutError as e:
            raise ClientError(f"no answer over TCP within {self.timeout:g} s") from e
        except asyncio.IncompleteReadError as e:
            raise ClientError("server closed the TCP connection without a complete answer") from e
        except OSError as e:
            raise ClientError(f"TCP receive failed: {e}") from e
        return head + rest_

    async def close(self) -> None:
        self.writer.close()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.writer.wait_closed(), 1.0)


# --------------------------------------------------------------------------- the client


class HandleClient:
    """Talks to one Handle server. Use as ``async with HandleClient(host, port) as c: …``."""

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = DEFAULT_PORT,
        *,
        timeout: float = DEFAULT_TIMEOUT,
        retries: int = DEFAULT_RETRIES,
        auth: Authenticator | None = None,
        keep_alive: bool = False,
        session: bool = False,
        certify: bool = False,
        server_key: bytes | None = None,
    ) -> None:
        """``session``: administer inside a Handle.Net session (identity proven once, requests
        MACed); ``certify``: ask for signed answers and check them; ``server_key``: the server's
        HS_PUBKEY data to check signatures with (default: what its GET_SITE_INFO publishes)."""
        self.host = host
        self.port = port
        self.timeout = timeout
        self.retries = retries
        self.auth = auth
        self.keep_alive = keep_alive
        self.use_session = session
        self.certify = certify
        self.server_key = server_key
        self.session: ClientSession | None = None
        self._tcp: _TcpChannel | None = None
        self._tcp_lock = asyncio.Lock()

    async def __aenter__(self) -> HandleClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        if self.session is not None:
            with contextlib.suppress(ClientError):
                await self.end_session()
        if self._tcp is not None:
            await self._tcp.close()
            self._tcp = None

    # ------------------------------------------------------------------ sessions

    async def published_key(self) -> bytes:
        """The server's HS_PUBKEY data: given, or from the server record of its site that
        listens on our port (trust on first use when nobody gave it to us)."""
        if self.server_key is None:
            site = await self.site_info()
            ours = [s for s in site.servers if self.port in (i.port for i in s.interfaces)]
            mine = ours or list(site.servers)
            if not mine or not mine[0].public_key:
                raise ClientError("the server publishes no public key: it cannot certify or set up sessions")
            self.server_key = mine[0].public_key
        return self.server_key

    async def open_session(self) -> ClientSession:
        """SESSION_SETUP (Diffie–Hellman) naming our identity; the answer must be signed."""
        server_key = await self.published_key()
        identity = self.auth.identity if self.auth is not None else None
        body, private = setup_body(identity)
        # KA as _tcp_exchange would add it: the answer's digest is of the request as sent
        keep = OpFlag.KA if self.keep_alive else 0
        req = build_request(OpCode.SESSION_SETUP, body, flags=OpFlag.CT | OpFlag.RD | keep)
        async with self._tcp_lock:
            answer = _check((await self._tcp_exchange(req))[0])
        try:
            self.session = finish(Setup(req, private, identity), answer, server_key)
        except SessionError as e:
            raise ClientError(f"session setup refused: {e}") from e
        return self.session

    async def end_session(self) -> None:
        """SESSION_TERMINATE, MACed; the session is forgotten whatever the answer."""
        session, self.session = self.session, None
        if session is not None:
            keep = OpFlag.KA if self.keep_alive else 0
            req = session.sign(build_request(OpCode.SESSION_TERMINATE, GenericRequest(""), flags=keep))
            async with self._tcp_lock:
                await self._tcp_exchange(req)

    async def _in_session(self, msg: Message) -> list[Message]:
        """``msg`` over TCP inside our session (set up on first use; set up again once when the
        server has forgotten it, as ``HandleResolver`` does on codes ≥ 500)."""
        for attempt in range(2):
            session = self.session or await self.open_session()
            # every flag set before the MAC (KA too, which _tcp_exchange would add after it)
            flags = (OpFlag.CT if self.certify else 0) | (OpFlag.KA if self.keep_alive else 0)
            signed = session.sign(replace(msg, opflags=msg.opflags | flags))
            async with self._tcp_lock:
                answers = await self._tcp_exchange(signed)
            if answers[0].response_code >= ResponseCode.SESSION_TIMEOUT and attempt == 0:
                self.session = None
                continue
            await self._check_certified(answers, session)
            if answers[0].response_code == ResponseCode.SUCCESS and self.auth is not None:
                session.authenticated = True
            return answers
        raise AssertionError("unreachable")

    async def _check_certified(self, answers: list[Message], session: ClientSession | None) -> None:
        if not self.certify:
            return
        server_key = await self.published_key()
        try:
            for a in answers:
                check_certified(a, session, server_key)
        except SessionError as e:
            raise ClientError(f"uncertified answer: {e}") from e

    # ------------------------------------------------------------------ the primitive

    async def request(self, msg: Message, *, transport: str = "tcp") -> list[Message]:
        """Send ``msg``; return the answer (several messages only for CN multi-part lists).

        Answers a 402 with ``self.auth`` when it has one; falls back from UDP to TCP on TC."""
        if transport == "udp":
            raw = await self.send_udp(encode_message(msg))
            if raw[2] & EnvFlag.TC and decode_envelope(raw).sequence_number == 0:
                return await self.request(msg, transport="tcp")
            answer = self._decode(raw)
            if answer.response_code == ResponseCode.AUTHENTICATION_NEEDED and self.auth is not None:
                reply = self._challenge_answer(msg, answer)
                return [self._decode(await self.send_udp(encode_message(reply)))]
            return [answer]
        if transport != "tcp":
            raise ValueError(f"unknown transport {transport!r}")
        async with self._tcp_lock:
            return await self._tcp_exchange(msg)

    async def _tcp_exchange(self, msg: Message) -> list[Message]:
        if self.keep_alive:
            msg = replace(msg, opflags=msg.opflags | OpFlag.KA)
        channel = (
            self._tcp if self._tcp is not None else await _TcpChannel.open(self.host, self.port, self.timeout)
        )
        try:
            await channel.send(encode_message(msg))
            answers = await self._read_answer(channel, msg.request_id)
            first = answers[0]
            if first.response_code == ResponseCode.AUTHENTICATION_NEEDED and self.auth is not None:
                reply = self._challenge_answer(msg, first)
                if self.keep_alive:
                    reply = replace(reply, opflags=reply.opflags | OpFlag.KA)
                await channel.send(encode_message(reply))
                answers = await self._read_answer(channel, reply.request_id)
        except BaseException:
            await channel.close()
            self._tcp = None
            raise
        if self.keep_alive:
            self._tcp = channel
        else:
            await channel.close()
        return answers

    async def _read_answer(self, channel: _TcpChannel, request_id: int) -> list[Message]:
        out: list[Message] = []
        for _ in range(MAX_PARTS):
            answer = self._decode(await channel.read())
            if answer.request_id != request_id:
                continue  # a stale answer on a reused connection
            out.append(answer)
            if not answer.opflags & OpFlag.CN:
                return out
        raise ClientError(f"more than {MAX_PARTS} parts in one answer")

    def _challenge_answer(self, sent: Message, challenge: Message) -> Message:
        assert self.auth is not None
        if not isinstance(challenge.body, ChallengeResponse) or challenge.request_digest is None:
            raise ClientError("malformed challenge from server")
        d = challenge.request_digest
        if request_digest(sent, d.alg).digest != d.digest:
            raise ClientError("the server's challenge is not for the request we sent; refusing to sign")
        signed = self.auth.answer(challenge.body.nonce, d.digest, challenge.version)
        body = ChallengeAnswerRequest(
            self.auth.auth_type, self.auth.identity.handle, self.auth.identity.index, signed
        )
        return build_request(OpCode.RESPONSE_TO_CHALLENGE, body, session_id=challenge.session_id)

    @staticmethod
    def _decode(raw: bytes) -> Message:
        try:
            return decode_message(raw)
        except ProtocolError as e:
            raise ClientError(f"unreadable answer from server: {e.message}") from e

    async def send_udp(self, data: bytes) -> bytes:
        """Send one request over UDP (fragmented if needed); the complete answer, or ClientError."""
        loop = asyncio.get_running_loop()
        rid = int.from_bytes(data[8:12], "big")
        datagrams = [data] if len(data) <= MAX_UDP_PACKET else fragment(data, truncated=True)
        try:
            transport, proto = await loop.create_datagram_endpoint(
                lambda: _UdpExchange(rid), remote_addr=(self.host, self.port)
            )
        except OSError as e:
            raise ClientError(f"cannot reach {self.host}:{self.port} over UDP: {e.strerror or e}") from e
        try:
            for _ in range(1 + max(0, self.retries)):
                for d in datagrams:
                    transport.sendto(d)
                try:
                    return await asyncio.wait_for(asyncio.shield(proto.done), self.timeout)
                except TimeoutError:
                    continue
            raise ClientError(
                f"no answer from {self.host}:{self.port} over UDP after {1 + max(0, self.retries)} "
                f"attempts of {self.timeout:g} s"
            )
        finally:
            transport.close()

    # ------------------------------------------------------------------ operations

    async def resolve(
        self,
        handle: str,
        *,
        indexes: Sequence[int] = (),
        types: Sequence[str] = (),
        transport: str = "udp",
        public_only: bool = True,
    ) -> Message:
        """Resolution; the raw answer (check ``response_code``)."""
        flags = OpFlag.PO if public_only else 0
        req = build_request(
            OpCode.RESOLUTION, ResolutionRequest(handle, tuple(indexes), tuple(types)), flags=flags
        )
        if not public_only and self.use_session:  # restricted values: as our session's identity
            return (await self._in_session(req))[0]
        return (await self.request(req, transport=transport))[0]

    async def site_info(self) -> SiteInfo:
        """The server's own site (GET_SITE_INFO): its interfaces, e.g. where its HTTP API is."""
        msg = _check((await self.request(build_request(OpCode.GET_SITE_INFO, GenericRequest("/"))))[0])
        if not isinstance(msg.body, SiteInfoResponse):
            raise ClientError("the server's site info is unreadable")
        return msg.body.site

    async def server_for(self, handle: str) -> tuple[str, int] | None:
        """Where ``handle`` lives when this server's site has several servers and the
        protocol's hash (``SiteInfo.server_for``) gives it to another: its native address.
        None when it is this server, or the server publishes no site. A client told 301
        ("hashed incorrectly") asks here."""
        try:
            site = await self.site_info()
        except ClientError:  # ResponseError too: a server without site info holds what it holds
            return None
        if len(site.servers) < 2:
            return None
        server = site.server_for(handle)
        port = server.port_for(TransportProtocol.TCP) or server.port_for(TransportProtocol.UDP)
        if port is None or (server.host, port) == (self.host, self.port):
            return None
        return server.host, port

    async def resolve_values(self, handle: str, **kw: object) -> tuple[HandleValue, ...]:
        msg = _check(await self.resolve(handle, **kw))  # type: ignore[arg-type]
        assert isinstance(msg.body, ResolutionResponse)
        return msg.body.values

    async def _admin(self, opcode: int, body: Body, flags: int = 0) -> Message:
        return _check((await self._tcp_request(build_request(opcode, body, flags=flags)))[0])

    async def _tcp_request(self, msg: Message) -> list[Message]:
        """An administrative (or authenticated) request: in our session when we keep one."""
        if self.use_session:
            return await self._in_session(msg)
        if self.certify:
            msg = replace(msg, opflags=msg.opflags | OpFlag.CT)
        answers = await self.request(msg, transport="tcp")
        await self._check_certified(answers, None)
        return answers

    async def create(
        self, handle: str, values: Sequence[HandleValue], *, overwrite: bool = False, mint: bool = False
    ) -> str:
        """Create ``handle`` (with ``mint``: a suffix the server picks); returns the handle made."""
        flags = (OpFlag.OVRW if overwrite else 0) | (OpFlag.MINT if mint else 0)
        msg = await self._admin(OpCode.CREATE_HANDLE, CreateHandleRequest(handle, tuple(values)), flags)
        if isinstance(msg.body, CreateHandleResponse) and msg.body.handle:
            return msg.body.handle
        return handle

    async def add_values(
        self, handle: str, values: Sequence[HandleValue], *, overwrite: bool = False
    ) -> None:
        await self._admin(
            OpCode.ADD_VALUE, AddValueRequest(handle, tuple(values)), OpFlag.OVRW if overwrite else 0
        )

    async def modify_values(self, handle: str, values: Sequence[HandleValue]) -> None:
        await self._admin(OpCode.MODIFY_VALUE, ModifyValueRequest(handle, tuple(values)))

    async def remove_values(self, handle: str, indexes: Sequence[int]) -> None:
        await self._admin(OpCode.REMOVE_VALUE, RemoveValueRequest(handle, tuple(indexes)))

    async def delete(self, handle: str) -> None:
        await self._admin(OpCode.DELETE_HANDLE, GenericRequest(handle))

    async def home(self, prefix: str) -> None:
        await self._admin(OpCode.HOME_NA, GenericRequest(prefix))

    async def unhome(self, prefix: str) -> None:
        await self._admin(OpCode.UNHOME_NA, GenericRequest(prefix))

    async def list_handles(self, prefix: str) -> list[str]:
        req = build_request(OpCode.LIST_HANDLES, ListHandlesRequest(prefix))
        out: list[str] = []
        for part in await self._tcp_request(req):
            _check(part)
            assert isinstance(part.body, ListHandlesResponse)
            out.extend(part.body.handles)
        return out

    async def list_homed(self) -> list[str]:
        req = build_request(OpCode.LIST_HOMED_NAS, ListHandlesRequest(""))
        out: list[str] = []
        for part in await self._tcp_request(req):
            _check(part)
            assert isinstance(part.body, ListHomedNAsResponse)
            out.extend(part.body.prefixes)
        return out


# --------------------------------------------------------------------------- REST


def _http_get(url: str, insecure: bool, timeout: float) -> tuple[int, bytes]:
    import urllib.error
    import urllib.request

    ctx = ssl.create_default_context()
    if insecure:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    try:
        with urllib.request.urlopen(url, timeout=timeout, context=ctx) as r:
            return int(r.status), bytes(r.read(MAX_MESSAGE_LENGTH * 4))
    except urllib.error.HTTPError as e:
        return int(e.code), bytes(e.read(MAX_MESSAGE_LENGTH))
    except urllib.error.URLError as e:
        reason = e.reason
        if isinstance(reason, ssl.SSLCertVerificationError):
            raise ClientError(
                f"TLS certificate of {url} not trusted (use --insecure for a "
                f"self-signed test node): {reason.verify_message}"
            ) from e
        raise ClientError(f"cannot reach {url}: {reason}") from e
    except (TimeoutError, OSError) as e:
        raise ClientError(f"cannot reach {url}: {e}") from e


async def resolve_http(
    base_url: str,
    handle: str,
    *,
    indexes: Sequence[int] = (),
    types: Sequence[str] = (),
    insecure: bool = False,
    timeout: float = DEFAULT_TIMEOUT,
) -> tuple[HandleValue, ...]:
    """Resolve through the REST API (``GET /api/handles/<handle>?type=…&index=…``)."""
    query = [f"type={quote(t)}" for t in types] + [f"index={i}" for i in indexes]
    url = f"{base_url.rstrip('/')}/api/handles/{quote(handle, safe='/')}"
    if query:
        url += "?" + "&".join(query)
    status, body = await asyncio.to_thread(_http_get, url, insecure, timeout)
    try:
        doc = rest.loads(body)
    except HandleError as e:
        raise ClientError(f"HTTP {status} from {url}: not JSON") from e
    code = doc.get("responseCode", 0) if isinstance(doc, dict) else 0
    if code != ResponseCode.SUCCESS:
        message = doc.get("message", "") if isinstance(doc, dict) else ""
        raise ResponseError(int(code) if isinstance(code, int) else 2, str(message or f"HTTP {status}"))
    try:
        return rest.values_from_json(doc, timestamps=True)
    except HandleError as e:
        raise ClientError(f"unreadable values from {url}: {e.message}") from e
