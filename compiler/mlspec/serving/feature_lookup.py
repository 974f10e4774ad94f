"""Entity-keyed inference: the server looks a request's features up in the online store by entity key.

A Deployment names its FeatureService, so a caller need not know the model's feature order or Feast's names: it
sends the entity keys as the request's inputs, one 1-D tensor per join key of the service's entities::

    {"inputs": [{"name": "customer_id", "shape": [2], "datatype": "INT64", "data": [100001, 100002]}]}

and the server fetches the service's features for those entities and answers as if the caller had sent them, in
the model's feature order. Two ways to reach the online store, with one answer:

* ``repo``: Feast's SDK in the server's process on the environment's feature repository (the laptop: its SQLite
  online store; the server runs where Feast is installed);
* ``url``: Feast's feature server (``feast serve``, ``POST /get-online-features``), what a cluster runs beside its
  Redis or PostgreSQL online store, so the slim serving image needs no Feast.

An entity the online store does not hold (or holds only past its view's ``ttl``) is never guessed silently: the
request is answered 404 naming the rows and keys and no row of it is scored, or, when the Deployment says
``missing_entities: impute``, its features go to the model as missing values, which mlspec's models fill with the
training split's means (the imputation they learned with). The lookup runs off the event loop.
"""

from __future__ import annotations

import json
import math
import urllib.error
import urllib.request
from typing import Any, Protocol

import numpy as np

from mlspec.serving.config import LookupConfig
from mlspec.serving.protocol import ProtocolError

INT_TYPES = ("INT64", "INT32", "INT16", "INT8", "UINT64", "UINT32", "UINT16", "UINT8")


class LookupFailed(Exception):
    """The features could not be fetched: ``status`` is what the caller is answered (404 missing, 503 store)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def entity_keys(doc: Any, entities: tuple[str, ...]) -> dict[str, list[Any]] | None:
    """The entity keys an infer request document carries, or None when it carries features instead; raise
    ProtocolError when it mixes them or the keys do not line up."""
    inputs = doc.get("inputs") if type(doc) is dict else None
    if type(inputs) is not list or not inputs:
        return None
    names = [i.get("name") if type(i) is dict else None for i in inputs]
    keyed = [n for n in names if n in entities]
    if not keyed:
        return None
    if len(keyed) != len(names) or set(keyed) != set(entities) or len(set(keyed)) != len(keyed):
        raise ProtocolError(
            f"an entity-keyed request sends exactly the join keys {', '.join(entities)}, one tensor each, and "
            f"nothing else; got inputs {', '.join(map(str, names))}"
        )
    keys: dict[str, list[Any]] = {}
    for tensor in inputs:
        name, data = tensor["name"], tensor.get("data")
        if isinstance(data, np.ndarray):  # binary tensor data or gRPC contents
            data = data.reshape(-1).tolist()
        if not isinstance(data, list) or not data or any(isinstance(v, list | dict) for v in data):
            raise ProtocolError(f"input {name!r}: 'data' must be a flat list of keys, one per row")
        if tensor.get("datatype") in INT_TYPES and not all(type(v) is int for v in data):
            raise ProtocolError(f"input {name!r}: {tensor.get('datatype')} keys must be integers")
        keys[name] = data
    lengths = {len(v) for v in keys.values()}
    if len(lengths) != 1:
        raise ProtocolError(f"the entity key inputs must have as many rows each, not {sorted(lengths)}")
    return keys


class Lookup(Protocol):
    """Fetches feature columns (name -> one value per row, None when missing) for entity keys."""

    def fetch(self, keys: dict[str, list[Any]]) -> dict[str, list[Any]]:
        """The service's features for ``keys``; LookupFailed(503) when the online store cannot be asked."""
        ...


