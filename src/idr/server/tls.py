"""TLS for the HTTP front-end: the configured certificate, or a self-signed one made once.

Handle.Net servers present a self-signed certificate by default (clients pin or skip
verification: pyhandle's ``HTTPS_verify=False``), because writes must travel over TLS and a
fresh node has no CA-issued certificate. We do the same: on first start an EC P-256 key and
a certificate for 127.0.0.1/localhost (plus any extra names) are written to
``<data>/tls/``; later starts reuse them, so clients that pinned it keep working.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
import ssl
from collections.abc import Iterable
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from idr.private import make_private_dir, write_private

CERT_NAME = "cert.pem"
KEY_NAME = "key.pem"
VALID_DAYS = 3650


def _alt_names(names: Iterable[str]) -> list[x509.GeneralName]:
    out: list[x509.GeneralName] = []
    for n in dict.fromkeys(["127.0.0.1", "localhost", *names]):
        try:
            out.append(x509.IPAddress(ipaddress.ip_address(n)))
        except ValueError:
            out.append(x509.DNSName(n))
    return out


def generate_self_signed(
    cert_path: Path, key_path: Path, *, common_name: str = "idr node", names: Iterable[str] = ()
) -> None:
    """Write a new key (mode 0600, created so — never world-readable for an instant) and cert."""
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=VALID_DAYS))
        .add_extension(x509.SubjectAlternativeName(_alt_names(names)), critical=False)
        # A self-signed certificate is its own trust anchor, and OpenSSL only accepts CA
        # certificates as anchors: clients that pin this file (``verify=cert.pem``) need ca=True.
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    make_private_dir(key_path.parent)  # <data>/tls: the node user's alone, as the whole data directory
    key_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    tmp_key = key_path.with_name(key_path.name + ".tmp")  # not with_suffix: cert and key may share a stem
    fd = os.open(tmp_key, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(key_pem)
    os.chmod(tmp_key, 0o600)  # O_CREAT's mode is masked by umask; make it exact
    tmp_cert = cert_path.with_name(cert_path.name + ".tmp")
    write_private(tmp_cert, cert.public_bytes(serialization.Encoding.PEM))
    # Key first: a cert without its key is useless, a key without a cert is regenerated.
    tmp_key.replace(key_path)
    tmp_cert.replace(cert_path)


def ensure_certificate(data_dir: Path, *, names: Iterable[str] = ()) -> tuple[Path, Path]:
    """``(cert, key)`` under ``data_dir/tls``, generated on first use."""
    tls_dir = Path(data_dir) / "tls"
    cert, key = tls_dir / CERT_NAME, tls_dir / KEY_NAME
    if not (cert.is_file() and key.is_file()):
        generate_self_signed(cert, key, names=names)
    return cert, key


def server_context(
    data_dir: Path | None = None,
    *,
    cert_file: Path | None = None,
    key_file: Path | None = None,
    ca_file: Path | None = None,
    require_client_cert: bool = False,
    names: Iterable[str] = (),
) -> ssl.SSLContext:
    """A server SSLContext from the configured cert/key, else the node's self-signed pair.

    ``ca_file``: CA certificates for client certificates, which are then asked for and
    verified when given (``require_client_cert``: handshakes without one fail)."""
    if cert_file is None or key_file is None:
        if data_dir is None:
            raise ValueError("need either cert_file and key_file, or a data_dir to keep a generated pair")
        cert_file, key_file = ensure_certificate(data_dir, names=names)
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(str(cert_file), str(key_file))
    if ca_file is not None:
        ctx.load_verify_locations(cafile=str(ca_file))
        ctx.verify_mode = ssl.CERT_REQUIRED if require_client_cert else ssl.CERT_OPTIONAL
    return ctx


def reload_certificate(ctx: ssl.SSLContext, cert_file: Path, key_file: Path) -> None:
    """Replace the certificate and key of a live context: handshakes from now on present the new
    pair; connections already open keep theirs. A pair that does not load leaves the old one."""
    probe = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    probe.load_cert_chain(str(cert_file), str(key_file))  # raises (ssl.SSLError, OSError) first
    ctx.load_cert_chain(str(cert_file), str(key_file))
