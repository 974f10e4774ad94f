"""Rehearse an environment (``mlspec rehearse``): what Argo CD would run, in local containers, before merge.

The environment's rendered ``gitops/`` is read as a cluster would get it: the Feast apply Job, each pipeline's
compiled spec with the parameters its run-submitting hook passes, the batch pipelines, the materialization
CronJob. They run in the environment's runtime image (by digest) against stand-ins of its stores
(:mod:`mlspec.targets.rehearsal.standins`), with the sample data of another environment (``local``) put where
its offline store reads. Only what has no stand-in here changes: the MLflow server becomes a SQLite file, and
Kubernetes' Secrets become the stand-ins' addresses.
"""

from __future__ import annotations

import dataclasses
import json
import secrets
import shutil
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from mlspec.errors import MlspecError
from mlspec.render.feast import connection_keys
from mlspec.render.kserve import MODEL_NAME_ANNOTATION
from mlspec.render.secret_refs import secret_name, secret_source
from mlspec.runtime.context import RuntimeContext, is_reference, reference_variable, secret_variable
from mlspec.spec.datasource import DataSource, FileSource
from mlspec.spec.deployment import BatchDeploymentSpec, Deployment
from mlspec.targets.rehearsal.containers import (
    PodRun,
    docker_available,
    ensure_image,
    run_pipeline,
    run_pod,
    share,
)  # fmt: skip
from mlspec.targets.rehearsal.seed import Sample, prepare_store, seed
from mlspec.targets.rehearsal.standins import S3_STAND_IN_KEYS, RehearsalError, StandIns

if TYPE_CHECKING:
    from mlspec.app.options import RehearsalOptions
    from mlspec.app.project import Project
    from mlspec.resolve.graph import ResolvedGraph

Progress = Callable[[str], None]
JOB_TIMEOUT = 3600.0  # the rendered Jobs' activeDeadlineSeconds


@dataclass(frozen=True)
class RehearsalStep:
    """One thing the cluster would run, and how it went here."""

    name: str
    kind: str  # feast-apply, pipeline, batch, materialize
    ok: bool
    seconds: float
    log: str
    output: str = ""


@dataclass(frozen=True)
class RehearsalReport:
    """What a rehearsal ran, in order; it stops at the first failure."""

    environment: str
    image: str
    workdir: str
    seeded_bytes: int
    steps: list[RehearsalStep] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """Whether every step ran to completion."""
        return bool(self.steps) and all(step.ok for step in self.steps)


def _documents(content: bytes) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(content) if d]


def _cluster_graph(project: Project, environment: str) -> tuple[ResolvedGraph, dict[str, bytes]]:
    """The environment's graph and rendered files; errors when it does not render or is not a GitOps cluster."""
    session = project.session(environment)
    result = session.render()
    graph = session.graph
    if result is None or graph is None or not result.ok:
        diagnostics = tuple(result.diagnostics) if result else tuple(session.validation.diagnostics)
        raise MlspecError(f"environment '{environment}' does not render", diagnostics=diagnostics)
    targets = graph.env.spec.targets
    if targets.kubernetes is None or targets.gitops is None or targets.pipelines != "kubeflow":
        raise RehearsalError(
            f"environment '{environment}' is not a GitOps cluster with Kubeflow pipelines: nothing to rehearse",
            hint="rehearse an environment with targets.kubernetes, targets.gitops and pipelines: kubeflow "
            "(a local environment runs its pipelines on this machine already: mlspec apply)",
        )
    return graph, {a.path: a.content for a in result.artifacts}


def _samples(project: Project, graph: ResolvedGraph, sample_env: str) -> list[Sample]:
    """Each object-store source of the environment with the file ``sample_env`` reads for it."""
    local = project.resolve(sample_env).graph
    if local is None:
        raise RehearsalError(f"the sample environment '{sample_env}' does not resolve", hint="mlspec check")
    samples = []
    for spec in graph.specs(DataSource):
        source = spec.model.spec
        location = source.path if isinstance(source, FileSource) else getattr(source, "uri", None)
        if not location or "://" not in location:
            continue
        there = local.find(DataSource, spec.name)
        local_source = there.model.spec if there is not None else None
        if not isinstance(local_source, FileSource) or "://" in local_source.path:
            raise RehearsalError(
                f"DataSource '{spec.name}' has no file in environment '{sample_env}' to rehearse with",
                hint="give it a file path there, or pick another --sample-env",
            )
        samples.append(Sample(spec.name, location, project.root / local_source.path))
    return samples


