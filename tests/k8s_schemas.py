"""Validate rendered Kubernetes manifests against the real consumers' schemas (test helper).

validate_core(obj) -> list[str]: core kinds, the official Kubernetes OpenAPI schemas shipped
    by kubernetes-validate, strict (unknown fields refused), every error not just the first.
validate_crd(obj, crd_path) -> list[str]: a custom resource against a CRD file's
    openAPIV3Schema (KServe, Argo CD from ../shared/schemas), closed so typos are caught as
    the API server's strict field validation would.
"""

from __future__ import annotations

import copy
import functools
import json
import re
from importlib import resources as importlib_resources

import jsonschema
import kubernetes_validate
import yaml
from referencing import Registry, Resource

_Loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml: ~10x faster on 2 MB CRDs


def _fmt(err: jsonschema.ValidationError, prefix: str = "") -> str:
    path = "/".join([prefix] * bool(prefix) + [str(p) for p in err.absolute_path]) or "<root>"
    return f"{path}: {err.message}"


# --------------------------------------------------------------------------- core kinds
@functools.cache
def _core_registry(version: str) -> tuple[str, Registry]:
    """kubernetes-validate re-reads + re-parses the 1.8 MB _definitions.json on EVERY
    validate() call (no caching). We load it once per version."""
    d = importlib_resources.files("kubernetes_validate") / "kubernetes-json-schema" / f"v{version}-local-strict"
    defs = json.loads((d / "_definitions.json").read_text())
    return str(d), Resource.from_contents(defs) @ Registry()


@functools.cache
def _core_validator(version: str, kind: str, api_version: str):
    _, registry = _core_registry(version)
    # same file naming as kubernetes_validate.utils.validate: rbac.authorization.k8s.io/v1 -> rbac-v1
    api = re.sub(r"^([^./]*)(?:\.[^/]*)?/", r"\1-", api_version)
    p = (
        importlib_resources.files("kubernetes_validate")
        / "kubernetes-json-schema"
        / f"v{version}-local-strict"
        / f"{kind.lower()}-{api}.json"
    )
    if not p.is_file():
        return None
    schema = json.loads(p.read_text())
    return jsonschema.Draft202012Validator(schema, registry=Resource.from_contents(schema) @ registry)


def validate_core(obj: dict, k8s_version: str | None = None) -> list[str]:
    """Strict (unknown fields refused) validation of a core/built-in kind. Returns ALL errors
    (kubernetes_validate.validate() raises only the first)."""
    version = (k8s_version or kubernetes_validate.latest_version()).lstrip("v")  # '1.37.0'
    if version.count(".") == 1:
        version += ".0"  # schema dirs are v<major>.<minor>.0-local-strict
    for k in ("apiVersion", "kind"):
        if not isinstance(obj.get(k), str):
            return [f"{k}: missing"]
    v = _core_validator(version, obj["kind"], obj["apiVersion"])
    if v is None:
        return [
            f"no schema for {obj['apiVersion']}/{obj['kind']} in Kubernetes {version} (a CRD kind? use validate_crd)"
        ]
    return [_fmt(e) for e in sorted(v.iter_errors(obj), key=lambda e: list(map(str, e.absolute_path)))]


# --------------------------------------------------------------------------- CRDs
def _structural(s, closed: bool):
    """Translate a CRD openAPIV3Schema node into plain JSON Schema, in place.
    - nullable: true            -> add "null" to type
    - x-kubernetes-int-or-string without anyOf -> anyOf [integer, string]
    - x-kubernetes-preserve-unknown-fields -> leave the node open (no additionalProperties)
    - closed=True: every node with 'properties' and no 'additionalProperties' gets
      additionalProperties: false (what the API server does: pruning / strict field validation)
    """
    if isinstance(s, list):
        for x in s:
            _structural(x, closed)
        return
    if not isinstance(s, dict):
        return
    if s.get("nullable") and "type" in s:
        s["type"] = [s["type"], "null"]
    if s.get("x-kubernetes-int-or-string") and not any(k in s for k in ("anyOf", "oneOf", "type")):
        s["anyOf"] = [{"type": "integer"}, {"type": "string"}]
    if (
        closed
        and "properties" in s
        and "additionalProperties" not in s
        and not s.get("x-kubernetes-preserve-unknown-fields")
    ):
        s["additionalProperties"] = False
    for k in ("properties", "patternProperties", "definitions"):
        for sub in (s.get(k) or {}).values():
            _structural(sub, closed)
    for k in ("items", "additionalProperties", "not"):
        if isinstance(s.get(k), (dict, list)):
            _structural(s[k], closed)
    for k in ("anyOf", "allOf", "oneOf"):
        if k in s:
            _structural(s[k], closed)


