"""The server's own key pair: it signs certified answers and session setups, and its public half
is published in the site's HS_SITE record and GET_SITE_INFO answers (``ServerInfo.public_key``,
HS_PUBKEY layout), where the reference client library takes it from to verify those signatures.

``idr init`` writes ``server_key.pem`` (PKCS#8, mode 0600) and ``server_key.pem.pub`` in the data
directory: RSA 2048 by default as the reference server, DSA, or SM2 (which Handle.Net clients
cannot read, China's SDKs can), or a copy of the operator's own unencrypted PEM key.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric import dsa, rsa

from idr.codec.keys import PrivateKey, encode_public_key
from idr.codec.message import Message
from idr.codec.signing import sign_message
from idr.codec.sm2 import SM2PrivateKey
from idr.resolver.keys import KeyFileError, generate, load_private_key, public_pem, write_key_pair

SERVER_KEY_NAME = "server_key.pem"
SERVER_KEY_TYPES = ("rsa", "dsa", "sm2")


@dataclass(frozen=True)
class ServerKey:
    private: PrivateKey
    public_bytes: bytes = field(init=False)  # HS_PUBKEY data of the public half, as hdllib's

    def __post_init__(self) -> None:
        if not isinstance(self.private, rsa.RSAPrivateKey | dsa.DSAPrivateKey | SM2PrivateKey):
            raise KeyFileError(f"a server key is RSA, DSA or SM2, not {type(self.private).__name__}")
        public = encode_public_key(self.private.public_key())
        if isinstance(self.private, rsa.RSAPrivateKey):
            # As hdllib's Util.getBytesFromPublicKey writes an RSA key (one int too long: four
            # zero bytes at the end), so the reference server's site info: hdllib pins an HTTPS
            # interface's certificate by comparing these bytes with the certificate's key.
            public += bytes(4)
        object.__setattr__(self, "public_bytes", public)

    @property
    def rsa_key(self) -> rsa.RSAPrivateKey | None:
        """The key when it is RSA (clients can then send session keys encrypted to it)."""
        return self.private if isinstance(self.private, rsa.RSAPrivateKey) else None

    def sign(self, msg: Message) -> Message:
        """``msg`` with an HS_SIGNED credential, as Handle.Net's ``sendResponse`` certifies."""
        return sign_message(msg, self.private)


def create_server_key(data_dir: Path, kind: str = "rsa", source: Path | None = None) -> Path:
    """Write the node's key file, a new ``kind`` key or the key in the PEM file ``source``
    (checked first); refuses to overwrite one. Returns its path."""
    path = Path(data_dir) / SERVER_KEY_NAME
    if path.exists():
        raise KeyFileError(f"{path} exists already")
    if source is None and kind not in SERVER_KEY_TYPES:
        raise KeyFileError(f"server key type must be one of {', '.join(SERVER_KEY_TYPES)}, not {kind!r}")
    key = ServerKey(load_private_key(source) if source is not None else generate(kind)).private
    Path(data_dir).mkdir(parents=True, exist_ok=True)
    if source is None:
        write_key_pair(key, path)
    else:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as fh:
            fh.write(Path(source).read_bytes())
        Path(str(path) + ".pub").write_bytes(public_pem(key))
    os.chmod(str(path) + ".pub", 0o600)  # the data directory is the node user's alone (idr.private)
    return path


def load_server_key(data_dir: Path) -> ServerKey | None:
    """The node's key, or None for a data directory made before nodes had one."""
    path = Path(data_dir) / SERVER_KEY_NAME
    if not path.exists():
        return None
    return ServerKey(load_private_key(path))
