"""Bad CLI input ends in one clear ``error:`` line and a non-zero exit code, never a traceback."""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path

import pytest
from typer.testing import CliRunner, Result

from idr.cli import app
from idr.demo import CELL, Federation

runner = CliRunner()


def text(r: Result) -> str:
    return " ".join(r.output.split())


def refused(args: list[str], *needles: str, code: int = 1) -> str:
    r = runner.invoke(app, args)
    out = text(r)
    assert r.exit_code == code, f"{args}: exit {r.exit_code}\n{out}"
    assert r.exception is None or isinstance(r.exception, SystemExit), repr(r.exception)
    assert "Traceback" not in out
    for n in needles:
        assert n in out, f"{args}: {n!r} not in {out!r}"
    return out


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


AUTH = ["--auth", "300:0.NA/88.168", "--secret", "x"]
NODE_COMMANDS = [
    ["audit", *AUTH],
    ["prefix", "list", *AUTH],
    ["prefix", "apply", "--enterprise", "E", "--uscc", "U", "--contact", "c", "--secret", "s3cret-123"],
    ["prefix", "approve", "APP-1", *AUTH],
    ["prefix", "reject", "APP-1", "--reason", "no", *AUTH],
    ["prefix", "file", "APP-1", *AUTH],
]


@pytest.mark.parametrize("bad", ["notaurl", "localhost", "ftp://x:1", "http://[::1", "127.0.0.1:99999"])
def test_url_options_refuse_what_is_not_a_url(bad: str) -> None:
    refused(["trace", "88.1/x", "--via", bad], "--via")
    refused(["verify", "88.1/x", "--top", bad], "--top")
    for cmd in NODE_COMMANDS:
        refused([*cmd, "--node", bad], "--node")


def test_host_port_is_taken_where_a_url_is_expected() -> None:
    port = closed_port()
    # Accepted as the node's address (credentials go over HTTPS): nothing listens there.
    for cmd in NODE_COMMANDS:
        refused([*cmd, "--node", f"127.0.0.1:{port}"], f"https://127.0.0.1:{port}", "listening")
    refused(["trace", "88.1/x", "--via", f"127.0.0.1:{port}"], f"http://127.0.0.1:{port}", "listening")
    refused(["verify", "88.1/x", "--top", f"127.0.0.1:{port}"], f"http://127.0.0.1:{port}", "listening")
    refused(
        ["resolve", "88.1/x", "--trace", "--via", f"127.0.0.1:{port}", "--server", f"127.0.0.1:{port}"],
        f"http://127.0.0.1:{port}",
        "listening",
    )


def test_old_option_names_still_work_but_auth_is_checked() -> None:
    port = closed_port()
    refused(["audit", "--node", f"127.0.0.1:{port}", "--user", "300:0.NA/88.1", "--secret", "x"], "listening")
    refused(["audit", "--node", f"127.0.0.1:{port}", "--secret", "x"], "--auth INDEX:HANDLE")
    refused(["audit", "--node", f"127.0.0.1:{port}", "--auth", "nobody", "--secret", "x"], "'nobody'")
    refused(["status", "--site", "nonsense", "--secret", "k"], "must be HOST:PORT")


def test_demo_refuses_a_port_block_outside_the_port_range() -> None:
    refused(["demo", "--base-port", "99999"], "--base-port", "65472", code=2)
    refused(["demo", "--base-port", "-1"], code=2)


def test_serve_and_import_on_a_corrupt_store(tmp_path: Path) -> None:
    data = tmp_path / "n"
    assert (
        runner.invoke(
            app, ["init", "--data", str(data), "--prefix", "88.1", "--admin-secret", "s3cret-key"]
        ).exit_code
        == 0
    )
    for extra in ("-wal", "-shm"):
        (data / f"idr.sqlite3{extra}").unlink(missing_ok=True)
    (data / "idr.sqlite3").write_bytes(b"this is not a database" * 100)
    refused(["serve", "--data", str(data), "--https", "127.0.0.1:0"], "corrupt or not an SQLite file")
    lines = tmp_path / "h.jsonl"
    lines.write_text('{"handle": "88.1/x", "values": []}\n')
    refused(["import", "--data", str(data), str(lines)], "corrupt or not an SQLite file")
    (data / "federation.toml").write_text("root = [unclosed")
    (data / "idr.toml").write_text("[node\nrole = 'x'")
    refused(["serve", "--data", str(data)], "idr.toml")


def test_a_failed_init_leaves_nothing_behind(tmp_path: Path) -> None:
    data = tmp_path / "n"
    refused(["init", "--data", str(data), "--prefix", "88.1", "--admin-key", str(tmp_path / "none.pem")])
    assert not data.exists()
    data.mkdir()
    (data / "notes.txt").write_text("mine")
    refused(
        [
            "init",
            "--data",
            str(data),
            "--prefix",
            "88.1",
            "--admin-secret",
            "s3cret-key",
            "--native",
            "nonsense",
        ]
    )
    assert sorted(p.name for p in data.iterdir()) == ["notes.txt"]  # only what was there before
    ok = runner.invoke(app, ["init", "--data", str(data), "--prefix", "88.1", "--admin-secret", "s3cret-key"])
    assert ok.exit_code == 0, ok.output


def test_init_refuses_an_empty_secret_and_a_top_with_another_prefix(tmp_path: Path) -> None:
    refused(
        ["init", "--data", str(tmp_path / "a"), "--prefix", "88.1", "--admin-secret", ""], "must not be empty"
    )
    refused(
        ["init", "--data", str(tmp_path / "a"), "--prefix", "88.1", "--admin-secret", "  "],
        "must not be empty",
    )
    refused(
        [
            "init",
            "--data",
            str(tmp_path / "b"),
            "--role",
            "top",
            "--prefix",
            "88",
            "--admin-secret",
            "s3cret-key",
        ],
        "0.NA",
    )
    refused(
        ["init", "--data", str(tmp_path / "c"), "--role", "secondary", "--admin-secret", "s3cret-key"],
        "--prefix",
    )
    refused(["init", "--data", str(tmp_path / "d"), "--role", "recursive"], "--root")
    assert not any((tmp_path / n).exists() for n in "abcd")


def test_help_shows_no_type_noise_or_rst() -> None:
    for cmd in (["resolve"], ["init"], ["trace"], ["prefix", "list"], ["serve"]):
        r = runner.invoke(app, [*cmd, "--help"], env={"COLUMNS": "200"})
        assert r.exit_code == 0
        assert "<bool>" not in r.output and "``" not in r.output, r.output


async def test_trace_exits_non_zero_on_a_missing_handle(fed: Federation) -> None:
    via = fed["recursive"].http_url
    ok = await asyncio.to_thread(runner.invoke, app, ["trace", CELL, "--via", via])
    assert ok.exit_code == 0, ok.output
    for extra in ([], ["--no-follow"], ["--json"]):
        r = await asyncio.to_thread(
            runner.invoke, app, ["trace", "88.168.6/NO-SUCH-CELL", "--via", via, *extra]
        )
        assert r.exit_code == 1, r.output
        assert "HANDLE_NOT_FOUND" in r.output
