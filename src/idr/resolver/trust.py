"""Signing handle records and verifying them back to a trusted root (Handle.Net 9's trust model,
hdllib ``HandleSigner``, ``ChainBuilder``, ``ChainVerifier``, ``HandleRecordTrustVerifier``).

A record is signed by an ``HS_SIGNATURE`` value: a JWS whose claims hold the digests of the
record's public values, issued by an identity ``index:handle``. Why that identity's key is to be
believed is said by ``HS_CERT`` values: each a JWS by some issuer stating a subject's public key
and what it may sign (``perms``). Following ``chain`` (or the issuer's handle) from certificate to
certificate ends at a self-issued certificate; the record is trusted when that certificate's key
is one of the verifier's trust roots, every link verifies and is in date, every link's
permissions cover the record's handle, and every public value is covered by a digest that
matches. A value whose digest does not match was changed after it was signed: it is reported as
tampered, by index and type.

One difference from hdllib: it trusts a root certificate only when its subject is ``0.0/0.0``
(the global root handle) and its key is in the client's root keys; idr trusts any self-issued
certificate whose key is a configured root (a federation's own root need not live at 0.0/0.0).
A chain made for hdllib therefore roots at ``N:0.0/0.0``; idr verifies it too.

Verification is transport-free: ``verify_record`` takes ``lookup(handle)``, whatever resolves
public values (the native client, the recursive engine).
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field

from idr.codec.jws import (
    DERIVED_PREFIXES,
    DIGEST_ALG,
    EVERYTHING,
    HANDLES_UNDER_THIS_PREFIX,
    THIS_HANDLE,
    Claims,
    Jws,
    JwsError,
    Permission,
    parse_claims,
    parse_jws,
    same_key,
    sign_jws,
    value_digest,
    verify_jws,
)
from idr.codec.keys import PrivateKey, PublicKey
from idr.model.handle import normalize_key
from idr.model.value import HandleValue, ValueReference

SIGNATURE_TYPE = "HS_SIGNATURE"
CERT_TYPE = "HS_CERT"
SIGNATURE_INDEX = 400  # where Handle.Net's signing tools put the first HS_SIGNATURE
MAX_CHAIN = 50  # hdllib ChainBuilder.MAX_CHAIN_LENGTH
DEFAULT_LIFETIME = 2 * 366 * 86400  # hdllib's signing tools: two years
BACKDATE = 600  # ... and valid from ten minutes ago

Lookup = Callable[[str], Awaitable[Sequence[HandleValue] | None]]


class TrustError(Exception):
    """The chain of a signature cannot be built (unresolvable, cyclic, too long, broken)."""


def _is_type(v: HandleValue, t: str) -> bool:
    return v.type.upper() == t


def signed_values(values: Sequence[HandleValue]) -> list[HandleValue]:
    """What a signature covers: the public values other than signatures (hdllib signs
    ``filterOnlyPublicValues`` of the record without its HS_SIGNATURE values)."""
    return [v for v in values if v.public_read and not _is_type(v, SIGNATURE_TYPE)]


def next_free_index(values: Sequence[HandleValue], first: int = SIGNATURE_INDEX) -> int:
    used = {v.index for v in values}
    i = first
    while i in used:
        i += 1
    return i


def sign_record(
    handle: str,
    values: Sequence[HandleValue],
    signer: ValueReference,
    key: PrivateKey,
    *,
    chain: Sequence[str] | None = None,
    now: int | None = None,
    lifetime: int = DEFAULT_LIFETIME,
) -> tuple[HandleValue, Claims]:
    """An HS_SIGNATURE value over the record's public values, as hdllib's tools make it: digests
    SHA-256, valid from ten minutes ago for two years, at index 400 (or the next free one; an
    existing HS_SIGNATURE's index is reused, since re-signing replaces the signature)."""
    now = int(time.time()) if now is None else now
    covered = signed_values(values)
    claims = Claims(
        iss=str(signer),
        sub=handle,
        iat=now,
        nbf=now - BACKDATE,
        exp=now + lifetime,
        chain=tuple(chain) if chain else None,
        digest_alg=DIGEST_ALG,
        digests=tuple((v.index, value_digest(v)) for v in covered),
    )
    jws = sign_jws(claims.to_json(), key)
    old = next((v for v in values if _is_type(v, SIGNATURE_TYPE)), None)
    index = old.index if old is not None else next_free_index(values)
    return HandleValue(index, SIGNATURE_TYPE, jws.serialize().encode("ascii")), claims


def issue_cert(
    subject: ValueReference,
    subject_key: PublicKey,
    perms: Sequence[Permission],
    issuer: ValueReference,
    issuer_key: PrivateKey,
    *,
    chain: Sequence[str] | None = None,
    now: int | None = None,
    lifetime: int = DEFAULT_LIFETIME,
) -> str:
    """An HS_CERT: ``issuer`` vouches that ``subject`` holds ``subject_key`` and may sign what
    ``perms`` say (hdllib ``HandleSigner.signPermissions``); self-issued when subject == issuer."""
    now = int(time.time()) if now is None else now
    claims = Claims(
        iss=str(issuer),
        sub=str(subject),
        iat=now,
        nbf=now - BACKDATE,
        exp=now + lifetime,
        chain=tuple(chain) if chain else None,
        perms=tuple(perms),
        public_key=subject_key,
    )
    return sign_jws(claims.to_json(), issuer_key).serialize()


# --------------------------------------------------------------------------- permissions


def _prefix_ci(handle: str) -> str:
    """hdllib ``upperCasePrefix``: the prefix upper-cased (all of it for 0.NA handles)."""
    p, slash, s = handle.partition("/")
    if p.upper() == "0.NA":
        return handle.upper()
    return p.upper() + slash + s


def _under_prefix(handle: str, prefix_handle: str) -> bool:
    prefix = prefix_handle.upper()
    return prefix.startswith("0.NA/") and _prefix_ci(handle).startswith(prefix[5:] + "/")


def _derived(handle: str, ancestor: str) -> bool:
    h = handle.upper()
    return h.startswith("0.NA/") and h.startswith(ancestor.upper() + ".")


def authorizes(perms: Sequence[Permission] | None, handle: str) -> bool:
    """hdllib ``HandleVerifier.verifyPermissionsAreAuthorizedOverHandle``."""
    for p in perms or ():
        if p.perm == EVERYTHING:
            return True
        if p.perm == THIS_HANDLE and (
            _prefix_ci(handle) == _prefix_ci(p.handle) or _under_prefix(handle, p.handle)
        ):
            return True
        if p.perm == DERIVED_PREFIXES:
            zero_na = "0.NA/" + handle.partition("/")[0]
            if _derived(handle, p.handle) or _derived(zero_na, p.handle):
                return True
        if p.perm == HANDLES_UNDER_THIS_PREFIX and _under_prefix(handle, p.handle):
            return True
    return False


# --------------------------------------------------------------------------- verification


@dataclass
class Link:
    """One signature of a chain, with the key and permissions it is checked against."""

    jws: Jws
    claims: Claims
    key: PublicKey | None
    perms: tuple[Permission, ...] | None
    where: str  # where the key and permissions came from


@dataclass
class SignatureReport:
    """One HS_SIGNATURE value: its chain and what is wrong with it (nothing, when trusted)."""

    index: int
    issuer: str = ""
    chain: list[str] = field(default_factory=list)  # the issuers, from the signer up to the root
    root: str = ""
    verified: list[int] = field(default_factory=list)
    tampered: list[int] = field(default_factory=list)  # digest does not match the value
    missing: list[int] = field(default_factory=list)  # signed, no longer in the record
    problems: list[str] = field(default_factory=list)

    @property
    def chain_ok(self) -> bool:
        """The signature verifies, is in date, and its chain reaches a root with authority over
        the handle: the values it covers whose digests match are signed (as hdllib counts them)."""
        return not self.problems

    @property
    def trusted(self) -> bool:
        return self.chain_ok and not self.tampered and not self.missing


@dataclass
class TrustReport:
    handle: str
    signatures: list[SignatureReport] = field(default_factory=list)
    signed: list[int] = field(default_factory=list)  # covered by a trusted signature
    unsigned: list[int] = field(default_factory=list)  # public values no trusted signature covers
    types: dict[int, str] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return bool(self.signatures) and all(s.trusted for s in self.signatures) and not self.unsigned

    def _name(self, i: int) -> str:
        return f"{i} ({self.types[i]})" if i in self.types else str(i)

    def lines(self) -> list[str]:
        """What a person needs to know, most serious first."""
        if not self.signatures:
            return [f"{self.handle} carries no HS_SIGNATURE: nothing to verify"]
        out = []
        for s in self.signatures:
            who = f"signature {s.index} by {s.issuer or '?'}"
            for i in s.tampered:
                out.append(f"TAMPERED: value {self._name(i)} does not match {who}: changed after signing")
            for i in s.missing:
                out.append(f"MISSING: value {i} was signed by {who} but is no longer in the record")
            out.extend(f"{who}: {p}" for p in s.problems)
            if s.chain_ok:
                path = " ← ".join(s.chain)
                done = ", ".join(map(str, s.verified))
                out.append(f"{who} verifies: values {done}; certified {path} (trusted root)")
        if self.unsigned:
            names = ", ".join(self._name(i) for i in self.unsigned)
            out.append(f"UNSIGNED: values {names} are covered by no trusted signature")
        if self.ok:
            out.insert(0, f"{self.handle}: every public value is signed and the chain reaches a trusted root")
        return out

    def to_json(self) -> dict[str, object]:
        return {
            "handle": self.handle,
            "ok": self.ok,
            "signed": self.signed,
            "unsigned": self.unsigned,
            "signatures": [
                {
                    "index": s.index,
                    "issuer": s.issuer,
                    "chain": s.chain,
                    "root": s.root,
                    "trusted": s.trusted,
                    "verified": s.verified,
                    "tampered": s.tampered,
                    "missing": s.missing,
                    "problems": s.problems,
                }
                for s in self.signatures
            ],
            "messages": self.lines(),
        }


def _ref(text: str) -> tuple[int, str]:
    idx, sep, handle = text.partition(":")
    if sep and idx.isdigit() and handle:
        return int(idx), handle
    return 0, text


async def _lookup_cert(lookup: Lookup, link: str, subject: str) -> str | None:
    """hdllib ``ChainBuilder.lookup``: ``index:handle`` names the certificate value itself;
    a bare handle is searched for its latest HS_CERT about ``subject``."""
    index, handle = _ref(link)
    values = await lookup(handle)
    if values is None:
        return None
    if index > 0:
        v = next((v for v in values if v.index == index), None)
        return None if v is None else v.data.decode("utf-8", "replace")
    best: tuple[int, str] | None = None
    for v in values:
        if not _is_type(v, CERT_TYPE):
            continue
        try:
            jws = parse_jws(v.data)
            claims = parse_claims(jws.payload)
        except JwsError:
            continue
        if claims.sub == subject and (best is None or (claims.iat or 0) > best[0]):
            best = (claims.iat or 0, jws.serialize())
    return None if best is None else best[1]


async def build_chain(jws: Jws, lookup: Lookup) -> list[Link]:
    """The signature and the certificates behind it, up to a self-issued one."""
    links: list[Link] = []
    seen: set[str] = set()
    chain: list[str] = []
    child = jws
    while True:
        try:
            claims = parse_claims(child.payload)
        except JwsError as e:
            raise TrustError(f"signature payload not valid: {e}") from e
        if claims.self_issued:
            links.append(Link(child, claims, claims.public_key, claims.perms, f"self-issued by {claims.sub}"))
            return links
        if len(links) >= MAX_CHAIN:
            raise TrustError(f"chain longer than {MAX_CHAIN} certificates")
        explicit = bool(chain) or bool(claims.chain)
        if not chain:
            chain = list(claims.chain) if claims.chain else [_ref(claims.iss)[1]]
        nxt = chain[0]
        if nxt in seen:
            raise TrustError(f"cycle in the chain at {nxt}")
        seen.add(nxt)
        parent_text = await _lookup_cert(lookup, nxt, claims.iss)
        if parent_text is None:
            what = "chain" if explicit else "issuer"
            raise TrustError(f"no certificate for {claims.iss} at {what} {nxt}")
        try:
            parent = parse_jws(parent_text)
            parent_claims = parse_claims(parent.payload)
        except JwsError as e:
            raise TrustError(f"not a certificate at {nxt}: {e}") from e
        if normalize_key(parent_claims.sub) != normalize_key(claims.iss):
            raise TrustError(
                f"chain is broken at {nxt}: a certificate about {parent_claims.sub}, not {claims.iss}"
            )
        links.append(
            Link(child, claims, parent_claims.public_key, parent_claims.perms, f"certificate at {nxt}")
        )
        child = parent
        chain = chain[1:]


async def verify_record(
    handle: str,
    values: Sequence[HandleValue],
    lookup: Lookup,
    roots: Sequence[PublicKey],
    *,
    now: int | None = None,
) -> TrustReport:
    """Every HS_SIGNATURE of the record checked back to ``roots`` (see the module docstring)."""
    now = int(time.time()) if now is None else now
    report = TrustReport(handle, types={v.index: v.type for v in values})
    needing = {v.index for v in signed_values(values)}
    signed: set[int] = set()
    by_index = {v.index: v for v in values}
    for sv in (v for v in values if _is_type(v, SIGNATURE_TYPE)):
        sr = SignatureReport(sv.index)
        report.signatures.append(sr)
        try:
            jws = parse_jws(sv.data)
            claims = parse_claims(jws.payload)
        except JwsError as e:
            sr.problems.append(f"not a readable signature: {e}")
            continue
        sr.issuer = claims.iss
        if normalize_key(claims.sub) != normalize_key(handle):
            sr.problems.append(f"signs {claims.sub}, not {handle}")
        if claims.digests is None:
            sr.problems.append("has no value digests")
        else:
            for index, digest in claims.digests:
                v = by_index.get(index)
                if v is None:
                    sr.missing.append(index)
                    continue
                try:
                    ok = value_digest(v, claims.digest_alg or DIGEST_ALG) == digest
                except JwsError as e:
                    sr.problems.append(str(e))
                    break
                (sr.verified if ok else sr.tampered).append(index)
        try:
            links = await build_chain(jws, lookup)
        except TrustError as e:
            sr.problems.append(f"unable to build the chain: {e}")
            continue
        for link in links:
            if not sr.chain or sr.chain[-1] != link.claims.iss:
                sr.chain.append(link.claims.iss)  # who signed, from the signer up to the root
            who = "the signature" if link is links[0] else f"the certificate of {link.claims.sub}"
            if link.key is None:
                sr.problems.append(f"{who}: no public key for {link.claims.iss} ({link.where})")
            elif not verify_jws(link.jws, link.key):
                sr.problems.append(f"{who} does not verify with the key of {link.claims.iss} ({link.where})")
            if not link.claims.in_range(now):
                sr.problems.append(f"{who} is not valid now (nbf {link.claims.nbf}, exp {link.claims.exp})")
            if not authorizes(link.perms, handle):
                sr.problems.append(f"{link.claims.iss} is not authorized to sign {handle} ({link.where})")
        root = links[-1]
        sr.root = root.claims.sub
        if root.claims.public_key is None or not any(same_key(root.claims.public_key, r) for r in roots):
            sr.problems.append(f"the chain ends at {root.claims.sub}, whose key is not a trusted root")
        if sr.chain_ok:
            signed.update(sr.verified)
    report.signed = sorted(signed)
    report.unsigned = sorted(needing - signed)
    return report
