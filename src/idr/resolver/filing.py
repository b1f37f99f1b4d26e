"""Filing (备案) and verification (核验): the network half of the prefix lifecycle.

Filing: a secondary node tells the top node about a prefix it allocated, over the top's HTTPS
API (``POST /api/federation/filings``) authenticated as the secondary prefix's admin
(HTTP Basic ``300:0.NA/88.168`` and its secret, the identity the top holds on ``0.NA/88.168``),
with the top's self-signed certificate pinned. Verification: the top answers "is it filed,
which node serves it, is that node answering" by looking at its register and walking the
federation with the recursive resolver.
"""

from __future__ import annotations

import asyncio
import base64
import ssl
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from idr.core.federation import FederatedService, site_name
from idr.core.prefixes import FILINGS, Filing, FilingRegister, PrefixRegistry
from idr.model.errors import HandleError, ResponseCode
from idr.model.handle import Handle, normalize_key, prefix_handle
from idr.model.value import ValueReference
from idr.resolver.recursive import RecursiveResolver, server_address

if TYPE_CHECKING:
    import aiohttp

FILING_TIMEOUT = 10.0
# TLS connections kept open to the parent, for filings and reports in flight at once; an idle
# one is closed after LINK_IDLE seconds (the parent counts them against its per-address limit).
LINK_CONNECTIONS = 2
LINK_IDLE = 10.0


class ParentLink:
    """The HTTPS session a node keeps to its parent: TLS connections are kept alive and reused,
    so a filing (or a statistics report) costs one request, not a TCP and TLS handshake and a
    certificate load each. One session per event loop; ``close`` when the node stops."""

    def __init__(self) -> None:
        self._session: aiohttp.ClientSession | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._ssl: ssl.SSLContext | None = None
        self.opened = 0  # sessions opened (a test sees the connection kept)

    def session(self, target: FilingTarget) -> aiohttp.ClientSession:
        import aiohttp

        loop = asyncio.get_running_loop()
        if self._session is None or self._session.closed or self._loop is not loop:
            if self._ssl is None:
                self._ssl = _ssl(target)
            connector = aiohttp.TCPConnector(
                limit=LINK_CONNECTIONS, ssl=self._ssl, keepalive_timeout=LINK_IDLE
            )
            self._session, self._loop = aiohttp.ClientSession(connector=connector), loop
            self.opened += 1
        return self._session

    async def close(self) -> None:
        session, self._session = self._session, None
        if session is not None and not session.closed and self._loop is asyncio.get_running_loop():
            await session.close()


@dataclass(frozen=True)
class FilingTarget:
    """The top node's HTTPS API and the identity this secondary files as."""

    url: str
    identity: ValueReference
    secret: str
    cafile: Path | None = None  # the top's certificate (self-signed: pin it); None = system CAs
    link: ParentLink = field(default_factory=ParentLink, compare=False, repr=False)


def _ssl(target: FilingTarget) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=str(target.cafile) if target.cafile else None)
    return ctx


async def post_to_parent(
    target: FilingTarget, path: str, body: dict[str, Any], what: str, timeout: float = FILING_TIMEOUT
) -> dict[str, Any]:
    """POST ``body`` to the parent node's HTTPS API as this node's identity (Basic over TLS,
    the parent's certificate pinned, the connection kept: ``ParentLink``); its JSON answer, or
    HandleError with its code."""
    import aiohttp

    user = quote(str(target.identity), safe="")
    token = base64.b64encode(f"{user}:{target.secret}".encode()).decode()
    headers = {"Authorization": f"Basic {token}", "Content-Type": "application/json"}
    url = target.url.rstrip("/") + path
    for attempt in range(2):
        session = target.link.session(target)
        try:
            async with session.post(
                url, json=body, headers=headers, timeout=aiohttp.ClientTimeout(total=timeout)
            ) as resp:
                doc = await resp.json(content_type=None)
            break
        except aiohttp.ServerDisconnectedError as e:
            # A kept connection the parent had closed (restarted, idle): it closed before
            # answering, so the request is sent once more, on a new connection.
            if attempt == 0:
                continue
            raise HandleError(ResponseCode.ERROR, f"{what} with {target.url} failed: {e}") from e
        except (aiohttp.ClientError, TimeoutError, ValueError) as e:
            raise HandleError(ResponseCode.ERROR, f"{what} with {target.url} failed: {e}") from e
    if not isinstance(doc, dict) or doc.get("responseCode") != 1:
        code = doc.get("responseCode", 2) if isinstance(doc, dict) else 2
        message = doc.get("message", "") if isinstance(doc, dict) else str(doc)
        try:
            rc = ResponseCode(int(code))
        except ValueError:
            rc = ResponseCode.ERROR
        raise HandleError(rc, f"the parent node refused the {what}: {message}")
    return doc


