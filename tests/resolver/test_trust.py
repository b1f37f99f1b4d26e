"""Handle record signatures (HS_SIGNATURE, HS_CERT): idr's layout is hdllib's (vectors each made
and checked by hdllib's trust code, tests/vectors/trust), the chain is verified back to a trust
root, and a value changed after signing is reported by index and type."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import pytest

from idr.codec.jws import (
    EVERYTHING,
    HANDLES_UNDER_THIS_PREFIX,
    THIS_HANDLE,
    Permission,
    parse_claims,
    parse_jws,
    sign_jws,
    unb64url,
    value_digest,
    verify_jws,
)
from idr.codec.values import decode_values
from idr.model.handle import normalize_key
from idr.model.value import HandleValue, ValueReference
from idr.resolver.keys import generate, load_trust_root
from idr.resolver.trust import TrustReport, authorizes, issue_cert, sign_record, verify_record
from tests.resolver.native_node import key

VECTORS = Path(__file__).resolve().parents[1] / "vectors" / "trust"
Records = dict[str, tuple[HandleValue, ...]]


def load(name: str) -> Records:
    d = VECTORS / name
    out: Records = {}
    for line in (d / "handles.txt").read_text().splitlines():
        handle, file = line.split()
        out[normalize_key(handle)] = decode_values((d / file).read_bytes())
    return out


def signature_iat(values: Sequence[HandleValue]) -> int:
    sig = next(v for v in values if v.type == "HS_SIGNATURE")
    iat = parse_claims(parse_jws(sig.data).payload).iat
    assert iat is not None
    return iat


def verify(records: Records, handle: str, roots: list[object], now: int | None = None) -> TrustReport:
    async def lookup(h: str) -> Sequence[HandleValue] | None:
        return records.get(normalize_key(h))

    values = records[normalize_key(handle)]
    at = now if now is not None else signature_iat(values)
    return asyncio.run(verify_record(handle, values, lookup, roots, now=at))  # type: ignore[arg-type]


# -------------------------------------------------------------------------- hdllib's layout


def test_idr_verifies_what_hdllib_signed() -> None:
    records = load("hdllib")
    root = load_trust_root(VECTORS / "hdllib" / "root_pub.bin")  # hdllib's bytes, 4 zero bytes after
    report = verify(records, "88.100/signed-by-hdllib", [root])
    assert report.ok, report.lines()
    assert report.signed == [1, 2, 100] and report.unsigned == []
    (sig,) = report.signatures
    assert sig.issuer == "300:0.NA/88.100" and sig.chain == ["300:0.NA/88.100", "300:0.0/0.0"]
    assert sig.root == "300:0.0/0.0"


def test_value_digests_and_jws_are_hdllibs() -> None:
    """The digests hdllib put in its signature are idr's digests of the same values; its JWS
    header, JWK and claims are what idr reads and writes."""
    values = load("hdllib")[normalize_key("88.100/signed-by-hdllib")]
    jws = parse_jws(next(v for v in values if v.type == "HS_SIGNATURE").data)
    assert unb64url(jws.header_b64) == b'{"alg":"DS256"}'
    claims = parse_claims(jws.payload)
    assert claims.digest_alg == "SHA-256"
    by_index = {v.index: v for v in values}
    assert claims.digests == tuple((i, value_digest(by_index[i])) for i in (1, 2, 100))
    # timestamps are not digested (servers restamp values): a new timestamp changes nothing
    assert value_digest(replace(by_index[1], timestamp=1)) == value_digest(by_index[1])
    cert = parse_jws(load("hdllib")[normalize_key("0.0/0.0")][0].data)
    obj = json.loads(cert.payload)
    assert list(obj["publicKey"]) == ["kty", "n", "e"] and obj["perms"] == [
        {"handle": "0.0/0.0", "perm": "everything"}
    ]


def test_what_idr_signs_has_hdllibs_layout() -> None:
    """idr's own vectors, which hdllib's HandleRecordTrustVerifier accepted (README): header
    bytes, field order as Gson writes a HandleClaimsSet, JWK fields as GsonUtility's."""
    records = load("idr")
    dsa_sig = parse_jws(
        next(v for v in records[normalize_key("88.100/signed-by-idr")] if v.type == "HS_SIGNATURE").data
    )
    assert unb64url(dsa_sig.header_b64) == b'{"alg":"DS256"}'
    assert list(json.loads(dsa_sig.payload)) == ["digests", "iss", "sub", "exp", "nbf", "iat"]
    rsa_sig = parse_jws(
        next(v for v in records[normalize_key("88.100/signed-by-idr-rsa")] if v.type == "HS_SIGNATURE").data
    )
    assert unb64url(rsa_sig.header_b64) == b'{"alg":"RS256"}'
    assert json.loads(rsa_sig.payload)["chain"] == ["301:0.NA/88.100"]
    certs = records[normalize_key("0.NA/88.100")]
    cert = json.loads(parse_jws(next(v for v in certs if v.index == 500).data).payload)
    assert list(cert) == ["perms", "publicKey", "iss", "sub", "exp", "nbf", "iat"]
    assert list(cert["publicKey"]) == ["kty", "y", "p", "q", "g"]
    root = load_trust_root(VECTORS / "idr" / "root_pub.bin")
    for handle in ("88.100/signed-by-idr", "88.100/signed-by-idr-rsa"):
        report = verify(records, handle, [root])
        assert report.ok and report.signed == [1, 2, 100], report.lines()
    rsa_chain = verify(records, "88.100/signed-by-idr-rsa", [root]).signatures[0].chain
    assert rsa_chain == ["301:0.NA/88.100", "300:0.NA/88.100", "300:0.0/0.0"]


# -------------------------------------------------------------------------- what goes wrong


