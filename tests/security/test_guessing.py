"""Issue 12, item 11: guessing secrets is throttled per source and per identity, and nobody can
lock the real admin out for long.

Against a live node, from one address: each way in (HTTP Basic, ``Authorization: Handle``,
SNMS tokens, the console login) checks at most ``free_failures`` wrong secrets, in sequence or
in a parallel burst, then answers 429 with ``Retry-After`` without looking at the secret.
Meanwhile the real admin at an address it logged in from before is not held back at all.
The policy's arithmetic (back-off growth, caps, forgetting) is checked with a moved clock.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import os
import re
import ssl
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from idr.model.value import ValueReference
from idr.server.throttle import Throttle, Throttled, ThrottleLimits
from tests.security.conftest import ADMIN, SECRET, Live, basic, start_live

FREE = ThrottleLimits().free_failures
GUESSES = 40


def _client(live: Live, address: str) -> aiohttp.ClientSession:
    """A client whose connections come from ``address`` (any 127/8 address is loopback)."""
    ctx = ssl.create_default_context(cafile=str(live.data / "tls" / "cert.pem"))
    connector = aiohttp.TCPConnector(ssl=ctx, local_addr=(address, 0), limit=0)
    return aiohttp.ClientSession(connector=connector, cookie_jar=aiohttp.CookieJar(unsafe=True))


@pytest.fixture
async def attacker(live: Live) -> AsyncIterator[aiohttp.ClientSession]:
    async with _client(live, "127.0.0.2") as c:
        yield c


async def _statuses(coros: list[object]) -> list[int]:
    return list(await asyncio.gather(*coros))  # type: ignore[call-overload]


async def test_basic_guessing_is_bounded_and_the_admin_still_gets_in(
    live: Live, attacker: aiohttp.ClientSession
) -> None:
    url = f"{live.https}/api/handles/88.100/x"
    body = [{"index": 1, "type": "URL", "data": "https://example.org/"}]
    # the admin has written from its usual address before
    async with live.client.put(url, json=body, headers=basic()) as r:
        assert r.status == 200
    before = live.snapshot()

    async def guess(i: int) -> int:
        async with attacker.put(url, json=body, headers=basic(ADMIN, f"guess-{i}")) as r:
            if r.status == 429:
                assert int(r.headers["Retry-After"]) >= 1
                assert (await r.json())["responseCode"] == 3
            return r.status

    statuses = await _statuses([guess(i) for i in range(GUESSES)])  # a parallel burst
    statuses += [await guess(i) for i in range(GUESSES)]  # then one after another
    checked = [s for s in statuses if s != 429]
    assert len(checked) <= FREE and set(checked) <= {401}, statuses
    assert live.snapshot() == before
    # the right secret from the guesser's address is refused too (the address waits)…
    async with attacker.put(url, json=body, headers=basic()) as r:
        assert r.status == 429
    # …but the admin at its known address is not held back by the identity's back-off
    async with live.client.put(url, json=body, headers=basic()) as r:
        assert r.status == 200


def _native_guess(live: Live, address: str, secret: str) -> bool | int:
    """An OC_VERIFY_CHALLENGE over UDP from ``address`` for the admin's HS_SECKEY (an online
    check of a guessed secret, as a Handle client's home server asks it)."""
    from idr.codec.auth import MAC_HMAC_SHA256, secret_key_mac
    from tests.server.test_native_limits import DIGEST, NONCE, _udp_from, verdict, verify_request

    assert live.node.listeners.native
    host, port = live.node.listeners.native
    mac = secret_key_mac(MAC_HMAC_SHA256, secret.encode(), NONCE, DIGEST)
    return verdict(_udp_from(address, host, port, verify_request(mac)))


# the back-off after the free failures is long here, so a slow machine still meets it
SLOW_BACK_OFF = {"login_backoff_base": 60.0}


BODY = [{"index": 1, "type": "URL", "data": "https://example.org/"}]


async def test_http_guesses_hold_back_handle_protocol_guesses(tmp_path: Path) -> None:
    """One login back-off per node: failures over HTTP count for the Handle protocol's checks."""
    async with (
        start_live(tmp_path / "node", http_limits=SLOW_BACK_OFF) as live,
        _client(live, "127.0.0.2") as c,
    ):
        url = f"{live.https}/api/handles/88.100/x"
        for i in range(FREE):
            async with c.put(url, json=BODY, headers=basic(ADMIN, f"guess-{i}")) as r:
                assert r.status == 401
        # the same identity, another address, the other front-end: it waits, even with the secret
        for secret in ("guess-x", SECRET):
            assert await asyncio.to_thread(_native_guess, live, "127.0.0.3", secret) == 3  # SERVER_TOO_BUSY


async def test_handle_protocol_guesses_hold_back_http_guesses(tmp_path: Path) -> None:
    """…and the Handle protocol's failures count for HTTP; an address that proved the secret
    over either front-end is not held back by the identity's back-off on the other."""
    async with (
        start_live(tmp_path / "node", http_limits=SLOW_BACK_OFF) as live,
        _client(live, "127.0.0.3") as elsewhere,
        _client(live, "127.0.0.4") as admin,
    ):
        url = f"{live.https}/api/handles/88.100/x"
        assert await asyncio.to_thread(_native_guess, live, "127.0.0.4", SECRET) is True  # the admin
        results = [
            await asyncio.to_thread(_native_guess, live, "127.0.0.2", f"guess-{i}") for i in range(FREE)
        ]
        assert results == [False] * FREE
        async with elsewhere.put(url, json=BODY, headers=basic()) as r:
            assert r.status == 429  # the right secret, from a fresh address: the identity waits
        async with admin.put(url, json=BODY, headers=basic()) as r:
            assert r.status in (200, 201)  # the admin's known address


