"""The local platform target: writes the environment's artifacts, then makes each engine match them.

Per resource kind: the Environment's Feast repository is applied and
materialized (and before any training, since training reads features); a
TrainingPipeline runs its compiled KFP pipeline with the local runner; an online
Deployment is served by a local model server (stopped when deleted); a batch
Deployment runs its compiled scoring pipeline with the local runner (its
predictions stay when it is deleted; ``mlspec monitor`` runs it on its schedule);
an edge Deployment gets a signed package of its model (deleted with it).
After training, each mode picks up a new version the way it does.
Every engine step is idempotent, so re-applying after a crash converges.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar

from mlspec.crypto.errors import CryptoError
from mlspec.crypto.keys import KeyResolver
from mlspec.plan.model import Change
from mlspec.render.base import Artifact
from mlspec.render.entity_lookup import lookup_settings
from mlspec.resolve.graph import ResolvedGraph
from mlspec.resolve.refs import SpecIndex
from mlspec.runtime.batch import sink_label
from mlspec.spec.deployment import (
    BatchDeploymentSpec,
    Deployment,
    DeploymentMode,
    EdgeDeploymentSpec,
    OnlineDeploymentSpec,
)
from mlspec.spec.training import TrainingPipeline
from mlspec.state.model import ResourceState
from mlspec.targets.base import TargetError
from mlspec.targets.local.batch import BatchEngine, summary_ids
from mlspec.targets.local.edge import EdgeEngine
from mlspec.targets.local.feature_store import FeatureStoreEngine
from mlspec.targets.local.paths import LocalPaths
from mlspec.targets.local.registry import Registry
from mlspec.targets.local.serving import ServingEngine
from mlspec.targets.local.source_data import column_problems, missing_files
from mlspec.targets.local.training import TrainingEngine
from mlspec.targets.output_dir import OutputDirTarget


class LocalPlatform:
    """The engines of one local environment, shared by apply, status and monitor."""

    def __init__(self, paths: LocalPaths) -> None:
        self.paths = paths
        self._registry: Registry | None = None
        self.features = FeatureStoreEngine(paths)

    @property
    def registry(self) -> Registry:
        """MLflow's registry (opened on first use: importing mlflow takes seconds)."""
        if self._registry is None:
            self.paths.mlflow.mkdir(parents=True, exist_ok=True)
            self._registry = Registry(self.paths.runtime_context().tracking_uri)
        return self._registry

    @property
    def training(self) -> TrainingEngine:
        """Runs training pipelines."""
        return TrainingEngine(self.paths, self.registry)

    @property
    def serving(self) -> ServingEngine:
        """Runs model servers."""
        return ServingEngine(self.paths, self.registry)

    @property
    def batch(self) -> BatchEngine:
        """Runs batch scoring pipelines."""
        return BatchEngine(self.paths, self.registry)

    @property
    def edge(self) -> EdgeEngine:
        """Builds and checks edge packages (the registry is opened only when a build needs it)."""
        return EdgeEngine(self.paths, lambda: self.registry)


def deployment_mode(spec: dict[str, object]) -> DeploymentMode:
    """A Deployment's mode from its spec as state records it (``online`` when unset)."""
    body = spec.get("spec")
    mode = body.get("mode") if isinstance(body, dict) else None
    return "batch" if mode == "batch" else "edge" if mode == "edge" else "online"


def _missing_data_fix(root: Path) -> str:
    """How to get the data, naming only what this project has (a sample script, DATA.md), else the schemas."""
    for script in ("scripts/sample_data.py", "scripts/generate_data.py"):
        if (root / script).is_file():
            return f"Put files with those columns there, or write a sample with: python {script}"
    more = " (DATA.md lists them)" if (root / "DATA.md").is_file() else ""
    return f"Put files with those columns there{more}; each DataSource's 'schema' declares what it expects"


def expected_hashes(resources: dict[str, ResourceState]) -> dict[str, dict[str, str]]:
    """Per model, version -> ONNX sha256 as recorded in state when its pipeline was applied."""
    hashes: dict[str, dict[str, str]] = {}
    for resource in resources.values():
        ids = resource.target_ids
        if resource.kind == "TrainingPipeline" and ids.get("model") and ids.get("model_version"):
            hashes.setdefault(ids["model"], {})[ids["model_version"]] = ids.get("onnx_sha256", "")
    return hashes