async def send_filing(target: FilingTarget, filing: Filing) -> dict[str, Any]:
    """POST the filing to the top; the top's JSON answer, or HandleError with its code."""
    body = {
        k: v
        for k, v in filing.to_json().items()
        if k in ("prefix", "parent", "enterprise", "uscc", "contact")
    }
    return await post_to_parent(target, "/api/federation/filings", body, "filing")


async def file_prefix(reg: PrefixRegistry, app_id: str, target: FilingTarget) -> bool:
    """File an approved application's prefix with the top and record the outcome on it."""
    app = await reg.read(app_id)
    if app.status != "approved":
        raise HandleError(ResponseCode.INVALID_VALUE, f"application {app_id} is {app.status}, not approved")
    filing = Filing(app.prefix, app.parent, app.enterprise, app.uscc, app.contact)
    try:
        await send_filing(target, filing)
    except HandleError as e:
        await reg.record_filing(app_id, False, e.message)
        return False
    await reg.record_filing(app_id, True)
    return True


class Verifier:
    """At the top node: 核验 of a prefix or an identifier."""

    def __init__(self, service: FederatedService, resolver: RecursiveResolver) -> None:
        self.service = service
        self.register = FilingRegister(service)
        self.resolver = resolver

    async def verify(self, text: str) -> dict[str, Any]:
        text = text.strip()
        handle: str | None = None
        if "/" in text:
            h = Handle.parse(text)
            prefix = h.suffix if h.is_prefix_handle else h.prefix
            handle = None if h.is_prefix_handle else str(h)
        else:
            Handle.parse(prefix_handle(text))
            prefix = text
        out: dict[str, Any] = {"query": text, "prefix": prefix}
        # anyone may ask, about any prefix: its two records are read off the event loop first
        await self.service.preload([f"{FILINGS}/{prefix}", prefix_handle(prefix)])
        filing = self.register.get(prefix)
        direct = self.service.load(prefix_handle(prefix))
        if filing is not None:
            out["filed"] = True
            # public: what was filed and when, not the credit code or the contact (personal data,
            # for the top's admins and the filing secondary's: /api/federation/filings)
            public = ("prefix", "parent", "enterprise", "filed_by", "filed_at")
            out["filing"] = {k: v for k, v in filing.to_json().items() if k in public}
        elif direct is not None and normalize_key(prefix) != "0.NA":
            out["filed"] = True
            out["filing"] = {"prefix": prefix, "kind": "prefix handle held by the top node"}
        else:
            out["filed"] = False
        # Which node serves it, and is it answering: walk the federation as a client would.
        t0 = time.perf_counter()
        located = await self.resolver.resolve(prefix_handle(prefix))
        served: list[dict[str, Any]] = []
        resp = located.response
        if resp.ok:
            from idr.core.federation import sites_of

            sites = sites_of(v for v in resp.values if v.type.upper().startswith("HS_SITE"))
            if not sites and located.hops:
                served.append({"node": located.hops[-1].node, "server": located.hops[-1].server})
            for s in sites:
                host, port = server_address(s.servers[0])
                served.append({"node": site_name(s), "server": f"{host}:{port}", "primary": s.primary})
        out["served_by"] = served
        out["prefix_handle"] = {"code": int(resp.code), "status": resp.code.name, "message": resp.message}
        if handle is not None:
            res = await self.resolver.resolve(handle)
            out["identifier"] = {
                "handle": handle,
                "exists": res.response.ok,
                "code": int(res.response.code),
                "status": res.response.code.name,
            }
            answering = res.response.code not in (ResponseCode.ERROR, ResponseCode.RECURSION_COUNT_TOO_HIGH)
            hops = located.hops + res.hops
        else:
            answering = resp.ok and any(h.code != int(ResponseCode.ERROR) for h in located.hops)
            hops = located.hops
        out["answering"] = bool(answering and served)
        out["ms"] = round((time.perf_counter() - t0) * 1000, 2)
        out["hops"] = [h.to_json() for h in hops]
        return out
