"""TLS of the local model servers (``endpoint.tls: true``): a CA per environment and one server certificate.

``<data_dir>/tls/ca.pem`` is the environment's CA (EC P-256, ten years); ``server.pem`` is the servers'
certificate for ``127.0.0.1`` and ``localhost`` (one year, renewed a month before it expires or when the CA
changed). Both private keys are 0600. Clients trust ``ca.pem``: ``mlspec status`` prints its path.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
from pathlib import Path
from typing import Any

from mlspec.atomic import atomic_write
from mlspec.targets.local.paths import LocalPaths

CA_FILE, CA_KEY = "ca.pem", "ca-key.pem"
SERVER_FILE, SERVER_KEY = "server.pem", "server-key.pem"
RENEW_BEFORE = dt.timedelta(days=30)


def tls_folder(paths: LocalPaths) -> Path:
    """Where the environment's CA and server certificate live."""
    return paths.data_dir / "tls"


def server_tls(paths: LocalPaths) -> dict[str, str]:
    """The serving configuration's ``tls`` (certificate, key, CA), made or renewed as needed."""
    folder = tls_folder(paths)
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    ca, ca_key = _ca(folder, paths.environment)
    _server_certificate(folder, ca, ca_key)
    return {
        "cert_file": str(folder / SERVER_FILE),
        "key_file": str(folder / SERVER_KEY),
        "ca_file": str(folder / CA_FILE),
    }


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _pem_key(key: Any) -> bytes:
    from cryptography.hazmat.primitives import serialization

    return key.private_bytes(  # type: ignore[no-any-return]
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _ca(folder: Path, environment: str) -> tuple[Any, Any]:
    """The environment's CA certificate and key (made the first time, and again when expired)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    usage = dict.fromkeys(
        ("digital_signature", "content_commitment", "key_encipherment", "data_encipherment", "key_agreement",
         "encipher_only", "decipher_only"), False,
    )  # fmt: skip
    ca_usage = x509.KeyUsage(key_cert_sign=True, crl_sign=True, **usage)

    cert_path, key_path = folder / CA_FILE, folder / CA_KEY
    if cert_path.exists() and key_path.exists():
        cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
        if cert.not_valid_after_utc - RENEW_BEFORE > _now():
            return cert, serialization.load_pem_private_key(key_path.read_bytes(), password=None)
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"mlspec local CA ({environment})")])
    now = _now()
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=3650))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(ca_usage, critical=True)
        .sign(key, hashes.SHA256())
    )
    atomic_write(key_path, _pem_key(key), mode=0o600)
    atomic_write(cert_path, cert.public_bytes(serialization.Encoding.PEM))
    (folder / SERVER_FILE).unlink(missing_ok=True)  # issued by the old CA: made again
    return cert, key


def _server_certificate(folder: Path, ca: Any, ca_key: Any) -> None:
    """The servers' certificate for 127.0.0.1 and localhost, issued by ``ca`` (kept while valid)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    cert_path, key_path = folder / SERVER_FILE, folder / SERVER_KEY
    if cert_path.exists() and key_path.exists():
        current = x509.load_pem_x509_certificate(cert_path.read_bytes())
        if current.issuer == ca.subject and current.not_valid_after_utc - RENEW_BEFORE > _now():
            return
    key = ec.generate_private_key(ec.SECP256R1())
    now = _now()
    names = [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")]))
        .issuer_name(ca.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=365))
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    atomic_write(key_path, _pem_key(key), mode=0o600)
    atomic_write(cert_path, cert.public_bytes(serialization.Encoding.PEM))
