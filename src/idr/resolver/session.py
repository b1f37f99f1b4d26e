"""The client's half of a Handle.Net session (``HandleResolver.setupSessionWithServer``,
``ClientSideSessionInfo``): the setup request, checking the server's signed answer, and the
session's MAC on requests and answers.

A session is set up once per server with Diffie–Hellman (mode 4, as ``HandleResolver`` does by
default; idr offers the RFC 3526 2048-bit group), naming the identity the client will prove. The
answer must carry the digest of our request and the server's signature under the public key in
its site information: a session key from an unauthenticated server would be worthless. After
that, every request carries an HS_MAC credential with a fresh session counter; the first
challenge answered in the session authenticates it, and no later request is challenged.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from idr.codec import session as keys
from idr.codec.bodies import KEY_EXCHANGE_DH, SessionSetupRequest, SessionSetupResponse
from idr.codec.credential import CREDENTIAL_MAC, CREDENTIAL_OLD_SIGNED, CREDENTIAL_SIGNED
from idr.codec.envelope import OpCode
from idr.codec.keys import decode_public_key
from idr.codec.message import Message, request_digest
from idr.codec.signing import mac_message, verify_mac, verify_message
from idr.codec.wire import ProtocolError
from idr.model.value import ValueReference

SESSION_TIMEOUT = 3600  # seconds of idleness the client asks for


class SessionError(Exception):
    """The server's session answer cannot be trusted or used."""


@dataclass
class ClientSession:
    id: int
    key: bytes
    version: tuple[int, int]
    identity: ValueReference | None
    authenticated: bool = False
    _next: int = 0
    _seen: set[int] = field(default_factory=set)

    def sign(self, msg: Message) -> Message:
        """``msg`` in this session: its id and version, MACed with the next session counter."""
        self._next += 1
        major, minor = self.version
        inside = replace(msg, session_id=self.id, major=major, minor=minor)
        return mac_message(inside, self.key, self._next)

    def check(self, answer: Message) -> None:
        """A MACed answer must verify and carry a counter we have not seen (replay)."""
        cred = answer.credential
        if cred is None or cred.type != CREDENTIAL_MAC or not verify_mac(answer, self.key):
            raise SessionError("the answer's session MAC does not verify")
        if cred.session_counter in self._seen:
            raise SessionError(f"session counter {cred.session_counter} seen before (replay)")
        self._seen.add(cred.session_counter)


@dataclass
class Setup:
    """A session setup in flight: the request sent and our half of the exchange."""

    request: Message
    private: keys.DHPrivateKey
    identity: ValueReference | None


def setup_body(identity: ValueReference | None) -> tuple[SessionSetupRequest, keys.DHPrivateKey]:
    """A mode-4 setup naming ``identity`` (index -1 and no handle: anonymous), and our DH half."""
    private = keys.DHPrivateKey.generate()
    body = SessionSetupRequest(
        KEY_EXCHANGE_DH,
        SESSION_TIMEOUT,
        identity.handle if identity is not None else "",
        identity.index if identity is not None else -1,
        private.public_key().encode(),
    )
    return body, private


def verify_signed(answer: Message, server_key: bytes) -> None:
    """An answer signed with the server's key (HS_SIGNED), checked against its HS_PUBKEY data."""
    cred = answer.credential
    if cred is None or cred.type not in (CREDENTIAL_SIGNED, CREDENTIAL_OLD_SIGNED):
        raise SessionError("the server's answer is not signed")
    try:
        key = decode_public_key(server_key)
    except ProtocolError as e:
        raise SessionError(f"the server's public key is unusable: {e.message}") from e
    if not verify_message(answer, key):
        raise SessionError("the server's signature does not verify")


def finish(setup: Setup, answer: Message, server_key: bytes) -> ClientSession:
    """The session from a SESSION_SETUP answer, after checking digest and signature."""
    if answer.opcode != OpCode.SESSION_SETUP or not isinstance(answer.body, SessionSetupResponse):
        raise SessionError("not a session setup answer")
    d = answer.request_digest
    if d is None or request_digest(setup.request, d.alg).digest != d.digest:
        raise SessionError("the session setup answer is not for the request we sent")
    verify_signed(answer, server_key)
    if answer.body.mode != KEY_EXCHANGE_DH or answer.session_id == 0:
        raise SessionError(f"unexpected key exchange mode {answer.body.mode} or session id 0")
    try:
        _alg, key = keys.dh_finish(setup.private, answer.body.data, legacy=answer.version < (2, 4))
    except ProtocolError as e:
        raise SessionError(f"key exchange failed: {e.message}") from e
    return ClientSession(answer.session_id, key, answer.version, setup.identity)


def check_certified(answer: Message, session: ClientSession | None, server_key: bytes) -> None:
    """A certified answer (CT): MACed in the session, or signed with the server's key."""
    cred = answer.credential
    if session is not None and cred is not None and cred.type == CREDENTIAL_MAC:
        session.check(answer)
    else:
        verify_signed(answer, server_key)
