"""``--value`` / ``--index`` input the wire cannot carry is refused as a usage error."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from idr.cli import app
from idr.cli.client import parse_value
from idr.cli.sites import site_spec
from idr.codec import rest
from idr.codec.site import decode_site
from idr.model.site import TransportProtocol


def test_value_index_beyond_32_bits_is_a_usage_error() -> None:
    assert parse_value("2147483647:URL:x").index == 2**31 - 1
    with pytest.raises(typer.BadParameter, match="larger than 2147483647"):
        parse_value("2147483648:URL:x")


def test_index_options_beyond_32_bits_are_usage_errors() -> None:
    runner = CliRunner()
    for command in ("remove", "resolve"):
        r = runner.invoke(app, [command, "88.1/x", "--index", "2147483648"])
        assert r.exit_code == 2, r.output
        assert r.exception is None or isinstance(r.exception, SystemExit)


def test_hs_site_values_from_a_spec_or_a_file(tmp_path: Path) -> None:
    """HS_SITE is writable with --value: HOST:PORT[,http=P][,https=P][,desc=NAME][,mirror], or
    @FILE holding the JSON ``idr federation site --json`` prints (or the encoded bytes)."""
    v = parse_value("1:HS_SITE:127.0.0.1:2651,http=8010,https=8453,desc=Sichuan secondary")
    site = decode_site(v.data)
    srv = site.servers[0]
    assert (srv.host, site.primary, site.attribute("desc")) == ("127.0.0.1", True, "Sichuan secondary")
    ports = {i.protocol: i.port for i in srv.interfaces}
    assert ports == {
        TransportProtocol.UDP: 2651,
        TransportProtocol.TCP: 2651,
        TransportProtocol.HTTP: 8010,
        TransportProtocol.HTTPS: 8453,
    }
    assert site_spec(site) == "127.0.0.1:2651,http=8010,https=8453,desc=Sichuan secondary"
    mirror = decode_site(parse_value("51:HS_SITE.PREFIX:[2001:db8::1]:2641,mirror").data)
    assert not mirror.primary and mirror.servers[0].host == "2001:db8::1"
    as_json = tmp_path / "site.json"
    as_json.write_text(json.dumps(rest.site_to_json(site)))
    assert decode_site(parse_value(f"1:HS_SITE:@{as_json}").data) == site
    raw = tmp_path / "site.bin"
    raw.write_bytes(v.data)
    assert parse_value(f"1:HS_SITE:@{raw}").data == v.data
    for bad in ("nonsense", "host.example:2641", "127.0.0.1:0", "127.0.0.1:2641,colour=red", "@/no/such"):
        with pytest.raises(typer.BadParameter):
            parse_value(f"1:HS_SITE:{bad}")
