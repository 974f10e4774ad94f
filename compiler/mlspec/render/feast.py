"""A Feast feature repository per environment: feature_store.yaml plus the definitions, for `feast apply`.

Local environments get a file registry and a SQLite online store under the
environment's data folder; team environments a SQL registry, Redis or PostgreSQL
online store and PostgreSQL offline store. Connection details are never written:
they are ``${MLSPEC_SECRET_<REF>_<KEY>}`` variables (Feast expands environment
variables in feature_store.yaml before parsing it) that the deployer fills from the
``connection`` secret reference; see :data:`CONNECTION_KEYS` and docs/team-stores.md.
Each environment is its own Feast ``project``, so environments can share one registry
database and online store without touching each other's objects.
"""

from __future__ import annotations

import re
from typing import Any, ClassVar

from mlspec.diagnostics import Diagnostic
from mlspec.render.base import Artifact, RenderContext, RenderOutput, reuse
from mlspec.render.refused import refused_source_type
from mlspec.render.serialize import to_yaml
from mlspec.render.templating import identifier, render_template
from mlspec.resolve.graph import ResolvedGraph
from mlspec.runtime.context import secret_variable
from mlspec.spec.base import duration_seconds
from mlspec.spec.datasource import DataSource, FileSource, ObjectStoreSource
from mlspec.spec.entity import Entity
from mlspec.spec.environment import Environment
from mlspec.spec.features import FeatureService, FeatureView
from mlspec.spec.validate import ParsedSpec

# This folder is <root>/rendered/<environment>/feast; Feast resolves store paths against it.
TO_PROJECT_ROOT = "../../.."
DTYPES = {
    "int32": "Int32", "int64": "Int64", "float32": "Float32", "float64": "Float64", "string": "String",
    "bool": "Bool", "bytes": "Bytes", "unix_timestamp": "UnixTimestamp",
    "int32_list": "Array(Int32)", "int64_list": "Array(Int64)", "float32_list": "Array(Float32)",
    "float64_list": "Array(Float64)", "string_list": "Array(String)",
}  # fmt: skip
VALUE_TYPES = {"int64": "INT64", "string": "STRING"}
# What each key of a team connection secret holds (the variable is MLSPEC_SECRET_<REF>_<KEY>).
CONNECTION_KEYS = {
    "REGISTRY_URL": "SQL registry: SQLAlchemy URL, postgresql+psycopg://user:password@host:port/database",
    "REDIS": "Redis online store: host:port[,db=0][,password=...][,ssl=true]",
    "PG_HOST": "PostgreSQL online/offline store: host",
    "PG_PORT": "PostgreSQL online/offline store: port",
    "PG_DATABASE": "PostgreSQL online/offline store: database",
    "PG_USER": "PostgreSQL online/offline store: user",
    "PG_PASSWORD": "PostgreSQL online/offline store: password (non-empty)",
}
# libpq sslmode for the PostgreSQL stores, from the environment's encryption.tls.
SSLMODES = {"required": "require", "preferred": "prefer", "disabled": "disable"}
# File paths an offline store reads from object storage (pyarrow/fsspec schemes), not from a disk.
REMOTE_PATH = re.compile(r"^(s3|gs|az|abfss?)://")
AZURE_SCHEMES = ("az", "abfs", "abfss")  # read by adlfs, which the runtime image carries
_PLACEHOLDER_LINE = re.compile(r"^(\s*[a-z_]+): (\$\{[A-Z0-9_]+\})$", re.MULTILINE)


def reads_in_cluster(env: Environment) -> bool:
    """Whether the environment's offline store is read in its cluster (by Kubeflow pipeline steps, or by the Feast
    Jobs Argo CD runs), where no repository checkout exists: its sources must be object storage or a warehouse."""
    targets = env.spec.targets
    return targets.kubernetes is not None and (targets.pipelines == "kubeflow" or targets.gitops is not None)


