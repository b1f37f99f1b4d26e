"""The server's side of a Handle.Net session setup and key exchange (``HandleServer.doSessionSetup``
and ``doKeyExchange``); CPU-bound, no I/O: the handler runs these in a worker thread.

Modes (``Common.KEY_EXCHANGE_*``), what the answer's data is, and where the session key comes from:

1 CIPHER_CLIENT: the session key, encrypted to the RSA key the client sent;
2 CIPHER_SERVER: the server's RSA public key; the client then sends the key encrypted to it in
  SESSION_EXCHANGEKEY (until then the session has no key and nothing in it is MACed);
3 CIPHER_HDL: the session key, encrypted to the RSA HS_PUBKEY at a handle held on this server;
4 DH: the server's Diffie–Hellman half (what ``HandleResolver`` uses by default).

Session keys are AES for peers from 2.2 (DES before, bare before 2.2; DH before 2.4 sends the
bare half and derives DES), as in the reference.
"""

from __future__ import annotations

from dataclasses import dataclass

from cryptography.hazmat.primitives.asymmetric import rsa

from idr.codec import session as keys
from idr.codec.bodies import (
    KEY_EXCHANGE_CIPHER_CLIENT,
    KEY_EXCHANGE_CIPHER_HDL,
    KEY_EXCHANGE_CIPHER_SERVER,
    KEY_EXCHANGE_DH,
    SessionExchangeKeyRequest,
    SessionSetupRequest,
    SessionSetupResponse,
)
from idr.codec.keys import decode_public_key
from idr.codec.message import Message, answer_version
from idr.codec.wire import ProtocolError
from idr.model.errors import HandleError, ResponseCode
from idr.model.value import ValueReference
from idr.server.native_sessions import Session
from idr.server.server_key import ServerKey


@dataclass(frozen=True, slots=True)
class Setup:
    """A successful setup: the answer body and what the new session holds."""

    body: SessionSetupResponse
    version: tuple[int, int]
    mode: int
    key: bytes | None
    key_alg: int
    claimed: ValueReference | None
    timeout: float


def _failed(text: str, code: ResponseCode = ResponseCode.SESSION_FAILED) -> HandleError:
    return HandleError(code, text)


def exchange_key_ref(msg: Message) -> ValueReference | None:
    """The handle/index whose HS_PUBKEY a mode-3 setup asks the server to encrypt to."""
    body = msg.body
    if isinstance(body, SessionSetupRequest) and body.mode == KEY_EXCHANGE_CIPHER_HDL:
        return ValueReference(body.exchange_key_handle, body.exchange_key_index)
    return None


def _rsa(data: bytes) -> rsa.RSAPublicKey:
    try:
        key = decode_public_key(data)
    except ProtocolError as e:
        raise _failed(f"unusable exchange key: {e.message}") from e
    if not isinstance(key, rsa.RSAPublicKey):
        raise _failed("the key exchange needs an RSA key", ResponseCode.NEED_RSAKEY_FOR_SESSIONEXCHANGE)
    return key


def setup(msg: Message, server_key: ServerKey, exchange_keys: list[bytes]) -> Setup:
    """Answer a SESSION_SETUP; ``exchange_keys``: the HS_PUBKEY data found at a mode-3 handle."""
    body = msg.body
    if not isinstance(body, SessionSetupRequest):
        raise _failed("not a session setup", ResponseCode.INVALID_SESSIONSETUP_REQUEST)
    suggested = msg.effective_suggested
    old = suggested < (2, 2)  # the peer knows no algorithm codes: DES, bare key
    alg = keys.ENCRYPT_ALG_DES if old else keys.ENCRYPT_ALG_AES
    key: bytes | None
    try:
        if body.mode == KEY_EXCHANGE_DH:
            client = keys.DHPublicKey.decode(body.public_key)
            data, key = keys.dh_answer(client, alg, legacy=suggested < (2, 4))
            if suggested < (2, 4):
                alg = keys.ENCRYPT_ALG_DES
        elif body.mode in (KEY_EXCHANGE_CIPHER_CLIENT, KEY_EXCHANGE_CIPHER_HDL):
            if body.mode == KEY_EXCHANGE_CIPHER_CLIENT:
                target = _rsa(body.public_key)
            elif not exchange_keys:
                raise _failed("No key found in key exchange handle.")
            else:
                target = _rsa(exchange_keys[0])
            key = keys.new_session_key(alg)
            data = keys.rsa_encrypt(target, key if old else keys.pack_key(alg, key))
        elif body.mode == KEY_EXCHANGE_CIPHER_SERVER:
            if server_key.rsa_key is None:
                raise _failed("KEY_EXCHANGE_CIPHER_SERVER not supported")
            data, key = server_key.public_bytes, None
        else:
            raise _failed(f"Unrecognized key exchange mode {body.mode}")
    except ProtocolError as e:
        raise _failed(e.message, e.code) from e
    claimed = None
    if body.identity_handle and body.identity_index >= 0:
        claimed = ValueReference(body.identity_handle, body.identity_index)
    return Setup(
        SessionSetupResponse(body.mode, data),
        answer_version(msg),
        body.mode,
        key,
        alg,
        claimed,
        float(body.timeout),
    )


def exchange_key(msg: Message, session: Session, server_key: ServerKey | None) -> tuple[int, bytes]:
    """SESSION_EXCHANGEKEY: the session key the client encrypted to the server's RSA key."""
    body = msg.body
    if session.mode != KEY_EXCHANGE_CIPHER_SERVER or session.key is not None:
        raise _failed("Invalid session id. Session failed.")
    if not isinstance(body, SessionExchangeKeyRequest) or not body.encrypted_key:
        raise _failed("no session key in the key exchange")
    if server_key is None or server_key.rsa_key is None:
        raise _failed("KEY_EXCHANGE_CIPHER_SERVER not supported")
    try:
        clear = keys.rsa_decrypt(server_key.rsa_key, body.encrypted_key)
        if msg.version < (2, 2):
            return keys.ENCRYPT_ALG_DES, clear
        return keys.unpack_key(clear)
    except ProtocolError as e:
        raise _failed(e.message, e.code) from e
