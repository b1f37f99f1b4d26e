"""One complete request message in, response message bytes out — shared by UDP and TCP.

Order of checks follows Handle.Net (``HdlUdpRequestHandler.run``, ``HandleServer.processRequest``):
undecodable bytes → an OC_RESERVED error (or silence, when not even the envelope is a Handle
envelope); responses are never answered (no reflection loops); an admin or connection-bound
request on UDP → PROTOCOL_ERROR (Handle.Net's default site lists its UDP interface as query-only,
and ``Interface.canHandleRequest`` keeps streaming requests off UDP); a SessionId we did not hand
out → SESSION_TIMEOUT; then the core. A core answer of AUTHENTICATION_NEEDED becomes a 402
challenge; the answer to it (opcode 200) runs the parked request with the proven identity and is
answered under the answer's RequestId (``FixRequestIdAndThen``).

Reads the core answers at once (``Core.answer_now``) are answered synchronously (the hot path
must not create tasks); writes, waiting reads and signature checks return a coroutine for the
caller to await. Every signature or MAC check (challenge
answers, OC_VERIFY_CHALLENGE, id-pointer-sdk identity tokens) goes through the node's one
:class:`~idr.server.auth.AuthGuard`: rate per address, back-off per identity, bounded work off
the event loop.

OC_VERIFY_CHALLENGE (201) is answered as Handle.Net's server answers it
(``HandleServer.verifyChallenge``): on any interface, UDP included, to whoever asks — other
Handle servers and clients send it (``HandleServer.verifyIdentity``, ``Resolver``) to the home
server of an HS_SECKEY identity, over UDP first — but through the guard, so it is neither a
free CPU sink nor an unthrottled guessing oracle.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Coroutine, Hashable
from dataclasses import dataclass, field, replace
from typing import Any

from idr.codec import idtoken
from idr.codec.bodies import (
    ChallengeResponse,
    ResolutionRequest,
    VerifyChallengeRequest,
    VerifyChallengeResponse,
)
from idr.codec.envelope import EnvFlag, OpCode, OpFlag
from idr.codec.keys import decode_public_key
from idr.codec.message import Message, decode_message, encode_message
from idr.codec.wire import ProtocolError
from idr.core.interface import Core
from idr.core.request import WRITE_OPS, Op
from idr.model.errors import HandleError, ResponseCode
from idr.model.handle import Handle
from idr.model.value import HandleValue, ValueReference
from idr.server import auth
from idr.server.answers import ADMIN_OPS, CONNECTION_OPS, Answerer, bare_error, to_request

log = logging.getLogger("idr.native")

CACHEABLE_CODES = frozenset(
    {
        ResponseCode.SUCCESS,
        ResponseCode.HANDLE_NOT_FOUND,
        ResponseCode.VALUES_NOT_FOUND,
        ResponseCode.SERVER_NOT_RESPONSIBLE,
    }
)
NOT_HERE = "That prefix doesn't live here"  # HandleServer.MSG_NA_NOT_HOMED_HERE
MSG_NO_SESSION = "Invalid session id or session time out. Please try again."  # HandleServer's text


@dataclass(slots=True)
class Outcome:
    """What to send back. ``authenticated``: the client answered a challenge we sent to its
    address, so it is exempt from the UDP amplification limit. ``handle_key``: set when the single
    answer may go into the hot cache under that normalised handle."""

    messages: list[bytes] = field(default_factory=list)
    authenticated: bool = False
    challenge: bool = False
    keep_alive: bool = False
    handle_key: str | None = None
    exists: bool | None = None  # with handle_key: whether the handle exists (hot cache learns it)


Result = Outcome | Coroutine[Any, Any, Outcome]


class NativeHandler:
    def __init__(
        self,
        service: Core,
        *,
        udp_admin: bool = False,
        challenges: auth.ChallengeTable | None = None,
        guard: auth.AuthGuard | None = None,
        token_window: float = idtoken.WINDOW,
    ) -> None:
        self.service = service
        self.udp_admin = udp_admin
        self.challenges = challenges or auth.ChallengeTable()
        self.guard = guard or auth.AuthGuard()
        self.token_window = token_window
        self.wall_clock = time.time  # for identity tokens' timestamps (tests pin it)
        self.answers = Answerer(service.site_info)

    # ------------------------------------------------------------------ entry

    def handle(self, data: bytes, peer: Hashable, *, udp: bool, whole: bool = True) -> Result:
        """``peer``: the client's address (IP) for binding challenges; ``whole``: the message came
        as one datagram / frame (only then may its answer be cached)."""
        try:
            msg = decode_message(data)
        except ProtocolError as e:
            return self._bare(data, e.code, e.message)
        except Exception as e:  # the codec promises ProtocolError; never let a bug kill the loop
            log.exception("decoder failure")
            return self._bare(data, ResponseCode.PROTOCOL_ERROR, f"undecodable message: {type(e).__name__}")
        if not msg.is_request:
            return Outcome()
        keep = bool(msg.opflags & OpFlag.KA)
        if udp and (msg.opcode in CONNECTION_OPS or (msg.opcode in ADMIN_OPS and not self.udp_admin)):
            what = "needs a TCP connection" if msg.opcode in CONNECTION_OPS else "is an admin request"
            text = f"Received admin request on non-admin interface: opcode {msg.opcode} {what}"
            return self._one(self.answers.error(msg, ResponseCode.PROTOCOL_ERROR, text), keep)
        if msg.opcode == OpCode.RESPONSE_TO_CHALLENGE:
            return self._answered(msg, peer)
        if msg.session_id != 0:
            return self._one(self.answers.error(msg, ResponseCode.SESSION_TIMEOUT, MSG_NO_SESSION), keep)
        if msg.opcode == OpCode.VERIFY_CHALLENGE:
            return self._verify(msg, peer, keep)
        req = to_request(msg)
        if req is None:
            text = f"operation {msg.opcode} is not supported by this server"
            if msg.opcode in (OpCode.SESSION_SETUP, OpCode.SESSION_EXCHANGEKEY, OpCode.SESSION_TERMINATE):
                text = "sessions are not supported: authenticate each request by challenge"
            return self._one(self.answers.error(msg, ResponseCode.OPERATION_NOT_SUPPORTED, text), keep)
        body = msg.body
        if isinstance(body, ResolutionRequest) and body.auth and msg.opflags & OpFlag.RECU_AUTH:
            return self._token_resolution(msg, req, body.auth, peer, keep)
        # A read the core can answer without waiting is answered here, synchronously; anything
        # else (writes, a store read across a network, a recursive node's walk) is awaited.
        resp = None if req.op in WRITE_OPS else self.service.answer_now(req)
        if resp is None:
            return self._submit(msg, req, peer, keep)
        if resp.code == ResponseCode.AUTHENTICATION_NEEDED:
            return self._challenge(msg, peer, keep)
        out = Outcome([encode_message(m) for m in self.answers.answer(msg, resp)], keep_alive=keep)
        if (
            whole
            and req.op == Op.RESOLUTION
            and resp.code in CACHEABLE_CODES
            and not msg.opflags & OpFlag.RD
            and msg.credential is None
            and not msg.env_flags & EnvFlag.TC
        ):
            with contextlib.suppress(HandleError):
                out.handle_key = Handle.parse(req.handle).key
                if resp.code != ResponseCode.SERVER_NOT_RESPONSIBLE:
                    out.exists = resp.code != ResponseCode.HANDLE_NOT_FOUND
        return out

    # ------------------------------------------------------------------ pieces

    @staticmethod
    def _one(msg: Message, keep: bool = False) -> Outcome:
        return Outcome([encode_message(msg)], keep_alive=keep)

    @staticmethod
    def _bare(data: bytes, code: int, text: str) -> Outcome:
        out = bare_error(bytes(data), code, text)
        return Outcome([out] if out is not None else [])

    def _challenge(self, msg: Message, peer: Hashable, keep: bool) -> Outcome:
        """402 with a fresh nonce; the digest of ``msg`` rides in the response (RD)."""
        sid = self.challenges.new_session_id(peer)
        nonce = auth.new_nonce()
        resp = self.answers.message(msg, ResponseCode.AUTHENTICATION_NEEDED, ChallengeResponse(nonce))
        resp = replace(resp, session_id=sid)
        assert resp.request_digest is not None  # response_to always digests a 402
        self.challenges.park(peer, sid, msg, nonce, resp.request_digest.digest)
        return Outcome([encode_message(resp)], challenge=True, keep_alive=keep)

    async def _submit(self, msg: Message, req: Any, peer: Hashable, keep: bool) -> Outcome:
        resp = await self.service.submit(req)
        if resp.code == ResponseCode.AUTHENTICATION_NEEDED:
            return self._challenge(msg, peer, keep)
        return Outcome([encode_message(m) for m in self.answers.answer(msg, resp)], keep_alive=keep)

    async def _answered(self, answer: Message, peer: Hashable) -> Outcome:
        keep = bool(answer.opflags & OpFlag.KA)
        try:
            pending = self.challenges.take(peer, answer.session_id)
        except HandleError as e:
            return self._one(self.answers.error(answer, e.code, e.message), keep)
        original = pending.request
        try:
            claimed, kind, values = auth.claimed_keys(self.service, answer)
            identity = await self.guard.check(
                peer, claimed, auth.verify_answer, claimed, kind, values, pending, answer
            )
        except HandleError as e:
            return self._one(self._under(answer, self.answers.error(original, e.code, e.message)), keep)
        req = to_request(original, identity)
        if req is None:  # cannot happen: only core requests are parked
            return self._one(self.answers.error(answer, ResponseCode.ERROR, "lost request"), keep)
        resp = await self.service.submit(req)
        msgs = [self._under(answer, m) for m in self.answers.answer(original, resp)]
        keep = keep or bool(original.opflags & OpFlag.KA)
        return Outcome([encode_message(m) for m in msgs], authenticated=True, keep_alive=keep)

    @staticmethod
    def _under(answer: Message, msg: Message) -> Message:
        """Answers to the parked request go out under the challenge answer's RequestId."""
        return replace(msg, request_id=answer.request_id)

    async def _verify(self, msg: Message, peer: Hashable, keep: bool) -> Outcome:
        """OC_VERIFY_CHALLENGE for an HS_SECKEY identity held here (``HandleServer.verifyChallenge``)."""
        body = msg.body
        if not isinstance(body, VerifyChallengeRequest):
            return self._one(self.answers.error(msg, ResponseCode.PROTOCOL_ERROR, "bad verify request"), keep)
        try:
            h = Handle.parse(body.handle)
        except HandleError as e:
            return self._one(self.answers.error(msg, e.code, e.message), keep)
        if not self.service.is_responsible(h):
            return self._one(self.answers.error(msg, ResponseCode.SERVER_NOT_RESPONSIBLE, NOT_HERE), keep)
        identity = ValueReference(body.handle, body.index)
        values = self.service.identity_values(identity, auth.SECKEY)  # read here, on the loop
        legacy = msg.version < (2, 1)
        args = (values, body.nonce, body.digest.digest, body.signed_response, legacy)
        try:
            ok = await self.guard.check(peer, identity, auth.verify_local_secret, *args)
        except HandleError as e:
            return self._one(self.answers.error(msg, e.code, e.message), keep)
        return self._one(self.answers.message(msg, ResponseCode.SUCCESS, VerifyChallengeResponse(ok)), keep)

    async def _token_resolution(
        self, msg: Message, req: Any, token: bytes, peer: Hashable, keep: bool
    ) -> Outcome:
        """A resolution carrying id-pointer-sdk's identity token (``codec.idtoken``): answered as
        that identity once the token's RS256 signature checks against its HS_PUBKEY and its
        timestamp is fresh. Never cached (the answer depends on who asks)."""
        try:
            tok = idtoken.decode_user_token(token)
            if not idtoken.is_fresh(tok, self.wall_clock(), self.token_window):
                raise HandleError(
                    ResponseCode.AUTHENTICATION_FAILED, "identity token expired or from the future"
                )
            values = self.service.identity_values(tok.identity, auth.PUBKEY)
            if not await self.guard.check(peer, tok.identity, _token_signed, tok, values):
                raise HandleError(
                    ResponseCode.AUTHENTICATION_FAILED, f"identity token of {tok.identity} does not verify"
                )
        except HandleError as e:
            return self._one(self.answers.error(msg, e.code, e.message), keep)
        # The SDK sets PO on every resolution; a token asks for what its identity may read, and
        # an identity that may read nothing more gets the public values, as without the token.
        resp = await self.service.submit(replace(req, identity=tok.identity, public_only=False))
        if resp.code == ResponseCode.INSUFFICIENT_PERMISSIONS and req.public_only:
            resp = await self.service.submit(replace(req, identity=tok.identity))
        return Outcome([encode_message(m) for m in self.answers.answer(msg, resp)], keep_alive=keep)


def _token_signed(token: idtoken.UserToken, values: list[HandleValue]) -> bool:
    """Pure check on the guard's thread: one of the identity's keys signed the token."""
    for v in values:
        try:
            if idtoken.verify_user_token(token, decode_public_key(v.data)):
                return True
        except ProtocolError:
            continue
    return False
