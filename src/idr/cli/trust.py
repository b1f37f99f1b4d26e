"""``idr sign`` and ``idr cert``: Handle record signatures (HS_SIGNATURE) and the certificates
(HS_CERT) that say whose key may sign what — Handle.Net 9's trust model, docs/signatures.md.
``idr resolve --verify`` checks them (idr.cli.client)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from idr.cli.client import (
    AuthOpt,
    KeyOpt,
    SecretOpt,
    ServerOpt,
    SessionOpt,
    TimeoutOpt,
    _authenticator,
    _run,
    _server,
    out,
)
from idr.cli.common import fail
from idr.codec.bodies import ResolutionResponse
from idr.codec.jws import PERMISSIONS, Permission, parse_claims, parse_jws
from idr.codec.keys import PrivateKey, PublicKey
from idr.model.errors import ResponseCode
from idr.model.value import HandleValue, ValueReference
from idr.resolver.client import HandleClient, ResponseError
from idr.resolver.keys import KeyFileError, load_private_key, load_trust_root
from idr.resolver.trust import CERT_TYPE, DEFAULT_LIFETIME, issue_cert, next_free_index, sign_record

ChainOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--chain",
        help="where the signer's certificates are, nearest first (HANDLE, or INDEX:HANDLE for the "
        "certificate value itself); default: the signer's own handle",
    ),
]
DaysOpt = Annotated[int, typer.Option("--days", help="how long the signature is valid", min=1)]


def _identity(text: str, what: str) -> ValueReference:
    try:
        return ValueReference.parse(text)
    except ValueError:
        fail(f"{what} must be INDEX:HANDLE, not {text!r}")


def _private(path: Path) -> PrivateKey:
    try:
        return load_private_key(path)
    except KeyFileError as e:
        fail(str(e))


def _public(path: Path) -> PublicKey:
    try:
        return load_trust_root(path)
    except KeyFileError:
        try:
            return load_private_key(path).public_key()
        except KeyFileError as e:
            fail(str(e))


async def _record(client: HandleClient, handle: str) -> tuple[HandleValue, ...]:
    """The handle's public values (what a signature covers and what anyone can check)."""
    msg = await client.resolve(handle, transport="tcp")
    if msg.response_code == ResponseCode.HANDLE_NOT_FOUND:
        return ()
    if msg.response_code != ResponseCode.SUCCESS or not isinstance(msg.body, ResolutionResponse):
        raise ResponseError(msg.response_code, getattr(msg.body, "message", ""))
    return msg.body.values


