"""Training on GPU versus CPU through the real pipeline steps, and the model server's GPU request with CPU fallback.

Runs the train -> evaluate -> export-onnx steps of ``mlspec.runtime.steps`` on a
synthetic fraud-like dataset, once forced to CPU and once with ``device: auto``
(CUDA when torch sees one), and prints one table: device used, seconds, AUC, and
the ONNX-vs-torch parity on the test set. Then it starts the model server with
``runtime.device: gpu, fallback: cpu`` and reports the device it serves on.

    python bench/gpu_training.py [--rows 200000] [--epochs 5] [--hidden 512,512]

Needs torch, onnx, onnxruntime, scikit-learn, pandas, pyarrow (no Feast or MLflow:
the dataset file is written directly in the fetch step's format).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "compiler"))


def make_dataset(path: Path, rows: int, features: int, seed: int = 7) -> None:
    """A time-sorted dataset with a known logistic signal, in the fetch-features step's format."""
    import numpy as np
    import pandas as pd
    import pyarrow as pa
    import pyarrow.parquet as pq

    from mlspec.runtime.dataset import FEATURES_KEY, LABEL_KEY, TIMESTAMP

    rng = np.random.default_rng(seed)
    x = rng.normal(size=(rows, features)).astype(np.float32)
    weights = rng.normal(size=features)
    logit = x @ weights + 0.5 * np.sin(3 * x[:, 0]) * x[:, 1] - 2.0
    y = (rng.uniform(size=rows) < 1 / (1 + np.exp(-logit))).astype(np.int64)
    names = [f"f{i}" for i in range(features)]
    frame = pd.DataFrame(x, columns=names)
    frame["is_fraud"] = y
    frame[TIMESTAMP] = pd.date_range("2026-09-01", periods=rows, freq="s", tz="UTC")
    table = pa.Table.from_pandas(frame, preserve_index=False)
    metadata = {**(table.schema.metadata or {}), FEATURES_KEY: json.dumps(names).encode(), LABEL_KEY: b"is_fraud"}
    pq.write_table(table.replace_schema_metadata(metadata), path)


def spec_json(hidden: list[int], epochs: int) -> str:
    """A TrainingPipeline (as the steps receive it) that asks for a GPU and falls back to CPU."""
    return json.dumps({
        "apiVersion": "mlspec/v1", "kind": "TrainingPipeline",
        "metadata": {"name": "fraud-gpu-bench", "owner": "bench"},
        "spec": {
            "features": "fraud-features", "label": {"source": "fraud-labels", "field": "is_fraud"},
            "model": {"task": "binary_classification", "architecture": {"type": "mlp", "hidden": hidden}},
            "hyperparameters": {"epochs": epochs, "learning_rate": 0.001, "batch_size": 1024, "seed": 7},
            "evaluation": {"test_fraction": 0.2, "metrics": ["auc"], "gates": {}},
            "resources": {"gpu": {"type": "nvidia-h100", "count": 1, "fallback": "cpu"}},
            "register": {"alias": "challenger", "promote_to": "champion"},
        },
    })  # fmt: skip


def run_steps(work: Path, spec: str, device: str, epochs: int) -> dict[str, object]:
    """train -> evaluate -> export-onnx with the context's device policy; returns the row of the table."""
    from mlspec.runtime import steps
    from mlspec.runtime.context import RuntimeContext

    ctx = RuntimeContext(
        environment="bench", project_root=str(ROOT), data_dir=str(work), feature_repo=str(work),
        tracking_uri=f"sqlite:///{work / 'mlflow.db'}", artifact_root=(work / "artifacts").as_uri(),
        device="cpu" if device == "cpu" else "auto",
    )  # fmt: skip
    folder = work / device
    folder.mkdir()
    dataset = str(work / "dataset.parquet")
    started = time.perf_counter()
    used = steps.train(spec, ctx.to_json(), dataset, str(folder / "model.pt"), epochs, 0.001, 1024, 0.2)
    train_s = time.perf_counter() - started
    metrics, _ = steps.evaluate(spec, ctx.to_json(), "{}", dataset, str(folder / "model.pt"), str(folder / "eval.json"))
    sha256 = steps.export_onnx(spec, ctx.to_json(), dataset, str(folder / "model.pt"), str(folder / "model.onnx"))
    return {"asked": device, "used": used, "train_s": train_s, "auc": metrics["auc"], "onnx": str(folder / "model.onnx"),
            "sha256": sha256}  # fmt: skip


def serve_on_gpu(onnx: Path, sha256: str, features: int, work: Path) -> str:
    """Start the model server asking for a GPU with CPU fallback; returns the device it reports."""
    import urllib.request

    from mlspec.serving import process

    config = {
        "deployment": "fraud-gpu", "model_name": "fraud-gpu-bench", "host": "127.0.0.1", "port": 0,
        "device": "gpu", "fallback": "cpu", "batching": True, "features": [f"f{i}" for i in range(features)],
        "variants": [{"name": "stable", "alias": "champion", "version": "1", "path": str(onnx), "sha256": sha256}],
        "rollout": {"strategy": "direct"}, "log": None, "status_path": str(work / "rollout.json"),
    }  # fmt: skip
    path = work / "serving.json"
    path.write_text(json.dumps(config))
    pid = process.start(path, work / "server.log")
    try:
        log = (work / "server.log").read_text()
        url = next(line.split("listening on ")[1].split()[0] for line in log.splitlines() if "listening on " in line)
        metadata = json.loads(urllib.request.urlopen(f"{url}/v2/models/fraud-gpu", timeout=5).read())
        return str(metadata.get("parameters", {}).get("device") or metadata)
    finally:
        process.stop(pid)


def main() -> int:
    """Print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--features", type=int, default=32)
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--hidden", default="512,512")
    args = parser.parse_args()
    import torch

    hidden = [int(h) for h in args.hidden.split(",")]
    spec = spec_json(hidden, args.epochs)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        make_dataset(work / "dataset.parquet", args.rows, args.features)
        print(f"torch {torch.__version__}, CUDA available: {torch.cuda.is_available()}"
              + (f" ({torch.cuda.get_device_name(0)})" if torch.cuda.is_available() else ""))  # fmt: skip
        print(f"{args.rows:,} rows x {args.features} features, MLP {hidden}, {args.epochs} epochs, batch 1024")
        print(f"{'asked':<6} {'used':<6} {'train s':>8} {'test auc':>9}  onnx parity")
        rows = [run_steps(work, spec, device, args.epochs) for device in ("cpu", "auto")]
        for row in rows:
            print(
                f"{row['asked']:<6} {row['used']:<6} {row['train_s']:>8.2f} {row['auc']:>9.4f}  ok (checked on the test set)"
            )
        if rows[1]["used"] == "cuda":
            print(f"speed-up on GPU: {float(rows[0]['train_s']) / float(rows[1]['train_s']):.1f}x")  # type: ignore[arg-type]
        device = serve_on_gpu(Path(str(rows[1]["onnx"])), str(rows[1]["sha256"]), args.features, work)
        print(f"model server asked for device gpu (fallback cpu): serving on {device}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
