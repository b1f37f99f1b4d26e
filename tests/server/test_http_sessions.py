"""``Authorization: Handle`` challenge–response and the sessions API over real HTTPS.

Signatures are computed here from the primitives (hashlib, hmac, ``cryptography``), not with
idr's own helpers, so the server is checked against Handle.Net's definition of what is signed
(``nonce || cnonce``). After every refused attempt the store's log position and handle list
are compared with what they were before: nothing may be written on any failure.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ed25519, padding, rsa

from idr.codec.keys import encode_public_key
from idr.server import http_auth
from idr.server.http import make_http_app
from idr.server.http_auth import parse_header
from idr.server.sessions import SessionTable
from tests.server.conftest import ADMIN, SECRET, Node, ServerThread, basic, make_service

IDLE = 60.0
RSA_ID = "301:0.NA/88.100"
ED_ID = "302:0.NA/88.100"
RSA_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
ED_KEY = ed25519.Ed25519PrivateKey.generate()
URL_VALUE: Any = [{"index": 1, "type": "URL", "data": "https://example.org/s"}]


class Clock:
    """The session table's clock, moved by the test."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def node(tmp_path: Path, clock: Clock) -> Iterator[Node]:
    service = make_service(tmp_path)
    sessions = SessionTable(idle=IDLE, capacity=100, clock=clock)
    server = ServerThread(make_http_app(service, tls=True, sessions=sessions), tmp_path)
    try:
        tls_port, plain_port = server.start()
        n = Node(service, f"https://127.0.0.1:{tls_port}", f"http://127.0.0.1:{plain_port}", tmp_path)
        _install_public_keys(n)
        yield n
    finally:
        server.stop()
        service.close()


def _install_public_keys(node: Node) -> None:
    """HS_PUBKEYs at 301 (RSA) and 302 (Ed25519) of 0.NA/88.100, both made prefix admins."""

    def admin(index: int) -> dict[str, Any]:
        return {"handle": "0.NA/88.100", "index": index, "permissions": "011111111111"}

    values: Any = [
        {"index": 101, "type": "HS_ADMIN", "data": {"format": "admin", "value": admin(301)}},
        {"index": 102, "type": "HS_ADMIN", "data": {"format": "admin", "value": admin(302)}},
        {
            "index": 301,
            "type": "HS_PUBKEY",
            "data": {"format": "base64", "value": _b64(encode_public_key(RSA_KEY.public_key()))},
        },
        {
            "index": 302,
            "type": "HS_PUBKEY",
            "data": {"format": "base64", "value": _b64(encode_public_key(ED_KEY.public_key()))},
        },
    ]
    r = node.s().put(
        f"{node.https}/api/handles/0.NA/88.100?index=101&index=102&index=301&index=302",
        json={"values": values},
        headers=basic(),
    )
    assert r.status_code == 200, r.text


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _challenge(header: str) -> tuple[str, bytes]:
    m = re.search(r'Handle sessionId="([^"]+)", nonce="([^"]+)"', header)
    assert m is not None, header
    return m.group(1), base64.b64decode(m.group(2))


# What a client signs, per method: fields for the header besides sessionId/id/type/cnonce.
Signer = Callable[[bytes], dict[str, str]]


def sha1_sandwich(data: bytes) -> dict[str, str]:
    key = SECRET.encode()
    return {"type": "HS_SECKEY", "alg": "SHA1", "signature": _b64(hashlib.sha1(key + data + key).digest())}


def hmac_sha256(data: bytes) -> dict[str, str]:
    mac = hmac.digest(SECRET.encode(), data, "sha256")
    return {"type": "HS_SECKEY", "alg": "HMAC-SHA256", "signature": _b64(mac)}


def pbkdf2(data: bytes) -> dict[str, str]:
    salt = os.urandom(16)
    derived = hashlib.pbkdf2_hmac("sha1", SECRET.encode(), salt, 10000, 20)
    mac = hmac.digest(derived, data, "sha1")
    return {
        "type": "HS_SECKEY",
        "alg": "PBKDF2-HMAC-SHA1",
        "signature": _b64(mac),
        "salt": _b64(salt),
        "iterations": "10000",
        "length": "160",
    }


def rsa_sha256(data: bytes) -> dict[str, str]:
    sig = RSA_KEY.sign(data, padding.PKCS1v15(), hashes.SHA256())
    return {"type": "HS_PUBKEY", "alg": "SHA256", "signature": _b64(sig)}


def ed25519_sig(data: bytes) -> dict[str, str]:
    return {"type": "HS_PUBKEY", "alg": "Ed25519", "signature": _b64(ED_KEY.sign(data))}