@dataclass(frozen=True)
class _StandInValues:
    """What the environment's references resolve to in the rehearsal: one value per single-value reference
    (artifact store credentials, a referenced tracking URI, warehouse connections), one per key of the feature
    store connection."""

    references: dict[str, str]
    connection: str | None
    connection_keys: dict[str, str]

    def secrets(self) -> dict[str, dict[str, str]]:
        """Secret name -> key -> value, as the rendered pods read them."""
        found: dict[str, dict[str, str]] = {}
        for ref, value in self.references.items():
            source = secret_source(ref)
            if source is not None:
                found.setdefault(source[0], {})[source[1]] = value
        if self.connection:
            found[secret_name(self.connection)] = dict(self.connection_keys)
        return found

    def variables(self) -> dict[str, str]:
        """The variables a pipeline step resolves them from (only those a Secret provides in the cluster)."""
        found = {reference_variable(ref): value for ref, value in self.references.items() if secret_source(ref)}
        if self.connection:
            prefix = secret_variable(self.connection)
            found |= {f"{prefix}_{key}": value for key, value in self.connection_keys.items()}
        return found


def _stand_in_values(graph: ResolvedGraph, files: Mapping[str, bytes], standins: StandIns) -> _StandInValues:
    """Every reference of the environment with its stand-in value; a missing stand-in is a RehearsalError (the
    feature store's first, then the artifact store's, then the warehouses')."""
    env = graph.env.spec
    connection = env.targets.feature_store.connection
    if connection and connection.startswith("env://"):
        connection = None
    keys: dict[str, str] = {}
    for key in connection_keys(files.get("feast/feature_store.yaml", b"").decode()) if connection else []:
        if key == "REGISTRY_URL":
            keys[key] = standins.feast_registry
        elif key == "REDIS":
            keys[key] = standins.require("redis", "--redis", "Feast's Redis online store")
        else:  # PG_HOST, PG_PORT, ...: the PostgreSQL stores
            keys[key] = standins.postgres_parts()[key]
    references: dict[str, str] = {}
    store = env.targets.registry.artifact_store
    if store and store.credentials:
        azure = store.uri.startswith("azure://")
        where = f"the artifact store {store.uri}"
        references[store.credentials] = standins.require("azure", "--azure", where) if azure else S3_STAND_IN_KEYS
    tracking = env.targets.registry.tracking_uri
    if tracking and is_reference(tracking):
        references[tracking] = standins.tracking_uri
    for spec in graph.specs(Deployment):
        deployment = spec.model.spec
        if isinstance(deployment, BatchDeploymentSpec) and deployment.batch.sink.connection:
            url = standins.require("postgres", "--postgres", f"the warehouse of batch Deployment '{spec.name}'")
            references[deployment.batch.sink.connection] = url
    return _StandInValues(references, connection, keys)


def _hooks(files: Mapping[str, bytes], prefix: str) -> list[tuple[str, dict[str, Any], dict[str, Any]]]:
    """(pipeline, compiled spec documents, submit parameters) of each ``gitops/<prefix>*.yaml``."""
    from mlspec.runtime.submit import SubmitRequest

    found = []
    for path in sorted(p for p in files if p.startswith(f"gitops/{prefix}")):
        documents = _documents(files[path])
        version = next(d for d in documents if d["kind"] == "PipelineVersion")
        job = next(d for d in documents if d["kind"] == "Job")
        command = job["spec"]["template"]["spec"]["containers"][0]["command"]
        request = SubmitRequest.from_json(command[command.index("--request") + 1])
        found.append((request.pipeline, version["spec"], request.parameters))
    return found


def _stand_in_kms(graph: ResolvedGraph, workdir: Path) -> dict[str, str]:
    """A fresh key in the rehearsal folder for the environment's ``kms://`` key, and the variables that make
    the steps' key resolver use it (:mod:`mlspec.crypto.standin`); nothing for a file:// key or none."""
    from mlspec.crypto.keys import KEY_BYTES, PROVIDER_VARIABLE, create_secret_file
    from mlspec.crypto.standin import DIR_VARIABLE, key_file

    ref = graph.env.spec.encryption.kms_key
    if not ref or ref.startswith("file://"):
        return {}
    folder = workdir / "kms"
    create_secret_file(key_file(folder, ref), secrets.token_bytes(KEY_BYTES))
    return {PROVIDER_VARIABLE: "mlspec.crypto.standin:provider", DIR_VARIABLE: str(folder)}


