"""The server's configuration: plain frozen dataclasses read from (and written to) one JSON file."""

from __future__ import annotations

import itertools
import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from mlspec.serving.auth import AuthConfig, AuthConfigError

STRATEGIES = ("direct", "canary", "ab", "shadow", "blue_green")
STABLE = "stable"


class ConfigError(ValueError):
    """The serving configuration is missing a field or holds a wrong value."""


@dataclass(frozen=True)
class VariantConfig:
    """One model variant: its traffic name, registry alias and version, and the verified ONNX file."""

    name: str
    alias: str
    version: str
    path: str
    sha256: str


@dataclass(frozen=True)
class LogConfig:
    """Sampled request logging (read later by monitoring)."""

    path: str
    sample_rate: float = 0.1
    enabled: bool = True
    seal_key: str | None = None  # a key reference (file://, kms://): each flush is written as an envelope


@dataclass(frozen=True)
class LookupConfig:
    """Where the Deployment's FeatureService is looked up: its Feast name, the join keys a request carries, and
    the feature repository (``repo``, in-process) or the feature server (``url``)."""

    feature_service: str
    entities: tuple[str, ...]
    repo: str | None = None
    url: str | None = None
    timeout: float = 2.0
    missing: str = "error"  # or "impute": the model fills an absent entity's features with its training means

    @classmethod
    def from_dict(cls, raw: Any) -> LookupConfig:
        """The ``lookup`` section of a serving configuration; ValueError saying what is wrong."""
        if not isinstance(raw, dict):
            raise ValueError("'lookup' must be an object")
        service, entities = raw.get("feature_service"), raw.get("entities")
        if not isinstance(service, str) or not service:
            raise ValueError("'lookup.feature_service' must name the Feast feature service")
        if not isinstance(entities, list) or not entities or not all(isinstance(e, str) and e for e in entities):
            raise ValueError("'lookup.entities' must list the join keys a request carries")
        repo, url = raw.get("repo"), raw.get("url")
        if (repo is None) == (url is None):
            raise ValueError("'lookup' needs exactly one of 'repo' (a Feast repository) or 'url' (a feature server)")
        timeout = raw.get("timeout", 2.0)
        if isinstance(timeout, bool) or not isinstance(timeout, int | float) or not 0 < timeout <= 60:
            raise ValueError("'lookup.timeout' must be seconds from 0 to 60")
        missing = raw.get("missing", "error")
        if missing not in ("error", "impute"):
            raise ValueError(f"'lookup.missing' must be error or impute, not {missing!r}")
        return cls(service, tuple(entities), repo, url, float(timeout), missing)


@dataclass(frozen=True)
class TlsConfig:
    """The server's certificate and key (PEM files; the key 0600) and the CA that issued it (for clients)."""

    cert_file: str
    key_file: str
    ca_file: str | None = None


