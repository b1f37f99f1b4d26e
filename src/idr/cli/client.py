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
from typing import TYPE_CHECKING, Annotated, TypeVar

import typer
from rich.console import Console
from rich.table import Table

from idr.cli.common import fail, node_url
from idr.codec import rest
from idr.codec.bodies import ErrorResponse, ResolutionResponse, ServiceReferral
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
from idr.resolver.trust import TrustReport, verify_record

if TYPE_CHECKING:
    from idr.codec.keys import PublicKey
    from idr.resolver.recursive import RecursiveResolver

out = Console()
T = TypeVar("T")

ServerOpt = Annotated[
    str,
    typer.Option(
        "--server",
        "-s",
        metavar="HOST:PORT",
        envvar="IDR_SERVER",
        help="the server's Handle protocol address (with --http: its API URL or HOST:PORT)",
    ),
]
AuthOpt = Annotated[
    str | None, typer.Option("--auth", help="your identity, INDEX:HANDLE (e.g. 300:0.NA/88.100)")
]
KeyOpt = Annotated[Path | None, typer.Option("--key", help="PEM private key behind your HS_PUBKEY")]
SecretOpt = Annotated[str | None, typer.Option("--secret", help="the secret of your HS_SECKEY")]
SessionOpt = Annotated[
    bool,
    typer.Option(
        "--session",
        help="work inside a Handle.Net session: the server's signed setup answer is checked against "
        "the key its site info publishes, requests are MACed with the session key",
    ),
]
CertifyOpt = Annotated[
    bool, typer.Option("--certify", help="ask for answers signed by the server (or MACed in a session)")
]
ValueOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--value",
        "-v",
        help="INDEX:TYPE:DATA (repeatable); DATA '@FILE' reads a file (a PEM key for "
        "HS_PUBKEY); HS_ADMIN data is INDEX:HANDLE; HS_SITE data is "
        "HOST:PORT[,http=P][,https=P][,desc=NAME][,mirror] or @FILE (idr federation site --json)",
    ),
]
JsonFileOpt = Annotated[Path | None, typer.Option("--json", help="values as REST API JSON (a file)")]
TimeoutOpt = Annotated[float, typer.Option("--timeout", help="seconds per attempt")]