def _compiled(workdir: Path, name: str, version_spec: dict[str, Any]) -> Path:
    """The PipelineVersion's compiled spec (and platform spec) as the YAML file kfp's local runner loads."""
    documents = [version_spec["pipelineSpec"]]
    if "platformSpec" in version_spec:
        documents.append(version_spec["platformSpec"])
    path = workdir / "compiled" / f"{name}.yaml"
    path.parent.mkdir(exist_ok=True)
    path.write_text(yaml.safe_dump_all(documents, sort_keys=False), encoding="utf-8")
    return path


def _stand_in_context(parameters: dict[str, Any], standins: StandIns) -> tuple[dict[str, Any], RuntimeContext]:
    """The hook's parameters with MLflow's server replaced by the stand-in (a reference is left to its Secret)."""
    context = RuntimeContext(**json.loads(parameters["environment"]))
    if not is_reference(context.tracking_uri):
        context = dataclasses.replace(context, tracking_uri=standins.tracking_uri)
    return {**parameters, "environment": context.to_json()}, context


def rehearse(
    project: Project,
    environment: str,
    standins: StandIns,
    *,
    pipelines: tuple[str, ...] = (),
    sample_env: str = "local",
    progress: Progress = lambda _: None,
) -> RehearsalReport:
    """Run the environment's Feast apply Job, pipelines (``pipelines`` only, when given), batch pipelines and
    materialization in local containers against ``standins``; stops at the first failure."""
    from mlspec.render.images import image_reference

    graph, files = _cluster_graph(project, environment)
    values = _stand_in_values(graph, files, standins)  # a missing stand-in is reported before anything starts
    secrets = values.secrets()
    image = image_reference(graph, "runtime", project.root)
    docker_available()
    ensure_image(image)
    workdir = standins.workdir
    shutil.rmtree(workdir, ignore_errors=True)
    workdir.mkdir(parents=True)
    workdir.chmod(0o755)
    progress(f"seeding the stand-in stores with '{sample_env}' data")
    seeded = seed(_samples(project, graph, sample_env), standins)
    store = graph.env.spec.targets.registry.artifact_store
    if store is not None:
        prepare_store(store.uri, standins)
    feast = {d["kind"] + ("/" + d["metadata"]["name"]): d for d in _documents(files.get("gitops/feast.yaml", b""))}
    config_maps = {d["metadata"]["name"]: d["data"] for d in feast.values() if d["kind"] == "ConfigMap"}
    extra_env = {"HOME": "/tmp", **standins.store_variables(), **_stand_in_kms(graph, workdir)}
    ca = ((standins.ca_file, str(standins.ca_file)),) if standins.ca_file else ()
    report = RehearsalReport(environment, image, str(workdir), seeded)
    share(workdir)

    def pod(kind: str, name: str, template: dict[str, Any]) -> bool:
        progress(f"running {kind} {name}")
        run = PodRun(name, template, secrets, config_maps, extra_env, ca)
        outcome = run_pod(run, workdir, JOB_TIMEOUT)
        report.steps.append(RehearsalStep(name, kind, outcome.ok, outcome.seconds, str(outcome.log)))
        return outcome.ok

    apply_job = next((d for k, d in feast.items() if k.startswith("Job/")), None)
    if apply_job is not None and not pod("feast-apply", "feast-apply", apply_job["spec"]["template"]):
        return report
    variables = {**values.variables(), **extra_env}
    repo = workdir / "feature_repo"
    repo.mkdir()
    for file, content in config_maps.get("mlspec-feast-repo", {}).items():
        (repo / file).write_text(content, encoding="utf-8")
    hooks = [("pipeline", hook) for hook in _hooks(files, "pipeline-")] + [
        ("batch", hook) for hook in _hooks(files, "batch-")
    ]
    # --pipeline NAME: those training pipelines only (no batch scoring, no materialization)
    wanted = [(kind, hook) for kind, hook in hooks if not pipelines or (kind == "pipeline" and hook[0] in pipelines)]
    for kind, (name, version_spec, parameters) in wanted:
        progress(f"running {kind} {name}")
        compiled = _compiled(workdir, name, version_spec)
        params, context = _stand_in_context(parameters, standins)
        mounts = ((repo, context.feature_repo), *ca)
        outcome = run_pipeline(name, compiled, parameters=params, workdir=workdir, environment=variables, mounts=mounts)
        report.steps.append(RehearsalStep(name, kind, outcome.ok, outcome.seconds, str(outcome.log), outcome.output))
        if not outcome.ok:
            return report
    cron = next((d for k, d in feast.items() if k.startswith("CronJob/")), None)
    if cron is not None and not pipelines and not pod("materialize", "feast-materialize",
                                                     cron["spec"]["jobTemplate"]["spec"]["template"]):  # fmt: skip
        return report
    if not pipelines:
        defaults = PodRun("serving", {}, secrets, config_maps, extra_env, ca + _kms_mounts(extra_env))
        _serve(graph, files, standins, defaults, report=report, progress=progress)
    return report


