"""The generated certificate: made once, kept, key file private, valid for 127.0.0.1."""

from __future__ import annotations

import ipaddress
import socket
import ssl
import stat
import threading
import time
from pathlib import Path

from cryptography import x509

from idr.server.tls import ensure_certificate, server_context


def test_generated_once_and_reused(tmp_path: Path) -> None:
    cert, key = ensure_certificate(tmp_path)
    assert (cert, key) == (tmp_path / "tls" / "cert.pem", tmp_path / "tls" / "key.pem")
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    first = cert.read_bytes()
    server_context(tmp_path)
    assert cert.read_bytes() == first
    parsed = x509.load_pem_x509_certificate(first)
    san = parsed.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert ipaddress.ip_address("127.0.0.1") in san.get_values_for_type(x509.IPAddress)
    assert "localhost" in san.get_values_for_type(x509.DNSName)


def test_configured_pair_is_used(tmp_path: Path) -> None:
    cert, key = ensure_certificate(tmp_path / "elsewhere")
    server_context(None, cert_file=cert, key_file=key)
    assert not (tmp_path / "tls").exists()


# --------------------------------------------------------------------------- client certificates


def _pair(
    cert_path: Path, key_path: Path, name: str, issuer: tuple[Path, Path] | None = None, *, ca: bool = False
) -> None:
    """A key and certificate: a CA's own (``ca``), or one signed by ``issuer`` (cert, key) for a
    client, as an operator's CA would issue it."""
    import datetime as dt

    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    signer: ec.EllipticCurvePrivateKey = key
    issuer_name = subject
    if issuer is not None:
        issuer_name = x509.load_pem_x509_certificate(issuer[0].read_bytes()).subject
        loaded = serialization.load_pem_private_key(issuer[1].read_bytes(), None)
        assert isinstance(loaded, ec.EllipticCurvePrivateKey)
        signer = loaded
    now = dt.datetime.now(dt.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if not ca:
        usage = x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH])
        builder = builder.add_extension(usage, critical=False)
    cert = builder.sign(signer, hashes.SHA256())
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )


def _handshake(server: ssl.SSLContext, client: ssl.SSLContext) -> str | None:
    """Handshake over loopback; the server's error, or None when it succeeded."""
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    result: list[str | None] = []

    def accept() -> None:
        conn, _ = listener.accept()
        try:
            with server.wrap_socket(conn, server_side=True) as tls:
                tls.recv(1)
            result.append(None)
        except (ssl.SSLError, OSError) as e:
            result.append(str(e))

    t = threading.Thread(target=accept)
    t.start()
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=5) as raw, client.wrap_socket(raw) as tls:
            tls.sendall(b"x")
            time.sleep(0.05)
    except (ssl.SSLError, OSError):
        pass
    t.join(10)
    listener.close()
    return result[0]


def test_ca_verifies_client_certificates(tmp_path: Path) -> None:
    def files(name: str) -> tuple[Path, Path]:
        return tmp_path / f"{name}.pem", tmp_path / f"{name}.key"

    _pair(*files("ca"), "operator CA", ca=True)
    _pair(*files("client"), "client", files("ca"))
    _pair(*files("other-ca"), "another CA", ca=True)
    _pair(*files("rogue"), "rogue", files("other-ca"))  # a client certificate from the wrong CA

    def client(cert: str | None) -> ssl.SSLContext:
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        if cert:
            ctx.load_cert_chain(tmp_path / f"{cert}.pem", tmp_path / f"{cert}.key")
        return ctx

    optional = server_context(tmp_path, ca_file=tmp_path / "ca.pem")
    required = server_context(tmp_path, ca_file=tmp_path / "ca.pem", require_client_cert=True)
    assert _handshake(optional, client(None)) is None  # asked for, not required
    assert _handshake(optional, client("client")) is None
    assert "certificate" in (_handshake(optional, client("rogue")) or "")  # given, so checked
    assert _handshake(required, client("client")) is None
    assert "certificate" in (_handshake(required, client(None)) or "")