class FeastSdkLookup:
    """Feast's SDK on a feature repository, in this process."""

    def __init__(self, config: LookupConfig) -> None:
        """A lookup on ``config.repo`` (the store is opened on first use)."""
        self.config = config
        self._store: Any = None
        self._service: Any = None

    def fetch(self, keys: dict[str, list[Any]]) -> dict[str, list[Any]]:
        """The service's features for ``keys``."""
        try:
            if self._store is None:
                from feast import FeatureStore

                self._store = FeatureStore(repo_path=str(self.config.repo))
                self._service = self._store.get_feature_service(self.config.feature_service)
            rows = [dict(zip(keys, values, strict=True)) for values in zip(*keys.values(), strict=True)]
            found: dict[str, list[Any]] = self._store.get_online_features(
                features=self._service, entity_rows=rows
            ).to_dict()
            return found
        except Exception as exc:  # Feast raises its own and its stores' types
            raise LookupFailed(503, f"the online store could not be read: {exc}") from exc


class FeatureServerLookup:
    """Feast's feature server over HTTP (``POST <url>/get-online-features``)."""

    def __init__(self, config: LookupConfig) -> None:
        """A lookup against ``config.url``."""
        self.config = config
        self.endpoint = str(config.url).rstrip("/") + "/get-online-features"

    def fetch(self, keys: dict[str, list[Any]]) -> dict[str, list[Any]]:
        """The service's features for ``keys``, from the feature server's answer."""
        body = json.dumps({"feature_service": self.config.feature_service, "entities": keys}).encode()
        request = urllib.request.Request(self.endpoint, body, {"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=self.config.timeout) as reply:  # the configured server
                answer = json.loads(reply.read())
        except urllib.error.HTTPError as exc:
            detail = exc.read()[:300].decode("utf-8", "replace")
            raise LookupFailed(503, f"the feature server answered HTTP {exc.code}: {detail}") from exc
        except (OSError, ValueError) as exc:
            raise LookupFailed(503, f"the feature server at {self.endpoint} could not be asked: {exc}") from exc
        try:
            names = answer["metadata"]["feature_names"]
            columns: dict[str, list[Any]] = {}
            for name, result in zip(names, answer["results"], strict=True):
                statuses = result.get("statuses") or ["PRESENT"] * len(result["values"])
                columns[name] = [v if s == "PRESENT" else None for v, s in zip(result["values"], statuses, strict=True)]
            return columns
        except (KeyError, TypeError, ValueError) as exc:
            raise LookupFailed(503, f"the feature server's answer is not Feast's online features: {exc}") from exc


def make_lookup(config: LookupConfig) -> Lookup:
    """The lookup ``config`` names: in-process on a repository, or through a feature server."""
    return FeastSdkLookup(config) if config.repo is not None else FeatureServerLookup(config)


def feature_rows(
    columns: dict[str, list[Any]], features: tuple[str, ...], keys: dict[str, list[Any]], *, impute: bool = False
) -> np.ndarray:
    """The model's input rows [N, F] in its feature order. A missing feature (an entity the store does not hold,
    or holds past its ttl) is LookupFailed(404) naming every such row, or, with ``impute``, NaN: mlspec's models
    fill NaN with the training split's means."""
    absent = [f for f in features if f not in columns]
    if absent:
        raise LookupFailed(503, f"the feature service does not return the model's feature(s) {', '.join(absent)}")
    n = len(next(iter(keys.values())))
    missing = [i for i in range(n) if any(columns[f][i] is None for f in features)]
    if missing and not impute:
        shown = "; ".join(f"row {i} (" + ", ".join(f"{k}={keys[k][i]}" for k in keys) + ")" for i in missing[:10])
        more = f" and {len(missing) - 10} more" if len(missing) > 10 else ""
        raise LookupFailed(404, f"not in the online store (or past its ttl): {shown}{more}; no row was scored")
    return np.array(
        [[math.nan if columns[f][i] is None else float(columns[f][i]) for f in features] for i in range(n)],
        dtype=np.float32,
    )
