"""What an access log needs from a message without decoding it: opcode, handle, response code.

Fixed offsets (RFC 3652 §2.2): the header starts after the 20-byte envelope with OpCode (u32)
and ResponseCode (u32); the body starts at byte 44, and the bodies of the operations in
``HANDLE_FIRST`` start with the handle as a length-prefixed UTF-8 string (§3.1 ``<handle>``).
Every read is bounds-checked: a short or lying message gives an empty handle, never an error.
"""

from __future__ import annotations

from idr.codec.envelope import ENVELOPE_SIZE, HEADER_SIZE, EnvFlag, OpCode

BODY_OFFSET = ENVELOPE_SIZE + HEADER_SIZE
MAX_HANDLE = 512  # longer handles are cut in the log (the codec caps real ones anyway)

HANDLE_FIRST = frozenset(
    {
        OpCode.RESOLUTION,
        OpCode.CREATE_HANDLE,
        OpCode.DELETE_HANDLE,
        OpCode.ADD_VALUE,
        OpCode.REMOVE_VALUE,
        OpCode.MODIFY_VALUE,
        OpCode.LIST_HANDLES,
        OpCode.VERIFY_CHALLENGE,
        OpCode.HOME_NA,
        OpCode.UNHOME_NA,
    }
)


def opcode(message: bytes) -> int:
    """The header's OpCode, or -1 when the message is too short to have one."""
    if len(message) < ENVELOPE_SIZE + 4:
        return -1
    return int.from_bytes(message[ENVELOPE_SIZE : ENVELOPE_SIZE + 4], "big")


def response_code(message: bytes) -> int:
    """The header's ResponseCode (0 for a request), or -1 when too short."""
    if len(message) < ENVELOPE_SIZE + 8:
        return -1
    return int.from_bytes(message[ENVELOPE_SIZE + 4 : ENVELOPE_SIZE + 8], "big")


def handle(message: bytes) -> str:
    """The handle the request is about ("" when its body does not start with one, or is
    encrypted, or is cut short); undecodable bytes become U+FFFD."""
    if len(message) < BODY_OFFSET + 4 or opcode(message) not in HANDLE_FIRST or message[2] & EnvFlag.EC:
        return ""
    n = int.from_bytes(message[BODY_OFFSET : BODY_OFFSET + 4], "big")
    end = BODY_OFFSET + 4 + min(n, MAX_HANDLE)
    if n == 0 or end > len(message):
        return ""
    return message[BODY_OFFSET + 4 : end].decode("utf-8", "replace")
