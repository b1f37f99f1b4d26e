"""Handle messages over HTTP(S): the ``HDL-HTTP`` interfaces a node's site advertises.

hdllib (``HandleResolver.sendHttpOrHttpsRequest``) sends a Handle request to an HTTP or HTTPS
interface as ``POST /<percent-encoded handle>`` with ``Content-Type`` (and ``Accept``)
``application/x-hdl-message`` and a body of the 20-byte envelope and the message, exactly the
bytes of a TCP frame; it reads back the same content type: one or more whole messages, each
with its envelope, until one is not continued (CN). The reference server takes such a POST at
any path (``HDLProxy.doPost`` → ``NativeServlet``): it skips one leading CR or LF, reads the
envelope and ``MessageLength`` bytes, and ignores whatever follows.

Here the POST goes to the node's one :class:`~idr.server.handler.NativeHandler` — the TCP and
UDP front-ends' — as a frame from a client without a connection of its own (``conn=None``:
sessions are the keyed, server-wide ones; a 402 challenge is answered by a later POST from the
same address, as over UDP). Plain HTTP is advertised as a query interface and refuses admin
requests as the reference's ``NativeServlet.canProcessMsg`` does; HTTPS takes both. hdllib pins
the HTTPS certificate to the server's HS_PUBKEY (``SSLEngineHelper.getClientSSLContext``), so a
node's self-signed certificate is made with its server key (``idr.server.tls``).
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable

from aiohttp import web

from idr.codec.envelope import ENVELOPE_SIZE, MAX_MESSAGE_LENGTH, PROTOCOL_MAJOR
from idr.model.errors import ResponseCode
from idr.server.answers import bare_error
from idr.server.handler import NativeHandler, Outcome

HDL_MIME_TYPE = "application/x-hdl-message"  # hdllib Common.HDL_MIME_TYPE
MAX_BODY = 1 + ENVELOPE_SIZE + MAX_MESSAGE_LENGTH  # a leading CR/LF, the envelope, the message

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def is_handle_post(request: web.Request) -> bool:
    """A Handle message, not a REST call or a form: POST with the Handle content type."""
    return request.method == "POST" and HDL_MIME_TYPE in request.headers.get("Content-Type", "").lower()


def frame(body: bytes) -> bytes | str:
    """The envelope and message of a POST body (one leading CR or LF skipped, anything after
    ``MessageLength`` ignored, as ``NativeServlet``), or why it is not one."""
    if body[:1] in (b"\r", b"\n"):
        body = body[1:]
    if len(body) < ENVELOPE_SIZE:
        return "Invalid message length"  # NativeServlet.MSG_INVALID_MSG_SIZE
    if body[0] != PROTOCOL_MAJOR:
        return "not a Handle protocol 2.x message"
    length = int.from_bytes(body[16:20], "big")
    if length > MAX_MESSAGE_LENGTH:
        return f"Invalid message length {length}"
    if len(body) < ENVELOPE_SIZE + length:
        return f"Expecting {length} bytes, only received {len(body) - ENVELOPE_SIZE}"
    return body[: ENVELOPE_SIZE + length]


def _reply(messages: list[bytes]) -> web.Response:
    return web.Response(body=b"".join(messages), content_type=HDL_MIME_TYPE)


def middleware(native: NativeHandler, *, admin: bool) -> Callable[..., Awaitable[web.StreamResponse]]:
    """An aiohttp middleware answering Handle POSTs with ``native`` before routing (any path,
    as the reference); everything else goes on to the REST API, the proxy, the console.
    ``admin``: whether this listener is an admin interface (HTTPS) or query-only (HTTP)."""

    @web.middleware
    async def handle_over_http(request: web.Request, handler: Handler) -> web.StreamResponse:
        if not is_handle_post(request):
            return await handler(request)
        chunks: list[bytes] = []
        size = 0
        while size <= MAX_BODY:  # the reference reads what the envelope announces, no more
            chunk = await request.content.read(65536)
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
        body = b"".join(chunks)
        data = frame(body)
        if isinstance(data, str):
            err = bare_error(body.lstrip(b"\r\n")[:48], ResponseCode.PROTOCOL_ERROR, data)
            if err is None:
                raise web.HTTPBadRequest(text=data + "\n")
            return _reply([err])
        peer = request.remote or ""
        result = native.handle(data, peer, udp=False, whole=False, admin=admin)
        out: Outcome = await result if inspect.isawaitable(result) else result
        if not out.messages:  # a response sent to us: never answered (no reflection loops)
            raise web.HTTPBadRequest(text="not a Handle request\n")
        return _reply(out.messages)

    return handle_over_http


__all__ = ["HDL_MIME_TYPE", "frame", "is_handle_post", "middleware"]
