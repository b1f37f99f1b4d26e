"""The recursion engine's network: one Handle-protocol query to one server (UDP, then TCP).

Wraps :class:`idr.resolver.client.HandleClient` and turns its answer into the core's
``Response`` — referrals included — so the engine reasons in one vocabulary everywhere.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

from idr.codec.bodies import ErrorResponse, ResolutionResponse, ServiceReferral
from idr.core.request import Request, Response
from idr.model.errors import ResponseCode
from idr.model.site import ServerInfo, SiteInfo
from idr.resolver.client import ClientError, HandleClient, ResponseError
from idr.resolver.recursive import server_address


class NativeTransport:
    """Resolution over UDP (one retry inside the timeout), TCP when the answer is truncated."""

    def __init__(self, *, retries: int = 1) -> None:
        self.retries = retries

    async def query(self, server: ServerInfo, request: Request, timeout: float) -> Response:
        host, port = server_address(server)
        per_try = timeout / (1 + self.retries)
        client = HandleClient(host, port, timeout=per_try, retries=self.retries)
        try:
            msg = await client.resolve(
                request.handle, indexes=request.indexes, types=request.types, transport="udp"
            )
        except ClientError as e:
            raise ConnectionError(str(e)) from e
        finally:
            await client.close()
        code = _code(msg.response_code)
        body = msg.body
        if isinstance(body, ResolutionResponse):
            return Response(code, body.handle, body.values)
        if isinstance(body, ServiceReferral):
            return Response(code, body.handle, body.values or ())
        message = body.message if isinstance(body, ErrorResponse) else ""
        return Response(code, request.handle, message=message)


def _code(value: int) -> ResponseCode:
    try:
        return ResponseCode(value)
    except ValueError:
        return ResponseCode.ERROR


async def root_sites(addresses: Sequence[tuple[str, int]], timeout: float = 2.0) -> list[SiteInfo]:
    """The top service's sites, as a Handle client learns them before its first walk.

    Handle.Net clients start from ``root_info``: the HS_SITE values of ``0.NA/0.NA``, every
    site of the root service (primary and mirrors). So: those values at the first address
    that has them; else each address's own site (GET_SITE_INFO: its real servers, so a
    multi-server site is hashed as it is); else a one-server site at the address. The first
    address answering is the primary. ``ClientError`` when none answers."""
    from idr.core.federation import loopback_site, sites_of

    found: list[SiteInfo] = []
    failures: list[str] = []
    for host, port in addresses:
        try:
            async with HandleClient(host, port, timeout=timeout, retries=1) as client:
                msg = await client.resolve("0.NA/0.NA", types=("HS_SITE", "HS_SITE.6"))
                if isinstance(msg.body, ResolutionResponse):
                    sites = sites_of(msg.body.values)
                    if sites:
                        return sites
                site = await client.site_info()
        except ResponseError:  # it answers, but publishes no site: the address is the site
            site = loopback_site(f"root {host}:{port}", native=port, host=host)
        except ClientError as e:
            failures.append(f"{host}:{port}: {e}")
            continue
        found.append(replace(site, primary=not found))
    if not found:
        raise ClientError("no root server answered: " + "; ".join(failures))
    return found
