"""Issue 12, item 12: a session id known before authentication is worthless after it.

The attacker opens a session and gets its id to the victim (a link, a shared client config);
the victim authenticates in it. Before the fix the attacker's id was then the victim's
authenticated session. Now the session is renamed when it authenticates: the victim learns
the new id (sessions API JSON, ``Authentication-Info``), the attacker's id names nothing.
"""

from __future__ import annotations

import base64
import hashlib
import os
import re

from tests.security.conftest import ADMIN, SECRET, Live


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _signed(sid: str, nonce: bytes) -> dict[str, str]:
    """What the victim's client sends to log in: SHA1 sandwich of ``nonce || cnonce``."""
    cnonce = os.urandom(16)
    key = SECRET.encode()
    sig = hashlib.sha1(key + nonce + cnonce + key).digest()
    return {
        "sessionId": sid,
        "id": ADMIN,
        "cnonce": _b64(cnonce),
        "type": "HS_SECKEY",
        "alg": "SHA1",
        "signature": _b64(sig),
    }


async def _attacker_session(live: Live) -> tuple[str, bytes]:
    async with live.client.post(f"{live.https}/api/sessions") as r:
        assert r.status == 201
        body = await r.json()
    return body["sessionId"], base64.b64decode(body["nonce"])


async def _attacker_writes(live: Live, sid: str, handle: str) -> int:
    headers = {"Authorization": f'Handle sessionId="{sid}"'}
    body = [{"index": 1, "type": "URL", "data": "https://evil.example/"}]
    async with live.client.put(f"{live.https}/api/handles/{handle}", json=body, headers=headers) as r:
        return r.status


async def test_sessions_api_login_renames_the_session(live: Live) -> None:
    planted, nonce = await _attacker_session(live)
    async with live.client.put(f"{live.https}/api/sessions/this", json=_signed(planted, nonce)) as r:
        assert r.status == 200
        victim = await r.json()
    assert victim["authenticated"] is True and victim["sessionId"] != planted
    before = live.snapshot()
    assert await _attacker_writes(live, planted, "88.100/fixed") == 401
    async with live.client.get(
        f"{live.https}/api/sessions/this", headers={"Authorization": f'Handle sessionId="{planted}"'}
    ) as r:
        assert r.status == 403 or (await r.json()).get("authenticated") is not True
    assert live.snapshot() == before
    # the victim's own (renamed) session works
    assert await _attacker_writes(live, victim["sessionId"], "88.100/victim") == 200


async def test_header_login_renames_the_session_and_says_so(live: Live) -> None:
    planted, nonce = await _attacker_session(live)
    fields = _signed(planted, nonce)
    header = "Handle " + ", ".join(
        f'{k}="{v.replace(":", "%3A") if k == "id" else v}"' for k, v in fields.items()
    )
    body = [{"index": 1, "type": "URL", "data": "https://example.org/"}]
    async with live.client.put(
        f"{live.https}/api/handles/88.100/v1", json=body, headers={"Authorization": header}
    ) as r:
        assert r.status == 200
        m = re.fullmatch(r'Handle sessionId="([^"]+)"', r.headers.get("Authentication-Info", ""))
    assert m is not None and m.group(1) != planted
    before = live.snapshot()
    assert await _attacker_writes(live, planted, "88.100/fixed") == 401
    assert live.snapshot() == before
    assert await _attacker_writes(live, m.group(1), "88.100/v2") == 200


async def test_basic_login_on_a_planted_session_renames_it(live: Live) -> None:
    planted, _ = await _attacker_session(live)
    token = base64.b64encode(f"300%3A0.NA/88.100:{SECRET}".encode()).decode()
    headers = {"Authorization": f"Basic {token}"}
    # a Basic login naming the planted session in the query (the sessions API reads it there)
    async with live.client.put(f"{live.https}/api/sessions/this?sessionId={planted}", headers=headers) as r:
        body = await r.json()
    assert body.get("authenticated") is True and body["sessionId"] != planted
    assert await _attacker_writes(live, planted, "88.100/fixed") == 401
