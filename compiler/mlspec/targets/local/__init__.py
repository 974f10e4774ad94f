"""The local platform: the same specs brought up on one machine with embedded engines.

Feast on SQLite and parquet, the KFP local runner, MLflow on SQLite, onnxruntime
behind an Open Inference Protocol server, Evidently for drift.
"""