def connection_variables(ref: str, keys: list[str] | None = None) -> dict[str, str]:
    """The variables a deployer sets for a connection secret, with what each holds (all keys by default)."""
    variable = secret_variable(ref)
    return {f"{variable}_{key}": CONNECTION_KEYS[key] for key in keys or CONNECTION_KEYS}


def connection_keys(feature_store_yaml: str) -> list[str]:
    """The connection keys a rendered ``feature_store.yaml`` names (its ``${MLSPEC_SECRET_<REF>_<KEY>}``)."""
    pattern = r"\$\{MLSPEC_SECRET_\w+?_(" + "|".join(CONNECTION_KEYS) + r")\}"
    return sorted(set(re.findall(pattern, feature_store_yaml)))


def quote_placeholders(text: bytes) -> bytes:
    """Single-quote values that are exactly one ``${VAR}``: Feast substitutes variables into the text before
    parsing the YAML, so a quoted value keeps ``#``, ``: `` and leading ``@``/``%`` in a secret intact."""
    return _PLACEHOLDER_LINE.sub(r"\1: '\2'", text.decode()).encode()


def feast_name(name: str) -> str:
    """Feast object names: ``-`` becomes ``_`` (Feast's SQLite online store cannot take ``-`` in table names)."""
    return name.replace("-", "_")


def feast_project(project: str, environment: str) -> str:
    """Feast project names allow letters, digits and underscores."""
    return re.sub(r"[^A-Za-z0-9_]", "_", f"{project}_{environment}")


class _Unsupported(Exception):
    """A spec Feast cannot represent; the diagnostics say which (never cached)."""


