"""``endpoint.tls: true`` on the laptop: the environment's CA issues the servers' certificate; REST and gRPC are
served over TLS only, and a client that does not trust that CA cannot talk to them."""

from __future__ import annotations

import json
import ssl
import stat
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path

import pytest

pytest.importorskip("onnxruntime")

from cryptography import x509

from mlspec.targets.local.endpoint_tls import server_tls, tls_folder
from mlspec.targets.local.paths import LocalPaths
from tests.unit.test_serving import STABLE_W, Server, score, variant

ROW = [1.0, 2.0, 3.0]


def paths(tmp_path: Path) -> LocalPaths:
    return LocalPaths("local", tmp_path, tmp_path / ".mlspec" / "local")


def infer_request(url: str) -> urllib.request.Request:
    body = {"inputs": [{"name": "input", "shape": [1, 3], "datatype": "FP32", "data": [ROW]}]}
    return urllib.request.Request(f"{url}/v2/models/fraud-api/infer", json.dumps(body).encode(), method="POST")


def test_the_environments_ca_issues_a_certificate_for_loopback_with_private_keys(tmp_path: Path) -> None:
    local = paths(tmp_path)
    first = server_tls(local)
    folder = tls_folder(local)
    for key in ("ca-key.pem", "server-key.pem"):
        assert stat.S_IMODE((folder / key).stat().st_mode) == 0o600
    ca = x509.load_pem_x509_certificate(Path(first["ca_file"]).read_bytes())
    cert = x509.load_pem_x509_certificate(Path(first["cert_file"]).read_bytes())
    assert cert.issuer == ca.subject and "local" in ca.subject.rfc4514_string()
    names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert "localhost" in names.get_values_for_type(x509.DNSName)
    assert [str(ip) for ip in names.get_values_for_type(x509.IPAddress)] == ["127.0.0.1"]
    ca.public_key().verify(cert.signature, cert.tbs_certificate_bytes, x509_signature(cert))
    # kept while valid; a new CA (the old one deleted) issues a new server certificate
    assert server_tls(local) == first and Path(first["cert_file"]).read_bytes() == cert.public_bytes(_pem())
    (folder / "ca.pem").unlink()
    server_tls(local)
    renewed = x509.load_pem_x509_certificate(Path(first["cert_file"]).read_bytes())
    assert renewed.serial_number != cert.serial_number


def x509_signature(cert: x509.Certificate) -> object:
    from cryptography.hazmat.primitives.asymmetric import ec

    assert cert.signature_hash_algorithm is not None
    return ec.ECDSA(cert.signature_hash_algorithm)


def _pem() -> object:
    from cryptography.hazmat.primitives import serialization

    return serialization.Encoding.PEM


def test_rest_and_grpc_are_served_over_tls_only(serve: Callable[..., Server], tmp_path: Path) -> None:
    import numpy as np

    grpcclient = pytest.importorskip("tritonclient.grpc")
    tls = server_tls(paths(tmp_path))
    srv = serve([variant(tmp_path, "stable", "3", STABLE_W)], tls=tls, grpc_port=0)
    assert srv.url.startswith("https://127.0.0.1:")
    trusted = ssl.create_default_context(cafile=tls["ca_file"])
    with urllib.request.urlopen(infer_request(srv.url), timeout=10, context=trusted) as reply:
        answer = json.loads(reply.read())
    assert answer["outputs"][0]["data"] == pytest.approx([score(STABLE_W, ROW)])
    with pytest.raises(urllib.error.URLError, match="CERTIFICATE_VERIFY_FAILED"):  # the CA is not trusted
        urllib.request.urlopen(infer_request(srv.url), timeout=10)
    plain = srv.url.replace("https://", "http://")
    with pytest.raises((urllib.error.URLError, ConnectionError, OSError)):  # no plain HTTP on the TLS port
        urllib.request.urlopen(infer_request(plain), timeout=10)
    grpc_at = next(line.split("grpc listening on ")[1].strip() for line in srv.log.read_text().splitlines()
                   if "grpc listening on " in line)  # fmt: skip
    client = grpcclient.InferenceServerClient(
        grpc_at.replace("127.0.0.1", "localhost"), ssl=True, root_certificates=tls["ca_file"]
    )
    tensor = grpcclient.InferInput("input", [1, 3], "FP32")
    tensor.set_data_from_numpy(np.array([ROW], dtype=np.float32))
    result = client.infer("fraud-api", [tensor])
    assert result.as_numpy("score").ravel().tolist() == pytest.approx([score(STABLE_W, ROW)])
