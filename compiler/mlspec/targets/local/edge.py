"""Edge engine: builds a ``mode: edge`` Deployment's signed package from the registered model.

Per Deployment, packages live under ``<data_dir>/edge/<deployment>/``: ``v<version>/``
(the package folder), ``<deployment>-v<version>.tar.gz`` (the same files, for
shipping) and ``current.json`` (which package is current, and the fingerprint of the
key that signed it, so ``status`` can re-verify it).

A build is keyed by the model version and its bytes, the edge spec (quantize,
max_accuracy_drop, signing key), the signer and the feature schema: the same key
reuses the existing package once it verifies; anything else builds anew. With
``quantize: int8`` the training pipeline's held-out test split is fetched again from
the feature store (the same point-in-time join and the same tail split the pipeline
used, checked against the row counts the run recorded), and a metric that drops more
than ``max_accuracy_drop`` fails the build, naming the metric and both values.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mlspec.atomic import atomic_write
from mlspec.crypto.errors import CryptoError
from mlspec.crypto.keys import KeyResolver
from mlspec.edge.errors import EdgeError
from mlspec.edge.signing import Signer, default_signing_ref, fingerprint, resolve_signer
from mlspec.edge.verify import FORMAT, SCHEMA_VERSION, Manifest, canonical_json, sha256_hex, verify_package
from mlspec.render.edge import checked_metrics
from mlspec.spec.deployment import Deployment, Edge, EdgeDeploymentSpec
from mlspec.spec.training import TrainingPipeline
from mlspec.targets.base import TargetError
from mlspec.targets.local.paths import LocalPaths
from mlspec.targets.local.registry import ModelVersion, Registry

if TYPE_CHECKING:
    from mlspec.edge.quantize import TestSplit
    from mlspec.runtime.context import RuntimeContext

CURRENT = "current.json"


class EdgeEngine:
    """Builds, reuses, re-verifies and removes the edge packages of one local environment.

    ``registry`` may be a function giving it (opened only when a build needs it: plan, status and remove never
    do). ``context`` is what the test split is fetched with (default: the environment's runtime context).
    """

    def __init__(
        self,
        paths: LocalPaths,
        registry: Registry | Callable[[], Registry],
        *,
        context: RuntimeContext | None = None,
    ) -> None:
        self.paths = paths
        self._registry = registry
        self._context = context

    @property
    def registry(self) -> Registry:
        """The environment's model registry."""
        if not isinstance(self._registry, Registry):
            self._registry = self._registry()
        return self._registry

    # -- where ------------------------------------------------------------------------------------------

    @property
    def root(self) -> Path:
        """Every Deployment's packages."""
        return self.paths.data_dir / "edge"

    def folder(self, deployment: str) -> Path:
        """One Deployment's packages and ``current.json``."""
        return self.root / deployment

    def package_folder(self, deployment: str, version: str) -> Path:
        """The package folder of one model version."""
        return self.folder(deployment) / f"v{version}"

    def tarball(self, deployment: str, version: str) -> Path:
        """The package as ``.tar.gz``."""
        return self.folder(deployment) / f"{deployment}-v{version}.tar.gz"

    def descriptor(self, deployment: str) -> Path:
        """The rendered build descriptor apply wrote (``edge/<deployment>.json``)."""
        return self.paths.output / "edge" / f"{deployment}.json"

    # -- keys -------------------------------------------------------------------------------------------

    def signing_ref(self, deployment: Deployment) -> str:
        """The signing key reference: ``edge.signing_key``, else ``<environment kms_key>.ed25519`` (file keys)."""
        edge = _edge_section(deployment)
        if edge is not None and edge.signing_key:
            return edge.signing_key
        return default_signing_ref(self.paths.kms_key, self.paths.environment, self.paths.signing_key)

    def signer(self, deployment: Deployment) -> Signer:
        """The Deployment's signer; a missing file key is created for the ``local`` environment only."""
        return resolve_signer(
            self.signing_ref(deployment), self.paths.project_root, create=self.paths.environment == "local"
        )

    # -- plan -------------------------------------------------------------------------------------------

    def plan_step(self, deployment: Deployment) -> str:
        """What building the Deployment's package will do, in words (nothing is changed)."""
        spec = deployment.spec
        edge = _edge_section(deployment)
        model = f"{spec.model.name}@{spec.model.version or spec.model.alias}"
        try:
            signing = f"sign with {self.signing_ref(deployment)}"
        except EdgeError as exc:
            signing = f"cannot sign: {exc}"
        if edge is not None and edge.quantize == "int8":
            how = (
                f"quantize to int8 (onnxruntime), check the gate metrics on the test split "
                f"(max drop {edge.max_accuracy_drop:g})"
            )
        else:
            how = "package the registered ONNX model as is"
        where = self.folder(deployment.metadata.name)
        return f"build the edge package of {model}: {how}, {signing} -> {where} (reused when unchanged)"

    # -- build ------------------------------------------------------------------------------------------

    def _model(self, deployment: Deployment) -> ModelVersion:
        ref = deployment.spec.model
        found = (
            self.registry.version(ref.name, version=ref.version)
            if ref.version
            else self.registry.version(ref.name, alias=ref.alias)
        )
        if found is None:
            what = f"version {ref.version}" if ref.version else f"alias '{ref.alias}'"
            raise TargetError(f"model '{ref.name}' has no {what} in the registry; apply its TrainingPipeline first")
        return found

    def _features(self, name: str) -> tuple[dict[str, str], ...] | None:
        """Name and dtype of each input feature from the rendered descriptor (None when it is not there)."""
        try:
            data = json.loads(self.descriptor(name).read_text())
        except (OSError, ValueError):
            return None
        inputs = (data.get("features") or {}).get("inputs")
        if not isinstance(inputs, list) or not inputs:
            return None
        return tuple({"name": str(f["name"]), "dtype": str(f["dtype"])} for f in inputs)

    def build(
        self,
        deployment: Deployment,
        pipeline_spec: TrainingPipeline | None,
        expected: dict[str, str],
        *,
        features: list[dict[str, str]] | None = None,
        progress: Callable[[str], None] = lambda _: None,
    ) -> dict[str, str]:
        """Build (or reuse) the Deployment's package; returns target ids. ``expected``: version -> sha256 as state
        recorded it. ``features`` (name, dtype per column) defaults to the rendered descriptor's. TargetError says
        why it cannot be built."""
        name = deployment.metadata.name
        edge = _edge_section(deployment)
        if edge is None:
            raise TargetError(f"{name} is a mode: {deployment.spec.mode} Deployment, not an edge one")
        try:
            return self._build(deployment, pipeline_spec, expected, features, progress, edge=edge)
        except EdgeError as exc:
            raise TargetError(f"edge package of {name}: {exc}") from None
        except CryptoError as exc:
            raise TargetError(f"edge package of {name}: cannot read the registered model: {exc}") from None

    def _build(
        self,
        deployment: Deployment,
        pipeline: TrainingPipeline | None,
        expected: dict[str, str],
        features: list[dict[str, str]] | None,
        progress: Callable[[str], None],
        *,
        edge: Edge,
    ) -> dict[str, str]:
        from mlspec.crypto import read_plain
        from mlspec.edge.package import PackageRequest, build_package

        name = deployment.metadata.name
        model = self._model(deployment)
        keys = KeyResolver(self.paths.project_root)  # sealed models: their file:// keys are the project's
        sha = self.registry.verify(model, expected.get(model.version), keys)
        signer = self.signer(deployment)  # fails closed before any work: no key, no package
        public = signer.public_key()
        schema = tuple(features) if features is not None else self._features(name)
        key = self._build_key(deployment, model, sha, signer, schema, edge=edge)
        folder, tarball = self.package_folder(name, model.version), self.tarball(name, model.version)
        reused = self._reusable(folder, tarball, key, public)
        if reused is not None:
            progress(f"{name}: the package of {model.name} v{model.version} is unchanged and verifies; reused")
            return self._settle(name, model, reused, folder=folder, tarball=tarball, public=public)
        data = read_plain(model.onnx_path, keys)
        if sha256_hex(data) != sha:
            raise TargetError(f"{model.name} v{model.version}: {model.onnx_path} changed while it was being read")
        split: TestSplit | None = None
        if edge.quantize == "int8":
            if pipeline is None:
                raise TargetError(
                    f"{name}: quantize: int8 checks accuracy on the training pipeline's test split, and no "
                    f"TrainingPipeline of this environment trains {model.name}"
                )
            progress(f"{name}: fetch the test split of {pipeline.metadata.name} to check the int8 model")
            split = self.test_split(pipeline, model)
        request = PackageRequest(
            deployment=name,
            environment=self.paths.environment,
            model_name=model.name,
            model_version=model.version,
            model_bytes=data,
            quantize=edge.quantize,
            max_accuracy_drop=edge.max_accuracy_drop,
            features=schema,
            test_split=split,
            build_key=key,
        )
        built = build_package(request, signer, folder, tarball)
        accuracy = built.manifest.data["accuracy"]
        if accuracy.get("checked"):
            progress(
                f"{name}: int8 model checked on {accuracy['split']['rows']} test rows, largest drop "
                f"{accuracy['max_drop']:.4f} ({accuracy['worst_metric']}) <= {accuracy['allowed_drop']:g}"
            )
        return self._settle(name, model, built.manifest, folder=folder, tarball=tarball, public=public)

    def _build_key(
        self,
        deployment: Deployment,
        model: ModelVersion,
        sha: str,
        signer: Signer,
        schema: tuple[dict[str, str], ...] | None,
        *,
        edge: Edge,
    ) -> str:
        inputs = {
            "format": FORMAT,
            "schema_version": SCHEMA_VERSION,
            "deployment": deployment.metadata.name,
            "environment": self.paths.environment,
            "model": [model.name, model.version, sha],
            "edge": edge.model_dump(mode="json"),
            "signing_key": signer.ref,
            "signer": fingerprint(signer.public_key()),
            "features": list(schema or ()),
        }
        return sha256_hex(canonical_json(inputs))

    @staticmethod
    def _reusable(folder: Path, tarball: Path, key: str, public: bytes) -> Manifest | None:
        if not folder.is_dir() or not tarball.is_file():
            return None
        try:
            manifest = verify_package(folder, public)
            packed = verify_package(tarball, public)
        except EdgeError:
            return None  # altered, or signed by another key: built again
        if manifest.data.get("build", {}).get("key") != key or packed.sha256 != manifest.sha256:
            return None
        return manifest

    def _settle(
        self, name: str, model: ModelVersion, manifest: Manifest, *, folder: Path, tarball: Path, public: bytes
    ) -> dict[str, str]:
        accuracy = manifest.data["accuracy"]
        ids = {
            "model": model.name,
            "model_version": model.version,
            "package": str(folder),
            "tarball": str(tarball),
            "manifest_sha256": manifest.sha256,
            "quantized": str(manifest.quantized).lower(),
            "size_bytes": str(len(manifest.model_bytes)),
            "accuracy_drop": f"{accuracy['max_drop']:.6f}" if accuracy.get("checked") else "",
            "signer": fingerprint(public),
        }
        current = {**ids, "deployment": name, "created_at": manifest.data["created_at"]}
        path = self.folder(name) / CURRENT
        if not path.is_file() or path.read_bytes() != canonical_json(current):
            atomic_write(path, canonical_json(current))
        return ids

    # -- the test split ---------------------------------------------------------------------------------

    def test_split(self, pipeline: TrainingPipeline, model: ModelVersion) -> TestSplit:
        """The rows ``pipeline`` held out when it trained ``model``: fetched again through the feature store and
        split as training split them; TargetError when the data changed since (the rows would not be the same)."""
        from mlspec.edge.quantize import TestSplit
        from mlspec.runtime.dataset import TIMESTAMP, read_dataset
        from mlspec.runtime.features import fetch
        from mlspec.runtime.model import split_index, to_arrays

        ctx = self._context or self.paths.runtime_context()
        self.root.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=self.root, prefix=".test-split-") as tmp:  # 0700, removed after
            path = str(Path(tmp) / "dataset.parquet")
            try:
                fetch(pipeline.model_dump(mode="json", by_alias=True), ctx, path)
            except Exception as exc:  # Feast's and pandas' own types; the message says what failed
                raise TargetError(f"cannot fetch the test split of {pipeline.metadata.name}: {exc}") from None
            frame, columns, label = read_dataset(path)
        if model.features and list(model.features) != columns:
            raise TargetError(
                f"{model.name} v{model.version} was trained on {list(model.features)}, the feature service now "
                f"gives {columns}: retrain it before building an int8 package"
            )
        data = to_arrays(frame, columns, label, pipeline.spec.model.task)
        fraction = pipeline.spec.evaluation.test_fraction
        cut = split_index(len(data.y), fraction)
        recorded = self._train_rows(model)
        if recorded is not None and recorded != cut:
            raise TargetError(
                f"the training data of {pipeline.metadata.name} changed since {model.name} v{model.version} was "
                f"trained ({cut} training rows now, {recorded} then), so its test split cannot be rebuilt: retrain "
                "the model, or build with quantize: none"
            )
        test = data.slice(cut)
        about = {
            "pipeline": pipeline.metadata.name,
            "test_fraction": fraction,
            "train_rows": cut,
            "from": str(frame[TIMESTAMP].iloc[cut]),
            "run_id": model.run_id,
        }
        return TestSplit(test.x, test.y, pipeline.spec.model.task, checked_metrics(pipeline), about)

    def _train_rows(self, model: ModelVersion) -> int | None:
        """The training rows the model's run recorded (None when the run has no record)."""
        if not model.run_id:
            return None
        try:
            value = self.registry.client.get_run(model.run_id).data.params.get("train_rows")
        except Exception:  # MLflow's exception types; a missing run is checked by the row count not at all
            return None
        return int(value) if value is not None else None

    # -- status -----------------------------------------------------------------------------------------

    def current(self, name: str) -> dict[str, Any] | None:
        """What ``current.json`` records for the Deployment (None before its first build)."""
        try:
            data: dict[str, Any] = json.loads((self.folder(name) / CURRENT).read_text())
        except (OSError, ValueError):
            return None
        return data

    def status(self, name: str) -> dict[str, Any]:
        """The current package, re-verified against the key fingerprint recorded when it was built: version,
        size, quantization, accuracy drop, ``signature_ok`` and the problem when it does not verify."""
        current = self.current(name)
        if current is None:
            return {"deployment": name, "built": False}
        out: dict[str, Any] = {**current, "built": True, "signature_ok": False, "problem": None}
        try:
            manifest = verify_package(current["package"], fingerprint_pin=current["signer"])
            verify_package(current["tarball"], fingerprint_pin=current["signer"])
        except (EdgeError, KeyError) as exc:
            out["problem"] = str(exc)
            return out
        if manifest.sha256 != current.get("manifest_sha256"):
            out["problem"] = "the package verifies, but it is not the one that was built (manifest changed)"
            return out
        accuracy = manifest.data["accuracy"]
        out |= {
            "signature_ok": True,
            "accuracy": {m: v["quantized"] for m, v in accuracy.get("metrics", {}).items()} or None,
            "worst_metric": accuracy.get("worst_metric"),
            "source_bytes": manifest.model.get("source_bytes"),
        }
        return out

    def status_line(self, name: str) -> str:
        """One line for ``mlspec status``: the current package, its size, accuracy drop and signature."""
        found = self.status(name)
        if not found.get("built"):
            return f"{name}: no edge package built yet"
        what = f"{found['model']} v{found['model_version']} ({'int8' if found['quantized'] == 'true' else 'full'})"
        drop = f", max accuracy drop {float(found['accuracy_drop']):.4g}" if found.get("accuracy_drop") else ""
        verdict = "signature ok" if found.get("signature_ok") else f"INVALID: {found.get('problem')}"
        return f"{name}: edge package {what}, {found['size_bytes']} bytes{drop}, {found['tarball']}; {verdict}"

    def intact(self, name: str, ids: dict[str, str]) -> bool:
        """The package state recorded is there, unaltered, and still verifies."""
        if not ids.get("manifest_sha256"):
            return True  # applied without engines: nothing to check
        found = self.status(name)
        return bool(found.get("signature_ok")) and found.get("manifest_sha256") == ids["manifest_sha256"]

    def remove(self, name: str) -> None:
        """Delete the Deployment's packages (a delete or destroy; copies already shipped are not affected)."""
        shutil.rmtree(self.folder(name), ignore_errors=True)


def _edge_section(deployment: Deployment) -> Edge | None:
    """The ``edge`` section of a ``mode: edge`` Deployment; None in the other modes."""
    return deployment.spec.edge if isinstance(deployment.spec, EdgeDeploymentSpec) else None
