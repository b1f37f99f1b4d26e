"""Challenge–response authentication on the server side (RFC 3652 §3.5; Handle.Net
``HandleServer.createChallenge`` / ``verifyIdentityAndGetIndex`` / ``verifyChallenge``).

A request the core refuses with AUTHENTICATION_NEEDED is parked here and answered with a 402
carrying a fresh 16-byte nonce and the digest of that request. Like Handle.Net, the challenge is
named by the envelope SessionId of the 402, which the client echoes in its
OC_RESPONSE_TO_CHALLENGE; we also bind it to the client's IP address. Unlike Handle.Net (which
keeps an answered challenge until it expires), a challenge is consumed by the first answer: a
second answer with the same SessionId is a replay and gets SESSION_MESSAGE_REJECTED, an unknown or
expired one AUTHEN_TIMEOUT (Handle.Net's code). The table is bounded in entries, bytes (a parked
request may be a 256 KB CREATE from anyone: ``max_bytes``), entries per client address
(``per_peer``) and time.

Verifying an answer costs CPU the client chooses (PBKDF2 iterations, key sizes, the pure-Python
SM2 arithmetic), so every verification goes through one :class:`AuthGuard`: a per-address rate,
a back-off per identity after failed attempts (an online guessing oracle otherwise), and a
:class:`~idr.server.limits.CostGate` that runs the work off the event loop, a bounded amount at
a time. The store is read on the event loop; only the pure checks below run on the gate's thread.

A verification that proves an identity also goes through the node's login back-off
(:class:`~idr.server.throttle.Throttle`, the one its HTTP logins use): a guess over the Handle
protocol counts against the same address and identity as one over HTTP, so a guesser gains
nothing by alternating front-ends, and the real admin's known address stays exempt.
"""

from __future__ import annotations

import secrets
import time
from collections import OrderedDict
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from typing import TypeVar, cast

from idr.codec.auth import verify_secret_answer, verify_signature_answer
from idr.codec.bodies import ChallengeAnswerRequest
from idr.codec.keys import decode_public_key
from idr.codec.message import Message
from idr.codec.wire import ProtocolError
from idr.core.interface import Core
from idr.model.errors import HandleError, ResponseCode
from idr.model.value import HandleValue, ValueReference
from idr.server.limits import CostGate, RateTable
from idr.server.throttle import Throttle, Throttled

T = TypeVar("T")

NONCE_SIZE = 16  # Handle.Net Common.CHALLENGE_NONCE_SIZE
CHALLENGE_TTL = 60.0  # seconds; Handle.Net's max_auth_time default is of this order
MAX_PENDING = 10_000
MAX_PENDING_BYTES = 32 * 1024 * 1024  # parked requests' raw bytes, all clients together
MAX_PENDING_PER_PEER = 64

PUBKEY = "HS_PUBKEY"
SECKEY = "HS_SECKEY"


@dataclass(frozen=True, slots=True)
class Pending:
    """A parked request: what was asked, the nonce we sent, the digest the answer must cover, and
    what the front-end wants back with it (the session the request came in)."""

    request: Message
    nonce: bytes
    digest: bytes
    deadline: float
    context: object = None

    @property
    def size(self) -> int:
        return len(self.request.raw) + 256  # the decoded copy is of the same order; count both


