"""Challenge–response authentication on the server side (RFC 3652 §3.5; Handle.Net
``HandleServer.createChallenge`` / ``verifyIdentityAndGetIndex`` / ``verifyChallenge``).

A request the core refuses with AUTHENTICATION_NEEDED is parked here and answered with a 402
carrying a fresh 16-byte nonce and the digest of that request. Like Handle.Net, the challenge is
named by the envelope SessionId of the 402, which the client echoes in its
OC_RESPONSE_TO_CHALLENGE; we also bind it to the client's IP address. Unlike Handle.Net (which
keeps an answered challenge until it expires), a challenge is consumed by the first answer: a
second answer with the same SessionId is a replay and gets SESSION_MESSAGE_REJECTED, an unknown or
expired one AUTHEN_TIMEOUT (Handle.Net's code). The table is bounded in entries and time.
"""

from __future__ import annotations

import secrets
import time
from collections import OrderedDict
from collections.abc import Callable, Hashable
from dataclasses import dataclass

from idr.codec.auth import verify_secret_answer, verify_signature_answer
from idr.codec.bodies import ChallengeAnswerRequest
from idr.codec.keys import decode_public_key
from idr.codec.message import Message
from idr.codec.wire import ProtocolError
from idr.core.service import NodeService
from idr.model.errors import HandleError, ResponseCode
from idr.model.value import HandleValue, ValueReference

NONCE_SIZE = 16  # Handle.Net Common.CHALLENGE_NONCE_SIZE
CHALLENGE_TTL = 60.0  # seconds; Handle.Net's max_auth_time default is of this order
MAX_PENDING = 10_000

PUBKEY = "HS_PUBKEY"
SECKEY = "HS_SECKEY"


@dataclass(frozen=True, slots=True)
class Pending:
    """A parked request: what was asked, the nonce we sent, the digest the answer must cover."""

    request: Message
    nonce: bytes
    digest: bytes
    deadline: float


class ChallengeTable:
    """Pending challenges keyed by (client address, challenge SessionId); one use each."""

    def __init__(
        self,
        *,
        ttl: float = CHALLENGE_TTL,
        capacity: int = MAX_PENDING,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.ttl = ttl
        self.capacity = capacity
        self.clock = clock
        self._pending: OrderedDict[tuple[Hashable, int], Pending] = OrderedDict()
        self._used: OrderedDict[tuple[Hashable, int], float] = OrderedDict()

    def __len__(self) -> int:
        return len(self._pending)

    def _expire(self, now: float) -> None:
        while self._pending:
            key, pending = next(iter(self._pending.items()))
            if pending.deadline > now and len(self._pending) <= self.capacity:
                break
            del self._pending[key]
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

    def park(self, peer: Hashable, session_id: int, request: Message, nonce: bytes, digest: bytes) -> None:
        now = self.clock()
        self._expire(now)
        self._pending[(peer, session_id)] = Pending(request, nonce, digest, now + self.ttl)
        self._expire(now)

    def take(self, peer: Hashable, session_id: int) -> Pending:
        """The parked request, removed; HandleError for an unknown, expired or used challenge."""
        now = self.clock()
        self._expire(now)
        key = (peer, session_id)
        pending = self._pending.pop(key, None)
        if pending is None:
            if key in self._used:
                raise HandleError(
                    ResponseCode.SESSION_MESSAGE_REJECTED, "challenge already answered (replay)"
                )
            raise HandleError(ResponseCode.AUTHEN_TIMEOUT, "no such challenge, or it expired")
        self._used[key] = now + self.ttl
        return pending


def new_nonce() -> bytes:
    return secrets.token_bytes(NONCE_SIZE)


def claimed_keys(service: NodeService, answer: Message) -> tuple[ValueReference, str, list[HandleValue]]:
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
                    decode_public_key(v.data), pending.nonce, pending.digest, body.signed_response
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
    service: NodeService, identity: ValueReference, nonce: bytes, digest: bytes, answer: bytes, legacy: bool
) -> bool:
    """OC_VERIFY_CHALLENGE: does ``answer`` prove knowledge of one of the identity's HS_SECKEYs?"""
    for v in service.identity_values(identity, SECKEY):
        try:
            if verify_secret_answer(v.data, nonce, digest, answer, legacy=legacy):
                return True
        except ProtocolError:
            return False
    return False
