"""``--value`` / ``--index`` input the wire cannot carry is refused as a usage error."""

from __future__ import annotations

import pytest
import typer
from typer.testing import CliRunner

from idr.cli import app
from idr.cli.client import parse_value


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
