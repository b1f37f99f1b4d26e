"""Bounded big-endian reader and writer for Handle protocol primitives (RFC 3652 §2.1).

Every length read is checked against what remains before anything is allocated, so a
malformed message can neither read past its end nor make us reserve a declared-but-absent
megabyte; any violation raises the one ``ProtocolError``. (The shape follows dnspython's
``dns.wire.Parser``.)
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from contextlib import contextmanager

from idr.model.errors import HandleError, ResponseCode

_U8 = struct.Struct(">B")
_U16 = struct.Struct(">H")
_I32 = struct.Struct(">i")
_U32 = struct.Struct(">I")

MAX_ARRAY_SIZE = 1024 * 1024  # Handle.Net Common.MAX_ARRAY_SIZE


class ProtocolError(HandleError):
    """The peer sent bytes that do not decode; ``code`` is the response code to send back."""

    def __init__(self, message: str, code: ResponseCode = ResponseCode.PROTOCOL_ERROR) -> None:
        super().__init__(code, message)


class Reader:
    __slots__ = ("_buf", "_end", "pos")

    def __init__(self, buf: bytes | bytearray | memoryview, pos: int = 0, end: int | None = None):
        self._buf = memoryview(buf)
        self.pos = pos
        self._end = len(self._buf) if end is None else end
        if not 0 <= self.pos <= self._end <= len(self._buf):
            raise ProtocolError("reader bounds out of range")

    @property
    def remaining(self) -> int:
        return self._end - self.pos

    def _need(self, n: int, what: str) -> None:
        if n < 0 or n > self._end - self.pos:
            raise ProtocolError(f"truncated {what}: need {n} bytes, {self._end - self.pos} left")

    def u8(self) -> int:
        self._need(1, "byte")
        v: int = self._buf[self.pos]
        self.pos += 1
        return v

    def u16(self) -> int:
        self._need(2, "int2")
        (v,) = _U16.unpack_from(self._buf, self.pos)
        self.pos += 2
        return int(v)

    def i32(self) -> int:
        self._need(4, "int4")
        (v,) = _I32.unpack_from(self._buf, self.pos)
        self.pos += 4
        return int(v)

    def u32(self) -> int:
        self._need(4, "int4")
        (v,) = _U32.unpack_from(self._buf, self.pos)
        self.pos += 4
        return int(v)

    def raw(self, n: int, what: str = "bytes") -> bytes:
        self._need(n, what)
        v = bytes(self._buf[self.pos : self.pos + n])
        self.pos += n
        return v

    def blob(self, what: str = "byte array", limit: int = MAX_ARRAY_SIZE) -> bytes:
        """A 4-byte length then that many bytes."""
        n = self.u32()
        if n > limit:
            raise ProtocolError(f"{what} of {n} bytes exceeds limit {limit}")
        return self.raw(n, what)

    def text(self, what: str = "string", limit: int = MAX_ARRAY_SIZE) -> str:
        """A UTF8-String: 4-byte length then UTF-8 bytes."""
        data = self.blob(what, limit)
        try:
            return data.decode("utf-8")
        except UnicodeDecodeError as e:
            raise ProtocolError(f"{what} is not valid UTF-8") from e

    def count(self, what: str, item_min_size: int, limit: int = MAX_ARRAY_SIZE) -> int:
        """An array count, refused when the rest of the input cannot possibly hold it."""
        n = self.u32()
        if n > limit or n * item_min_size > self.remaining:
            raise ProtocolError(f"{what} count {n} does not fit the message")
        return n

    def int_array(self, what: str = "int array") -> list[int]:
        return [self.i32() for _ in range(self.count(what, 4))]

    def text_array(self, what: str = "string array") -> list[str]:
        return [self.text(what) for _ in range(self.count(what, 4))]

    @contextmanager
    def restrict_to(self, n: int, what: str, *, exact: bool = True) -> Iterator[None]:
        """Run a nested decode that may not read past the next ``n`` bytes and must consume them
        all (``exact``), or whose unread rest is skipped (``exact=False``: what the reference
        decoders do with a message body, which read their fields and ignore what follows)."""
        self._need(n, what)
        saved_end = self._end
        self._end = self.pos + n
        try:
            yield
            if exact and self.pos != self._end:
                raise ProtocolError(f"{self._end - self.pos} trailing bytes in {what}")
            self.pos = self._end
        finally:
            self._end = saved_end

    def expect_end(self, what: str) -> None:
        if self.pos != self._end:
            raise ProtocolError(f"{self._end - self.pos} trailing bytes after {what}")


class Writer:
    __slots__ = ("buf",)

    def __init__(self) -> None:
        self.buf = bytearray()

    def u8(self, v: int) -> Writer:
        self.buf += _U8.pack(v & 0xFF)
        return self

    def u16(self, v: int) -> Writer:
        self.buf += _U16.pack(v & 0xFFFF)
        return self

    def i32(self, v: int) -> Writer:
        self.buf += _I32.pack(v)
        return self

    def u32(self, v: int) -> Writer:
        self.buf += _U32.pack(v & 0xFFFFFFFF)
        return self

    def raw(self, b: bytes | bytearray | memoryview) -> Writer:
        self.buf += b
        return self

    def blob(self, b: bytes | bytearray | memoryview) -> Writer:
        self.buf += _U32.pack(len(b))
        self.buf += b
        return self

    def text(self, s: str) -> Writer:
        return self.blob(s.encode("utf-8"))

    def int_array(self, items: list[int] | tuple[int, ...]) -> Writer:
        self.u32(len(items))
        for i in items:
            self.i32(i)
        return self

    def text_array(self, items: list[str] | tuple[str, ...]) -> Writer:
        self.u32(len(items))
        for s in items:
            self.text(s)
        return self

    def getvalue(self) -> bytes:
        return bytes(self.buf)