SIGNERS: dict[str, tuple[str, Signer]] = {
    "seckey-sha1": (ADMIN, sha1_sandwich),
    "seckey-hmac-sha256": (ADMIN, hmac_sha256),
    "seckey-pbkdf2": (ADMIN, pbkdf2),
    "pubkey-rsa": (RSA_ID, rsa_sha256),
    "pubkey-ed25519": (ED_ID, ed25519_sig),
}


def login_fields(sid: str, nonce: bytes, ident: str, signer: Signer) -> dict[str, str]:
    cnonce = os.urandom(16)
    return {"sessionId": sid, "id": ident, "cnonce": _b64(cnonce), **signer(nonce + cnonce)}


def handle_header(fields: dict[str, str]) -> dict[str, str]:
    """``Authorization: Handle`` with ``id`` percent-encoded (``:`` → ``%3A``), as HN clients do."""
    parts = []
    for k, v in fields.items():
        parts.append(f'{k}="{v.replace(":", "%3A") if k == "id" else v}"')
    return {"Authorization": "Handle " + ", ".join(parts)}


def renamed_session(r: requests.Response) -> str:
    """The session's new id after a login (``Authentication-Info: Handle sessionId="…"``)."""
    m = re.fullmatch(r'Handle sessionId="([^"]+)"', r.headers["Authentication-Info"])
    assert m is not None, r.headers
    return m.group(1)


def session_header(sid: str) -> dict[str, str]:
    return {"Authorization": f'Handle sessionId="{sid}"'}


def put(node: Node, handle: str, headers: dict[str, str]) -> requests.Response:
    return node.s().put(f"{node.https}/api/handles/{handle}", json=URL_VALUE, headers=headers)


def new_session(node: Node) -> tuple[str, bytes]:
    r = node.s().post(f"{node.https}/api/sessions")
    assert r.status_code == 201 and r.headers["Location"] == "/api/sessions/this", r.text
    body = r.json()
    assert set(body) == {"sessionId", "nonce"}
    nonce = base64.b64decode(body["nonce"])
    assert len(nonce) == 16
    return body["sessionId"], nonce


# ----------------------------------------------------------------------------- logins


def test_write_challenged_then_signed_then_session_alone(node: Node) -> None:
    """The flow of manual §14.6: 401 + challenge, the same write signed, then sessionId only."""
    before = node.snapshot()
    r = put(node, "88.100/s1", {})
    assert r.status_code == 401 and r.json()["responseCode"] == 402
    assert node.snapshot() == before
    sid, nonce = _challenge(r.headers["WWW-Authenticate"])
    r = put(node, "88.100/s1", handle_header(login_fields(sid, nonce, ADMIN, sha1_sandwich)))
    assert r.status_code == 200, r.text
    assert node.record("88.100/s1") is not None
    # the session was renamed when it authenticated (no fixation): the answer names it
    renamed = renamed_session(r)
    assert renamed != sid
    assert put(node, "88.100/s2", session_header(sid)).status_code == 401
    r = put(node, "88.100/s2", session_header(renamed))
    assert r.status_code == 200, r.text
    me = node.s().get(f"{node.https}/api/sessions/this", headers=session_header(renamed)).json()
    assert me["authenticated"] is True and me["id"] == ADMIN and me["sessionId"] == renamed
    assert base64.b64decode(me["nonce"]) != nonce  # the used nonce is gone


@pytest.mark.parametrize("method", sorted(SIGNERS))
def test_sessions_api_login_with_each_key_kind(node: Node, method: str) -> None:
    ident, signer = SIGNERS[method]
    sid, nonce = new_session(node)
    r = node.s().put(f"{node.https}/api/sessions/this", json=login_fields(sid, nonce, ident, signer))
    assert r.status_code == 200, r.text
    assert r.json()["authenticated"] is True and r.json()["id"] == ident
    renamed = r.json()["sessionId"]
    assert renamed != sid and renamed == renamed_session(r)
    handle = f"88.100/by-{method}"
    r = put(node, handle, session_header(renamed))
    assert r.status_code == 200, r.text
    assert node.record(handle) is not None


@pytest.mark.parametrize("method", ["seckey-sha1", "pubkey-rsa", "pubkey-ed25519"])
def test_header_login_on_the_sessions_api(node: Node, method: str) -> None:
    ident, signer = SIGNERS[method]
    sid, nonce = new_session(node)
    r = node.s().get(
        f"{node.https}/api/sessions/this", headers=handle_header(login_fields(sid, nonce, ident, signer))
    )
    assert r.status_code == 200 and r.json()["id"] == ident, r.text


