"""Bytes ⇄ objects for the Handle protocol and the REST JSON API. Pure functions, no I/O.

``decode_message(bytes) -> Message`` and ``encode_message(Message) -> bytes`` are the entry
points; every malformed input raises the one ``ProtocolError`` carrying the response code.
"""

from idr.codec.envelope import Envelope, EnvFlag, Header, OpCode, OpFlag
from idr.codec.message import Message, decode_message, encode_message, request_digest, response_to
from idr.codec.wire import ProtocolError, Reader, Writer

__all__ = [
    "EnvFlag",
    "Envelope",
    "Header",
    "Message",
    "OpCode",
    "OpFlag",
    "ProtocolError",
    "Reader",
    "Writer",
    "decode_message",
    "encode_message",
    "request_digest",
    "response_to",
]