class LocalPlatformTarget:
    """A Target over the output folder plus the local engines."""

    name: ClassVar[str] = "local"

    def __init__(
        self,
        paths: LocalPaths,
        graph: ResolvedGraph,
        rendered: dict[str, Artifact],
        applied: dict[str, ResourceState],
        progress: Callable[[str], None] = lambda _: None,
    ) -> None:
        self.paths = paths
        self.graph = graph
        self.rendered = rendered
        self.platform = LocalPlatform(paths)
        self.output = OutputDirTarget(paths.output)
        self.expected = expected_hashes(applied)
        self.progress = progress
        self.follow_ups: dict[str, dict[str, str]] = {}  # ref -> new target ids of resources a rollout re-did

    def drain_follow_ups(self) -> dict[str, dict[str, str]]:
        """What rollouts did to other resources since the last call (the reconciler records it in state)."""
        done, self.follow_ups = self.follow_ups, {}
        return done

    # -- Target protocol ------------------------------------------------------------------------------

    def plan(self, change: Change, previous: ResourceState | None) -> list[str]:
        """The files written plus what each engine will do."""
        steps = self.output.plan(change, previous)
        spec = self.graph.resources.get(change.ref)
        if change.action == "delete":
            if change.kind == "Deployment":
                name = change.ref.split("/", 1)[1]
                mode = deployment_mode(previous.spec) if previous else "online"
                if mode == "online":
                    steps.append(f"stop the model server of {name}")
                elif mode == "batch":
                    steps.append(f"stop scheduling batch scoring of {name} (its predictions are kept)")
                elif mode == "edge":
                    steps.append(f"delete the edge packages of {name} (copies already shipped stay valid)")
            return steps
        if change.kind == "Environment" and FeatureStoreEngine.repo_files(self.rendered):
            steps.append("feast apply + materialize the online store (if the repository changed)")
        if spec is not None and isinstance(spec.model, TrainingPipeline):
            steps.append(
                f"run kfp/{spec.name}.yaml with the KFP local runner: features, train, gates, ONNX, "
                f"register {spec.model.model_name}"
            )
        if spec is not None and isinstance(spec.model, Deployment):
            body = spec.model.spec
            model = body.model
            if isinstance(body, OnlineDeploymentSpec):
                served = f"{model.name}@{model.version or model.alias}"
                steps.append(f"serve {served} with onnxruntime ({body.rollout.strategy} rollout)")
            elif isinstance(body, BatchDeploymentSpec):
                sink = sink_label(body.batch.model_dump(mode="json"))
                steps.append(
                    f"run kfp/batch/{spec.name}.yaml with the KFP local runner: score {body.batch.entities} "
                    f"with {model.name}@{model.version or model.alias} into {sink}"
                )
                if body.batch.schedule:
                    steps.append(f"then on schedule '{body.batch.schedule}' (UTC) from mlspec monitor")
            else:
                steps.append(self.platform.edge.plan_step(spec.model))
        return steps

    def apply(
        self,
        change: Change,
        artifacts: dict[str, Artifact],
        previous: ResourceState | None,
        keep: frozenset[str] = frozenset(),
    ) -> dict[str, str]:
        """Write the artifacts, then run the engine for the resource's kind."""
        ids = self.output.apply(change, artifacts, previous, keep)
        if change.action == "delete":
            # a batch Deployment's schedule is its spec: once deleted, monitor no longer runs it (predictions stay)
            mode = deployment_mode(previous.spec) if previous is not None else "online"
            if change.kind == "Deployment" and mode == "online":
                self.platform.serving.stop(change.ref.split("/", 1)[1])
            elif change.kind == "Deployment" and mode == "edge":
                self.platform.edge.remove(change.ref.split("/", 1)[1])
            return ids
        spec = self.graph.resources.get(change.ref)
        if change.kind == "Environment":
            self._ensure_features()
        elif spec is not None and isinstance(spec.model, TrainingPipeline):
            ids.update(self.train(spec.model, spec.name))
        elif spec is not None and isinstance(spec.model, Deployment):
            if isinstance(spec.model.spec, OnlineDeploymentSpec):
                ids.update(self._serve(spec.model))
            elif isinstance(spec.model.spec, BatchDeploymentSpec):
                ids.update(self.score(spec.model, spec.name))
            else:
                ids.update(self.package(spec.model))
        return ids

    def read_live(self, resource: ResourceState) -> dict[str, str | None]:
        """Artifact files as they are now."""
        return self.output.read_live(resource)

    def healthy(self, resource: ResourceState) -> bool:
        """Artifacts intact and, for a Deployment, its server up and ready."""
        if not self.output.healthy(resource):
            return False
        if resource.kind == "Deployment":
            name = resource.ref.split("/", 1)[1]
            mode = deployment_mode(resource.spec)
            if mode == "batch":  # the last run exists and scored the version state recorded
                last = self.platform.batch.status(name)
                wanted = resource.target_ids.get("model_version")
                return last is not None and (not wanted or str(last.get("model_version")) == wanted)
            if mode == "edge":  # the package state recorded is there and its signature verifies
                return self.platform.edge.intact(name, resource.target_ids)
            return self.platform.serving.healthy(name)
        if resource.kind == "TrainingPipeline":
            return self._model_intact(resource.target_ids)
        if resource.kind == "Environment" and FeatureStoreEngine.repo_files(self.rendered):
            return self.platform.features.is_applied()
        return True

    def _model_intact(self, ids: dict[str, str]) -> bool:
        """The version the pipeline registered is still in the registry, with the bytes state recorded."""
        if not ids.get("model") or not ids.get("model_version"):
            return True  # applied without engines: nothing to check
        try:
            found = self.platform.registry.version(ids["model"], version=ids["model_version"])
            keys = KeyResolver(self.paths.project_root)  # file:// keys of sealed versions are the project's
            return found is not None and self.platform.registry.verify(found, ids.get("onnx_sha256"), keys) != ""
        except (TargetError, OSError, CryptoError):
            return False

    # -- engines --------------------------------------------------------------------------------------

    def _ensure_features(self) -> None:
        root = self.paths.project_root
        missing = missing_files(self.graph.of_kind("DataSource"), root)
        if missing:
            raise TargetError(
                "the feature store's data is missing: " + "; ".join(missing) + ". " + _missing_data_fix(root)
            )
        wrong = column_problems(self.graph.resources.values(), SpecIndex(self.graph.resources.values()), root)
        if wrong:
            raise TargetError("the data does not have the columns the specs name: " + "; ".join(wrong))
        self.platform.features.ensure(FeatureStoreEngine.repo_files(self.rendered), self.progress)

    def train(self, pipeline: TrainingPipeline, name: str) -> dict[str, str]:
        """Run the pipeline (features applied first); returns target ids (model, version, sha256, device)."""
        self._ensure_features()
        gated = [
            d.name
            for d in self.graph.specs(Deployment)
            if isinstance(d.model.spec, OnlineDeploymentSpec)
            and d.model.spec.model.name == pipeline.model_name
            and d.model.spec.rollout.strategy != "direct"
        ]
        self.progress(f"train {pipeline.model_name} (KFP local runner)")
        summary = self.platform.training.run(
            pipeline, self.paths.output / f"kfp/{name}.yaml", promote_directly=not gated
        )
        version, sha256 = str(summary["version"]), str(summary["onnx_sha256"])
        self.expected.setdefault(pipeline.model_name, {})[version] = sha256
        metrics = summary.get("metrics", {})
        self.progress(
            f"registered {pipeline.model_name} v{version} on {summary.get('device')}: "
            + ", ".join(f"{k}={v:.3f}" for k, v in sorted(metrics.items()) if isinstance(v, int | float))
            + (" (champion)" if summary.get("promoted") else " (challenger)")
        )
        self._roll_out(pipeline.model_name)
        return {
            "model": pipeline.model_name,
            "model_version": version,
            "onnx_sha256": sha256,
            "onnx_path": str(summary.get("onnx_path", "")),  # what every plan re-verifies (model_files.py)
            "run_id": str(summary.get("run_id", "")),
            "device": str(summary.get("device", "")),
            "promoted": str(bool(summary.get("promoted"))).lower(),
        }

    def _roll_out(self, model: str) -> None:
        """Deployments already serving ``model`` pick up the new version (a canary, a green, a shadow...); batch
        Deployments that scored before score again when the version they score with changed."""
        serving = self.platform.serving
        for spec in self.graph.specs(Deployment):
            deployment = spec.model
            if deployment.spec.model.name != model:
                continue
            if isinstance(deployment.spec, BatchDeploymentSpec):
                if self.platform.batch.status(spec.name) is not None:
                    try:
                        self.follow_ups[spec.ref] = self.score(deployment, spec.name)
                    except TargetError as exc:  # the model is registered all the same; the Deployment reads unhealthy
                        self.progress(f"{spec.name}: scoring with the new version failed: {exc}")
                continue
            if isinstance(deployment.spec, EdgeDeploymentSpec):
                if self.platform.edge.current(spec.name) is not None:
                    try:
                        self.follow_ups[spec.ref] = self.package(deployment)
                    except TargetError as exc:  # e.g. the int8 model loses too much: the old package stays current
                        self.progress(f"{spec.name}: packaging the new version failed: {exc}")
                continue
            if serving.read_config(spec.name) is not None:  # an online Deployment that serves
                ids = serving.deploy(
                    deployment, features=[], expected=self.expected.get(model, {}), lookup=self._lookup(deployment)
                )
                self.progress(f"{spec.name} now serves {ids['versions']}")
                if ids.get("held_back"):
                    self.progress(f"{spec.name}: {ids['held_back']}")

    def score(self, deployment: Deployment, name: str) -> dict[str, str]:
        """Run the batch Deployment's applied pipeline (features applied first), unless its last run already scored
        this spec with the version it scores with now; returns target ids (model_version, rows, sink...)."""
        from mlspec.hashing import canonical
        from mlspec.render.kfp import batch_feature_service

        engine = self.platform.batch
        service = batch_feature_service(self.graph, deployment) or ""
        spec_json = canonical(deployment.model_dump(mode="json", by_alias=True))
        last = engine.status(name)
        if last is not None and engine.is_current(deployment, spec_json, service):
            self.progress(f"{name}: up to date (run {last.get('run_id')} scored v{last.get('model_version')})")
            return summary_ids(last)
        self._ensure_features()
        self.progress(f"score {name} (KFP local runner)")
        ids = engine.run(deployment, engine.pipeline(name), expected=self.expected.get(deployment.spec.model.name, {}))
        self.progress(
            f"{name}: scored {ids['rows']} rows with {ids['model']} v{ids['model_version']} into {ids['sink']} "
            f"in {ids['seconds']} s ({ids['missing_features']} without features)"
        )
        return ids

    def package(self, deployment: Deployment) -> dict[str, str]:
        """Build (or reuse) the edge package of the version the Deployment names; returns target ids (version,
        manifest sha256, size, accuracy drop...). An int8 build reads its test split through the feature store."""
        model = deployment.spec.model.name
        found = SpecIndex(self.graph.resources.values()).models.get(model)
        pipeline = found.model if found is not None else None
        if isinstance(deployment.spec, EdgeDeploymentSpec) and deployment.spec.edge.quantize == "int8":
            self._ensure_features()
        self.progress(f"package {deployment.metadata.name} for the edge")
        return self.platform.edge.build(deployment, pipeline, self.expected.get(model, {}), progress=self.progress)

    def _serve(self, deployment: Deployment) -> dict[str, str]:
        model = deployment.spec.model.name
        self.progress(f"serve {deployment.metadata.name}")
        return self.platform.serving.deploy(
            deployment, features=[], expected=self.expected.get(model, {}), lookup=self._lookup(deployment)
        )

    def _lookup(self, deployment: Deployment) -> dict[str, Any] | None:
        """Where the Deployment's server looks entity keys up (the applied feature repository), if anywhere."""
        if not FeatureStoreEngine.repo_files(self.rendered):
            return None
        return lookup_settings(self.graph, deployment, repo=str(self.paths.feature_repo))
