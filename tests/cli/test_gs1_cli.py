"""``idr gs1 link`` and ``idr resolve`` with GS1 keys: compressed links, scanner data, refusals."""

from __future__ import annotations

import json
import socket

from typer.testing import CliRunner

from idr.cli import app

runner = CliRunner()


def test_link_prints_the_compressed_digital_link() -> None:
    r = runner.invoke(app, ["gs1", "link", "(01)05412345000013(10)ABC123"])
    assert r.exit_code == 0 and r.output.strip() == "https://id.gs1.org/CwnYUc1gmo1XgkY"  # GS1's toolkit
    r = runner.invoke(
        app, ["gs1", "link", "--root", "https://id.example.cn", "GS1.9506000/01/09506000134352"]
    )
    assert r.exit_code == 0 and r.output.strip().startswith("https://id.example.cn/")


def test_link_reads_scanner_data_and_shows_every_form() -> None:
    r = runner.invoke(app, ["gs1", "link", "--json", "]d20109506000134352\x1d10ABC\x1d17290101"])
    assert r.exit_code == 0, r.output
    doc = json.loads(r.output)
    assert doc["elementString"] == "(01)09506000134352(10)ABC(17)290101"
    assert doc["uri"] == "https://id.gs1.org/01/09506000134352/10/ABC?17=290101"
    assert doc["handle"] == "GS1/01/09506000134352/10/ABC"


def test_refusals_name_the_ai_and_rule() -> None:
    r = runner.invoke(app, ["gs1", "link", "(01)9506000134352"])
    out = " ".join(r.output.split())
    assert (
        r.exit_code == 1 and "AI 01 (GTIN)" in out and "(GS1 rule: length)" in out and "Traceback" not in out
    )


def test_resolve_refuses_an_invalid_gs1_key_without_asking_the_server() -> None:
    with socket.socket() as s:  # a port nobody listens on: asking would fail differently
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    r = runner.invoke(
        app, ["resolve", "/01/09506000134352?17=200904&17=901007", "--server", f"127.0.0.1:{port}"]
    )
    out = " ".join(r.output.split())
    assert r.exit_code == 1, out
    assert "AI 17" in out and "given twice" in out and "(GS1 rule: duplicate)" in out