def test_a_changed_value_is_reported_as_tampered() -> None:
    records = load("idr")
    root = load_trust_root(VECTORS / "idr" / "root_pub.bin")
    k = normalize_key("88.100/signed-by-idr")
    good = records[k]
    records[k] = tuple(replace(v, data=b"https://evil.example/") if v.index == 1 else v for v in good)
    report = verify(records, "88.100/signed-by-idr", [root])
    assert not report.ok
    # as hdllib counts it: the other values stay signed, value 1 is not (README: signed=[2, 100])
    assert report.signatures[0].tampered == [1] and report.unsigned == [1] and report.signed == [2, 100]
    assert (
        "TAMPERED: value 1 (URL) does not match signature 400 by 300:0.NA/88.100: changed after signing"
        in report.lines()
    )
    # a value removed, a value added
    records[k] = (*(v for v in good if v.index != 2), HandleValue(7, "DESC", b"added later"))
    report = verify(records, "88.100/signed-by-idr", [root])
    assert report.signatures[0].missing == [2] and report.unsigned == [7]
    lines = "\n".join(report.lines())
    assert "MISSING: value 2 was signed" in lines and "UNSIGNED: values 7 (DESC)" in lines
    # a private value may change freely: it is not signed (a resolution does not show it)
    records[k] = tuple(replace(v, data=b"new secret") if v.index == 300 else v for v in good)
    assert verify(records, "88.100/signed-by-idr", [root]).ok


def test_chain_problems_are_named() -> None:
    records = load("idr")
    root = load_trust_root(VECTORS / "idr" / "root_pub.bin")
    other_root = generate("rsa").public_key()
    h = "88.100/signed-by-idr"
    report = verify(records, h, [other_root])
    assert "the chain ends at 300:0.0/0.0, whose key is not a trusted root" in "\n".join(report.lines())
    iat = signature_iat(records[normalize_key(h)])
    late = verify(records, h, [root], now=iat + 3 * 366 * 86400)
    assert any("is not valid now" in p for p in late.signatures[0].problems)
    # the certificate gone: the chain cannot be built
    broken = {k: v for k, v in records.items() if k != normalize_key("0.NA/88.100")}
    msg = "\n".join(verify(broken, h, [root]).lines())
    assert "unable to build the chain: no certificate for 300:0.NA/88.100 at issuer 0.NA/88.100" in msg
    # a signature made with another key than the certificate names
    k = normalize_key(h)
    claims = parse_claims(parse_jws(next(v for v in records[k] if v.type == "HS_SIGNATURE").data).payload)
    forged = sign_jws(claims.to_json(), generate("dsa"))
    records[k] = tuple(
        replace(v, data=forged.serialize().encode()) if v.type == "HS_SIGNATURE" else v for v in records[k]
    )
    msg = "\n".join(verify(records, h, [root]).lines())
    assert "the signature does not verify with the key of 300:0.NA/88.100" in msg


def test_permissions_as_hdllib_reads_them() -> None:
    under = [Permission("0.NA/88.100", HANDLES_UNDER_THIS_PREFIX)]
    assert (
        authorizes(under, "88.100/x") and authorizes(under, "88.100/X") and not authorizes(under, "88.1000/x")
    )
    assert not authorizes(under, "0.NA/88.100")
    this = [Permission("0.NA/88.100", THIS_HANDLE)]
    assert authorizes(this, "0.NA/88.100") and authorizes(this, "88.100/x")
    derived = [Permission("0.NA/88.100", "derivedPrefixes")]
    assert authorizes(derived, "0.NA/88.100.1") and authorizes(derived, "88.100.1/x")
    assert not authorizes(derived, "88.100/x")
    assert authorizes([Permission("", EVERYTHING)], "99/anything") and not authorizes([], "88.100/x")


@pytest.mark.parametrize("kind", ["sm2", "ed25519", "rsa", "dsa"])
def test_a_whole_chain_in_every_key_type(kind: str) -> None:
    """SM2 (alg SM2SM3) and Ed25519 (EdDSA) are idr extensions hdllib does not verify."""
    root, signer = generate(kind), key("rsa")
    root_ref, signer_ref = ValueReference("0.NA/0.NA", 300), ValueReference("0.NA/88.100", 300)
    now = 1_800_000_000
    root_cert = issue_cert(
        root_ref, root.public_key(), [Permission("0.NA/0.NA", EVERYTHING)], root_ref, root, now=now
    )
    under = [Permission("0.NA/88.100", HANDLES_UNDER_THIS_PREFIX)]
    cert = issue_cert(signer_ref, signer.public_key(), under, root_ref, root, chain=["0.NA/0.NA"], now=now)
    values = (HandleValue(1, "URL", b"https://x.example/"),)
    sig, _ = sign_record("88.100/x", values, signer_ref, signer, now=now)
    assert sig.index == 400
    records: Records = {
        normalize_key("88.100/x"): (*values, sig),
        normalize_key("0.NA/88.100"): (HandleValue(500, "HS_CERT", cert.encode()),),
        normalize_key("0.NA/0.NA"): (HandleValue(500, "HS_CERT", root_cert.encode()),),
    }
    report = verify(records, "88.100/x", [root.public_key()], now=now)
    assert report.ok, report.lines()
    header = unb64url(parse_jws(root_cert).header_b64)
    assert header == {"sm2": b'{"alg":"SM2SM3"}', "ed25519": b'{"alg":"EdDSA"}', "rsa": b'{"alg":"RS256"}',
                      "dsa": b'{"alg":"DS256"}'}[kind]  # fmt: skip
    assert verify_jws(parse_jws(root_cert), root.public_key())
    assert not verify_jws(parse_jws(root_cert), generate(kind).public_key())