@dataclass(frozen=True)
class ServingConfig:
    """Everything the server needs for one Deployment. ``rollout`` is the spec's rollout as JSON."""

    deployment: str
    model_name: str
    features: tuple[str, ...]
    variants: tuple[VariantConfig, ...]
    host: str = "127.0.0.1"
    port: int = 8601
    grpc_port: int | None = None  # the Open Inference Protocol over gRPC on host:grpc_port (None: off, 0: any)
    device: str = "cpu"
    fallback: str = "cpu"
    batching: bool = True
    rollout: dict[str, Any] = field(default_factory=lambda: {"strategy": "direct"}, hash=False)
    log: LogConfig | None = None
    status_path: str | None = None
    threads: int = 1  # onnxruntime intra-op threads per session
    max_batch: int = 256  # rows per session.run when batching
    max_connections: int = 4096  # more are answered 503 and closed
    request_timeout: float = 30.0  # seconds a client has to send a whole request once it started (else 408)
    idle_timeout: float = 75.0  # seconds a kept-alive connection may stay silent
    max_buffered: int = 256 * 1024 * 1024  # bytes of request bodies all connections may hold at once (else 503)
    auth: AuthConfig | None = None  # None: every caller is served (the spec did not ask for authentication)
    tls: TlsConfig | None = None  # None: plain HTTP and gRPC (endpoint.tls: false)
    lookup: LookupConfig | None = None  # None: callers send features; else entity keys work too

    @property
    def scheme(self) -> str:
        """``https`` when the server speaks TLS, else ``http``."""
        return "https" if self.tls is not None else "http"

    @property
    def strategy(self) -> str:
        """The rollout strategy's name."""
        return str(self.rollout["strategy"])

    def variant(self, name: str) -> VariantConfig | None:
        """The variant called ``name``, if any."""
        return next((v for v in self.variants if v.name == name), None)

    def to_json(self) -> str:
        """The configuration as JSON text (the inverse of from_json)."""
        data = asdict(self)
        data["features"] = list(self.features)
        data["variants"] = [asdict(v) for v in self.variants]
        data["auth"] = self.auth.to_dict() if self.auth is not None else None
        data["tls"] = asdict(self.tls) if self.tls is not None else None
        data["lookup"] = asdict(self.lookup) if self.lookup is not None else None
        return json.dumps(data, indent=2, sort_keys=True) + "\n"

    @classmethod
    def from_json(cls, text: str | bytes) -> ServingConfig:
        """Parse and check a configuration; raise ConfigError saying what is wrong."""
        try:
            data = json.loads(text)
        except ValueError as exc:
            raise ConfigError(f"serving config is not valid JSON: {exc}") from exc
        return cls.from_dict(data)

    @classmethod
    def load(cls, path: str | Path) -> ServingConfig:
        """Read and check the configuration file at ``path``."""
        try:
            text = Path(path).read_bytes()
        except OSError as exc:
            raise ConfigError(f"cannot read serving config {path}: {exc.strerror or exc}") from exc
        return cls.from_json(text)

    @classmethod
    def from_dict(cls, data: Any) -> ServingConfig:
        """Build a configuration from decoded JSON; raise ConfigError saying what is wrong."""
        if not isinstance(data, dict):
            raise ConfigError("serving config must be a JSON object")
        known = set(cls.__dataclass_fields__)
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(f"serving config has unknown field(s): {', '.join(unknown)}")
        for key in ("deployment", "model_name", "features", "variants"):
            if key not in data:
                raise ConfigError(f"serving config needs '{key}'")
        features = data["features"]
        if not isinstance(features, list) or not features or not all(isinstance(f, str) for f in features):
            raise ConfigError("'features' must be a non-empty list of feature names")
        if len(set(features)) != len(features):
            raise ConfigError("'features' names a feature twice")
        variants = tuple(_variant(v, i) for i, v in enumerate(_list(data["variants"], "variants")))
        if not variants:
            raise ConfigError("'variants' must list at least one model variant")
        names = [v.name for v in variants]
        if len(set(names)) != len(names):
            raise ConfigError(f"variant names must differ: {names}")
        log = data.get("log")
        config = cls(
            deployment=_str(data, "deployment"),
            model_name=_str(data, "model_name"),
            features=tuple(features),
            variants=variants,
            host=_str(data, "host", "127.0.0.1"),
            port=_int(data, "port", 8601, 0, 65535),
            grpc_port=_grpc_port(data),
            device=_choice(data, "device", "cpu", ("cpu", "gpu")),
            fallback=_choice(data, "fallback", "cpu", ("cpu", "none")),
            batching=_bool(data, "batching", True),
            rollout=dict(data.get("rollout") or {"strategy": "direct"}),
            log=None if log is None else _log(log),
            status_path=data.get("status_path"),
            threads=_int(data, "threads", 1, 1, 1024),
            max_batch=_int(data, "max_batch", 256, 1, 1_000_000),
            max_connections=_int(data, "max_connections", 4096, 1, 1_000_000),
            request_timeout=_seconds(data, "request_timeout", 30.0),
            idle_timeout=_seconds(data, "idle_timeout", 75.0),
            max_buffered=_int(data, "max_buffered", 256 * 1024 * 1024, 1024 * 1024, 1 << 40),
            auth=_auth(data.get("auth")),
            tls=_tls(data.get("tls")),
            lookup=_lookup(data.get("lookup")),
        )
        _check_rollout(config)
        return config


def _list(value: Any, where: str) -> list[Any]:
    if not isinstance(value, list):
        raise ConfigError(f"'{where}' must be a list")
    return value


def _str(data: dict[str, Any], key: str, default: str | None = None) -> str:
    value = data.get(key, default)
    if not isinstance(value, str) or not value:
        raise ConfigError(f"'{key}' must be a non-empty string")
    return value


def _int(data: dict[str, Any], key: str, default: int, low: int, high: int) -> int:
    value = data.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise ConfigError(f"'{key}' must be an integer from {low} to {high}, not {value!r}")
    return value


def _grpc_port(data: dict[str, Any]) -> int | None:
    if data.get("grpc_port") is None:
        return None
    port = _int(data, "grpc_port", 0, 0, 65535)
    if port and port == data.get("port", 8601):
        raise ConfigError(f"'grpc_port' must differ from 'port' ({port})")
    return port


def _seconds(data: dict[str, Any], key: str, default: float) -> float:
    value = data.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value <= 86400:
        raise ConfigError(f"'{key}' must be a number of seconds above 0 (at most a day), not {value!r}")
    return float(value)


def _bool(data: dict[str, Any], key: str, default: bool) -> bool:
    value = data.get(key, default)
    if not isinstance(value, bool):
        raise ConfigError(f"'{key}' must be true or false, not {value!r}")
    return value


def _choice(data: dict[str, Any], key: str, default: str, choices: tuple[str, ...]) -> str:
    value = data.get(key, default)
    if value not in choices:
        raise ConfigError(f"'{key}' must be one of {', '.join(choices)}, not {value!r}")
    return str(value)


