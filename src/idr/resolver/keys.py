"""Key files for clients and admins: PEM on disk ⇄ ``cryptography`` keys."""

from __future__ import annotations

import os
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import dsa, ed25519, rsa

from idr.codec.keys import PrivateKey, PublicKey


class KeyFileError(ValueError):
    """A key file that is missing, unreadable, encrypted without a passphrase, or not a key we use."""


def _read(path: Path) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as e:
        raise KeyFileError(f"cannot read key file {path}: {e.strerror}") from e


def load_private_key(path: Path, passphrase: bytes | None = None) -> PrivateKey:
    try:
        key = serialization.load_pem_private_key(_read(path), passphrase)
    except (ValueError, TypeError) as e:
        raise KeyFileError(f"{path}: not a usable PEM private key ({e})") from e
    if not isinstance(key, rsa.RSAPrivateKey | dsa.DSAPrivateKey | ed25519.Ed25519PrivateKey):
        raise KeyFileError(f"{path}: key type {type(key).__name__} is not RSA, DSA or Ed25519")
    return key


def load_public_key(path: Path) -> PublicKey:
    """A PEM public key, or the public half of a PEM private key."""
    data = _read(path)
    if b"PRIVATE KEY" in data:
        return load_private_key(path).public_key()
    try:
        key = serialization.load_pem_public_key(data)
    except ValueError as e:
        raise KeyFileError(f"{path}: not a PEM public key ({e})") from e
    if not isinstance(key, rsa.RSAPublicKey | dsa.DSAPublicKey | ed25519.Ed25519PublicKey):
        raise KeyFileError(f"{path}: key type {type(key).__name__} is not RSA, DSA or Ed25519")
    return key


def generate(kind: str = "rsa") -> PrivateKey:
    if kind == "rsa":
        return rsa.generate_private_key(public_exponent=65537, key_size=2048)
    if kind == "dsa":
        return dsa.generate_private_key(key_size=2048)
    if kind == "ed25519":
        return ed25519.Ed25519PrivateKey.generate()
    raise KeyFileError(f"unknown key type {kind!r} (rsa, dsa, ed25519)")


def write_key_pair(key: PrivateKey, private_path: Path, passphrase: bytes | None = None) -> Path:
    """Write ``private_path`` (mode 0600) and ``<private_path>.pub``; return the public path."""
    enc: serialization.KeySerializationEncryption = (
        serialization.BestAvailableEncryption(passphrase) if passphrase else serialization.NoEncryption()
    )
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, enc)
    fd = os.open(private_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(pem)
    pub_path = Path(str(private_path) + ".pub")
    pub_path.write_bytes(
        key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    return pub_path