def _server(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep:
        return text, DEFAULT_PORT
    if not port.isdigit() or not 0 < int(port) < 65536:
        fail(f"--server must be HOST:PORT, not {text!r}")
    return host.strip("[]") or "127.0.0.1", int(port)


MAX_ALIAS_HOPS = 4


def _wrong_server(code: int) -> bool:
    """301: this server does not hold the handle — on a site of several servers, the hash
    names another (Handle.Net: "Request was hashed incorrectly")."""
    return code == ResponseCode.SERVER_NOT_RESPONSIBLE


def _identifier(text: str) -> tuple[str, list[str]]:
    """The scheme of ``text`` and the handles to ask for, most specific first: a handle is
    itself; a GS1 key is its root-form handle and those of its less specific levels."""
    from idr.schemes import gs1
    from idr.schemes.common import SchemeError
    from idr.schemes.detect import SchemeRoots, recognise

    try:
        rec = recognise(text)
    except SchemeError as e:
        if "/" in text and e.scheme in ("handle", "unknown"):
            return "handle", [text]  # the server says what is wrong with it
        rule = getattr(e, "rule", "")
        fail(f"{text!r}: {e.message}" + (f" ({e.scheme.upper()} rule: {rule})" if rule else ""))  # not sent
    if rec.scheme == "handle":
        return "handle", [text.strip().removeprefix("hdl:")]
    key = getattr(rec.key, "gs1", None) or rec.key
    if isinstance(key, gs1.DigitalLink):
        return rec.scheme, [gs1.to_handle(level, SchemeRoots().gs1) for level in key.ancestors()]
    return rec.scheme, [rec.handle]


async def _http_url(host: str, port: int, timeout: float) -> str:
    """The HTTP(S) API of the server at ``host:port``, from its site info (GET_SITE_INFO)."""
    from idr.model.site import TransportProtocol

    async with HandleClient(host, port, timeout=timeout) as client:
        site = await client.site_info()
    for srv in site.servers:
        for proto, scheme in ((TransportProtocol.HTTP, "http"), (TransportProtocol.HTTPS, "https")):
            p = srv.port_for(proto)
            if p:
                return f"{scheme}://{srv.host}:{p}"
    fail(f"{host}:{port} publishes no HTTP interface; give --via URL")


class _Walker:
    """``idr resolve --root``: the recursion engine (``idr.resolver.recursive``, the one
    referral walker a recursive node runs) in this process, from the top node's sites."""

    def __init__(self, roots: list[tuple[str, int]], timeout: float) -> None:
        self.roots = roots
        self.timeout = timeout
        self.engine: RecursiveResolver | None = None

    async def fetch(
        self, handle: str, types: tuple[str, ...], indexes: tuple[int, ...], trace: bool
    ) -> tuple[int, str, tuple[HandleValue, ...], str]:
        from idr.cli.federation import print_resolution_trace
        from idr.core.request import Op, Request
        from idr.resolver.recursive import Limits, RecursiveResolver, RecursiveService
        from idr.resolver.transport import NativeTransport, root_sites

        if self.engine is None:
            sites = await root_sites(self.roots, timeout=min(self.timeout, 2.0))
            # One query waits at most the per-attempt timeout; the whole walk four of them.
            limits = Limits(timeout=min(self.timeout, 2.0), deadline=self.timeout * 4)
            self.engine = RecursiveResolver(sites, NativeTransport(), limits=limits)
        res = await self.engine.resolve(handle)
        resp = RecursiveService._shape(Request(Op.RESOLUTION, handle, indexes, types), res.response)
        if trace:
            doc = {
                "handle": resp.handle or handle,
                "status": resp.code.name,
                "hops": [hop.to_json() for hop in res.hops],
                "message": resp.message,
            }
            print_resolution_trace(doc, values=False)
        return int(resp.code), resp.message, resp.values, resp.handle or handle


def _trust_root(path: Path) -> PublicKey:
    from idr.resolver.keys import load_trust_root

    try:
        return load_trust_root(path)
    except KeyFileError as e:
        fail(str(e))


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
        table.add_row(
            str(v.index),
            v.type,
            _text(v),
            str(v.ttl),
            rest.value_permissions_text(v.permissions),
            rest.format_time(v.timestamp) if v.timestamp else "",
        )
    out.print(table)


def referral_text(handle: str, code: ResponseCode, values: tuple[HandleValue, ...]) -> str:
    """Where a 302/303 sends the client: each site named by the referral, with the command that
    asks it (without --root this client does not walk referrals; a recursive node does)."""
    from idr.cli.sites import site_spec
    from idr.console.fedmap import site_urls
    from idr.core.federation import site_name, sites_of
    from idr.model.site import TransportProtocol

    sites = sites_of(values)
    head = f"{code.name} ({int(code)}): {handle} is served elsewhere"
    if not sites:
        return head + " (the referral names no site; ask a recursive node)"
    lines = [head + ", by:"]
    for site in sites:
        role = "primary" if site.primary else "mirror"
        where = ", ".join([site_spec(site).split(",")[0], *site_urls(site)]) if site.servers else "?"
        lines.append(f"  {site_name(site)} ({role}): {where}")
    srv = next((s for site in sites for s in site.servers), None)
    port = srv.port_for(TransportProtocol.UDP) or srv.port_for(TransportProtocol.TCP) if srv else None
    if srv is not None and port:
        lines.append(
            f"ask there: idr resolve {handle} --server {srv.host}:{port}, or through a recursive node"
        )
    return "\n".join(lines)


# A value index is a signed 32-bit integer on the wire (RFC 3651 §3.1, as Handle.Net writes it).
_INDEX_MIN, _INDEX_MAX = -(2**31), 2**31 - 1


def parse_value(spec: str) -> HandleValue:
    """``INDEX:TYPE:DATA`` → HandleValue (see ``--value`` help)."""
    idx, sep1, rest_ = spec.partition(":")
    type_, sep2, data = rest_.partition(":")
    if not (sep1 and sep2 and idx.isdigit() and type_):
        raise typer.BadParameter(f"value must be INDEX:TYPE:DATA, not {spec!r}")
    if int(idx) > _INDEX_MAX:
        raise typer.BadParameter(f"value index {idx} is larger than {_INDEX_MAX}")
    utype = type_.upper()
    raw: bytes
    if data.startswith("@") and not utype.startswith("HS_SITE"):
        path = Path(data[1:])
        try:
            raw = encode_public_key(load_public_key(path)) if utype == "HS_PUBKEY" else path.read_bytes()
        except (KeyFileError, OSError) as e:
            raise typer.BadParameter(str(e)) from e
    elif utype in ("HS_SITE", "HS_SITE.6", "HS_SITE.PREFIX"):
        from idr.cli.sites import parse_site
        from idr.codec.site import encode_site

        try:
            raw = encode_site(parse_site(data))
        except ValueError as e:
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


def _values(specs: list[str] | None, json_file: Path | None, *, required: bool = False) -> list[HandleValue]:
    values = [parse_value(s) for s in specs or []]
    if json_file is not None:
        try:
            values.extend(rest.values_from_json(json.loads(json_file.read_text("utf-8"))))
        except (OSError, ValueError) as e:
            fail(f"cannot read values from {json_file}: {e}")
        except HandleError as e:
            fail(f"{json_file}: {e.message}")
    if required and not values:
        fail("give at least one --value or --json")
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


def _admin(
    server: str,
    auth: str | None,
    key: Path | None,
    secret: str | None,
    timeout: float,
    action: Callable[[HandleClient], Awaitable[str]],
    session: bool = False,
    certify: bool = False,
    handle: str = "",
    *,
    echo: bool = False,
) -> None:
    """Run ``action`` as the authenticated identity at ``server`` — on a site of several
    servers, at the one holding ``handle`` when ``server`` answers that the hash gives it to
    another (301); print what it returns (``echo``: as plain text, for output other programs
    read, such as handle lists)."""
    host, port = _server(server)
    authenticator = _authenticator(auth, key, secret)

    async def go() -> str:
        address = (host, port)
        for attempt in (1, 2):
            c = HandleClient(*address, auth=authenticator, timeout=timeout, session=session, certify=certify)
            async with c as client:
                try:
                    return await action(client)
                except ResponseError as e:
                    owner = await client.server_for(handle) if handle and _wrong_server(e.code) else None
                    if owner is None or attempt == 2:
                        raise
                    address = owner
        raise AssertionError("unreachable")

    result = _run(go())
    if echo:
        typer.echo(result)
    else:
        out.print(result)


def register(app: typer.Typer) -> None:
    @app.command()
    def resolve(
        handle: Annotated[
            str,
            typer.Argument(
                metavar="ID",
                help="a handle, GS1 Digital Link (URI, /01/… path or (01)… element string), "
                "GTIN, OID or Ecode",
            ),
        ],
        udp: Annotated[bool, typer.Option("--udp", help="native protocol over UDP (default)")] = False,
        tcp: Annotated[bool, typer.Option("--tcp", help="native protocol over TCP")] = False,
        http: Annotated[
            bool, typer.Option("--http", help="the REST API (HTTPS unless the URL says http://)")
        ] = False,
        server: ServerOpt = "127.0.0.1:2641",
        type_: Annotated[list[str] | None, typer.Option("--type", "-t", help="only these types")] = None,
        index: Annotated[
            list[int] | None,
            typer.Option("--index", "-i", help="only these indexes", min=_INDEX_MIN, max=_INDEX_MAX),
        ] = None,
        as_json: Annotated[bool, typer.Option("--json", help="print REST-style JSON")] = False,
        insecure: Annotated[
            bool, typer.Option("--insecure", help="HTTP: accept a self-signed certificate")
        ] = False,
        trace: Annotated[
            bool,
            typer.Option(
                "--trace", help="show every hop (node, prefix, latency, cache hit) of a recursive node"
            ),
        ] = False,
        via: Annotated[
            str | None,
            typer.Option(
                "--via", help="with --trace: the recursive node's HTTP URL (default: its site info)"
            ),
        ] = None,
        timeout: TimeoutOpt = 5.0,
        root: Annotated[
            list[str] | None,
            typer.Option(
                "--root",
                metavar="HOST:PORT",
                envvar="IDR_ROOT",
                help="resolve as a Handle client from the top node (repeatable, primary first): "
                "its sites from 0.NA/0.NA, then the prefix's service, following referrals and "
                "choosing each site's server by the handle's hash — no recursive node needed",
            ),
        ] = None,
        verify: Annotated[
            bool,
            typer.Option(
                "--verify",
                help="check the record's HS_SIGNATURE values back to a --trust-root: tampered, "
                "unsigned or untrusted values are reported and the exit code is 1",
            ),
        ] = False,
        trust_root: Annotated[
            list[Path] | None,
            typer.Option(
                "--trust-root",
                envvar="IDR_TRUST_ROOTS",
                help="a public key you trust as root of signature chains (PEM or HS_PUBKEY bytes; "
                "repeatable)",
            ),
        ] = None,
    ) -> None:
        """Resolve ID and print its values.

        Identifiers of other schemes are sent in root form (GS1/01/…, ECODE/…): a
        recursive node (or --root) locates the prefix that holds them. A scheme identifier
        whose record is an alias (HS_ALIAS) is followed to the record it names."""
        if udp + tcp + http > 1:
            fail("choose one of --udp, --tcp, --http")
        if root and (http or tcp or via):
            fail("--root walks the federation over the native protocol: not with --http, --tcp or --via")
        types, indexes = tuple(type_ or ()), tuple(index or ())
        scheme, tries = _identifier(handle)
        if scheme != "handle":
            out.print(f"[dim]recognised as {scheme}: {tries[0]}[/]", highlight=False)
        base = ""
        if http:
            base = server if "://" in server else f"https://{server}"
            if server == "127.0.0.1:2641":
                base = "https://127.0.0.1:8443"
        host, port = _server(server) if not http else ("", 0)

        Answer = tuple[int, str, tuple[HandleValue, ...], str]

        walker = _Walker([_server(r) for r in root or ()], timeout) if root else None

        async def fetch(h: str) -> Answer:
            """(code, message, values, the handle that answered) from the server."""
            if walker is not None:
                return await walker.fetch(h, types, indexes, trace)
            if http:
                try:
                    values = await resolve_http(
                        base, h, types=types, indexes=indexes, insecure=insecure, timeout=timeout
                    )
                except ResponseError as e:
                    return e.code, e.message, (), h
                return ResponseCode.SUCCESS, "", values, h
            transport = "tcp" if tcp else "udp"
            async with HandleClient(host, port, timeout=timeout) as client:
                msg = await client.resolve(h, indexes=indexes, types=types, transport=transport)
                owner = await client.server_for(h) if _wrong_server(msg.response_code) else None
            if owner is not None:  # a site of several servers: the one the hash names
                async with HandleClient(*owner, timeout=timeout) as client:
                    msg = await client.resolve(h, indexes=indexes, types=types, transport=transport)
            if isinstance(msg.body, ResolutionResponse):
                return msg.response_code, "", msg.body.values, msg.body.handle or h
            if isinstance(msg.body, ServiceReferral):
                return msg.response_code, "", msg.body.values or (), h
            return msg.response_code, msg.body.message if isinstance(msg.body, ErrorResponse) else "", (), h

        async def show_trace(h: str) -> None:
            from idr.cli.federation import print_resolution_trace, resolution_trace

            given = node_url(via, "--via") if via else None
            url = given or await _http_url(host, port, timeout) if not http else (given or base)
            print_resolution_trace(await asyncio.to_thread(resolution_trace, url, h), values=False)

        async def go() -> Answer:
            answer: Answer = (ResponseCode.HANDLE_NOT_FOUND, "", (), "")
            for h in tries:  # a GS1 key with qualifiers falls back to less specific records
                if trace and walker is None:
                    await show_trace(h)
                answer = await fetch(h)
                if answer[0] not in (ResponseCode.HANDLE_NOT_FOUND, ResponseCode.VALUES_NOT_FOUND):
                    break
            for _ in range(MAX_ALIAS_HOPS):
                alias = next((v for v in answer[2] if v.type.upper() == "HS_ALIAS"), None)
                if scheme == "handle" or answer[0] != ResponseCode.SUCCESS or alias is None:
                    break
                target = alias.data.decode("utf-8", "replace")
                out.print(f"[dim]{answer[3]} is an alias of {target}[/]", highlight=False)
                if trace and walker is None:
                    await show_trace(target)
                answer = await fetch(target)
            return answer

        async def lookup(h: str) -> tuple[HandleValue, ...] | None:
            """A record's public values, the way this command resolves (for --verify)."""
            if walker is not None:
                got = await walker.fetch(h, (), (), False)
            elif http:
                try:
                    return await resolve_http(base, h, insecure=insecure, timeout=timeout)
                except ResponseError:
                    return None
            else:
                async with HandleClient(host, port, timeout=timeout) as client:
                    msg = await client.resolve(h, transport="tcp")
                if not isinstance(msg.body, ResolutionResponse):
                    return None
                return msg.body.values
            return got[2] if got[0] == ResponseCode.SUCCESS else None

        async def go_verify() -> tuple[Answer, TrustReport | None]:
            answer = await go()
            if not verify or answer[0] != ResponseCode.SUCCESS:
                return answer, None
            record = await lookup(answer[3]) or ()
            return answer, await verify_record(answer[3], record, lookup, roots)

        roots = [_trust_root(p) for p in trust_root or ()]
        if verify and not roots:
            fail("--verify needs the keys you trust: --trust-root FILE (PEM or HS_PUBKEY bytes)")
        (code, message, values, answered), report = _run(go_verify())
        if code in (ResponseCode.SERVICE_REFERRAL, ResponseCode.PREFIX_REFERRAL):
            # A referral is an answer (as a DNS referral is): where to ask, not a failure.
            out.print(referral_text(answered or handle, ResponseCode(code), values), highlight=False)
            return
        if code != ResponseCode.SUCCESS:
            fail(str(ResponseError(code, message)))
        _print_values(answered if scheme != "handle" else handle, values, as_json)
        if report is not None:
            for line in report.lines():
                style = "green" if report.ok else ("red" if line.split(":")[0].isupper() else "yellow")
                out.print(f"[{style}]{line}[/]", highlight=False)
            if not report.ok:
                raise typer.Exit(1)

    @app.command()
    def create(
        handle: str,
        value: ValueOpt = None,
        json_file: JsonFileOpt = None,
        auth: AuthOpt = None,
        key: KeyOpt = None,
        secret: SecretOpt = None,
        server: ServerOpt = "127.0.0.1:2641",
        overwrite: Annotated[bool, typer.Option("--overwrite", help="replace an existing handle")] = False,
        mint: Annotated[bool, typer.Option("--mint", help="let the server pick a unique suffix")] = False,
        timeout: TimeoutOpt = 5.0,
        session: SessionOpt = False,
        certify: CertifyOpt = False,
    ) -> None:
        """Create HANDLE with the given values."""
        values = _values(value, json_file)

        async def act(c: HandleClient) -> str:
            return f"created {await c.create(handle, values, overwrite=overwrite, mint=mint)}"

        _admin(server, auth, key, secret, timeout, act, session, certify, handle)

    @app.command()
    def add(
        handle: str,
        value: ValueOpt = None,
        json_file: JsonFileOpt = None,
        auth: AuthOpt = None,
        key: KeyOpt = None,
        secret: SecretOpt = None,
        server: ServerOpt = "127.0.0.1:2641",
        overwrite: Annotated[
            bool, typer.Option("--overwrite", help="replace values with the same index")
        ] = False,
        timeout: TimeoutOpt = 5.0,
        session: SessionOpt = False,
        certify: CertifyOpt = False,
    ) -> None:
        """Add values to HANDLE."""
        values = _values(value, json_file, required=True)

        async def act(c: HandleClient) -> str:
            await c.add_values(handle, values, overwrite=overwrite)
            return f"added {len(values)} value(s) to {handle}"

        _admin(server, auth, key, secret, timeout, act, session, certify, handle)

    @app.command()
    def modify(
        handle: str,
        value: ValueOpt = None,
        json_file: JsonFileOpt = None,
        auth: AuthOpt = None,
        key: KeyOpt = None,
        secret: SecretOpt = None,
        server: ServerOpt = "127.0.0.1:2641",
        timeout: TimeoutOpt = 5.0,
        session: SessionOpt = False,
        certify: CertifyOpt = False,
    ) -> None:
        """Replace values of HANDLE (matched by index)."""
        values = _values(value, json_file, required=True)

        async def act(c: HandleClient) -> str:
            await c.modify_values(handle, values)
            return f"modified {len(values)} value(s) of {handle}"

        _admin(server, auth, key, secret, timeout, act, session, certify, handle)

    @app.command()
    def remove(
        handle: str,
        index: Annotated[
            list[int],
            typer.Option("--index", "-i", help="index of a value to remove", min=_INDEX_MIN, max=_INDEX_MAX),
        ],
        auth: AuthOpt = None,
        key: KeyOpt = None,
        secret: SecretOpt = None,
        server: ServerOpt = "127.0.0.1:2641",
        timeout: TimeoutOpt = 5.0,
        session: SessionOpt = False,
        certify: CertifyOpt = False,
    ) -> None:
        """Remove values of HANDLE by index."""

        async def act(c: HandleClient) -> str:
            await c.remove_values(handle, index)
            return f"removed value(s) {', '.join(map(str, index))} of {handle}"

        _admin(server, auth, key, secret, timeout, act, session, certify, handle)

    @app.command()
    def delete(
        handle: str,
        auth: AuthOpt = None,
        key: KeyOpt = None,
        secret: SecretOpt = None,
        server: ServerOpt = "127.0.0.1:2641",
        timeout: TimeoutOpt = 5.0,
        session: SessionOpt = False,
        certify: CertifyOpt = False,
    ) -> None:
        """Delete HANDLE."""

        async def act(c: HandleClient) -> str:
            await c.delete(handle)
            return f"deleted {handle}"

        _admin(server, auth, key, secret, timeout, act, session, certify, handle)

    @app.command("list")
    def list_(
        prefix: Annotated[
            str | None,
            typer.Argument(help="the prefix (88.100 or 0.NA/88.100) whose handles to list"),
        ] = None,
        homed: Annotated[
            bool, typer.Option("--homed", help="list the prefixes the server is home to instead")
        ] = False,
        auth: AuthOpt = None,
        key: KeyOpt = None,
        secret: SecretOpt = None,
        server: ServerOpt = "127.0.0.1:2641",
        timeout: TimeoutOpt = 5.0,
        session: SessionOpt = False,
        certify: CertifyOpt = False,
    ) -> None:
        """List the handles under PREFIX (LIST_HANDLES over TCP, as an admin of the prefix with
        the list-handles right), one per line; or with --homed the server's homed prefixes."""
        if homed == (prefix is not None):
            fail("give a PREFIX, or --homed for the server's homed prefixes")

        async def act(c: HandleClient) -> str:
            names = await c.list_homed() if homed else await c.list_handles(prefix or "")
            return "\n".join(names) if names else "(none)"

        if homed and auth is None:  # anyone may ask which prefixes a server is home to
            host, port = _server(server)

            async def anonymous() -> str:
                async with HandleClient(host, port, timeout=timeout) as c:
                    return await act(c)

            typer.echo(_run(anonymous()))
            return
        _admin(server, auth, key, secret, timeout, act, session, certify, echo=True)

    @app.command()
    def batch(
        batch_file: Annotated[Path, typer.Argument(metavar="FILE", help="a Handle.Net batch file")],
        log_file: Annotated[
            Path | None, typer.Argument(metavar="[LOGFILE]", help="write the log here instead of stdout")
        ] = None,
        verbose: Annotated[
            bool, typer.Option("--verbose", "-verbose", help="also list what was parsed")
        ] = False,
        auth: AuthOpt = None,
        key: KeyOpt = None,
        secret: SecretOpt = None,
        server: ServerOpt = "127.0.0.1:2641",
        timeout: TimeoutOpt = 10.0,
        session: SessionOpt = False,
    ) -> None:
        """Run a Handle.Net batch file (hdl-genericbatch's format): CREATE, ADD, MODIFY, REMOVE,
        DELETE, HOME, UNHOME, AUTHENTICATE, SESSIONSETUP — docs/batch.md.

        Operations go to --server (HOME/UNHOME to the server they name); the identity is the
        file's AUTHENTICATE or --auth with --key/--secret. Each operation is logged as
        GenericBatch logs it, with its line number; the exit code is 1 if any failed or was
        invalid."""
        from idr.resolver.batch import parse_batch, run_batch

        try:
            text = batch_file.read_text("utf-8")
        except (OSError, UnicodeDecodeError) as e:
            fail(f"cannot read {batch_file}: {e}")
        ops = parse_batch(text)
        start_auth = _authenticator(auth, key, secret) if auth is not None else None
        try:
            sink = log_file.open("w", encoding="utf-8") if log_file is not None else None
        except OSError as e:
            fail(f"cannot write {log_file}: {e.strerror or e}")

        def log(line: str) -> None:
            if sink is not None:
                sink.write(line + "\n")
                sink.flush()
            else:
                typer.echo(line)

        if verbose:
            for op in ops:
                log(f"parsed: {op}")
        try:
            report = _run(
                run_batch(
                    ops,
                    _server(server),
                    auth=start_auth,
                    timeout=timeout,
                    session=session,
                    log=log,
                    line_count=len(text.splitlines()),
                )
            )
        finally:
            if sink is not None:
                sink.close()
        if not report.ok:
            raise typer.Exit(1)

    def homing(home: bool) -> Callable[..., None]:
        """``idr home`` and ``idr unhome``: one command each, the same shape."""

        def command(
            prefix: Annotated[str, typer.Argument(help="the prefix, e.g. 88.100.7 (or 0.NA/88.100.7)")],
            auth: AuthOpt = None,
            key: KeyOpt = None,
            secret: SecretOpt = None,
            server: ServerOpt = "127.0.0.1:2641",
            timeout: TimeoutOpt = 5.0,
            session: SessionOpt = False,
            certify: CertifyOpt = False,
        ) -> None:
            async def act(c: HandleClient) -> str:
                await (c.home(prefix) if home else c.unhome(prefix))
                return f"{'homed' if home else 'unhomed'} {prefix}"

            _admin(server, auth, key, secret, timeout, act, session, certify)

        command.__doc__ = (
            "Make the server home to PREFIX (HOME_NA): it then answers for PREFIX/… itself."
            if home
            else "Stop the server being home to PREFIX (UNHOME_NA); its handles stay stored."
        )
        return command

    app.command("home")(homing(True))
    app.command("unhome")(homing(False))

    @app.command()
    def keygen(
        out_path: Annotated[Path, typer.Argument(metavar="OUT", help="private key file to write (PEM)")],
        type_: Annotated[str, typer.Option("--type", help="rsa, dsa, ed25519 or sm2")] = "rsa",
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
        out.print(
            "put it in your prefix handle, as identity 301:0.NA/<prefix>:\n"
            f"  idr add 0.NA/<prefix> --value 301:HS_PUBKEY:@{pub} "
            "--auth 300:0.NA/<prefix> --secret …\n"
            "name that identity as admin of the handles it may change "
            "(e.g. --value 100:HS_ADMIN:301:0.NA/<prefix>),\n"
            f"then authenticate with --auth 301:0.NA/<prefix> --key {out_path}",
            highlight=False,
        )