def _variant(raw: Any, index: int) -> VariantConfig:
    where = f"variants[{index}]"
    if not isinstance(raw, dict):
        raise ConfigError(f"{where} must be an object")
    missing = [k for k in ("name", "path", "sha256") if k not in raw]
    if missing:
        raise ConfigError(f"{where} needs {', '.join(missing)}")
    unknown = sorted(set(raw) - {"name", "alias", "version", "path", "sha256"})
    if unknown:
        raise ConfigError(f"{where} has unknown field(s): {', '.join(unknown)}")
    sha = str(raw["sha256"]).lower()
    if len(sha) != 64 or any(c not in "0123456789abcdef" for c in sha):
        raise ConfigError(f"{where}.sha256 must be 64 hex digits")
    name = str(raw["name"])
    return VariantConfig(
        name=name,
        alias=str(raw.get("alias") or name),
        version=str(raw.get("version", "1")),
        path=str(raw["path"]),
        sha256=sha,
    )


def _tls(raw: Any) -> TlsConfig | None:
    if raw is None:
        return None
    if not isinstance(raw, dict) or not all(isinstance(raw.get(k), str) for k in ("cert_file", "key_file")):
        raise ConfigError("'tls' must be an object with 'cert_file' and 'key_file' (PEM files)")
    unknown = sorted(set(raw) - {"cert_file", "key_file", "ca_file"})
    if unknown:
        raise ConfigError(f"'tls' has unknown field(s): {', '.join(unknown)}")
    return TlsConfig(raw["cert_file"], raw["key_file"], raw.get("ca_file"))


def _auth(raw: Any) -> AuthConfig | None:
    if raw is None:
        return None
    try:
        return AuthConfig.from_dict(raw)
    except AuthConfigError as exc:
        raise ConfigError(str(exc)) from exc


def _log(raw: Any) -> LogConfig:
    if not isinstance(raw, dict) or not isinstance(raw.get("path"), str):
        raise ConfigError("'log' must be an object with a 'path'")
    rate = raw.get("sample_rate", 0.1)
    if isinstance(rate, bool) or not isinstance(rate, int | float) or not 0 <= rate <= 1 or math.isnan(rate):
        raise ConfigError(f"'log.sample_rate' must be a number from 0 to 1, not {rate!r}")
    enabled = raw.get("enabled", True)
    if not isinstance(enabled, bool):
        raise ConfigError("'log.enabled' must be true or false")
    seal = raw.get("seal_key")
    if seal is not None and (not isinstance(seal, str) or not seal.startswith(("file://", "kms://"))):
        raise ConfigError(f"'log.seal_key' must be a key reference (file://... or kms://...), not {seal!r}")
    return LogConfig(path=raw["path"], sample_rate=float(rate), enabled=enabled, seal_key=seal)


def _check_rollout(config: ServingConfig) -> None:
    rollout = config.rollout
    strategy = rollout.get("strategy")
    if strategy not in STRATEGIES:
        raise ConfigError(f"'rollout.strategy' must be one of {', '.join(STRATEGIES)}, not {strategy!r}")
    names = [v.name for v in config.variants]
    if strategy == "ab":
        arms = _list(rollout.get("variants"), "rollout.variants")
        if len(arms) < 2:
            raise ConfigError("an ab rollout needs at least two variants")
        for arm in arms:
            if not isinstance(arm, dict) or arm.get("alias") not in names:
                raise ConfigError(f"ab arm {arm!r} names no configured variant (variants: {', '.join(names)})")
            weight = arm.get("weight")
            if isinstance(weight, bool) or not isinstance(weight, int | float) or weight < 0:
                raise ConfigError(f"ab arm {arm.get('alias')!r} needs a weight >= 0")
        if sum(float(a["weight"]) for a in arms) <= 0:
            raise ConfigError("ab weights add up to 0")
        return
    if STABLE not in names:
        raise ConfigError(f"a {strategy} rollout needs a variant named '{STABLE}'")
    if len(names) > 2:
        raise ConfigError(f"a {strategy} rollout serves 'stable' and at most one challenger, not {names}")
    if strategy == "direct" and len(names) != 1:
        raise ConfigError("a direct rollout serves exactly one variant, 'stable'")
    if strategy == "canary":
        steps = _list(rollout.get("steps"), "rollout.steps")
        if not steps or any(isinstance(s, bool) or not isinstance(s, int) or not 1 <= s <= 100 for s in steps):
            raise ConfigError("'rollout.steps' must list traffic percentages from 1 to 100")
        if any(b <= a for a, b in itertools.pairwise(steps)):
            raise ConfigError("'rollout.steps' must increase")
    if strategy == "shadow":
        sample = rollout.get("sample", 100)
        if isinstance(sample, bool) or not isinstance(sample, int | float) or not 0 <= sample <= 100:
            raise ConfigError("'rollout.sample' must be a percentage")


def _lookup(raw: Any) -> LookupConfig | None:
    if raw is None:
        return None
    try:
        return LookupConfig.from_dict(raw)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
