"""The credential section that may follow a message body (RFC 3652 §2.2.4; Handle.Net
``AbstractMessage.signMessage``): version, reserved, flags, signer (handle + index; for Handle.Net
the handle is empty and the index carries the session counter), signature type, and a
length-prefixed signature section of digest algorithm name + signature bytes.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from idr.codec.wire import Reader, Writer
from idr.model.value import ValueReference

CREDENTIAL_SIGNED = "HS_SIGNED"  # public-key signature
CREDENTIAL_MAC = "HS_MAC"  # session MAC
CREDENTIAL_OLD_SIGNED = "HS_DSAPUBKEY"  # old servers' name for HS_SIGNED


@dataclass(frozen=True, slots=True)
class Credential:
    type: str
    digest_alg: str
    signature: bytes
    signer: ValueReference = field(default_factory=lambda: ValueReference("", 0))
    version: int = 0
    reserved: int = 0
    flags: int = 0

    @property
    def session_counter(self) -> int:
        return self.signer.index

    def encode(self) -> bytes:
        section = Writer().text(self.digest_alg).blob(self.signature).getvalue()
        w = Writer().u8(self.version).u8(self.reserved).u16(self.flags)
        w.text(self.signer.handle).i32(self.signer.index).text(self.type).blob(section)
        return w.getvalue()


def read_credential(r: Reader) -> Credential:
    """Reads within a reader already restricted to the credential's declared length."""
    version, reserved, flags = r.u8(), r.u8(), r.u16()
    signer = ValueReference(r.text("signer handle", 2048), r.i32())
    kind = r.text("signature type", 64)
    with r.restrict_to(r.u32(), "signature section"):
        alg = r.text("signature digest algorithm", 64)
        signature = r.blob("signature", 65536)
    return Credential(kind, alg, signature, signer, version, reserved, flags)


def decode_credential(data: bytes) -> Credential:
    r = Reader(data)
    cred = read_credential(r)
    r.expect_end("credential")
    return cred
