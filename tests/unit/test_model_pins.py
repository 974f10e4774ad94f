"""Pinning an InferenceService whose runtime routes between variants: which variants are downloaded and served.

The laptop serves a shadow or green challenger only when its alias exists, names another version than the
champion and (blue-green) is not worse offline; A/B arms must all exist. The cluster's pins follow the same rules.
"""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest

from mlspec.render.kserve import VARIANTS_ANNOTATION
from mlspec.runtime.object_store import kserve_storage_uri
from mlspec.targets.cluster.model_pins import (
    AliasMissing,
    NoVersionYet,
    ServedVersion,
    pin_model_versions,
    pin_or_wait,
    served_folders,
)

STORE = "s3://bank-models/prod"


class Aliases:
    """A registry holding ``versions`` by alias (version number, quality); others are missing."""

    def __init__(self, versions: dict[str, tuple[str, str]], *, trained: bool = True) -> None:
        self.versions = versions
        self.trained = trained

    def served_version(self, model: str, *, alias: str | None = None, version: str | None = None) -> ServedVersion:
        if not self.trained:
            raise NoVersionYet(f"{model} has no registered version yet")
        if alias not in self.versions:
            raise AliasMissing(f"{model}@{alias} points nowhere")
        number, quality = self.versions[alias]
        return ServedVersion(number, number * 64, kserve_storage_uri(STORE, model, number), quality)


def isvc(variants: list[dict[str, Any]]) -> dict[str, Any]:
    annotations = {"mlspec.dev/model-name": "fraud-detector", "mlspec.dev/artifact-store": STORE,
                   "mlspec.dev/model-alias": "champion", VARIANTS_ANNOTATION: json.dumps(variants)}  # fmt: skip
    model = {"runtime": "mlspec", "env": [{"name": "MLSPEC_SERVING", "value": "{}"}]}
    return {"kind": "InferenceService", "metadata": {"name": "fraud-api", "namespace": "ml-prod",
            "annotations": annotations}, "spec": {"predictor": {"model": model}}}  # fmt: skip


SHADOW = [{"name": "stable", "alias": "champion", "required": True},
          {"name": "shadow", "alias": "challenger", "required": False}]  # fmt: skip
GREEN = [{"name": "stable", "alias": "champion", "required": True},
         {"name": "green", "alias": "challenger", "required": False, "gated": True}]  # fmt: skip
AB = [{"name": "champion", "alias": "champion", "required": True},
      {"name": "challenger", "alias": "challenger", "required": True}]  # fmt: skip


def pin(variants: list[dict[str, Any]], registry: Aliases) -> dict[str, Any]:
    (pinned,) = pin_model_versions([isvc(variants)], registry)
    return pinned


@pytest.mark.parametrize(
    ("variants", "versions", "expected"),
    [
        (SHADOW, {"champion": ("3", "")}, [("stable", "3")]),  # no challenger yet: the champion alone
        (SHADOW, {"champion": ("3", ""), "challenger": ("3", "")}, [("stable", "3")]),  # the same version once
        (SHADOW, {"champion": ("3", ""), "challenger": ("4", "worse")}, [("stable", "3"), ("shadow", "4")]),
        (GREEN, {"champion": ("3", ""), "challenger": ("4", "worse")}, [("stable", "3")]),  # held back
        (GREEN, {"champion": ("3", ""), "challenger": ("4", "better")}, [("stable", "3"), ("green", "4")]),
        (AB, {"champion": ("3", ""), "challenger": ("4", "")}, [("champion", "3"), ("challenger", "4")]),
    ],
)
def test_the_variants_a_runtime_serves_follow_the_laptops_rules(
    variants: list[dict[str, Any]], versions: dict[str, tuple[str, str]], expected: list[tuple[str, str]]
) -> None:
    pinned = pin(variants, Aliases(versions))
    assert served_folders(pinned) == expected
    predictor = pinned["spec"]["predictor"]
    assert predictor["storageUris"] == [
        {"uri": kserve_storage_uri(STORE, "fraud-detector", v), "mountPath": f"/mnt/models/{name}"}
        for name, v in expected
    ]
    env = {e["name"]: e["value"] for e in predictor["model"]["env"]}
    assert [(v["name"], v["version"], v["sha256"]) for v in json.loads(env["MLSPEC_VARIANTS"])] == [
        (name, v, v * 64) for name, v in expected
    ]
    assert pinned["metadata"]["annotations"]["mlspec.dev/model-version"] == expected[0][1]


def test_a_missing_ab_arm_is_an_error_and_an_untrained_model_waits() -> None:
    with pytest.raises(AliasMissing, match="challenger points nowhere"):
        pin(AB, Aliases({"champion": ("3", "")}))
    kept, unpinned = pin_or_wait([isvc(SHADOW)], Aliases({}, trained=False))
    assert kept == [] and [(u.name, u.waiting) for u in unpinned] == [("fraud-api", True)]
    kept, unpinned = pin_or_wait([isvc(AB)], Aliases({"champion": ("3", "")}))
    assert kept == [] and [(u.name, u.waiting) for u in unpinned] == [("fraud-api", False)]


def test_re_pinning_replaces_the_previous_pins() -> None:
    first = pin(SHADOW, Aliases({"champion": ("3", ""), "challenger": ("4", "")}))
    again = copy.deepcopy(first)
    (repinned,) = pin_model_versions([again], Aliases({"champion": ("5", "")}))
    env = [e["name"] for e in repinned["spec"]["predictor"]["model"]["env"]]
    assert env.count("MLSPEC_VARIANTS") == 1 and served_folders(repinned) == [("stable", "5")]
