"""Latency of entity-keyed inference: the server fetching a request's features from the online store.

One run on the reference platform's churn features (a fresh Feast repository on SQLite, as the laptop's, and Feast's
own feature server on it, as a cluster runs it): single-row requests one at a time, each kind 300 times after a
warm-up, p50 and p99 in milliseconds, against the same model answering the same features sent by the client.

    python bench/entity_lookup.py
"""

from __future__ import annotations

import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO / "compiler"), str(REPO), str(REPO / "scripts")]

CUSTOMERS = list(range(700001, 700101))
RUNS = 300


def _port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _repo(root: Path) -> Path:
    from tests.conftest import copy_platform
    from tests.online_store import fresh_online_features

    from generate_data import generate
    from mlspec.app.project import Project
    from mlspec.render.write import write_tree

    root.mkdir(parents=True)
    copy_platform(root)
    generate(root / "data", customers=200, days=14)
    _, result = Project.open(root).render("local", ["feast"], use_cache=False)
    assert result is not None and result.ok
    write_tree(root / "rendered" / "local", result.artifacts)  # feature_store.yaml's paths are relative to it
    repo = root / "rendered" / "local" / "feast"
    (root / ".mlspec" / "local" / "feast").mkdir(parents=True)
    env = {**os.environ, "MLSPEC_PROJECT_ROOT": str(root)}
    feast = str(Path(sys.executable).parent / "feast")
    subprocess.run([feast, "apply"], cwd=repo, env=env, check=True, capture_output=True, timeout=300)
    os.environ["MLSPEC_PROJECT_ROOT"] = str(root)
    fresh_online_features(repo, "churn_features", CUSTOMERS)
    return repo


def _timings(url: str, bodies: list[dict[str, object]]) -> tuple[float, float]:
    samples = []
    for i in range(RUNS + 30):
        data = json.dumps(bodies[i % len(bodies)]).encode()
        request = urllib.request.Request(url, data, {"Content-Type": "application/json"})
        started = time.perf_counter()
        with urllib.request.urlopen(request, timeout=30) as reply:
            reply.read()
        if i >= 30:
            samples.append((time.perf_counter() - started) * 1000)
    samples.sort()
    return statistics.median(samples), samples[int(len(samples) * 0.99) - 1]


def main() -> None:
    """Serve one model three ways and print p50/p99 of each."""
    from feast import FeatureStore
    from tests.conftest import wait_healthy
    from tests.unit.test_serving import url_of, variant

    from mlspec.serving import process

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        repo = _repo(root / "platform")
        store = FeatureStore(repo_path=str(repo))
        found = store.get_online_features(
            features=store.get_feature_service("churn_features"), entity_rows=[{"customer_id": c} for c in CUSTOMERS]
        ).to_dict()
        features = sorted(n for n in found if n != "customer_id")
        port = _port()
        feature_server = subprocess.Popen(
            [str(Path(sys.executable).parent / "feast"), "serve", "--host", "127.0.0.1", "--port", str(port)],
            cwd=repo, stdout=subprocess.DEVNULL, stderr=(root / "feast-serve.log").open("wb"), env=dict(os.environ),
        )  # fmt: skip
        server_url = f"http://127.0.0.1:{port}"
        try:
            wait_healthy(server_url, feature_server, root / "feast-serve.log", 120)
            keyed = [{"inputs": [{"name": "customer_id", "shape": [1], "datatype": "INT64", "data": [c]}]}
                     for c in CUSTOMERS]  # fmt: skip
            plain = [{"inputs": [{"name": "input", "shape": [1, len(features)], "datatype": "FP32",
                                  "data": [[float(found[f][i]) for f in features]]}]} for i in range(len(CUSTOMERS))]  # fmt: skip
            rows = []
            for label, lookup, bodies in (
                ("features sent by the client", None, plain),
                ("entity key, Feast SDK on SQLite (laptop)", {"repo": str(repo)}, keyed),
                ("entity key, Feast feature server (cluster)", {"url": server_url}, keyed),
            ):
                folder = root / label.split()[0] / str(len(rows))
                folder.mkdir(parents=True)
                config = {
                    "deployment": "churn-api", "model_name": "churn-model", "host": "127.0.0.1", "port": 0,
                    "features": features, "variants": [variant(folder, "stable", "1", [0.1] * len(features))],
                    "rollout": {"strategy": "direct"}, "log": {"path": str(folder / "r.jsonl"), "sample_rate": 0.0,
                                                               "enabled": False},
                    **({"lookup": {"feature_service": "churn_features", "entities": ["customer_id"], **lookup}}
                       if lookup else {}),
                }  # fmt: skip
                (folder / "serving.json").write_text(json.dumps(config))
                pid = process.start(folder / "serving.json", folder / "server.log", timeout=60)
                try:
                    url = url_of(folder / "server.log") + "/v2/models/churn-api/infer"
                    rows.append((label, *_timings(url, bodies)))
                finally:
                    process.stop(pid)
        finally:
            feature_server.terminate()
            feature_server.wait(timeout=30)
    print(f"{'single-row request, one at a time':<46} {'p50 ms':>8} {'p99 ms':>8}")
    for label, p50, p99 in rows:
        print(f"{label:<46} {p50:>8.2f} {p99:>8.2f}")


if __name__ == "__main__":
    main()
