"""The recursion engine's network: one Handle-protocol query to one server (UDP, then TCP).

Wraps :class:`idr.resolver.client.HandleClient` and turns its answer into the core's
``Response`` — referrals included — so the engine reasons in one vocabulary everywhere.
"""

from __future__ import annotations

from idr.codec.bodies import ErrorResponse, ResolutionResponse, ServiceReferral
from idr.core.request import Request, Response
from idr.model.errors import ResponseCode
from idr.model.site import ServerInfo
from idr.resolver.client import ClientError, HandleClient
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