async def test_handle_authorization_guessing_is_bounded(live: Live, attacker: aiohttp.ClientSession) -> None:
    statuses = []
    for _ in range(GUESSES // 2):
        async with attacker.post(f"{live.https}/api/sessions") as r:
            session = await r.json()
        nonce = base64.b64decode(session["nonce"])
        cnonce = os.urandom(16)
        wrong = b"not-the-secret"
        sig = hashlib.sha1(wrong + nonce + cnonce + wrong).digest()
        fields = {
            "sessionId": session["sessionId"],
            "id": ADMIN,
            "cnonce": base64.b64encode(cnonce).decode(),
            "type": "HS_SECKEY",
            "alg": "SHA1",
            "signature": base64.b64encode(sig).decode(),
        }
        async with attacker.put(f"{live.https}/api/sessions/this", json=fields) as r:
            statuses.append(r.status)
    checked = [s for s in statuses if s != 429]
    assert len(checked) <= FREE and 429 in statuses, statuses


async def test_snms_token_guessing_is_bounded(live: Live, attacker: aiohttp.ClientSession) -> None:
    async def admin_login() -> int:
        login = {"username": ADMIN, "password": SECRET}
        async with live.client.post(f"{live.https}/identity/token", json=login) as r:
            return int((await r.json())["status"])

    assert await admin_login() == 1

    async def guess(i: int) -> int:
        login = {"username": ADMIN, "password": f"guess-{i}"}
        async with attacker.post(f"{live.https}/identity/token", json=login) as r:
            body = await r.json()
            assert body["status"] != 1 and body["data"] is None
            return r.status

    statuses = await _statuses([guess(i) for i in range(GUESSES)])
    checked = [s for s in statuses if s != 429]
    assert len(checked) <= FREE and 429 in statuses, statuses
    assert await admin_login() == 1  # the admin's own address is not held back


async def test_console_login_guessing_is_bounded(live: Live, attacker: aiohttp.ClientSession) -> None:
    async with attacker.get(f"{live.https}/console/login") as r:
        m = re.search(r'name="csrf" value="([^"]+)"', await r.text())
    assert m is not None
    csrf = m.group(1)

    async def guess(i: int) -> int:
        form = {"csrf": csrf, "identity": ADMIN, "secret": f"guess-{i}"}
        async with attacker.post(f"{live.https}/console/login", data=form, allow_redirects=False) as r:
            return r.status

    statuses = await _statuses([guess(i) for i in range(GUESSES)])
    checked = [s for s in statuses if s != 429]
    assert len(checked) <= FREE and set(checked) <= {401}, statuses


# ----------------------------------------------------------------------------- the policy


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


ME = ValueReference("0.NA/88.100", 300)


def _try(t: Throttle, address: str, ok: bool = False, me: ValueReference = ME) -> bool:
    try:
        t.begin(address, me)
    except Throttled:
        return False
    if ok:
        t.succeeded(address, me)
    return True


def test_distributed_guessing_cannot_lock_the_admin_out_for_long() -> None:
    lim = ThrottleLimits()
    clock = Clock()
    t = Throttle(lim, clock)
    # a botnet: a fresh address for every guess, guessing as fast as it is let, for a day
    checked = 0
    for i in range(24 * 3600):
        clock.now += 1.0
        checked += _try(t, f"10.{i // 65536 % 256}.{i // 256 % 256}.{i % 256}")
    # about one guess per identity_max_delay once the back-off is at its cap
    assert checked <= lim.free_failures + 24 * 3600 / lim.identity_max_delay + 10
    # the admin from a new address waits at most identity_max_delay…
    waited = 0.0
    while not _try(t, "192.0.2.1", ok=True):
        clock.now += 1.0
        waited += 1.0
    assert waited <= lim.identity_max_delay
    # …and from then on is not held back by the identity's back-off at all
    for i in range(100):
        clock.now += 0.01
        _try(t, f"10.9.{i // 256}.{i % 256}")  # the botnet keeps guessing
        assert _try(t, "192.0.2.1", ok=True)


def test_one_source_backs_off_exponentially_and_is_forgiven() -> None:
    lim = ThrottleLimits()
    clock = Clock()
    t = Throttle(lim, clock)
    assert all(_try(t, "198.51.100.7") for _ in range(lim.free_failures))
    assert not _try(t, "198.51.100.7")
    with pytest.raises(Throttled) as e:
        t.begin("198.51.100.7", ME)
    assert e.value.retry_after == 1
    # guessing as fast as allowed for a day from one address: logarithmic, then capped
    checked = 0
    for _ in range(24 * 3600):
        clock.now += 1.0
        checked += _try(t, "198.51.100.7")
    assert checked <= 24 * 3600 / lim.source_max_delay + 12
    clock.now += lim.forget_after + lim.source_max_delay + 1
    assert _try(t, "198.51.100.7")  # forgotten
    # an IPv6 client's /64 is one source (other identities each time: only the source counts)
    for i in range(lim.free_failures):
        assert _try(t, f"2001:db8::{i + 1}", me=ValueReference(f"88.100/v{i}", 1))
    assert not _try(t, "2001:db8::ffff", me=ValueReference("88.100/w", 1))
    assert _try(t, "2001:db8:0:1::1", me=ValueReference("88.100/w", 1))  # another /64


def test_tables_are_bounded() -> None:
    lim = ThrottleLimits(max_entries=100)
    t = Throttle(lim, Clock())
    for i in range(10_000):
        with contextlib.suppress(Throttled):
            t.begin(f"10.0.{i // 256 % 256}.{i % 256}", ValueReference(f"88.100/u{i}", 300))
    assert len(t) <= 3 * lim.max_entries
