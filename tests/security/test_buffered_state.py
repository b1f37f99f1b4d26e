"""Beyond issue 12's list: state kept for clients is bounded, and one client's share cannot push
out another's.

* Console sessions: every page view without a cookie makes a session (for its CSRF token). They
  shared one table with logged-in sessions, so an anonymous flood logged every operator out.
* SNMS tokens: one holder of a password could issue tokens until everyone else's were evicted.
* Console batch jobs: one operator could start job after job, queueing unbounded work behind the
  single writer and pushing out others' reports.
"""

from __future__ import annotations

import re
from pathlib import Path

import aiohttp
import pytest

from idr.console import state
from idr.model.value import ValueReference
from idr.server.snms import TokenStore
from tests.security.conftest import SECRET, start_live


def test_anonymous_console_sessions_cannot_push_out_a_logged_in_one(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(state, "MAX_SESSIONS", 50)
    sessions = state.Sessions()
    operator = sessions.new(True, ValueReference("0.NA/88.100", 300))
    for _ in range(5000):
        sessions.new(True)
    assert sessions.get(operator.sid) is operator
    assert len(sessions) <= 2 * 50


async def test_console_login_survives_an_anonymous_flood(tmp_path: Path) -> None:
    async with start_live(tmp_path / "node", http_limits={"console_sessions": 20}) as live:
        jar = aiohttp.CookieJar(unsafe=True)
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=False), cookie_jar=jar) as me:
            async with me.get(f"{live.https}/console/login") as r:
                m = re.search(r'name="csrf" value="([^"]+)"', await r.text())
            assert m is not None
            form = {"csrf": m.group(1), "identity": "300:0.NA/88.100", "secret": SECRET}
            async with me.post(f"{live.https}/console/login", data=form, allow_redirects=False) as r:
                assert r.status == 303
            for _ in range(200):  # anonymous visitors, each a new session
                async with live.client.get(f"{live.https}/console/login") as r:
                    assert r.status == 200
            async with me.get(f"{live.https}/console/register") as r:
                page = await r.text()
            assert 'action="/console/logout"' in page or "/console/logout" in page  # still logged in


def test_one_identity_cannot_push_out_others_tokens() -> None:
    tokens = TokenStore(capacity=100, per_identity=10)
    other = tokens.issue(ValueReference("88.100/app", 300))
    greedy = ValueReference("88.100/greedy", 300)
    for _ in range(10_000):
        tokens.issue(greedy)
    assert tokens.identity(other) == ValueReference("88.100/app", 300)
    assert len(tokens) <= 11


async def test_one_operator_runs_a_bounded_number_of_batches(tmp_path: Path) -> None:
    async with start_live(tmp_path / "sec", role="secondary") as live:
        jar = aiohttp.CookieJar(unsafe=True)
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=False), cookie_jar=jar) as me:
            async with me.get(f"{live.https}/console/login") as r:
                m = re.search(r'name="csrf" value="([^"]+)"', await r.text())
            assert m is not None
            csrf = m.group(1)
            form = {"csrf": csrf, "identity": "300:0.NA/88.100", "secret": SECRET}
            async with me.post(f"{live.https}/console/login", data=form, allow_redirects=False) as r:
                assert r.status == 303
            async with me.get(f"{live.https}/console/batch") as r:
                page = await r.text()
            m = re.search(r'name="csrf" value="([^"]+)"', page)
            t = re.search(r'<option value="([^"]+)"', page)
            assert m is not None and t is not None
            rows = "handle\n" + "".join(f"88.100/b-{i}\n" for i in range(20_000))
            statuses = []
            for _ in range(4):
                data = aiohttp.FormData()
                data.add_field("csrf", m.group(1))
                data.add_field("template", t.group(1))
                data.add_field("file", rows.encode(), filename="b.csv", content_type="text/csv")
                async with me.post(f"{live.https}/console/batch", data=data) as r:
                    statuses.append(r.status)
            assert statuses[:2] == [202, 202] and set(statuses[2:]) == {429}, statuses