def _kms_mounts(extra_env: dict[str, str]) -> tuple[tuple[Path, str], ...]:
    """The stand-in KMS's key folder, mounted where its variable points (the serving container does not see the
    whole rehearsal folder)."""
    from mlspec.crypto.standin import DIR_VARIABLE

    folder = extra_env.get(DIR_VARIABLE)
    return ((Path(folder), folder),) if folder else ()


def _serve(
    graph: ResolvedGraph,
    files: dict[str, bytes],
    standins: StandIns,
    defaults: PodRun,
    *,
    report: RehearsalReport,
    progress: Progress,
) -> None:
    """Serve every rendered InferenceService as KServe would (see :mod:`mlspec.targets.rehearsal.serving`)."""
    from mlspec.runtime.object_store import download_version
    from mlspec.targets.base import TargetError
    from mlspec.targets.cluster.mlflow_server import MlflowServer
    from mlspec.targets.cluster.model_pins import pin_model_versions, served_folders
    from mlspec.targets.rehearsal.seed import StandInStore
    from mlspec.targets.rehearsal.serving import ServeRun, serve_once

    store = graph.env.spec.targets.registry.artifact_store
    runtimes = _documents(files.get("kubernetes/serving-runtime.yaml", b""))
    if store is None or not runtimes:
        return
    (runtime,) = runtimes
    image = runtime["spec"]["containers"][0]["image"]
    ensure_image(image)
    registry = MlflowServer(standins.tracking_uri)
    services = [d for path, content in sorted(files.items()) if path.startswith("kubernetes/")
                for d in _documents(content) if d.get("kind") == "InferenceService"]  # fmt: skip
    for isvc in services:
        name = isvc["metadata"]["name"]
        progress(f"serving {name}")
        log = standins.workdir / "logs" / f"serve-{name}.log"
        try:
            (pinned,) = pin_model_versions([isvc], registry)
            annotations = pinned["metadata"]["annotations"]
            folder = standins.workdir / "models" / name
            for variant, version in served_folders(pinned):
                download_version(StandInStore(store.uri, standins), store.uri, annotations[MODEL_NAME_ANNOTATION],
                                 version, folder / variant)  # fmt: skip
        except (TargetError, MlspecError) as exc:
            log.parent.mkdir(parents=True, exist_ok=True)
            log.write_text(f"rehearsal: {name}: {exc}\n", encoding="utf-8")
            report.steps.append(RehearsalStep(name, "serve", False, 0.0, str(log)))
            return
        outcome = serve_once(ServeRun(name, pinned, runtime, defaults), folder, standins.workdir, image)
        report.steps.append(RehearsalStep(name, "serve", outcome.ok, outcome.seconds, str(outcome.log), outcome.output))
        if not outcome.ok:
            return


def standins_for(project: Project, environment: str, options: RehearsalOptions) -> StandIns:
    """The stand-ins of a rehearsal of ``environment``, its folder under the project's ``.mlspec/rehearsal/``."""
    folder = project.home / ".mlspec" / "rehearsal"
    ca_file = Path(options.ca_file).resolve() if options.ca_file else None
    if ca_file is not None and not ca_file.is_file():
        raise RehearsalError(f"--ca-file {options.ca_file} is not a file")
    standins = StandIns(
        folder / environment, azure=options.azure, s3=options.s3, redis=options.redis, postgres=options.postgres,
        ca_file=ca_file,
    )  # fmt: skip
    folder.mkdir(parents=True, exist_ok=True)
    folder.chmod(0o700)  # sample data and connection strings: yours only
    return standins
