"""Federation HTTP routes on a running federation: templates, apply → approve → filed → verify."""

from __future__ import annotations

import asyncio
from typing import Any
from urllib.parse import quote

import requests

from idr.core.prefixes import uscc_check_char
from idr.demo import CELL, Federation


async def call(method: str, url: str, **kw: Any) -> requests.Response:
    return await asyncio.to_thread(requests.request, method, url, timeout=10, **kw)


async def test_templates_and_recursive_resolution_with_hops(fed: Federation) -> None:
    sec = fed["sec-sc"]
    r = await call("GET", f"{sec.http_url}/api/federation/templates")
    assert r.status_code == 200
    assert {t["ref"] for t in r.json()["templates"]} >= {"battery-cell@1", "vehicle@1"}
    one = (await call("GET", f"{sec.http_url}/api/federation/templates/vehicle")).json()["template"]
    assert any(f["name"] == "vin" and f["kind"] == "vin" for f in one["fields"])
    rec = fed["recursive"]
    doc = (await call("GET", f"{rec.http_url}/api/federation/resolve", params={"handle": CELL})).json()
    assert doc["status"] == "SUCCESS" and len(doc["hops"]) == 3
    plain = await call("GET", f"{rec.http_url}/api/handles/{CELL}")
    assert plain.status_code == 200 and plain.json()["handle"] == CELL


async def test_apply_approve_file_verify_and_reject(fed: Federation) -> None:
    sec, top = fed["sec-sc"], fed["top-cq"]
    base = f"{sec.https_url}/api/federation/applications"
    uscc = "91510100MA61R8XB2" + uscc_check_char("91510100MA61R8XB2")
    body = {
        "enterprise": "Chengdu sensors",
        "uscc": uscc,
        "contact": "c@example.org",
        "secret": "sensor-secret",
    }
    r = await call("POST", base, json=body, verify=str(sec.cert))
    assert r.status_code == 201, r.text
    app_id = r.json()["application"]["id"]
    bad = await call("POST", base, json={**body, "uscc": uscc[:17] + "0"}, verify=str(sec.cert))
    assert bad.status_code == 400 and "credit code" in bad.json()["message"]
    auth = (quote(str(sec.admin), safe=""), sec.secret)  # index:handle, percent-encoded (pyhandle)
    anon = await call("POST", f"{base}/{app_id}/approve", json={}, verify=str(sec.cert))
    assert anon.status_code == 401
    ok = await call("POST", f"{base}/{app_id}/approve", json={}, auth=auth, verify=str(sec.cert))
    assert ok.status_code == 200, ok.text
    app = ok.json()["application"]
    assert app["status"] == "approved" and app["filed"], app
    prefix = app["prefix"]
    v = (await call("GET", f"{top.http_url}/api/federation/verify", params={"id": prefix})).json()[
        "verification"
    ]
    assert v["filed"] and v["answering"] and v["filing"]["enterprise"] == "Chengdu sensors"
    assert v["served_by"][0]["node"].startswith("Sichuan")
    cell = (await call("GET", f"{top.http_url}/api/federation/verify", params={"id": CELL})).json()
    assert cell["verification"]["identifier"]["exists"]
    r2 = await call("POST", base, json=body, verify=str(sec.cert))
    rid = r2.json()["application"]["id"]
    rej = await call(
        "POST",
        f"{base}/{rid}/reject",
        json={"reason": "duplicate application"},
        auth=auth,
        verify=str(sec.cert),
    )
    assert rej.json()["application"]["status"] == "rejected"
    listed = await call("GET", base, params={"status": "rejected"}, auth=auth, verify=str(sec.cert))
    assert [a["id"] for a in listed.json()["applications"]] == [rid]
    audit = await call(
        "GET",
        f"{sec.https_url}/api/federation/audit",
        params={"match": "0.PREFIXAPP"},
        auth=auth,
        verify=str(sec.cert),
    )
    ops = [e["op"] for e in audit.json()["entries"]]
    assert "prefix-approve" in ops and "prefix-filed" in ops and "prefix-reject" in ops
    # filings hold credit codes and contacts: the top's admins (or the filing secondary's) only
    anon = await call("GET", f"{top.https_url}/api/federation/filings", verify=str(top.cert))
    assert anon.status_code == 401
    top_auth = (quote(str(top.admin), safe=""), top.secret)
    filings = (
        await call("GET", f"{top.https_url}/api/federation/filings", auth=top_auth, verify=str(top.cert))
    ).json()["filings"]
    assert prefix in {f["prefix"] for f in filings}
    mine = await call("GET", f"{top.https_url}/api/federation/filings", auth=auth, verify=str(top.cert))
    assert {f["parent"] for f in mine.json()["filings"]} == {sec.prefix}


async def test_filings_reuse_one_kept_tls_connection_to_the_top(fed: Federation) -> None:
    from idr.core.prefixes import Filing
    from idr.resolver.filing import send_filing
    from idr.server.federation import FederationContext

    sec, top = fed["sec-sc"], fed["top-cq"]
    ctx = sec.federated.context
    assert isinstance(ctx, FederationContext) and ctx.filing_target is not None
    target = ctx.filing_target
    guard = top.node.http_guards.connections if top.node.http_guards is not None else None
    assert guard is not None
    await target.link.close()  # the federation's start filed over it: start afresh
    before, opened = guard.accepted, target.link.opened
    uscc = "91510100MA61R8XB2" + uscc_check_char("91510100MA61R8XB2")
    for i in range(12):
        filing = Filing(f"88.168.{900 + i}", "88.168", f"enterprise {i}", uscc, "c@example.org")
        doc = await send_filing(target, filing)
        assert doc["responseCode"] == 1, doc
    # one TLS connection for the twelve filings (a connection each before), one session
    assert guard.accepted - before == 1
    assert target.link.opened - opened == 1
    # the top closed it (restart, idle): the next filing opens another and still succeeds
    await target.link.close()
    doc = await send_filing(target, Filing("88.168.999", "88.168", "late", uscc, "c@example.org"))
    assert doc["responseCode"] == 1 and guard.accepted - before == 2