class FeastRenderer:
    """Renders ``feast/feature_store.yaml`` and ``feast/features.py``."""

    name: ClassVar[str] = "feast"
    version: ClassVar[str] = "3"

    def render(self, graph: ResolvedGraph, context: RenderContext) -> RenderOutput:
        """The feature repository of the environment."""
        out = RenderOutput()
        specs = [s for kind in ("DataSource", "Entity", "FeatureView", "FeatureService") for s in graph.of_kind(kind)]
        key = [graph.environment.digest, *(graph.fingerprint(s.ref) for s in specs)]

        def build() -> dict[str, bytes]:
            definitions = self._definitions(graph, context, out.diagnostics)
            if definitions is None:
                raise _Unsupported
            return {
                "feast/feature_store.yaml": quote_placeholders(to_yaml(self._config(graph, context))),
                "feast/features.py": definitions.encode(),
            }

        try:
            files = reuse(context, f"{self.name}/{self.version}", key, build)
        except _Unsupported:
            return out
        sources = {
            "feast/feature_store.yaml": (graph.environment.ref,),
            "feast/features.py": tuple(s.ref for s in specs),
        }
        out.artifacts.extend(Artifact(path, content, self.name, sources[path]) for path, content in files.items())
        return out

    def _config(self, graph: ResolvedGraph, context: RenderContext) -> dict[str, Any]:
        store = graph.env.spec.targets.feature_store
        data_dir = graph.env.spec.data_dir or f".mlspec/{graph.name}"
        local = f"{TO_PROJECT_ROOT}/{data_dir}/feast"
        variable = secret_variable(store.connection) if store.connection else "MLSPEC_SECRET_MISSING"
        postgres = {
            "type": "postgres",
            "host": f"${{{variable}_PG_HOST}}",
            "port": f"${{{variable}_PG_PORT}}",
            "database": f"${{{variable}_PG_DATABASE}}",
            "user": f"${{{variable}_PG_USER}}",
            "password": f"${{{variable}_PG_PASSWORD}}",
            "sslmode": SSLMODES[graph.env.spec.encryption.tls],
        }
        config: dict[str, Any] = {"project": feast_project(context.project, graph.name), "provider": "local"}
        if store.registry == "sql":
            config["registry"] = {
                "registry_type": "sql",
                "path": f"${{{variable}_REGISTRY_URL}}",
                "cache_ttl_seconds": 60,
            }
        else:
            config["registry"] = {"registry_type": "file", "path": f"{local}/registry.db"}
        if store.online == "sqlite":
            config["online_store"] = {"type": "sqlite", "path": f"{local}/online_store.db"}
        elif store.online == "redis":
            config["online_store"] = {"type": "redis", "connection_string": f"${{{variable}_REDIS}}"}
        else:
            config["online_store"] = dict(postgres)
        if store.offline == "postgres":
            config["offline_store"] = dict(postgres)
        else:
            config["offline_store"] = {"type": store.offline}
        config["entity_key_serialization_version"] = 3
        return config

    def _definitions(self, graph: ResolvedGraph, context: RenderContext, problems: list[Diagnostic]) -> str | None:
        entities = [self._entity(s, problems) for s in graph.specs(Entity)]
        offline = graph.env.spec.targets.feature_store.offline
        shared = graph.name if reads_in_cluster(graph.env) else None
        sources = [self._source(s, offline, shared, problems) for s in graph.specs(DataSource)]
        if problems:
            return None
        join_keys = {
            spec.name: (e["join_key"], e["dtype"]) for spec, e in zip(graph.specs(Entity), entities, strict=True)
        }
        views = [self._view(s, join_keys) for s in graph.specs(FeatureView)]
        services = [self._service(s) for s in graph.specs(FeatureService)]
        return render_template(
            "feast_definitions.py.j2",
            version=context.mlspec_version,
            environment=graph.name,
            entities=entities,
            sources=[s for s in sources if s],
            views=views,
            services=services,
        )

    @staticmethod
    def _entity(spec: ParsedSpec[Entity], problems: list[Diagnostic]) -> dict[str, Any]:
        model = spec.model
        if len(model.spec.join_keys) != 1:
            problems.append(
                Diagnostic(
                    "unsupported-by-target",
                    f"Feast entities have exactly one join key; '{spec.name}' has {len(model.spec.join_keys)}",
                    spec.document.locate(("spec", "join_keys")),
                    path="spec.join_keys",
                    hint="combine the keys into one column in the source, or split the entity",
                )
            )
        return {
            "var": identifier(spec.name, "entity"),
            "name": feast_name(spec.name),
            "join_key": model.spec.join_keys[0],
            "value_type": VALUE_TYPES[model.spec.value_type],
            "dtype": DTYPES[model.spec.value_type],
            "description": model.spec.description or model.metadata.description or "",
            "owner": model.metadata.owner or "",
        }

    @staticmethod
    def _source(
        spec: ParsedSpec[DataSource], offline: str, shared: str | None, problems: list[Diagnostic]
    ) -> dict[str, Any] | None:
        """The source's template data; ``shared`` names an environment that reads it in a cluster, never from disk."""
        model = spec.model
        source = model.spec
        refused = refused_source_type(spec, source)  # postgres, kafka: no target reads them
        if refused is not None:
            problems.append(refused)
            return None
        if offline == "postgres":
            message = f"a PostgreSQL offline store cannot read {source.type} source '{spec.name}'"
            hint = "use offline: file (parquet, also on object stores) in this environment"
            location = spec.document.locate(("spec", "type"))
            problems.append(Diagnostic("unsupported-by-target", message, location, path="spec.type", hint=hint))
            return None
        assert isinstance(source, (FileSource, ObjectStoreSource))
        on_disk = isinstance(source, FileSource) and not REMOTE_PATH.match(source.path)
        if shared is not None and isinstance(source, FileSource) and on_disk:
            problems.append(_from_disk(spec, source, shared))
            return None
        unreadable = _unreadable_in_cluster(spec, source) if shared is not None else None
        if unreadable is not None:
            problems.append(unreadable)
            return None
        relative = on_disk and isinstance(source, FileSource) and not source.path.startswith("/")
        return {
            "var": identifier(spec.name, "source"),
            "name": feast_name(spec.name),
            "path": source.path if isinstance(source, FileSource) else source.uri,
            "relative": relative,
            "timestamp_field": source.timestamp_field,
            "created_timestamp_field": source.created_timestamp_field,
            "description": model.metadata.description or "",
            "tags": {"classification": source.classification, "region": source.region},
            "owner": model.metadata.owner or "",
        }

    @staticmethod
    def _view(spec: ParsedSpec[FeatureView], join_keys: dict[str, tuple[str, str]]) -> dict[str, Any]:
        model = spec.model
        keys = [join_keys[e] for e in model.spec.entities]
        fields = [{"name": key, "dtype": dtype, "description": ""} for key, dtype in keys]
        fields += [
            {"name": f.name, "dtype": DTYPES[f.dtype], "description": f.description or ""} for f in model.spec.features
        ]
        return {
            "var": identifier(spec.name, "view"),
            "name": feast_name(spec.name),
            "entities": [identifier(e, "entity") for e in model.spec.entities],
            "ttl_seconds": duration_seconds(model.spec.ttl),
            "fields": fields,
            "online": model.spec.online,
            "source": identifier(model.spec.source, "source"),
            "tags": dict(model.spec.tags),
            "owner": model.metadata.owner or "",
        }

    @staticmethod
    def _service(spec: ParsedSpec[FeatureService]) -> dict[str, Any]:
        model = spec.model
        return {
            "var": identifier(spec.name, "service"),
            "name": feast_name(spec.name),
            "features": [{"var": identifier(s.view, "view"), "fields": s.fields} for s in model.spec.features],
            "tags": {},
            "owner": model.metadata.owner or "",
        }


