"""Client commands: ``idr resolve``, ``idr create/add/modify/remove/delete``, ``idr keygen``.

They speak the native protocol through :class:`idr.resolver.client.HandleClient` (or the REST
API with ``--http``). Every failure is one red line with the response code's name, never a
traceback.
"""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Annotated, TypeVar

import typer
from rich.console import Console
from rich.table import Table

from idr.cli.common import fail
from idr.codec import rest
from idr.codec.bodies import ErrorResponse, ResolutionResponse
from idr.codec.keys import encode_public_key
from idr.codec.values import decode_admin, encode_admin
from idr.model.errors import HandleError, ResponseCode
from idr.model.value import PERM_SECRET, AdminPermission, AdminRecord, HandleValue, ValueReference
from idr.resolver.client import (
    DEFAULT_PORT,
    Authenticator,
    ClientError,
    HandleClient,
    PublicKeyAuth,
    ResponseError,
    SecretKeyAuth,
    resolve_http,
)
from idr.resolver.keys import KeyFileError, generate, load_private_key, load_public_key, write_key_pair

out = Console()
T = TypeVar("T")

ServerOpt = Annotated[str, typer.Option(
    "--server", "-s", help="HOST:PORT of the server (HTTP: a URL or HOST:PORT)")]
AuthOpt = Annotated[str | None, typer.Option(
    "--auth", help="your identity, INDEX:HANDLE (e.g. 300:0.NA/88.100)")]
KeyOpt = Annotated[Path | None, typer.Option("--key", help="PEM private key behind your HS_PUBKEY")]
SecretOpt = Annotated[str | None, typer.Option("--secret", help="the secret of your HS_SECKEY")]
ValueOpt = Annotated[list[str] | None, typer.Option(
    "--value", "-v", help="INDEX:TYPE:DATA (repeatable); DATA '@FILE' reads a file (a PEM key for "
    "HS_PUBKEY); HS_ADMIN data is INDEX:HANDLE")]
JsonFileOpt = Annotated[Path | None, typer.Option("--json", help="values as REST API JSON (a file)")]
TimeoutOpt = Annotated[float, typer.Option("--timeout", help="seconds per attempt")]