class ChallengeTable:
    """Pending challenges keyed by (scope, challenge SessionId); one use each. The scope is the
    client's address, or the TCP connection when the SessionId is one the client picked itself
    (the Teleinfo SDK's logins: every SDK process numbers its sessions from 10001)."""

    def __init__(
        self,
        *,
        ttl: float = CHALLENGE_TTL,
        capacity: int = MAX_PENDING,
        max_bytes: int = MAX_PENDING_BYTES,
        per_peer: int = MAX_PENDING_PER_PEER,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.ttl = ttl
        self.capacity = capacity
        self.max_bytes = max_bytes
        self.per_peer = per_peer
        self.clock = clock
        self.issued = 0  # challenges sent, for tests and metrics
        self._pending: OrderedDict[tuple[Hashable, int], Pending] = OrderedDict()
        self._used: OrderedDict[tuple[Hashable, int], float] = OrderedDict()
        self._by_peer: dict[Hashable, OrderedDict[int, None]] = {}  # peer → its session ids, oldest first
        self.bytes = 0

    def __len__(self) -> int:
        return len(self._pending)

    def _drop(self, key: tuple[Hashable, int]) -> None:
        pending = self._pending.pop(key)
        self.bytes -= pending.size
        mine = self._by_peer[key[0]]
        del mine[key[1]]
        if not mine:
            del self._by_peer[key[0]]

    def _expire(self, now: float) -> None:
        while self._pending:
            key, pending = next(iter(self._pending.items()))
            if (
                pending.deadline > now
                and len(self._pending) <= self.capacity
                and self.bytes <= self.max_bytes
            ):
                break
            self._drop(key)
        while self._used:
            key, deadline = next(iter(self._used.items()))
            if deadline > now and len(self._used) <= self.capacity:
                break
            del self._used[key]

    def new_session_id(self, peer: Hashable) -> int:
        """A random, currently unused, positive 31-bit id (not guessable, unlike HN's counter)."""
        while True:
            sid = secrets.randbelow(0x7FFFFFFF) + 1
            if (peer, sid) not in self._pending and (peer, sid) not in self._used:
                return sid

    def park(
        self,
        scope: Hashable,
        session_id: int,
        request: Message,
        nonce: bytes,
        digest: bytes,
        context: object = None,
    ) -> None:
        """Keep a challenged request; a client with ``per_peer`` waiting already loses its oldest
        (one address cannot fill the table and push out everyone else's challenges). ``scope``:
        the client's address, or its connection for a SessionId it picked itself."""
        now = self.clock()
        self._expire(now)
        self.issued += 1
        mine = self._by_peer.setdefault(scope, OrderedDict())
        if len(mine) >= self.per_peer:
            self._drop((scope, next(iter(mine))))
            mine = self._by_peer.setdefault(scope, OrderedDict())
        pending = Pending(request, nonce, digest, now + self.ttl, context)
        self._pending[(scope, session_id)] = pending
        mine[session_id] = None
        self.bytes += pending.size
        self._expire(now)

    def take(self, peer: Hashable, session_id: int, conn: Hashable | None = None) -> Pending:
        """The parked request, removed (the connection's own first, then the address's);
        HandleError for an unknown, expired or used challenge."""
        now = self.clock()
        self._expire(now)
        key = (peer, session_id)
        if conn is not None and (conn, session_id) in self._pending:
            key = (conn, session_id)
        pending = self._pending.get(key)
        if pending is not None:
            self._drop(key)
        else:
            if key in self._used:
                raise HandleError(
                    ResponseCode.SESSION_MESSAGE_REJECTED, "challenge already answered (replay)"
                )
            raise HandleError(ResponseCode.AUTHEN_TIMEOUT, "no such challenge, or it expired")
        self._used[key] = now + self.ttl
        return pending


def new_nonce() -> bytes:
    return secrets.token_bytes(NONCE_SIZE)


def claimed_keys(service: Core, answer: Message) -> tuple[ValueReference, str, list[HandleValue]]:
    """Who the answer claims to be and that identity's key values on this node (read on the
    event loop: the store is not touched from other threads)."""
    body = answer.body
    if not isinstance(body, ChallengeAnswerRequest):
        raise HandleError(ResponseCode.PROTOCOL_ERROR, "not a challenge answer")
    if body.auth_type not in (PUBKEY, SECKEY):
        raise HandleError(ResponseCode.INVALID_CREDENTIAL, f"unknown authentication type {body.auth_type!r}")
    claimed = ValueReference(body.identity_handle, body.identity_index)
    values = sorted(service.identity_values(claimed, body.auth_type), key=lambda v: v.index)
    return claimed, body.auth_type, values


def verify_answer(
    claimed: ValueReference, auth_type: str, values: list[HandleValue], pending: Pending, answer: Message
) -> ValueReference:
    """Check an OC_RESPONSE_TO_CHALLENGE against the identity's key values.

    Returns the identity with the index of the key that matched (index 0 in the claim means "any
    of my keys", as in Handle.Net); raises HandleError otherwise. CPU-heavy (RSA/DSA verify,
    PBKDF2): callers run it off the event loop."""
    body = answer.body
    assert isinstance(body, ChallengeAnswerRequest)
    legacy = answer.version < (2, 1)
    for v in values:
        try:
            if auth_type == PUBKEY:
                ok = verify_signature_answer(
                    decode_public_key(v.data),
                    pending.nonce,
                    pending.digest,
                    body.signed_response,
                    claimed.handle,
                )
            else:
                ok = verify_secret_answer(
                    v.data, pending.nonce, pending.digest, body.signed_response, legacy=legacy
                )
        except ProtocolError:
            ok = False
        if ok:
            return ValueReference(claimed.handle, v.index)
    raise HandleError(ResponseCode.AUTHENTICATION_FAILED, f"authentication of {claimed} failed")


def verify_local_secret(
    values: list[HandleValue], nonce: bytes, digest: bytes, answer: bytes, legacy: bool
) -> bool:
    """OC_VERIFY_CHALLENGE: does ``answer`` prove knowledge of one of these HS_SECKEY values?
    (``HandleServer.verifyChallenge``; the caller reads the values on the event loop.)"""
    for v in values:
        try:
            if verify_secret_answer(v.data, nonce, digest, answer, legacy=legacy):
                return True
        except ProtocolError:
            return False
    return False


@dataclass(frozen=True, slots=True)
class VerifyLimits:
    """How much verification work clients may ask of a node (see docs/security.md)."""

    slots: int = 1  # verifications running at once, on threads of their own
    queue: int = 16  # waiting beyond that; more is refused at once (SERVER_TOO_BUSY)
    # Seconds of verification work per client address: refilled at this rate, up to the burst.
    # An HMAC check costs microseconds (never limited in practice); PBKDF2 at Handle.Net's 10,000
    # iterations ~2-20 ms, at the 100,000 allowed ~20-200 ms; SM2 (pure Python) ~20-60 ms.
    cpu_per_source: float = 0.25
    cpu_burst: float = 1.0
    failures_per_identity: float = 10.0  # failed attempts an identity may see in a row…
    failure_refill: float = 10.0 / 60.0  # …refilled at this many per second (10 a minute)
    max_sources: int = 4096  # addresses and identities remembered (LRU)


class AuthGuard:
    """The one door every costly verification of the native front-ends goes through."""

    def __init__(
        self,
        limits: VerifyLimits | None = None,
        clock: Callable[[], float] = time.monotonic,
        throttle: Throttle | None = None,
    ):
        self.limits = lim = limits or VerifyLimits()
        self.clock = clock
        # the node's login back-off, shared with HTTP (``is None``: an empty Throttle is falsy)
        self.throttle = Throttle(clock=clock) if throttle is None else throttle
        self.gate = CostGate(lim.slots, lim.queue)
        self.sources = RateTable(lim.cpu_per_source, lim.cpu_burst, lim.max_sources)
        self.failures = RateTable(lim.failure_refill, lim.failures_per_identity, lim.max_sources)

    def admit(self, peer: Hashable, identity: ValueReference) -> None:
        """Raise SERVER_TOO_BUSY when this address or this identity must wait."""
        now = self.clock()
        if not self.failures.has(_identity_key(identity), 1, now):
            raise HandleError(
                ResponseCode.SERVER_TOO_BUSY, f"too many failed attempts for {identity}: try again later"
            )
        if not self.sources.has(peer, 1e-9, now):
            self.sources.refused += 1
            raise HandleError(
                ResponseCode.SERVER_TOO_BUSY, "too much verification work from this address: try again later"
            )

    async def check(self, peer: Hashable, identity: ValueReference, fn: Callable[..., T], *args: object) -> T:
        """``fn(*args)`` off the loop after :meth:`admit`, its time charged to ``peer``; a
        falsy result or an AUTHENTICATION_FAILED counts as a failed attempt for ``identity``."""
        self.admit(peer, identity)
        login = bool(identity.handle)  # not NOBODY: this work proves (or fails to prove) an identity
        address = str(peer)
        if login:
            try:
                self.throttle.begin(address, identity)  # counted as failed until it succeeds
            except Throttled as e:
                raise HandleError(ResponseCode.SERVER_TOO_BUSY, str(e)) from None
        try:
            result, error, cpu = await self.gate.run(_timed, fn, args)
        except BaseException:  # the gate refused it (busy, closing): no secret was checked
            if login:
                self.throttle.cancel(address, identity)
            raise
        self.sources.charge(peer, cpu, self.clock())
        if error is not None:
            if error.code == ResponseCode.AUTHENTICATION_FAILED:
                self.failed(identity)
            elif login:
                self.throttle.cancel(address, identity)
            raise error
        if not result:
            self.failed(identity)
        elif login:
            self.throttle.succeeded(address, identity)
        return cast(T, result)

    def failed(self, identity: ValueReference) -> None:
        self.failures.take(_identity_key(identity), 1, self.clock())


def _timed(fn: Callable[..., T], args: tuple[object, ...]) -> tuple[T | None, HandleError | None, float]:
    """``fn(*args)`` (or the HandleError it raised) and how long it held the gate's thread: the
    wall time, not the CPU time, since that is what other clients wait for (under load, or for
    pure-Python SM2 sharing the GIL, it is the larger of the two)."""
    t0 = time.perf_counter()
    try:
        return fn(*args), None, time.perf_counter() - t0
    except HandleError as e:
        return None, e, time.perf_counter() - t0


def _identity_key(identity: ValueReference) -> tuple[str, int]:
    return identity.handle.upper(), identity.index