def _unreadable_in_cluster(spec: ParsedSpec[DataSource], source: FileSource | ObjectStoreSource) -> Diagnostic | None:
    """A location the runtime image cannot read: only Azure Blob (adlfs) is in it, with its account named."""
    field = "path" if isinstance(source, FileSource) else "uri"
    location = source.path if isinstance(source, FileSource) else source.uri
    scheme = location.split("://", 1)[0]
    if scheme in AZURE_SCHEMES:
        if "@" in location.split("://", 1)[1].split("/", 1)[0]:
            return None
        why = "names no storage account, and a pod has no default one"
        fix = f"name the account: {scheme}://<container>@<account>.blob.core.windows.net/<path>"
    else:
        why = (
            f"is {scheme}://, which the runtime image cannot read (it carries adlfs for Azure Blob; s3fs cannot be "
            "installed beside the pinned boto3, whose botocore aiobotocore pins differently, and gcsfs is not in it)"
        )
        fix = "keep this environment's offline data in Azure Blob: az://<container>@<account>.blob.core.windows.net/..."
    return Diagnostic(
        "unsupported-by-target",
        f"DataSource '{spec.name}' is read by Feast in the cluster, but its {field} {location} {why}",
        spec.document.locate(("spec", field)),
        path=f"spec.{field}",
        hint=fix,
    )


def _from_disk(spec: ParsedSpec[DataSource], source: FileSource, environment: str) -> Diagnostic:
    """A shared environment's offline store would read a file of the repository checkout (or a pod's disk)."""
    return Diagnostic(
        "unsupported-by-target",
        f"environment '{environment}' reads its Feast offline store in its cluster, which cannot read DataSource "
        f"'{spec.name}' from {source.path} (a repository checkout or a machine's disk)",
        spec.document.locate(("spec", "path")),
        path="spec.path",
        hint=f"put the data in Azure Blob and point '{environment}' at it with an override: "
        f"{{target: DataSource/{spec.name}, patch: {{spec: {{path: "
        f"'az://<container>@<account>.blob.core.windows.net/{spec.name}.parquet'}}}}}}",
    )