def _server(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep:
        return text, DEFAULT_PORT
    if not port.isdigit() or not 0 < int(port) < 65536:
        fail(f"--server must be HOST:PORT, not {text!r}")
    return host.strip("[]") or "127.0.0.1", int(port)


def _run(coro: Awaitable[T]) -> T:
    async def main() -> T:
        return await coro

    try:
        return asyncio.run(main())
    except ResponseError as e:
        fail(str(e))
    except ClientError as e:
        fail(str(e))
    except HandleError as e:
        fail(f"{e.code.name} ({int(e.code)}): {e.message}")


def _text(v: HandleValue) -> str:
    if v.type.upper() == "HS_ADMIN":
        try:
            a = decode_admin(v.data)
            return f"{a.index}:{a.handle} perms={a.permissions:012b}"
        except HandleError:
            pass
    if rest.looks_like_text(v.data):
        return v.data.decode("utf-8")
    return "base64:" + base64.b64encode(v.data).decode()


def _print_values(handle: str, values: tuple[HandleValue, ...], as_json: bool) -> None:
    if as_json:
        typer.echo(rest.dumps(rest.resolution_json(handle, values), pretty=True).decode())
        return
    table = Table(title=handle)
    for col in ("index", "type", "data", "ttl", "perms", "timestamp"):
        table.add_column(col)
    for v in values:
        table.add_row(str(v.index), v.type, _text(v), str(v.ttl), rest.value_permissions_text(v.permissions),
                      rest.format_time(v.timestamp))
    out.print(table)


def parse_value(spec: str) -> HandleValue:
    """``INDEX:TYPE:DATA`` → HandleValue (see ``--value`` help)."""
    idx, sep1, rest_ = spec.partition(":")
    type_, sep2, data = rest_.partition(":")
    if not (sep1 and sep2 and idx.isdigit() and type_):
        raise typer.BadParameter(f"value must be INDEX:TYPE:DATA, not {spec!r}")
    utype = type_.upper()
    raw: bytes
    if data.startswith("@"):
        path = Path(data[1:])
        try:
            raw = encode_public_key(load_public_key(path)) if utype == "HS_PUBKEY" else path.read_bytes()
        except (KeyFileError, OSError) as e:
            raise typer.BadParameter(str(e)) from e
    elif utype == "HS_ADMIN":
        try:
            ref = ValueReference.parse(data)
        except ValueError as e:
            raise typer.BadParameter(f"HS_ADMIN data must be INDEX:HANDLE, not {data!r}") from e
        raw = encode_admin(AdminRecord(ref.handle, ref.index, int(AdminPermission.ALL)))
    else:
        raw = data.encode("utf-8")
    perms = PERM_SECRET if utype == "HS_SECKEY" else HandleValue(0, "", b"").permissions
    return HandleValue(int(idx), type_, raw, permissions=perms)


def _values(specs: list[str] | None, json_file: Path | None) -> list[HandleValue]:
    values = [parse_value(s) for s in specs or []]
    if json_file is not None:
        try:
            values.extend(rest.values_from_json(json.loads(json_file.read_text("utf-8"))))
        except (OSError, ValueError) as e:
            fail(f"cannot read values from {json_file}: {e}")
        except HandleError as e:
            fail(f"{json_file}: {e.message}")
    return values


def _authenticator(auth: str | None, key: Path | None, secret: str | None) -> Authenticator:
    if auth is None:
        fail("this command needs --auth INDEX:HANDLE and --key FILE or --secret S")
    try:
        identity = ValueReference.parse(auth)
    except ValueError:
        fail(f"--auth must be INDEX:HANDLE, not {auth!r}")
    if (key is None) == (secret is None):
        fail("give exactly one of --key FILE and --secret S")
    if key is not None:
        try:
            return PublicKeyAuth(identity, load_private_key(key))
        except KeyFileError as e:
            fail(str(e))
    assert secret is not None
    return SecretKeyAuth(identity, secret.encode("utf-8"))


def _admin(server: str, auth: str | None, key: Path | None, secret: str | None, timeout: float,
           action: Callable[[HandleClient], Awaitable[str]]) -> None:
    host, port = _server(server)
    authenticator = _authenticator(auth, key, secret)

    async def go() -> str:
        async with HandleClient(host, port, auth=authenticator, timeout=timeout) as client:
            return await action(client)

    out.print(_run(go()))


def register(app: typer.Typer) -> None:
    @app.command()
    def resolve(
        handle: str,
        udp: Annotated[bool, typer.Option("--udp", help="native protocol over UDP (default)")] = False,
        tcp: Annotated[bool, typer.Option("--tcp", help="native protocol over TCP")] = False,
        http: Annotated[bool, typer.Option("--http", help="the REST API (HTTPS unless the URL says http://)")]
        = False,
        server: ServerOpt = "127.0.0.1:2641",
        type_: Annotated[list[str] | None, typer.Option("--type", "-t", help="only these types")] = None,
        index: Annotated[list[int] | None, typer.Option("--index", "-i", help="only these indexes")] = None,
        as_json: Annotated[bool, typer.Option("--json", help="print REST-style JSON")] = False,
        insecure: Annotated[bool, typer.Option("--insecure", help="HTTP: accept a self-signed certificate")]
        = False,
        timeout: TimeoutOpt = 5.0,
    ) -> None:
        """Resolve HANDLE and print its values."""
        if udp + tcp + http > 1:
            fail("choose one of --udp, --tcp, --http")
        types, indexes = tuple(type_ or ()), tuple(index or ())
        if http:
            base = server if "://" in server else f"https://{server}"
            if server == "127.0.0.1:2641":
                base = "https://127.0.0.1:8443"
            values = _run(resolve_http(base, handle, types=types, indexes=indexes, insecure=insecure,
                                       timeout=timeout))
            _print_values(handle, values, as_json)
            return
        host, port = _server(server)

        async def go() -> tuple[int, str, tuple[HandleValue, ...]]:
            async with HandleClient(host, port, timeout=timeout) as client:
                msg = await client.resolve(handle, indexes=indexes, types=types,
                                           transport="tcp" if tcp else "udp")
            if isinstance(msg.body, ResolutionResponse):
                return msg.response_code, "", msg.body.values
            return msg.response_code, msg.body.message if isinstance(msg.body, ErrorResponse) else "", ()

        code, message, values = _run(go())
        if code != ResponseCode.SUCCESS:
            fail(str(ResponseError(code, message)))
        _print_values(handle, values, as_json)

    @app.command()
    def create(
        handle: str, value: ValueOpt = None, json_file: JsonFileOpt = None, auth: AuthOpt = None,
        key: KeyOpt = None, secret: SecretOpt = None, server: ServerOpt = "127.0.0.1:2641",
        overwrite: Annotated[bool, typer.Option("--overwrite", help="replace an existing handle")] = False,
        mint: Annotated[bool, typer.Option("--mint", help="let the server pick a unique suffix")] = False,
        timeout: TimeoutOpt = 5.0,
    ) -> None:
        """Create HANDLE with the given values."""
        values = _values(value, json_file)

        async def act(c: HandleClient) -> str:
            return f"created {await c.create(handle, values, overwrite=overwrite, mint=mint)}"

        _admin(server, auth, key, secret, timeout, act)

    @app.command()
    def add(
        handle: str, value: ValueOpt = None, json_file: JsonFileOpt = None, auth: AuthOpt = None,
        key: KeyOpt = None, secret: SecretOpt = None, server: ServerOpt = "127.0.0.1:2641",
        overwrite: Annotated[bool, typer.Option("--overwrite", help="replace values with the same index")]
        = False,
        timeout: TimeoutOpt = 5.0,
    ) -> None:
        """Add values to HANDLE."""
        values = _values(value, json_file)
        if not values:
            fail("give at least one --value or --json")

        async def act(c: HandleClient) -> str:
            await c.add_values(handle, values, overwrite=overwrite)
            return f"added {len(values)} value(s) to {handle}"

        _admin(server, auth, key, secret, timeout, act)

    @app.command()
    def modify(
        handle: str, value: ValueOpt = None, json_file: JsonFileOpt = None, auth: AuthOpt = None,
        key: KeyOpt = None, secret: SecretOpt = None, server: ServerOpt = "127.0.0.1:2641",
        timeout: TimeoutOpt = 5.0,
    ) -> None:
        """Replace values of HANDLE (matched by index)."""
        values = _values(value, json_file)
        if not values:
            fail("give at least one --value or --json")

        async def act(c: HandleClient) -> str:
            await c.modify_values(handle, values)
            return f"modified {len(values)} value(s) of {handle}"

        _admin(server, auth, key, secret, timeout, act)

    @app.command()
    def remove(
        handle: str,
        index: Annotated[list[int], typer.Option("--index", "-i", help="index of a value to remove")],
        auth: AuthOpt = None, key: KeyOpt = None, secret: SecretOpt = None,
        server: ServerOpt = "127.0.0.1:2641", timeout: TimeoutOpt = 5.0,
    ) -> None:
        """Remove values of HANDLE by index."""

        async def act(c: HandleClient) -> str:
            await c.remove_values(handle, index)
            return f"removed value(s) {', '.join(map(str, index))} of {handle}"

        _admin(server, auth, key, secret, timeout, act)

    @app.command()
    def delete(
        handle: str, auth: AuthOpt = None, key: KeyOpt = None, secret: SecretOpt = None,
        server: ServerOpt = "127.0.0.1:2641", timeout: TimeoutOpt = 5.0,
    ) -> None:
        """Delete HANDLE."""

        async def act(c: HandleClient) -> str:
            await c.delete(handle)
            return f"deleted {handle}"

        _admin(server, auth, key, secret, timeout, act)

    @app.command()
    def keygen(
        out_path: Annotated[Path, typer.Argument(metavar="OUT", help="private key file to write (PEM)")],
        type_: Annotated[str, typer.Option("--type", help="rsa, dsa or ed25519")] = "rsa",
    ) -> None:
        """Make a key pair for HS_PUBKEY authentication: OUT (private) and OUT.pub."""
        if out_path.exists():
            fail(f"{out_path} exists; not overwriting a key")
        try:
            key = generate(type_)
            pub = write_key_pair(key, out_path)
        except (KeyFileError, OSError) as e:
            fail(str(e))
        data = encode_public_key(key.public_key())
        out.print(f"private key: {out_path}\npublic key:  {pub}")
        out.print(f"HS_PUBKEY data ({len(data)} bytes, hex): {data.hex()}")
        out.print("put it in your admin handle, e.g.:\n"
                  f"  idr add 0.NA/<prefix> --value 301:HS_PUBKEY:@{pub} "
                  "--auth 300:0.NA/<prefix> --secret …\n"
                  f"then authenticate with --auth 301:0.NA/<prefix> --key {out_path}")