_FORMATS = jsonschema.FormatChecker()


@_FORMATS.checks("int32")
def _int32(v):
    return not isinstance(v, int) or -(2**31) <= v < 2**31


@_FORMATS.checks("int64")
def _int64(v):
    return not isinstance(v, int) or -(2**63) <= v < 2**63


@functools.cache
def _load_crd(crd_path: str) -> dict:
    with open(crd_path, encoding="utf-8") as handle:
        docs = [d for d in yaml.load_all(handle, Loader=_Loader) if d]
    crds = [d for d in docs if d.get("kind") == "CustomResourceDefinition"]
    if len(crds) != 1:
        raise ValueError(f"{crd_path}: expected exactly one CustomResourceDefinition, got {len(crds)}")
    return crds[0]


@functools.cache
def _crd_validator(crd_path: str, version: str, closed: bool):
    crd = _load_crd(crd_path)
    for v in crd["spec"]["versions"]:
        if v["name"] == version:
            schema = copy.deepcopy(v["schema"]["openAPIV3Schema"])
            # every object has these; some CRDs (Istio's) leave them out of the schema and the API server adds them
            for field in ("apiVersion", "kind"):
                schema["properties"].setdefault(field, {"type": "string"})
            schema["properties"].setdefault("metadata", {"type": "object"})
            _structural(schema, closed)
            # OpenAPI v3.0 subset used by CRDs: no $ref, no boolean exclusiveMinimum -> any draft works;
            # Draft4 is closest to OpenAPI 3.0 semantics. Formats are not asserted unless a checker is given.
            return jsonschema.Draft4Validator(schema, format_checker=_FORMATS)
    raise KeyError(version)


def validate_crd(obj: dict, crd_path: str, closed: bool = True, check_metadata: bool = True) -> list[str]:
    """Validate a custom resource against the CRD at crd_path. closed=True rejects unknown fields."""
    crd = _load_crd(crd_path)
    group, kind = crd["spec"]["group"], crd["spec"]["names"]["kind"]
    api = obj.get("apiVersion", "")
    if "/" not in api or api.split("/")[0] != group:
        return [f"apiVersion: {api!r} is not in group {group}"]
    if obj.get("kind") != kind:
        return [f"kind: {obj.get('kind')!r} != {kind}"]
    version = api.split("/", 1)[1]
    served = {v["name"]: v.get("served", False) for v in crd["spec"]["versions"]}
    if not served.get(version):
        return [f"apiVersion: version {version!r} not served by CRD (served: {[k for k, s in served.items() if s]})"]
    errs = [
        _fmt(e)
        for e in sorted(
            _crd_validator(crd_path, version, closed).iter_errors(obj), key=lambda e: list(map(str, e.absolute_path))
        )
    ]
    if check_metadata:
        # CRD schemas say only `metadata: {type: object}`; the API server validates ObjectMeta itself.
        _, reg = _core_registry(kubernetes_validate.latest_version())
        meta = jsonschema.Draft202012Validator(
            {
                "$ref": "https://kubernetes.io/api/_definitions.json#/$defs/io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta"
            },
            registry=reg,
        )
        errs += [_fmt(e, "metadata") for e in meta.iter_errors(obj.get("metadata", {}))]
        if not (obj.get("metadata") or {}).get("name"):
            errs.append("metadata/name: required")
        if crd["spec"].get("scope") == "Namespaced" and not (obj.get("metadata") or {}).get("namespace"):
            errs.append("metadata/namespace: not set (Namespaced kind; will default to the kubectl context namespace)")
    return errs