def test_basic_on_post_sessions_authenticates_at_once(node: Node) -> None:
    r = node.s().post(f"{node.https}/api/sessions", headers=basic())
    assert r.status_code == 201 and r.json()["authenticated"] is True and r.json()["id"] == ADMIN
    assert put(node, "88.100/basic-session", session_header(r.json()["sessionId"])).status_code == 200


# ----------------------------------------------------------------------------- refusals


def test_replayed_signature_refused(node: Node) -> None:
    sid, nonce = new_session(node)
    header = handle_header(login_fields(sid, nonce, ADMIN, sha1_sandwich))
    assert put(node, "88.100/first", header).status_code == 200
    node.s().delete(f"{node.https}/api/sessions/this", headers=session_header(sid))
    before = node.snapshot()
    # the same signed header, in the same session and in a new one: the nonce is spent
    for _ in range(2):
        r = put(node, "88.100/replay", header)
        assert r.status_code == 401 and r.json()["responseCode"] == 403
    sid2, _ = new_session(node)
    replay = {**login_fields(sid2, nonce, ADMIN, sha1_sandwich)}
    r = node.s().put(f"{node.https}/api/sessions/this", json=replay)
    assert r.status_code == 401 and "authenticated" not in r.json() and r.json()["error"]
    assert node.snapshot() == before


