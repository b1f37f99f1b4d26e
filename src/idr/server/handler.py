"""One complete request message in, response message bytes out — shared by UDP and TCP.

Order of checks follows Handle.Net (``HdlUdpRequestHandler.run``, ``HandleServer.processRequest``):
undecodable bytes → an OC_RESERVED error (or silence, when not even the envelope is a Handle
envelope); responses are never answered (no reflection loops); an admin or connection-bound
request on UDP → PROTOCOL_ERROR (Handle.Net's default site lists its UDP interface as query-only,
and ``Interface.canHandleRequest`` keeps streaming requests off UDP); the session the SessionId
names (``server.native_sessions``; an unknown one → SESSION_TIMEOUT, except the SDK's
GET_SITE_INFO and login, which may come under a SessionId the client picked); then the core. A
core answer of AUTHENTICATION_NEEDED becomes a 402 challenge; the answer to it (opcode 200) runs
the parked request with the proven identity, is answered under the answer's RequestId
(``FixRequestIdAndThen``), and authenticates the session the request came in, when it claimed
that identity.

Certified answers (CT set in the request): MACed with the session key inside a keyed session
(not the session setup and key exchange themselves), otherwise signed with the server's key
(``HandleServer.sendResponse``). Session setups are always signed.

Reads the core answers at once (``Core.answer_now``) are answered synchronously (the hot path
must not create tasks); writes, waiting reads, signatures and key exchanges return a coroutine
for the caller to await. Every costly step — challenge answers,
OC_VERIFY_CHALLENGE, id-pointer-sdk identity tokens, session key exchanges, the server's
signatures — goes through the node's one :class:`~idr.server.auth.AuthGuard`: rate per address,
back-off per identity, bounded work off the event loop.

OC_VERIFY_CHALLENGE (201) is answered as Handle.Net's server answers it
(``HandleServer.verifyChallenge``): on any interface, UDP included, to whoever asks — other
Handle servers and clients send it (``HandleServer.verifyIdentity``, ``Resolver``) to the home
server of an HS_SECKEY identity, over UDP first, certified — but through the guard, so it is
neither a free CPU sink nor an unthrottled guessing oracle.
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
    ChallengeAnswerRequest,
    ChallengeResponse,
    EmptyBody,
    LoginRequest,
    ResolutionRequest,
    VerifyChallengeRequest,
    VerifyChallengeResponse,
)
from idr.codec.credential import CREDENTIAL_MAC
from idr.codec.envelope import EnvFlag, OpCode, OpFlag
from idr.codec.keys import decode_public_key
from idr.codec.message import Message, decode_message, encode_message
from idr.codec.signing import mac_message, verify_mac
from idr.codec.wire import ProtocolError
from idr.core.interface import Core
from idr.core.request import WRITE_OPS, Op
from idr.model.errors import HandleError, ResponseCode
from idr.model.handle import Handle
from idr.model.value import HandleValue, ValueReference
from idr.server import auth, session_ops
from idr.server.answers import ADMIN_OPS, CONNECTION_OPS, Answerer, bare_error, to_request
from idr.server.native_sessions import Session, SessionTable
from idr.server.server_key import ServerKey

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
# Handle.Net's BACKUP_SERVER ("checkpoint": the server copies its database into its own
# directory) is deprecated there; a copy the client can trigger but not fetch helps no one.
BACKUP_REFUSED = (
    "BACKUP_SERVER is not supported: back up with 'idr backup --data DIR OUT' on the node "
    "(an online, consistent copy with its log position; docs/operations.md)"
)
MSG_NO_SESSION = "Invalid session id or session time out. Please try again."  # HandleServer's text
SESSION_OPS = frozenset({OpCode.SESSION_SETUP, OpCode.SESSION_EXCHANGEKEY, OpCode.SESSION_TERMINATE})
# Under a SessionId the server does not know, these are answered anyway: the Teleinfo SDK sends
# them under the id it picked for its connection before it logs in.
SESSIONLESS_OPS = frozenset({OpCode.GET_SITE_INFO, OpCode.LOGIN_ID_SYSTEM, OpCode.SESSION_SETUP})
NOBODY = ValueReference("", -1)  # whom the guard books work that proves no identity


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


@dataclass(frozen=True, slots=True)
class InSession:
    """What a parked request knew about its session: which one, and whether its MAC verified
    (only then may the challenge answer authenticate the session)."""

    session: Session
    mac_ok: bool


class NativeHandler:
    def __init__(
        self,
        service: Core,
        *,
        udp_admin: bool = False,
        challenges: auth.ChallengeTable | None = None,
        guard: auth.AuthGuard | None = None,
        token_window: float = idtoken.WINDOW,
        sessions: SessionTable | None = None,
        server_key: ServerKey | None = None,
        serve_sessions: bool = True,
    ) -> None:
        """``serve_sessions=False``: an extra UDP worker of ``idr serve --workers``, whose sessions
        would be unknown to worker 0 (TCP): session setups get no answer there, and hdllib, after
        its UDP retries (3 s), sets the session up over TCP with worker 0."""
        self.service = service
        self.udp_admin = udp_admin
        self.challenges = challenges or auth.ChallengeTable()
        self.guard = guard or auth.AuthGuard()
        self.token_window = token_window
        self.wall_clock = time.time  # for identity tokens' timestamps (tests pin it)
        self.sessions = sessions or SessionTable()
        self.serve_sessions = serve_sessions
        self.server_key = server_key
        self.answers = Answerer(service.site_info)

    # ------------------------------------------------------------------ entry

    def handle(
        self, data: bytes, peer: Hashable, *, udp: bool, whole: bool = True, conn: Hashable | None = None
    ) -> Result:
        """``peer``: the client's address (IP) for binding challenges; ``whole``: the message came
        as one datagram / frame (only then may its answer be cached); ``conn``: the TCP
        connection, which scopes the sessions a client names itself."""
        try:
            msg = decode_message(data)
        except ProtocolError as e:
            return self._bare(data, e.code, e.message)
        except Exception as e:  # the codec promises ProtocolError; never let a bug kill the loop
            log.exception("decoder failure")
            return self._bare(data, ResponseCode.PROTOCOL_ERROR, f"undecodable message: {type(e).__name__}")
        if not msg.is_request:
            return Outcome()
        keep = bool(msg.opflags & OpFlag.KA) or (conn is not None and msg.session_id != 0)
        if udp and (msg.opcode in CONNECTION_OPS or (msg.opcode in ADMIN_OPS and not self.udp_admin)):
            what = "needs a TCP connection" if msg.opcode in CONNECTION_OPS else "is an admin request"
            text = f"Received admin request on non-admin interface: opcode {msg.opcode} {what}"
            return self._one(self.answers.error(msg, ResponseCode.PROTOCOL_ERROR, text), keep)
        if msg.opcode == OpCode.RESPONSE_TO_CHALLENGE:
            return self._answered(msg, peer, conn)
        session: Session | None = None
        mac_ok = False
        if msg.session_id != 0 and msg.opcode != OpCode.SESSION_SETUP:
            session = self.sessions.find(msg.session_id, conn)
            if session is None and msg.opcode not in SESSIONLESS_OPS:
                return self._one(self.answers.error(msg, ResponseCode.SESSION_TIMEOUT, MSG_NO_SESSION), keep)
            if session is not None and session.keyed:
                try:
                    mac_ok = self._check_mac(msg, session)
                except HandleError as e:
                    return self._one(self.answers.error(msg, e.code, e.message), keep)
                if mac_ok:
                    self.sessions.touch(session)
        if msg.opcode in SESSION_OPS:
            if not self.serve_sessions:
                return Outcome()
            return self._session_op(msg, peer, session, mac_ok, keep)
        if msg.opcode == OpCode.LOGIN_ID_SYSTEM:
            return self._login(msg, peer, conn, session, mac_ok, keep)
        if msg.opcode == OpCode.VERIFY_CHALLENGE:
            return self._verify(msg, peer, keep, session)
        identity = None
        if session is not None and (mac_ok or not session.keyed):
            identity = session.identity
        req = to_request(msg, identity)
        if req is None:
            text = f"operation {msg.opcode} is not supported by this server"
            if msg.opcode == OpCode.BACKUP_SERVER:
                text = BACKUP_REFUSED
            error = self.answers.error(msg, ResponseCode.OPERATION_NOT_SUPPORTED, text)
            return self._finish(msg, [error], keep, None, peer)
        context = InSession(session, mac_ok) if session is not None else None
        body = msg.body
        if (
            isinstance(body, ResolutionRequest)
            and body.auth
            and msg.opflags & OpFlag.RECU_AUTH
            and idtoken.is_jwt(body.auth)  # anything else there is ignored, as Handle.Net does
        ):
            return self._token_resolution(msg, req, body.auth, peer, keep, session)
        # A read the core can answer without waiting is answered here, synchronously; anything
        # else (writes, a store read across a network, a recursive node's walk) is awaited.
        resp = None if req.op in WRITE_OPS else self.service.answer_now(req)
        if resp is None:
            return self._submit(msg, req, peer, conn, keep, context)
        if resp.code == ResponseCode.AUTHENTICATION_NEEDED:
            return self._challenge(msg, peer, conn, keep, context)
        if msg.opflags & OpFlag.CT:
            return self._finish(msg, self.answers.answer(msg, resp), keep, session, peer)
        out = Outcome([encode_message(m) for m in self.answers.answer(msg, resp)], keep_alive=keep)
        if (
            whole
            and req.op == Op.RESOLUTION
            and resp.code in CACHEABLE_CODES
            and not msg.opflags & OpFlag.RD
            and msg.credential is None
            and msg.session_id == 0
            and not msg.env_flags & EnvFlag.TC
        ):
            with contextlib.suppress(HandleError):
                out.handle_key = Handle.parse(req.handle).key
                if resp.code != ResponseCode.SERVER_NOT_RESPONSIBLE:
                    out.exists = resp.code != ResponseCode.HANDLE_NOT_FOUND
        return out

    # ------------------------------------------------------------------ sessions

    @staticmethod
    def _check_mac(msg: Message, session: Session) -> bool:
        """Whether ``msg`` carries a good MAC of ``session`` (False: no MAC at all, the request
        then runs without the session's identity); HandleError for a bad or replayed one."""
        cred = msg.credential
        if cred is None or cred.type != CREDENTIAL_MAC:
            return False
        if session.key is None or not verify_mac(msg, session.key):
            raise HandleError(ResponseCode.INVALID_SESSION_KEY, "Session authentication failed.")
        if not session.accept_counter(cred.session_counter):
            text = f"Duplicate session counter {cred.session_counter} in session {session.id}"
            raise HandleError(ResponseCode.SESSION_MESSAGE_REJECTED, text)
        return True

    def _session_op(
        self, msg: Message, peer: Hashable, session: Session | None, mac_ok: bool, keep: bool
    ) -> Result:
        if msg.opcode != OpCode.SESSION_TERMINATE:
            return self._key_exchange(msg, peer, session, keep)
        if session is None:
            return self._one(self.answers.error(msg, ResponseCode.SESSION_TIMEOUT, MSG_NO_SESSION), keep)
        if session.keyed and not mac_ok:
            error = self.answers.error(msg, ResponseCode.INVALID_SESSION_KEY, "Invalid session key.")
            return self._finish(msg, [error], keep, None, peer)
        self.sessions.close(session)
        done = self.answers.message(msg, ResponseCode.SUCCESS, EmptyBody())
        return self._finish(msg, [done], keep, None, peer)

    async def _key_exchange(
        self, msg: Message, peer: Hashable, session: Session | None, keep: bool
    ) -> Outcome:
        """SESSION_SETUP and SESSION_EXCHANGEKEY (``session_ops``); the RSA/DH work and the
        signature go through the guard, booked to the client's address."""
        try:
            if msg.opcode == OpCode.SESSION_SETUP:
                if self.server_key is None:
                    raise HandleError(
                        ResponseCode.SESSION_FAILED, "this server has no key to sign a session setup"
                    )
                keys = await self._exchange_keys(msg)
                setup = await self.guard.check(peer, NOBODY, session_ops.setup, msg, self.server_key, keys)
                opened = self.sessions.open_keyed(
                    peer,
                    setup.version,
                    timeout=setup.timeout,
                    mode=setup.mode,
                    key=setup.key,
                    key_alg=setup.key_alg,
                    claimed=setup.claimed,
                )
                resp = replace(
                    self.answers.message(msg, ResponseCode.SUCCESS, setup.body), session_id=opened.id
                )
                signed = await self.guard.check(peer, NOBODY, self.server_key.sign, resp)
                return Outcome([encode_message(signed)], keep_alive=keep)
            if session is None or not session.keyed:
                raise HandleError(ResponseCode.SESSION_TIMEOUT, MSG_NO_SESSION)
            alg, key = await self.guard.check(
                peer, NOBODY, session_ops.exchange_key, msg, session, self.server_key
            )
            session.key_alg, session.key = alg, key
            resp = self.answers.message(msg, ResponseCode.SUCCESS, EmptyBody())
        except HandleError as e:
            resp = self.answers.error(msg, e.code, e.message)
        return await self._done(msg, [resp], keep, None, peer)

    async def _exchange_keys(self, msg: Message) -> list[bytes]:
        """HS_PUBKEY data at the exchange-key handle of a mode-3 setup (local handles only;
        its record cached first, off the event loop, so the read never waits on the store)."""
        ref = session_ops.exchange_key_ref(msg)
        if ref is None:
            return []
        await self.service.preload([ref.handle])
        return [v.data for v in self.service.identity_values(ref, auth.PUBKEY)]

    def _login(
        self,
        msg: Message,
        peer: Hashable,
        conn: Hashable | None,
        session: Session | None,
        mac_ok: bool,
        keep: bool,
    ) -> Result:
        """OC_LOGIN_ID_SYSTEM: always a challenge for the named identity; its answer authenticates
        the session (the SDK treats a success without a challenge as a failed login)."""
        body = msg.body
        assert isinstance(body, LoginRequest)
        try:
            Handle.parse(body.handle)
            if session is None or (session.keyed and not mac_ok):
                if conn is None:  # cannot happen: CONNECTION_OPS keeps logins off UDP
                    raise HandleError(ResponseCode.PROTOCOL_ERROR, "a login needs a TCP connection")
                session = self.sessions.open_scoped(conn, msg.session_id, peer, msg.version)
        except HandleError as e:
            return self._one(self.answers.error(msg, e.code, e.message), keep)
        session.claimed = ValueReference(body.handle, body.index)  # a login again may change who
        return self._challenge(msg, peer, conn, True, InSession(session, True))

    # ------------------------------------------------------------------ answers

    def _finish(
        self, request: Message, msgs: list[Message], keep: bool, session: Session | None, peer: Hashable
    ) -> Result:
        """The answer(s) to ``request``, certified when it asked (CT): MACed with the session key
        (cheap, done here), or signed with the server's key (through the guard: a coroutine)."""
        if request.opflags & OpFlag.CT:
            if session is not None and session.key is not None and request.opcode not in SESSION_OPS:
                with contextlib.suppress(ValueError):  # Handle.Net's 2.5/2.6 MAC layout: sign instead
                    maced = [mac_message(m, session.key, session.next_counter()) for m in msgs]
                    return Outcome([encode_message(m) for m in maced], keep_alive=keep)
            if self.server_key is not None:
                return self._sign(msgs, keep, peer)
        return Outcome([encode_message(m) for m in msgs], keep_alive=keep)

    async def _sign(self, msgs: list[Message], keep: bool, peer: Hashable) -> Outcome:
        key = self.server_key
        assert key is not None
        try:
            out = [encode_message(await self.guard.check(peer, NOBODY, key.sign, m)) for m in msgs]
        except HandleError as e:  # the guard refused the work: say so, unsigned
            out = [encode_message(self.answers.error(msgs[0], e.code, e.message))]
        return Outcome(out, keep_alive=keep)

    async def _done(
        self, request: Message, msgs: list[Message], keep: bool, session: Session | None, peer: Hashable
    ) -> Outcome:
        out = self._finish(request, msgs, keep, session, peer)
        return out if isinstance(out, Outcome) else await out

    @staticmethod
    def _one(msg: Message, keep: bool = False) -> Outcome:
        return Outcome([encode_message(msg)], keep_alive=keep)

    @staticmethod
    def _bare(data: bytes, code: int, text: str) -> Outcome:
        out = bare_error(bytes(data), code, text)
        return Outcome([out] if out is not None else [])

    # ------------------------------------------------------------------ challenges

    def _challenge(
        self, msg: Message, peer: Hashable, conn: Hashable | None, keep: bool, context: InSession | None
    ) -> Result:
        """402 with a fresh nonce; the digest of ``msg`` rides in the response (RD). Inside a
        session the challenge carries the session's id (``HandleServer.createChallenge``) and, for
        a connection's own session, is bound to that connection rather than the address."""
        scope: Hashable = peer
        if context is not None:
            sid = context.session.id
            if not context.session.keyed and conn is not None:
                scope = conn
        else:
            sid = self.challenges.new_session_id(peer)
        nonce = auth.new_nonce()
        resp = self.answers.message(msg, ResponseCode.AUTHENTICATION_NEEDED, ChallengeResponse(nonce))
        resp = replace(resp, session_id=sid)
        assert resp.request_digest is not None  # response_to always digests a 402
        self.challenges.park(scope, sid, msg, nonce, resp.request_digest.digest, context)
        session = context.session if context is not None else None
        out = self._finish(msg, [resp], keep, session, peer)
        if isinstance(out, Outcome):
            out.challenge = True
            return out
        return self._mark_challenge(out)

    @staticmethod
    async def _mark_challenge(coro: Coroutine[Any, Any, Outcome]) -> Outcome:
        out = await coro
        out.challenge = True
        return out

    async def _submit(
        self,
        msg: Message,
        req: Any,
        peer: Hashable,
        conn: Hashable | None,
        keep: bool,
        context: InSession | None,
    ) -> Outcome:
        resp = await self.service.submit(req)
        if resp.code == ResponseCode.AUTHENTICATION_NEEDED:
            out = self._challenge(msg, peer, conn, keep, context)
            return out if isinstance(out, Outcome) else await out
        session = context.session if context is not None else None
        return await self._done(msg, self.answers.answer(msg, resp), keep, session, peer)

    async def _answered(self, answer: Message, peer: Hashable, conn: Hashable | None) -> Outcome:
        keep = bool(answer.opflags & OpFlag.KA) or (conn is not None and answer.session_id != 0)
        try:
            pending = self.challenges.take(peer, answer.session_id, conn)
        except HandleError as e:
            return self._one(self.answers.error(answer, e.code, e.message), keep)
        original = pending.request
        context = pending.context if isinstance(pending.context, InSession) else None
        session = context.session if context is not None else None
        try:
            if isinstance(answer.body, ChallengeAnswerRequest):  # cached first: no store wait below
                await self.service.preload([answer.body.identity_handle])
            claimed, kind, values = auth.claimed_keys(self.service, answer)
            identity = await self.guard.check(
                peer, claimed, auth.verify_answer, claimed, kind, values, pending, answer
            )
        except HandleError as e:
            error = self.answers.error(original, e.code, e.message)
            return await self._done(original, [self._under(answer, error)], keep, session, peer)
        keep = keep or bool(original.opflags & OpFlag.KA) or session is not None
        if original.opcode == OpCode.LOGIN_ID_SYSTEM:
            return await self._logged_in(answer, original, identity, claimed, session, keep, peer)
        if context is not None and context.mac_ok and session is not None and session.matches_claim(claimed):
            self.sessions.authenticate(session, identity)  # when the table is full: this request only
        req = to_request(original, identity)
        if req is None:  # cannot happen: only core requests and logins are parked
            return self._one(self.answers.error(answer, ResponseCode.ERROR, "lost request"), keep)
        resp = await self.service.submit(req)
        msgs = [self._under(answer, m) for m in self.answers.answer(original, resp)]
        out = await self._done(original, msgs, keep, session, peer)
        out.authenticated = True
        return out

    async def _logged_in(
        self,
        answer: Message,
        login: Message,
        identity: ValueReference,
        claimed: ValueReference,
        session: Session | None,
        keep: bool,
        peer: Hashable,
    ) -> Outcome:
        """The login's challenge was answered: the session is now ``identity``'s."""
        if session is None or not session.matches_claim(claimed):
            code, text = ResponseCode.INVALID_CREDENTIAL, "the answer is not from the identity that logged in"
        elif not self.sessions.authenticate(session, identity):
            code, text = ResponseCode.SERVER_TOO_BUSY, "no room for another authenticated session"
        else:
            ok = self.answers.message(login, ResponseCode.SUCCESS, EmptyBody())
            out = await self._done(login, [self._under(answer, ok)], keep, session, peer)
            out.authenticated = True
            return out
        error = self._under(answer, self.answers.error(login, code, text))
        return await self._done(login, [error], keep, session, peer)

    @staticmethod
    def _under(answer: Message, msg: Message) -> Message:
        """Answers to the parked request go out under the challenge answer's RequestId."""
        return replace(msg, request_id=answer.request_id)

    # ------------------------------------------------------------------ verification

    async def _verify(self, msg: Message, peer: Hashable, keep: bool, session: Session | None) -> Outcome:
        """OC_VERIFY_CHALLENGE for an HS_SECKEY identity held here (``HandleServer.verifyChallenge``;
        the servers that ask set CT and check our signature)."""
        body = msg.body
        try:
            if not isinstance(body, VerifyChallengeRequest):
                raise HandleError(ResponseCode.PROTOCOL_ERROR, "bad verify request")
            if not self.service.is_responsible(Handle.parse(body.handle)):
                raise HandleError(ResponseCode.SERVER_NOT_RESPONSIBLE, NOT_HERE)
            identity = ValueReference(body.handle, body.index)
            await self.service.preload([body.handle])  # cached first: the read below never waits
            values = self.service.identity_values(identity, auth.SECKEY)
            legacy = msg.version < (2, 1)
            args = (values, body.nonce, body.digest.digest, body.signed_response, legacy)
            ok = await self.guard.check(peer, identity, auth.verify_local_secret, *args)
        except HandleError as e:
            return await self._done(msg, [self.answers.error(msg, e.code, e.message)], keep, session, peer)
        answer = self.answers.message(msg, ResponseCode.SUCCESS, VerifyChallengeResponse(ok))
        return await self._done(msg, [answer], keep, session, peer)

    async def _token_resolution(
        self, msg: Message, req: Any, token: bytes, peer: Hashable, keep: bool, session: Session | None
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
            await self.service.preload([tok.identity.handle])
            values = self.service.identity_values(tok.identity, auth.PUBKEY)
            if not await self.guard.check(peer, tok.identity, _token_signed, tok, values):
                raise HandleError(
                    ResponseCode.AUTHENTICATION_FAILED, f"identity token of {tok.identity} does not verify"
                )
        except HandleError as e:
            return await self._done(msg, [self.answers.error(msg, e.code, e.message)], keep, session, peer)
        # The SDK sets PO on every resolution; a token asks for what its identity may read, and
        # an identity that may read nothing more gets the public values, as without the token.
        resp = await self.service.submit(replace(req, identity=tok.identity, public_only=False))
        if resp.code == ResponseCode.INSUFFICIENT_PERMISSIONS and req.public_only:
            resp = await self.service.submit(replace(req, identity=tok.identity))
        return await self._done(msg, self.answers.answer(msg, resp), keep, session, peer)


def _token_signed(token: idtoken.UserToken, values: list[HandleValue]) -> bool:
    """Pure check on the guard's thread: one of the identity's keys signed the token."""
    for v in values:
        try:
            if idtoken.verify_user_token(token, decode_public_key(v.data)):
                return True
        except ProtocolError:
            continue
    return False


__all__ = ["InSession", "NativeHandler", "Outcome"]
