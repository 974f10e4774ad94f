"""Edge packages on the real libraries (onnx, onnxruntime and its quantizer, cryptography): build, sign, verify,
tamper, run, quantize and the accuracy check, on a small MLP built with onnx.helper."""

from __future__ import annotations

import hashlib
import json
import os
import stat
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from mlspec.edge import (
    EdgeBuildError,
    FileSigner,
    PackageInvalidError,
    SigningKeyError,
    default_signing_ref,
    fingerprint,
    register_signer,
    resolve_signer,
    verify_package,
)
from mlspec.edge.package import BuiltPackage, PackageRequest, build_package
from mlspec.edge.quantize import TestSplit
from mlspec.edge.runner import rows_from_json, run
from mlspec.edge.signing import public_pem
from mlspec.edge.verify import canonical_json, tar_bytes
from tests.conftest import CliResult

FEATURES = [f"f{i}" for i in range(8)]
HIDDEN = 256


def _model(seed: int = 3) -> bytes:
    """input [batch, 8] -> MatMul/Add 256 -> Relu -> MatMul/Add 1 -> Sigmoid -> score [batch] (mlspec's layout)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)
    w1 = rng.normal(0, 0.5, (8, HIDDEN)).astype(np.float32)
    b1 = rng.normal(0, 0.1, HIDDEN).astype(np.float32)
    w2 = rng.normal(0, 0.05, (HIDDEN, 1)).astype(np.float32)  # small: many scores near 0.5, where int8 flips some
    b2 = np.zeros(1, dtype=np.float32)
    nodes = [
        helper.make_node("MatMul", ["input", "w1"], ["h0"]),
        helper.make_node("Add", ["h0", "b1"], ["h1"]),
        helper.make_node("Relu", ["h1"], ["h2"]),
        helper.make_node("MatMul", ["h2", "w2"], ["o0"]),
        helper.make_node("Add", ["o0", "b2"], ["o1"]),
        helper.make_node("Sigmoid", ["o1"], ["o2"]),
        helper.make_node("Reshape", ["o2", "flat"], ["score"]),
    ]
    graph = helper.make_graph(
        nodes,
        "mlp",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", 8])],
        [helper.make_tensor_value_info("score", TensorProto.FLOAT, ["batch"])],
        [
            numpy_helper.from_array(w1, "w1"),
            numpy_helper.from_array(b1, "b1"),
            numpy_helper.from_array(w2, "w2"),
            numpy_helper.from_array(b2, "b2"),
            numpy_helper.from_array(np.array([-1], dtype=np.int64), "flat"),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 9
    for key, value in {"mlspec.features": ",".join(FEATURES), "mlspec.task": "binary_classification"}.items():
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.checker.check_model(model)
    data: bytes = model.SerializeToString()
    return data


def _scores(model: bytes, x: np.ndarray) -> np.ndarray:
    import onnxruntime as ort

    session = ort.InferenceSession(model, providers=["CPUExecutionProvider"])
    out: np.ndarray = session.run(["score"], {"input": x.astype(np.float32)})[0]
    return out


@pytest.fixture(scope="module")
def model() -> bytes:
    return _model()


@pytest.fixture(scope="module")
def split(model: bytes) -> TestSplit:
    x = np.random.default_rng(11).normal(0, 1, (600, 8)).astype(np.float32)
    y = (_scores(model, x) >= 0.5).astype(np.float32)  # the full model is exactly right: any int8 flip is a drop
    return TestSplit(x, y, "binary_classification", ("accuracy", "auc"), {"pipeline": "synthetic"})


@pytest.fixture
def signer(tmp_path: Path) -> FileSigner:
    found = resolve_signer("file://keys/edge.ed25519", tmp_path, create=True)
    assert isinstance(found, FileSigner)
    return found


def _other_key(tmp_path: Path) -> FileSigner:
    found = resolve_signer("file://other/edge.ed25519", tmp_path, create=True)
    assert isinstance(found, FileSigner)
    return found


def _build(
    tmp_path: Path, model: bytes, signer: Any, *, quantize: str = "none", split: TestSplit | None = None, **kw: Any
) -> BuiltPackage:
    request = PackageRequest(
        deployment="fraud-edge",
        environment="local",
        model_name="fraud-detector",
        model_version="3",
        model_bytes=model,
        quantize=quantize,
        test_split=split,
        features=tuple({"name": f, "dtype": "float64"} for f in FEATURES),
        **kw,
    )
    return build_package(request, signer, tmp_path / "pkg" / "v3", tmp_path / "pkg" / "fraud-edge-v3.tar.gz")


def test_package_layout_digests_and_signature_verify_with_the_trusted_key_only(
    tmp_path: Path, model: bytes, signer: FileSigner
) -> None:
    built = _build(tmp_path, model, signer)
    folder = built.folder
    assert sorted(p.name for p in folder.iterdir()) == ["manifest.json", "manifest.sig", "model.onnx", "signer.pub"]
    assert (folder / "model.onnx").read_bytes() == model  # quantize: none packages the registered bytes
    raw = (folder / "manifest.json").read_bytes()
    manifest = json.loads(raw)
    assert raw == canonical_json(manifest)
    for name in ("model.onnx", "signer.pub"):  # digests recomputed here, not taken from the builder
        data = (folder / name).read_bytes()
        assert manifest["files"][name] == {"sha256": hashlib.sha256(data).hexdigest(), "size": len(data)}
    assert set(manifest["files"]) == {"model.onnx", "signer.pub"}
    assert manifest["model"] == {"name": "fraud-detector", "version": "3", "source_sha256": hashlib.sha256(model).hexdigest(),
                                 "source_bytes": len(model), "task": "binary_classification", "opset": 18}  # fmt: skip
    assert manifest["inputs"] == [{"name": "input", "dtype": "float32", "shape": ["batch", 8],
                                   "features": [{"index": i, "name": f, "dtype": "float64"} for i, f in enumerate(FEATURES)]}]  # fmt: skip
    assert manifest["outputs"] == [{"name": "score", "dtype": "float32", "shape": ["batch"]}]
    assert manifest["quantization"] == {"method": "none"} and manifest["accuracy"]["checked"] is False
    assert manifest["signer"]["public_key_sha256"] == fingerprint(signer.public_key())
    assert manifest["created_at"].endswith("Z") and manifest["format"] == "mlspec-edge-package"

    # the signature is Ed25519 over manifest.json's exact bytes, checked here with cryptography directly
    from cryptography.hazmat.primitives.serialization import load_pem_public_key

    bundled = load_pem_public_key((folder / "signer.pub").read_bytes())
    bundled.verify((folder / "manifest.sig").read_bytes(), raw)  # type: ignore[union-attr,call-arg]

    pem = public_pem(signer.public_key())
    for package in (folder, built.tarball):
        assert package is not None
        assert verify_package(package, pem).sha256 == hashlib.sha256(raw).hexdigest()
        assert verify_package(package, fingerprint_pin=fingerprint(signer.public_key())).deployment == "fraud-edge"
        with pytest.raises(
            PackageInvalidError, match=r"manifest\.sig: the signature of manifest\.json does not verify"
        ):
            verify_package(package, public_pem(_other_key(tmp_path).public_key()))
        with pytest.raises(PackageInvalidError, match="not the pinned"):
            verify_package(package, fingerprint_pin=fingerprint(_other_key(tmp_path).public_key()))
        with pytest.raises(SigningKeyError, match="no trusted key"):
            verify_package(package)
        assert verify_package(package, trust_bundled_key=True).signer == fingerprint(signer.public_key())


def test_the_private_key_stays_in_its_0600_file(tmp_path: Path, model: bytes, signer: FileSigner) -> None:
    key_file = tmp_path / "keys" / "edge.ed25519"
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600 and stat.S_IMODE(key_file.parent.stat().st_mode) == 0o700
    private = key_file.read_bytes()
    assert private.startswith(b"-----BEGIN PRIVATE KEY-----")
    body = b"".join(private.splitlines()[1:-1])
    built = _build(tmp_path, model, signer)
    assert built.tarball is not None
    for path in [*built.folder.iterdir(), built.tarball]:
        content = path.read_bytes()
        assert body not in content and b"PRIVATE" not in content, path
    assert "PRIVATE" not in repr(signer) and fingerprint(signer.public_key()) in repr(signer)
    assert resolve_signer("file://keys/edge.ed25519", tmp_path).public_key() == signer.public_key()  # reused as is


def _flip(path: Path, offset: int = -3) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x01
    path.write_bytes(bytes(data))


def _edit_manifest(path: Path) -> None:
    manifest = json.loads(path.read_text())
    manifest["model"]["version"] = "4"
    path.write_bytes(canonical_json(manifest))


TAMPER: dict[str, tuple[Callable[[Path], None], str]] = {
    "a flipped byte of model.onnx": (
        lambda f: _flip(f / "model.onnx"),
        r"^model\.onnx: sha256 .* changed after signing",
    ),
    "a truncated model.onnx": (
        lambda f: (f / "model.onnx").write_bytes((f / "model.onnx").read_bytes()[:-1]),
        r"^model\.onnx: \d+ bytes, manifest\.json says",
    ),
    "an edited manifest.json": (
        lambda f: _edit_manifest(f / "manifest.json"),
        r"manifest\.json was changed after signing",
    ),
    "reformatted manifest.json": (
        lambda f: (f / "manifest.json").write_text(json.dumps(json.loads((f / "manifest.json").read_text()))),
        r"manifest\.json was changed after signing",
    ),
    "a flipped signature": (lambda f: _flip(f / "manifest.sig", 5), r"^manifest\.sig: the signature"),
    "a missing signer.pub": (
        lambda f: (f / "signer.pub").unlink(),
        r"^signer\.pub: listed in manifest\.json but missing",
    ),
    "a missing model.onnx": (
        lambda f: (f / "model.onnx").unlink(),
        r"^model\.onnx: listed in manifest\.json but missing",
    ),
    "a missing signature": (lambda f: (f / "manifest.sig").unlink(), r"^manifest\.sig: missing"),
    "an extra file": (lambda f: (f / "extra.onnx").write_bytes(b"x"), r"^extra\.onnx: not listed in manifest\.json"),
    "a link": (lambda f: (f / "link.txt").symlink_to(f / "model.onnx"), r"^link\.txt: a link"),
}


@pytest.mark.parametrize("how", list(TAMPER))
def test_tampering_is_refused_naming_the_file(tmp_path: Path, model: bytes, signer: FileSigner, how: str) -> None:
    built = _build(tmp_path, model, signer)
    pem = public_pem(signer.public_key())
    tamper, message = TAMPER[how]
    tamper(built.folder)
    with pytest.raises(PackageInvalidError, match=message):
        verify_package(built.folder, pem)
    # the same change, packed: the tarball is refused the same way
    tar = tmp_path / "tampered.tar.gz"
    if how != "a link":
        tar.write_bytes(tar_bytes(built.folder, "tampered", 0))
        with pytest.raises(PackageInvalidError, match=message):
            verify_package(tar, pem)


def test_a_package_re_signed_by_another_key_is_refused(tmp_path: Path, model: bytes, signer: FileSigner) -> None:
    built = _build(tmp_path, model, signer)
    attacker = _other_key(tmp_path)
    manifest = json.loads((built.folder / "manifest.json").read_text())
    manifest["signer"]["public_key_sha256"] = fingerprint(attacker.public_key())
    raw = canonical_json(manifest)
    (built.folder / "manifest.json").write_bytes(raw)
    (built.folder / "manifest.sig").write_bytes(attacker.sign(raw))
    (built.folder / "signer.pub").write_bytes(public_pem(attacker.public_key()))
    with pytest.raises(PackageInvalidError, match=r"manifest\.sig"):
        verify_package(built.folder, public_pem(signer.public_key()))
    with pytest.raises(PackageInvalidError, match="not the pinned"):
        verify_package(built.folder, fingerprint_pin=fingerprint(signer.public_key()))
    # only the bundled key "trusts" it, and then signer.pub's changed digest still gives it away
    with pytest.raises(PackageInvalidError, match=r"^signer\.pub: sha256"):
        verify_package(built.folder, trust_bundled_key=True)


def test_tarball_is_deterministic_and_safe(tmp_path: Path, model: bytes, signer: FileSigner) -> None:
    import tarfile

    built = _build(tmp_path, model, signer)
    assert built.tarball is not None
    created = built.manifest.data["created_at"]
    first = built.tarball.read_bytes()
    assert tar_bytes(built.folder, "fraud-edge-v3", 0) == tar_bytes(built.folder, "fraud-edge-v3", 0)
    with tarfile.open(built.tarball) as archive:
        members = archive.getmembers()
    assert [m.name for m in members] == ["fraud-edge-v3", *(f"fraud-edge-v3/{n}" for n in
                                         ("manifest.json", "manifest.sig", "model.onnx", "signer.pub"))]  # fmt: skip
    assert {(m.uid, m.gid, m.uname, m.gname) for m in members} == {(0, 0, "", "")}
    import datetime as dt

    assert members[1].mtime == dt.datetime.fromisoformat(created.replace("Z", "+00:00")).timestamp()
    # rebuilding with the same creation time gives the same manifest but for the timings
    features = tuple({"name": f, "dtype": "float64"} for f in FEATURES)
    request = PackageRequest("fraud-edge", "local", "fraud-detector", "3", model, features=features)
    rebuilt = build_package(request, signer, tmp_path / "b" / "v3", tmp_path / "b" / "fraud-edge-v3.tar.gz",
                            created_at=created)  # fmt: skip
    assert rebuilt.tarball is not None
    rebuilt_manifest = json.loads((rebuilt.folder / "manifest.json").read_text())
    rebuilt_manifest["performance"] = built.manifest.data["performance"]  # timings differ run to run, nothing else
    assert rebuilt_manifest == built.manifest.data
    # a member outside the package folder is refused, not extracted
    evil = tmp_path / "evil.tar.gz"
    with tarfile.open(evil, "w:gz") as archive:
        info = tarfile.TarInfo("../escape.txt")
        info.size = 1
        import io

        archive.addfile(info, io.BytesIO(b"x"))
    with pytest.raises(PackageInvalidError, match="outside the package folder"):
        verify_package(evil, public_pem(signer.public_key()))
    assert not (tmp_path / "escape.txt").exists() and first == built.tarball.read_bytes()


def test_quantize_none_runs_exactly_like_the_registered_model(
    tmp_path: Path, model: bytes, signer: FileSigner, split: TestSplit
) -> None:
    built = _build(tmp_path, model, signer)
    manifest = verify_package(built.tarball or built.folder, public_pem(signer.public_key()))
    rows = split.x[:50]
    outputs = run(manifest, rows)
    np.testing.assert_array_equal(np.asarray(outputs["score"], dtype=np.float32), _scores(model, rows))
    by_name = rows_from_json([dict(zip(FEATURES, map(float, row), strict=True)) for row in rows[:3]], manifest)
    np.testing.assert_array_equal(by_name, rows[:3])
    with pytest.raises(Exception, match=r"missing feature\(s\) \['f7'\]"):
        rows_from_json(dict.fromkeys(FEATURES[:7], 1.0), manifest)
    with pytest.raises(Exception, match=r"unknown feature\(s\) \['amount'\]"):
        rows_from_json({**dict.fromkeys(FEATURES, 1.0), "amount": 2}, manifest)
    assert np.isnan(rows_from_json({**dict.fromkeys(FEATURES, 1.0), "f3": None}, manifest)[0, 3])


def test_int8_package_is_smaller_close_to_the_full_model_and_its_report_recomputes(
    tmp_path: Path, model: bytes, signer: FileSigner, split: TestSplit
) -> None:
    from sklearn.metrics import accuracy_score, roc_auc_score

    built = _build(tmp_path, model, signer, quantize="int8", split=split, max_accuracy_drop=0.2)
    data = built.manifest.data
    packaged = (built.folder / "model.onnx").read_bytes()
    assert packaged != model and len(packaged) < 0.6 * len(model)  # 4-byte weights became 1-byte ones
    assert data["files"]["model.onnx"]["size"] == len(packaged) and data["model"]["source_bytes"] == len(model)
    import onnx

    ops = {n.op_type for n in onnx.load_from_string(packaged).graph.node}
    assert "MatMulInteger" in ops and "DynamicQuantizeLinear" in ops  # int8 weights, dynamic activations
    assert {p.key: p.value for p in onnx.load_from_string(packaged).metadata_props}["mlspec.features"] == ",".join(
        FEATURES
    )
    assert data["quantization"]["method"] == "int8" and data["quantization"]["weights"] == "QInt8"

    full, int8 = _scores(model, split.x), _scores(packaged, split.x)
    manifest = verify_package(built.folder, public_pem(signer.public_key()))
    ran = np.asarray(run(manifest, split.x)["score"], dtype=np.float32)
    np.testing.assert_array_equal(ran, int8)
    assert np.max(np.abs(ran - full)) < 0.02  # int8 stays close to the full model
    assert not np.array_equal(ran, full)

    accuracy = data["accuracy"]
    expected = {
        "accuracy": (accuracy_score(split.y, full >= 0.5), accuracy_score(split.y, int8 >= 0.5)),
        "auc": (roc_auc_score(split.y, full), roc_auc_score(split.y, int8)),
    }
    for metric, (a, b) in expected.items():
        reported = accuracy["metrics"][metric]
        assert reported["full"] == pytest.approx(a, abs=1e-9) and reported["quantized"] == pytest.approx(b, abs=1e-9)
        assert reported["drop"] == pytest.approx(a - b, abs=1e-9)
    assert accuracy["max_drop"] == pytest.approx(max(a - b for a, b in expected.values()), abs=1e-9)
    assert accuracy["max_abs_score_diff"] == pytest.approx(float(np.max(np.abs(full.astype(np.float64) - int8))))
    assert accuracy["split"] == {"pipeline": "synthetic", "rows": 600} and accuracy["allowed_drop"] == 0.2

    performance = data["performance"]
    assert performance["full"]["bytes"] == len(model) and performance["quantized"]["bytes"] == len(packaged)
    assert performance["size_ratio"] == pytest.approx(len(packaged) / len(model), abs=1e-4)
    for which in ("full", "quantized"):
        timing = performance[which]
        assert 0 < timing["single_row_p50_ms"] <= timing["single_row_p99_ms"] and timing["batch_rows_per_s"] > 0


def test_int8_that_loses_more_than_allowed_fails_naming_the_metric(
    tmp_path: Path, model: bytes, signer: FileSigner, split: TestSplit
) -> None:
    from sklearn.metrics import accuracy_score

    from mlspec.edge.quantize import quantize_int8

    int8 = _scores(quantize_int8(model), split.x)
    full_acc, int8_acc = accuracy_score(split.y, _scores(model, split.x) >= 0.5), accuracy_score(split.y, int8 >= 0.5)
    assert full_acc == 1.0 and int8_acc < 1.0, "the fixture puts rows near 0.5, where int8 flips decisions"
    strict = TestSplit(split.x, split.y, split.task, ("accuracy",), split.about)
    with pytest.raises(EdgeBuildError) as failed:
        _build(tmp_path, model, signer, quantize="int8", split=strict, max_accuracy_drop=0.0)
    message = str(failed.value)
    assert f"accuracy {full_acc:.6g} (full) -> {int8_acc:.6g} (int8), a drop of {full_acc - int8_acc:.3g}" in message
    assert "> max_accuracy_drop 0" in message and "600 test rows" in message
    assert not (tmp_path / "pkg").exists() or not any((tmp_path / "pkg").iterdir()), "nothing is written"
    # the same drop is allowed by a looser limit
    assert _build(tmp_path, model, signer, quantize="int8", split=strict, max_accuracy_drop=0.05).folder.is_dir()


def test_int8_needs_the_test_split_and_the_features_must_be_the_models(
    tmp_path: Path, model: bytes, signer: FileSigner
) -> None:
    with pytest.raises(EdgeBuildError, match="needs the test split"):
        _build(tmp_path, model, signer, quantize="int8")
    request = PackageRequest("d", "local", "m", "1", model, features=({"name": "other", "dtype": "int64"},))
    with pytest.raises(EdgeBuildError, match="trained on the features"):
        build_package(request, signer, tmp_path / "x" / "v1")
    with pytest.raises(EdgeBuildError, match="not a readable ONNX file"):
        build_package(PackageRequest("d", "local", "m", "1", b"not onnx"), signer, tmp_path / "y" / "v1")


def test_signing_key_references(tmp_path: Path, model: bytes, monkeypatch: pytest.MonkeyPatch) -> None:
    assert default_signing_ref("file://.mlspec/keys/local.key", "local") == "file://.mlspec/keys/local.key.ed25519"
    with pytest.raises(
        SigningKeyError,
        match=r"keys its artifacts with kms://prod-key.*spec\.encryption\.signing_key or the Deployment's spec\.edge\.signing_key",
    ):
        default_signing_ref("kms://prod-key", "prod")
    with pytest.raises(SigningKeyError, match=r"no encryption\.kms_key"):
        default_signing_ref(None, "dev")
    monkeypatch.delenv("MLSPEC_SIGNING_PROVIDER", raising=False)
    with pytest.raises(SigningKeyError, match=r"no signing provider is configured for kms://edge-signer"):
        resolve_signer("kms://edge-signer", tmp_path)
    with pytest.raises(SigningKeyError, match="cannot read signing key"):
        resolve_signer("file://missing.ed25519", tmp_path)  # only the local environment creates keys
    assert not (tmp_path / "missing.ed25519").exists()
    (tmp_path / "raw.key").write_bytes(os.urandom(32))
    with pytest.raises(SigningKeyError, match="not an unencrypted PEM private key"):
        resolve_signer("file://raw.key", tmp_path)

    # a KMS signer through a provider: the package is signed by it and verifies with its public key
    held = resolve_signer("file://kms-held.ed25519", tmp_path, create=True)

    class KmsSigner:
        ref = "kms://edge-signer"

        def public_key(self) -> bytes:
            return held.public_key()

        def sign(self, data: bytes) -> bytes:
            return held.sign(data)

    register_signer("kms", lambda ref: KmsSigner())
    try:
        kms = resolve_signer("kms://edge-signer", tmp_path)
        built = build_package(PackageRequest("d", "prod", "m", "1", model), kms, tmp_path / "k" / "v1")
    finally:
        from mlspec.edge import signing

        signing._PROVIDERS.pop("kms")
    manifest = verify_package(built.folder, public_pem(held.public_key()))
    assert manifest.data["signer"]["key_ref"] == "kms://edge-signer"


def test_cli_verify_and_run_exit_codes(
    tmp_path: Path, model: bytes, signer: FileSigner, split: TestSplit, cli: Callable[..., CliResult]
) -> None:
    built = _build(tmp_path, model, signer)
    assert built.tarball is not None
    trusted, other = tmp_path / "trusted.pem", tmp_path / "other.pem"
    trusted.write_bytes(public_pem(signer.public_key()))
    other.write_bytes(public_pem(_other_key(tmp_path).public_key()))

    ok = cli("edge", "verify", str(built.tarball), "--public-key", str(trusted))
    assert ok.code == 0 and "fraud-detector v3 (not quantized)" in ok.out and "signature by sha256:" in ok.out
    pinned = cli("edge", "verify", str(built.folder), "--fingerprint", fingerprint(signer.public_key()))
    assert pinned.code == 0
    bad = cli("edge", "verify", str(built.folder), "--public-key", str(other))
    assert bad.code == 1 and "manifest.sig" in bad.err and "Traceback" not in bad.err + bad.out
    bundled = cli("edge", "verify", str(built.folder), "--trust-bundled-key")
    assert bundled.code == 0 and "NOT who signed them" in bundled.err
    assert cli("edge", "verify", str(built.folder)).code == 2  # no trusted key named
    assert cli("edge", "verify", str(built.folder), "--public-key", str(trusted), "--trust-bundled-key").code == 2
    assert cli("edge", "verify", str(built.folder), "--public-key", str(tmp_path / "none.pem")).code == 2
    (tmp_path / "garbage.pem").write_text("not a key")
    garbage = cli("edge", "verify", str(built.folder), "--public-key", str(tmp_path / "garbage.pem"))
    assert garbage.code == 2 and "not a PEM public key" in garbage.err
    assert cli("edge", "verify", str(tmp_path / "nowhere"), "--public-key", str(trusted)).code == 2

    rows = [dict(zip(FEATURES, map(float, row), strict=True)) for row in split.x[:4]]
    ran = cli("edge", "run", str(built.tarball), "--public-key", str(trusted), "--input", json.dumps(rows))
    assert ran.code == 0, ran.err
    result = json.loads(ran.out)
    assert result["model"] == "fraud-detector" and result["version"] == "3"
    np.testing.assert_array_equal(np.asarray(result["outputs"]["score"], np.float32), _scores(model, split.x[:4]))
    assert cli("edge", "run", str(built.tarball), "--public-key", str(trusted), "--input", "{oops").code == 2
    missing = cli("edge", "run", str(built.tarball), "--public-key", str(trusted), "--input", '{"f0": 1}')
    assert missing.code == 2 and "missing feature(s)" in missing.err

    _flip(built.folder / "model.onnx")
    tampered = cli("edge", "run", str(built.folder), "--public-key", str(trusted), "--input", json.dumps(rows))
    assert tampered.code == 1 and "model.onnx: sha256" in tampered.err and tampered.out == ""
