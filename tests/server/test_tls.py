"""The generated certificate: made once, kept, key file private, valid for 127.0.0.1."""

from __future__ import annotations

import ipaddress
import stat
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
