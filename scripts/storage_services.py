"""Object stores for the test run: Azurite (Azure Blob, over TLS) and an S3 server (moto), on loopback.

Used by scripts/test_services.py. Azurite is installed from npm into ``.cache/test-services``
(gitignored, kept across runs); it serves HTTPS with a certificate made here for
``*.blob.core.windows.net``, so the tests reach it through the production URL form KServe and
MLflow use (``https://<account>.blob.core.windows.net/...``, resolved to 127.0.0.1 by the tests).
The S3 server is moto's standalone server (``moto[server]``, a dev dependency).
"""

from __future__ import annotations

import base64
import contextlib
import datetime as dt
import ipaddress
import os
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

HOST = "127.0.0.1"
AZURITE_VERSION = "3.37.0"
CACHE = Path(__file__).resolve().parent.parent / ".cache" / "test-services"
ACCOUNT = "uaebankmltest"  # an account of our own, not Azurite's well-known devstoreaccount1


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind((HOST, 0))
        return int(probe.getsockname()[1])


def _wait_for_port(port: int, process: subprocess.Popen[bytes], what: str, seconds: float = 60) -> None:
    deadline = time.monotonic() + seconds
    while True:
        with socket.socket() as probe:
            if probe.connect_ex((HOST, port)) == 0:
                return
        if process.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"{what} did not start (exit code {process.poll()})")
        time.sleep(0.1)


def _stop(process: subprocess.Popen[bytes]) -> None:
    process.terminate()
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=10)


def _azurite_binary(install: Callable[..., str | None]) -> Path:
    binary = CACHE / "node_modules" / ".bin" / "azurite-blob"
    if binary.exists():
        return binary
    if not shutil.which("npm"):
        why = install("nodejs", "npm")
        if not shutil.which("npm"):
            raise RuntimeError(f"npm is not installed ({why})")
    CACHE.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(
        ["npm", "install", "--prefix", str(CACHE), "--no-audit", "--no-fund", f"azurite@{AZURITE_VERSION}"],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    if done.returncode != 0 or not binary.exists():
        raise RuntimeError(f"npm install azurite failed: {done.stderr.strip()[-300:]}")
    return binary


def _certificate(folder: Path) -> tuple[Path, Path]:
    """A self-signed certificate for *.blob.core.windows.net and 127.0.0.1 (the tests trust exactly this one)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "mlspec test object stores")])
    now = dt.datetime.now(dt.UTC)
    names = [
        x509.DNSName("*.blob.core.windows.net"),
        x509.DNSName("localhost"),
        x509.IPAddress(ipaddress.ip_address(HOST)),
    ]
    cert = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=2))
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )  # fmt: skip
    cert_path, key_path = folder / "cert.pem", folder / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return cert_path, key_path


@contextlib.contextmanager
def azurite(install: Callable[..., str | None]) -> Iterator[dict[str, str]]:
    """Azurite's blob service over HTTPS on a free port; yields the variables the tests read."""
    binary = _azurite_binary(install)
    folder = Path(tempfile.mkdtemp(prefix="mlspec-azurite-"))
    cert, key = _certificate(folder)
    account_key = base64.b64encode(secrets.token_bytes(64)).decode()
    port = _free_port()
    args = [str(binary), "--blobHost", HOST, "--blobPort", str(port), "--location", str(folder / "data"),
            "--silent", "--skipApiVersionCheck", "--loose", "--cert", str(cert), "--key", str(key)]  # fmt: skip
    env = {**os.environ, "AZURITE_ACCOUNTS": f"{ACCOUNT}:{account_key}"}
    process = subprocess.Popen(args, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        _wait_for_port(port, process, "Azurite")
        yield {
            "MLSPEC_TEST_AZURITE_PORT": str(port),
            "MLSPEC_TEST_AZURITE_ACCOUNT": ACCOUNT,
            "MLSPEC_TEST_AZURITE_KEY": account_key,
            "MLSPEC_TEST_AZURITE_CA": str(cert),
        }
    finally:
        _stop(process)
        shutil.rmtree(folder, ignore_errors=True)


@contextlib.contextmanager
def s3_server(install: Callable[..., str | None]) -> Iterator[dict[str, str]]:
    """moto's S3 server on a free port; yields the variables the tests read."""
    del install  # a Python dependency (the dev extra), nothing to install from Debian
    probe = subprocess.run([sys.executable, "-c", "import moto.server, flask"], capture_output=True, check=False)
    if probe.returncode != 0:
        raise RuntimeError("moto[server] is not installed (the dev extra: pip install -e '.[all,dev]')")
    port = _free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", HOST, "-p", str(port)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        _wait_for_port(port, process, "the S3 server (moto)")
        yield {"MLSPEC_TEST_S3_URL": f"http://{HOST}:{port}"}
    finally:
        _stop(process)
