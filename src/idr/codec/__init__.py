"""Bytes ⇄ objects for the Handle protocol and the REST JSON API. Pure functions, no I/O."""

from idr.codec.wire import ProtocolError, Reader, Writer

__all__ = ["ProtocolError", "Reader", "Writer"]
