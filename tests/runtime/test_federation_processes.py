"""Filing (备案) and verification (核验) on nodes started by ``idr serve`` with their own config
(issue 11 item 2): the federation context comes from each node's ``federation.toml`` through
the one assembly (``idr.node``), not from the demo. Separate processes, driven by the CLI.
Before, approving said "NOT filed", ``idr prefix file`` said "no top node to file with" and
``idr verify`` at the top answered code 5."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from idr.codec import rest
from idr.core.federation import FederationSettings, loopback_site
from idr.core.prefixes import uscc_check_char
from tests.procs import ServeProc, idr

TOP_SECRET = "top-secret-123"
SEC_SECRET = "sichuan-secret-123"
USCC = "91511500MA62XB4P3" + uscc_check_char("91511500MA62XB4P3")


@pytest.fixture
def nodes(tmp_path: Path) -> Iterator[tuple[ServeProc, ServeProc]]:
    top = ServeProc.init(tmp_path / "top", "--role", "top", "--admin-secret", TOP_SECRET)
    sec = ServeProc.init(
        tmp_path / "sec", "--role", "secondary", "--prefix", "88.168", "--admin-secret", SEC_SECRET
    )
    try:
        top.start()
        # The secondary's federation.toml: where the top is and who it files as.
        FederationSettings(
            root=[f"127.0.0.1:{top.native}"],
            top_url=f"https://127.0.0.1:{top.https}",
            top_identity="300:0.NA/88.168",
            top_secret=SEC_SECRET,
            top_cafile=str(top.data / "tls" / "cert.pem"),
        ).save(sec.data)
        sec.start()
        yield top, sec
    finally:
        sec.stop()
        top.stop()


def site_json(node: ServeProc, index: int, type_: str) -> dict[str, object]:
    site = loopback_site("Sichuan secondary", native=node.native, http=node.http, https=node.https)
    return {"index": index, "type": type_, "data": {"format": "site", "value": rest.site_to_json(site)}}


def test_approval_files_with_the_top_and_the_top_verifies(nodes: tuple[ServeProc, ServeProc]) -> None:
    top, sec = nodes
    # The top delegates 88.168 to the secondary, whose admin may file prefixes under it.
    record = {
        "values": [
            {"index": 100, "type": "HS_ADMIN", "data": {"format": "admin", "value": {
                "handle": "0.NA/88.168", "index": 300, "permissions": "111111111111"}}},
            {"index": 300, "type": "HS_SECKEY", "data": {"format": "string", "value": SEC_SECRET}},
            site_json(sec, 1, "HS_SITE"),
            site_json(sec, 51, "HS_SITE.PREFIX"),
        ]
    }  # fmt: skip
    status, doc = top.call("PUT", "/api/handles/0.NA/88.168", record, auth=("300:0.NA/0.NA", TOP_SECRET))
    assert doc["responseCode"] == 1, (status, doc)

    sec_url = f"https://127.0.0.1:{sec.https}"
    cert = str(sec.data / "tls" / "cert.pem")
    reviewer = ["--auth", "300:0.NA/88.168", "--secret", SEC_SECRET, "--cafile", cert]
    out = idr("prefix", "apply", "--node", sec_url, "--cafile", cert, "--enterprise", "Yibin cells",
              "--uscc", USCC, "--contact", "q@example.org", "--secret", "yibin-secret-1",
              "--prefix", "88.168.6").stdout  # fmt: skip
    app_id = re.search(r"APP-[0-9A-F]+", out)
    assert app_id, out
    idr("prefix", "approve", app_id.group(0), "--node", sec_url, *reviewer)
    status, doc = sec.call("GET", "/api/federation/applications", auth=("300:0.NA/88.168", SEC_SECRET))
    app = next(a for a in doc["applications"] if a["id"] == app_id.group(0))
    assert app["status"] == "approved" and app["prefix"] == "88.168.6"
    assert app["filed"] is True, app["filing_error"]  # approval filed it with the top
    idr("prefix", "file", app_id.group(0), "--node", sec_url, *reviewer)  # filing again works too

    status, doc = top.call("GET", "/api/federation/filings", auth=("300:0.NA/0.NA", TOP_SECRET))
    assert [f["prefix"] for f in doc["filings"]] == ["88.168.6"], doc
    verified = json.loads(
        idr("verify", "88.168.6/CELL-1", "--top", f"http://127.0.0.1:{top.http}", "--json").stdout
    )
    assert verified["filed"] is True and verified["filing"]["filed_by"] == "300:0.NA/88.168"
    assert verified["answering"] is True
    assert verified["served_by"][0]["server"] == f"127.0.0.1:{sec.native}"
    assert verified["identifier"]["status"] == "HANDLE_NOT_FOUND"  # the prefix answers; no such cell yet
