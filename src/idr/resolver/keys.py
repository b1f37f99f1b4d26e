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
from typing import Any

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
    """A PEM private key file, or a Handle.Net one (``privkey.bin``; ``handle_private_key``)."""
    data = _read(path)
    if b"-----BEGIN" not in data and len(data) >= 4 and int.from_bytes(data[:4], "big") <= _MAX_ENCRYPT:
        try:
            return handle_private_key(data, passphrase)
        except ValueError as e:
            raise KeyFileError(f"{path}: {e}") from e
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


# Handle.Net key files (``Util.encrypt``/``decrypt``, ``getBytesFromPrivateKey``): a u32
# encryption scheme, then the key bytes, in clear or encrypted with a passphrase.
_ENCRYPT_NONE = 1
_ENCRYPT_PBKDF2_DESEDE = 3
_ENCRYPT_PBKDF2_AES = 4  # what hdl-keygen writes when given a passphrase
_MAX_ENCRYPT = 9  # Common.MAX_ENCRYPT: a scheme number is below it, a key type name is longer


def _fields(data: bytes, count: int) -> list[bytes]:
    """``count`` length-prefixed byte arrays (u32 big-endian length, bytes), as Handle.Net's
    ``Encoder.writeByteArray`` writes them."""
    out, pos = [], 0
    for _ in range(count):
        if pos + 4 > len(data):
            raise ValueError("truncated Handle.Net key data")
        n = int.from_bytes(data[pos : pos + 4], "big")
        if n > len(data) - pos - 4:
            raise ValueError("truncated Handle.Net key data")
        out.append(data[pos + 4 : pos + 4 + n])
        pos += 4 + n
    return out


def handle_private_key(data: bytes, passphrase: bytes | None = None) -> PrivateKey:
    """A private key in Handle.Net's file format (``hdl-keygen``'s ``privkey.bin``, the keys a
    GenericBatch ``AUTHENTICATE PUBKEY`` names): unencrypted, or encrypted with PBKDF2-HMAC-SHA1
    and AES-128-CBC (the default) or DESede-CBC. ``ValueError`` says what is wrong."""
    from cryptography.hazmat.primitives import hashes, padding
    from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
    from cryptography.hazmat.primitives.kdf.pbkdf2 import PBKDF2HMAC

    scheme = int.from_bytes(data[:4], "big")
    body = data[4:]
    if scheme in (_ENCRYPT_PBKDF2_AES, _ENCRYPT_PBKDF2_DESEDE):
        if not passphrase:
            raise ValueError("the Handle.Net key file is encrypted: give its passphrase")
        (salt,) = _fields(body, 1)
        rest = body[4 + len(salt) :]
        if len(rest) < 8:
            raise ValueError("truncated Handle.Net key file")
        iterations, bits = int.from_bytes(rest[:4], "big"), int.from_bytes(rest[4:8], "big")
        if not 0 < iterations <= 10_000_000 or bits not in (128, 192, 256):
            raise ValueError("unreadable encryption parameters in the Handle.Net key file")
        iv, ciphertext = _fields(rest[8:], 2)
        # Java's PBEKeySpec holds each passphrase byte as a char and PBKDF2 encodes chars as UTF-8.
        secret = passphrase.decode("latin-1").encode("utf-8")
        key = PBKDF2HMAC(hashes.SHA1(), bits // 8, salt, iterations).derive(secret)
        if scheme == _ENCRYPT_PBKDF2_AES:
            algorithm: algorithms.AES | Any = algorithms.AES(key)
        else:
            from cryptography.hazmat.decrepit.ciphers.algorithms import TripleDES

            algorithm = TripleDES(key)
        try:
            decryptor = Cipher(algorithm, modes.CBC(iv)).decryptor()
            padded = decryptor.update(ciphertext) + decryptor.finalize()
            unpadder = padding.PKCS7(algorithm.block_size).unpadder()
            body = unpadder.update(padded) + unpadder.finalize()
        except ValueError as e:
            raise ValueError("cannot decrypt the Handle.Net key file: wrong passphrase?") from e
    elif scheme != _ENCRYPT_NONE:
        raise ValueError(
            f"Handle.Net key file encryption scheme {scheme} is not supported (only none, "
            "PBKDF2-AES and PBKDF2-DESede): re-encrypt it with hdl-convert-key or use PEM"
        )
    (kind,) = _fields(body, 1)
    ints = body[4 + len(kind) :]
    try:
        if kind == b"RSA_PRIVCRT_KEY":
            n, pub_e, d, p, q, dp, dq, qi = (int.from_bytes(f, "big") for f in _fields(ints, 8))
            return rsa.RSAPrivateNumbers(p, q, d, dp, dq, qi, rsa.RSAPublicNumbers(pub_e, n)).private_key()
        if kind == b"DSA_PRIV_KEY":
            x, p, q, g = (int.from_bytes(f, "big") for f in _fields(ints, 4))
            pub = dsa.DSAPublicNumbers(pow(g, x, p), dsa.DSAParameterNumbers(p, q, g))
            return dsa.DSAPrivateNumbers(x, pub).private_key()
    except (ValueError, TypeError) as e:
        raise ValueError(
            f"the {kind.decode('ascii', 'replace')} in the Handle.Net key file is invalid: {e}"
        ) from e
    if kind == b"RSA_PRIV_KEY":
        raise ValueError(
            "a Handle.Net RSA key without its CRT factors cannot be used here: convert it to PEM"
        )
    raise ValueError(f"unknown key type {kind[:32].decode('ascii', 'replace')!r} in the Handle.Net key file")


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


def load_trust_root(path: Path) -> PublicKey:
    """A trust root's public key: PEM, or Handle.Net's HS_PUBKEY bytes (``pubkey.bin``; hdllib
    writes four zero bytes after an RSA key, which are dropped here)."""
    from idr.codec.keys import decode_public_key
    from idr.codec.wire import ProtocolError

    data = _read(path)
    if b"-----BEGIN" in data:
        return load_public_key(path)
    try:
        return decode_public_key(data)
    except ProtocolError as e:
        if data.endswith(bytes(4)):
            try:
                return decode_public_key(data[:-4])
            except ProtocolError:
                pass
        raise KeyFileError(f"{path}: not a PEM or Handle.Net public key ({e.message})") from e