def register(app: typer.Typer) -> None:
    @app.command()
    def sign(
        handle: Annotated[str, typer.Argument(help="the handle whose record to sign")],
        auth: AuthOpt = None,
        key: KeyOpt = None,
        secret: SecretOpt = None,
        signer: Annotated[
            str | None, typer.Option("--signer", help="INDEX:HANDLE that signs (default: --auth)")
        ] = None,
        signer_key: Annotated[
            Path | None,
            typer.Option("--signer-key", help="its private key, PEM or Handle.Net (default: --key)"),
        ] = None,
        chain: ChainOpt = None,
        days: DaysOpt = DEFAULT_LIFETIME // 86400,
        server: ServerOpt = "127.0.0.1:2641",
        timeout: TimeoutOpt = 5.0,
        session: SessionOpt = False,
    ) -> None:
        """Sign HANDLE's record: an HS_SIGNATURE value (a JWS over the digests of its public
        values, as Handle.Net 9 makes them) written at index 400 (or where the record's
        signature is), as --auth. The signer is --auth with --key unless --signer/--signer-key
        say otherwise; RSA and DSA keys are what Handle.Net verifies, SM2 and Ed25519 are idr
        extensions."""
        authenticator = _authenticator(auth, key, secret)
        signer_ref = _identity(signer or auth or "", "--signer")
        if signer_key is None and key is None:
            fail("give --signer-key (or --key): the private key that signs")
        private = _private(signer_key or key)  # type: ignore[arg-type]
        host, port = _server(server)

        async def go() -> str:
            async with HandleClient(host, port, auth=authenticator, timeout=timeout, session=session) as c:
                values = await _record(c, handle)
                if not values:
                    fail(f"{handle} has no record (or no public value) to sign")
                value, claims = sign_record(
                    handle, values, signer_ref, private, chain=chain, lifetime=days * 86400
                )
                await c.add_values(handle, [value], overwrite=True)
            covered = ", ".join(str(i) for i, _ in claims.digests or ())
            return f"signed {handle}: HS_SIGNATURE at index {value.index} by {signer_ref}, values {covered}"

        out.print(_run(go()), highlight=False)

    @app.command()
    def cert(
        subject: Annotated[
            str, typer.Argument(metavar="SUBJECT", help="INDEX:HANDLE the certificate is about")
        ],
        subject_key: Annotated[
            Path,
            typer.Option(
                "--subject-key", help="the subject's public key (PEM, HS_PUBKEY bytes, or its private key)"
            ),
        ],
        perm: Annotated[
            list[str],
            typer.Option(
                "--perm",
                help="what the subject may sign: everything, or thisHandle|derivedPrefixes|"
                "handlesUnderThisPrefix:0.NA/PREFIX (repeatable)",
            ),
        ],
        issuer: Annotated[
            str | None, typer.Option("--issuer", help="INDEX:HANDLE that vouches (default: self-issued)")
        ] = None,
        issuer_key: Annotated[
            Path | None,
            typer.Option("--issuer-key", help="the issuer's private key (self-issued: the subject's)"),
        ] = None,
        chain: ChainOpt = None,
        days: DaysOpt = DEFAULT_LIFETIME // 86400,
        store: Annotated[
            bool,
            typer.Option(
                "--store", help="write it as an HS_CERT value of the subject's handle (needs --auth)"
            ),
        ] = False,
        index: Annotated[
            int | None, typer.Option("--index", help="value index for --store (default: 500 on)")
        ] = None,
        auth: AuthOpt = None,
        key: KeyOpt = None,
        secret: SecretOpt = None,
        server: ServerOpt = "127.0.0.1:2641",
        timeout: TimeoutOpt = 5.0,
    ) -> None:
        """Issue an HS_CERT: ISSUER vouches that SUBJECT holds --subject-key and may sign what
        --perm says. Without --issuer it is self-issued, a trust root's certificate (clients
        trust it when its key is one of their --trust-root keys; Handle.Net's clients only at
        0.0/0.0). Prints the JWS; --store also writes it where verifiers look: the subject's
        handle."""
        subject_ref = _identity(subject, "SUBJECT")
        issuer_ref = _identity(issuer, "--issuer") if issuer else subject_ref
        if issuer_key is None:
            fail("give --issuer-key: the private key that signs the certificate")
        perms = []
        for p in perm:
            name, _, where = p.partition(":")
            if name not in PERMISSIONS:
                fail(f"--perm {p!r}: the permission is one of {', '.join(PERMISSIONS)}")
            if name != "everything" and not where.upper().startswith("0.NA/"):
                fail(f"--perm {p!r}: {name} needs the prefix handle it is about, e.g. {name}:0.NA/88.100")
            perms.append(Permission(where or subject_ref.handle, name))
        jws = issue_cert(
            subject_ref, _public(subject_key), perms, issuer_ref, _private(issuer_key),
            chain=chain, lifetime=days * 86400,
        )  # fmt: skip
        if not store:
            typer.echo(jws)
            return
        authenticator = _authenticator(auth, key, secret)
        host, port = _server(server)

        async def go() -> str:
            async with HandleClient(host, port, auth=authenticator, timeout=timeout) as c:
                values = await _record(c, subject_ref.handle)
                at = index
                if at is None:
                    same = [
                        v for v in values
                        if v.type.upper() == CERT_TYPE and _about(v) == str(subject_ref)
                    ]  # fmt: skip
                    at = same[0].index if same else next_free_index(values, 500)
                await c.add_values(
                    subject_ref.handle, [HandleValue(at, CERT_TYPE, jws.encode())], overwrite=True
                )
            return f"HS_CERT about {subject_ref} by {issuer_ref} stored at {subject_ref.handle} index {at}"

        out.print(_run(go()), highlight=False)


def _about(v: HandleValue) -> str:
    try:
        return parse_claims(parse_jws(v.data).payload).sub
    except ValueError:
        return ""
