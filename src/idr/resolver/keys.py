"""Key files for clients and admins: PEM on disk ⇄ ``cryptography`` keys, or SM2 keys.

SM2 files are the standard ones OpenSSL 3 (``openssl genpkey -algorithm SM2``) and BouncyCastle
write: unencrypted PKCS#8 ``PRIVATE KEY`` and SubjectPublicKeyInfo ``PUBLIC KEY``, algorithm
id-ecPublicKey on curve sm2p256v1 (1.2.156.10197.1.301). ``cryptography`` refuses that curve,
so those files are read by ``idr.codec.sm2`` instead; encrypted SM2 key files are not supported.
"""

from __future__ import annotations

import base64
import binascii
import os
from pathlib import Path

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import dsa, ed25519, rsa

from idr.codec.keys import PrivateKey, PublicKey
from idr.codec.sm2 import SM2Error, SM2PrivateKey, SM2PublicKey


class KeyFileError(ValueError):
    """A key file that is missing, unreadable, encrypted without a passphrase, or not a key we use."""


def _read(path: Path) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as e:
        raise KeyFileError(f"cannot read key file {path}: {e.strerror}") from e


def _pem_body(data: bytes, label: str) -> bytes:
    """The DER inside the first ``-----BEGIN <label>-----`` block."""
    begin, end = f"-----BEGIN {label}-----".encode(), f"-----END {label}-----".encode()
    start = data.find(begin)
    stop = data.find(end, start)
    if start < 0 or stop < 0:
        raise SM2Error(f"no {label} PEM block")
    try:
        return base64.b64decode(b"".join(data[start + len(begin) : stop].split()), validate=True)
    except binascii.Error as e:
        raise SM2Error(f"bad base64 in {label} PEM block") from e


def _pem(label: str, der: bytes) -> bytes:
    b64 = base64.b64encode(der)
    lines = [b64[i : i + 64] for i in range(0, len(b64), 64)]
    return b"\n".join([f"-----BEGIN {label}-----".encode(), *lines, f"-----END {label}-----".encode(), b""])


def load_private_key(path: Path, passphrase: bytes | None = None) -> PrivateKey:
    data = _read(path)
    try:
        key = serialization.load_pem_private_key(data, passphrase)
    except UnsupportedAlgorithm as e:  # the SM2 curve, for one
        try:
            return SM2PrivateKey.from_pkcs8(_pem_body(data, "PRIVATE KEY"))
        except SM2Error as sm2_error:
            raise KeyFileError(f"{path}: not a usable PEM private key ({e}; as SM2: {sm2_error})") from e
    except (ValueError, TypeError) as e:
        raise KeyFileError(f"{path}: not a usable PEM private key ({e})") from e
    if not isinstance(key, rsa.RSAPrivateKey | dsa.DSAPrivateKey | ed25519.Ed25519PrivateKey):
        raise KeyFileError(f"{path}: key type {type(key).__name__} is not RSA, DSA, Ed25519 or SM2")
    return key


def load_public_key(path: Path) -> PublicKey:
    """A PEM public key, or the public half of a PEM private key."""
    data = _read(path)
    if b"PRIVATE KEY" in data:
        return load_private_key(path).public_key()
    try:
        key = serialization.load_pem_public_key(data)
    except UnsupportedAlgorithm as e:
        try:
            return SM2PublicKey.from_der(_pem_body(data, "PUBLIC KEY"))
        except SM2Error as sm2_error:
            raise KeyFileError(f"{path}: not a usable PEM public key ({e}; as SM2: {sm2_error})") from e
    except ValueError as e:
        raise KeyFileError(f"{path}: not a PEM public key ({e})") from e
    if not isinstance(key, rsa.RSAPublicKey | dsa.DSAPublicKey | ed25519.Ed25519PublicKey):
        raise KeyFileError(f"{path}: key type {type(key).__name__} is not RSA, DSA, Ed25519 or SM2")
    return key


def generate(kind: str = "rsa") -> PrivateKey:
    if kind == "rsa":
        return rsa.generate_private_key(public_exponent=65537, key_size=2048)
    if kind == "dsa":
        return dsa.generate_private_key(key_size=2048)
    if kind == "ed25519":
        return ed25519.Ed25519PrivateKey.generate()
    if kind == "sm2":
        return SM2PrivateKey.generate()
    raise KeyFileError(f"unknown key type {kind!r} (rsa, dsa, ed25519, sm2)")


def write_key_pair(key: PrivateKey, private_path: Path, passphrase: bytes | None = None) -> Path:
    """Write ``private_path`` (mode 0600) and ``<private_path>.pub``; return the public path."""
    if isinstance(key, SM2PrivateKey):
        if passphrase:
            raise KeyFileError("encrypted SM2 key files are not supported")
        pem = _pem("PRIVATE KEY", key.to_pkcs8())
    else:
        enc: serialization.KeySerializationEncryption = (
            serialization.BestAvailableEncryption(passphrase) if passphrase else serialization.NoEncryption()
        )
        pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, enc)
    fd = os.open(private_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(pem)
    pub_path = Path(str(private_path) + ".pub")
    pub_path.write_bytes(public_pem(key))
    return pub_path


def public_pem(key: PrivateKey) -> bytes:
    """The SubjectPublicKeyInfo ``PUBLIC KEY`` PEM of ``key``'s public half."""
    if isinstance(key, SM2PrivateKey):
        return _pem("PUBLIC KEY", key.public_key().to_der())
    return key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