@pytest.mark.parametrize("method", ["seckey-sha1", "seckey-pbkdf2", "pubkey-rsa", "pubkey-ed25519"])
def test_tampered_signature_refused(node: Node, method: str) -> None:
    ident, signer = SIGNERS[method]
    sid, nonce = new_session(node)
    fields = login_fields(sid, nonce, ident, signer)
    sig = bytearray(base64.b64decode(fields["signature"]))
    sig[len(sig) // 2] ^= 0x01
    fields["signature"] = _b64(bytes(sig))
    before = node.snapshot()
    r = put(node, "88.100/tampered", handle_header(fields))
    assert r.status_code == 401 and r.json()["responseCode"] == 403
    www = r.raw.headers.getlist("WWW-Authenticate")
    assert not any(w.startswith("Basic") for w in www)  # the client is using Handle, not Basic
    sid_again, fresh = _challenge(www[-1])
    assert sid_again == sid and fresh != nonce and 'error="identity not verified"' in www[-1]
    # and the session did not become authenticated
    assert put(node, "88.100/tampered", session_header(sid)).status_code == 401
    assert node.snapshot() == before


def test_signed_cnonce_must_match(node: Node) -> None:
    sid, nonce = new_session(node)
    fields = login_fields(sid, nonce, ADMIN, sha1_sandwich)
    fields["cnonce"] = _b64(os.urandom(16))
    before = node.snapshot()
    assert put(node, "88.100/x", handle_header(fields)).status_code == 401
    assert node.snapshot() == before


@pytest.mark.parametrize("ident", ["301:0.NA/88.100", "300:88.100/nobody", "0.NA/88.100x", "999:0.NA/88.100"])
def test_wrong_id_refused(node: Node, ident: str) -> None:
    """A good HS_SECKEY MAC claimed for another identity (an RSA slot, a missing handle…)."""
    sid, nonce = new_session(node)
    fields = login_fields(sid, nonce, ident, sha1_sandwich)
    before = node.snapshot()
    r = put(node, "88.100/wrong-id", handle_header(fields))
    assert r.status_code == 401 and r.json()["responseCode"] == 403
    assert node.snapshot() == before


def test_key_of_another_identity_refused(node: Node) -> None:
    """The Ed25519 key signing for the RSA identity."""
    sid, nonce = new_session(node)
    before = node.snapshot()
    fields = login_fields(sid, nonce, RSA_ID, ed25519_sig)
    assert put(node, "88.100/k", handle_header(fields)).status_code == 401
    assert node.snapshot() == before


def test_expired_session(node: Node, clock: Clock) -> None:
    sid, nonce = new_session(node)
    r = node.s().put(f"{node.https}/api/sessions/this", json=login_fields(sid, nonce, ADMIN, pbkdf2))
    assert r.status_code == 200
    sid = r.json()["sessionId"]
    clock.now += IDLE / 2  # use keeps it alive
    assert put(node, "88.100/alive", session_header(sid)).status_code == 200
    clock.now += IDLE + 1
    before = node.snapshot()
    r = put(node, "88.100/expired", session_header(sid))
    assert r.status_code == 401 and r.json()["responseCode"] == 403
    new_sid, _ = _challenge(r.raw.headers.getlist("WWW-Authenticate")[-1])
    assert new_sid != sid  # the challenge opens a new session
    assert node.s().get(f"{node.https}/api/sessions/this", headers=session_header(sid)).status_code == 403
    assert node.snapshot() == before


def test_delete_session(node: Node) -> None:
    r = node.s().post(f"{node.https}/api/sessions", headers=basic())
    sid = r.json()["sessionId"]
    assert node.s().delete(f"{node.https}/api/sessions/this", headers=session_header(sid)).status_code == 204
    before = node.snapshot()
    assert put(node, "88.100/after-delete", session_header(sid)).status_code == 401
    assert node.s().delete(f"{node.https}/api/sessions/this", headers=session_header(sid)).status_code == 403
    assert node.snapshot() == before


def test_unauthenticated_session_cannot_write(node: Node) -> None:
    sid, _ = new_session(node)
    before = node.snapshot()
    r = put(node, "88.100/anon", session_header(sid))
    assert r.status_code == 401 and r.json()["responseCode"] == 402
    assert _challenge(r.headers["WWW-Authenticate"])[0] == sid  # challenged in its own session
    assert node.snapshot() == before


def test_over_plain_http_refused(node: Node) -> None:
    sid, nonce = new_session(node)
    fields = login_fields(sid, nonce, ADMIN, sha1_sandwich)
    before = node.snapshot()
    for method in ("post", "get", "put", "delete"):
        path = "/api/sessions" if method == "post" else "/api/sessions/this"
        r = node.s().request(method, f"{node.http}{path}", headers=session_header(sid))
        assert r.status_code == 403, method
    r = node.s().put(f"{node.http}/api/handles/88.100/plain", json=URL_VALUE, headers=handle_header(fields))
    assert r.status_code == 403 and "HTTPS" in r.json()["message"]
    # the nonce was not spent on the refused plain-HTTP attempt: over HTTPS it still works
    assert put(node, "88.100/tls", handle_header(fields)).status_code == 200
    assert node.snapshot()[0] == before[0] + 1


def test_sessions_api_shapes(node: Node) -> None:
    assert node.s().get(f"{node.https}/api/sessions").status_code == 405
    assert node.s().get(f"{node.https}/api/sessions/this").json() == {"authenticated": False}
    assert node.s().get(f"{node.https}/api/sessions/other").status_code == 403
    sid, _ = new_session(node)
    r = node.s().post(f"{node.https}/api/sessions", headers=session_header(sid))
    assert r.status_code == 400
    me = node.s().get(f"{node.https}/api/sessions/this", headers=session_header(sid)).json()
    assert set(me) == {"sessionId", "nonce"}


def test_login_without_session_refused(node: Node) -> None:
    fields = login_fields("x", os.urandom(16), ADMIN, sha1_sandwich)
    del fields["sessionId"]
    before = node.snapshot()
    assert put(node, "88.100/nosession", handle_header(fields)).status_code == 401
    assert node.snapshot() == before


# ----------------------------------------------------------------------------- sans-I/O parts


def test_header_grammar() -> None:
    h = parse_header('Handle sessionId="a b", id="300%3A0.NA/88.100", Type=HS_SECKEY,  alg="SH\\"A1"')
    assert h is not None
    assert (h.sessionId, h.id, h.type, h.alg) == ("a b", "300:0.NA/88.100", "HS_SECKEY", 'SH"A1')
    assert parse_header("Handle") is None
    assert parse_header('Handle sessionId="a" id="b"') is None  # missing comma
    assert parse_header("Basic abc") is None
    assert parse_header("handle sessionId=x") is not None


def test_session_table_bounds() -> None:
    clock = Clock()
    table = SessionTable(idle=10.0, capacity=3, clock=clock)
    first = table.create()
    others = [table.create() for _ in range(3)]
    assert len(table) == 3 and table.get(first.id) is None  # least recently used dropped
    nonce = others[0].nonce
    assert table.take_nonce(others[0]) == nonce and others[0].nonce != nonce
    clock.now += 11
    assert table.get(others[1].id) is None  # idle too long
    table.create()  # purges the expired ones
    assert len(table) == 1 and table.remove(others[2].id) is False


def test_anonymous_flood_does_not_log_anyone_out() -> None:
    clock = Clock()
    table = SessionTable(idle=10.0, capacity=3, clock=clock)
    admin = table.create()
    table.authenticate(admin, http_auth.parse_identity(ADMIN), ADMIN)
    for _ in range(50):  # every unauthenticated 401 opens a session
        table.create()
    assert table.get(admin.id) is admin and len(table) == 4
    assert table.remove(admin.id) and table.get(admin.id) is None
