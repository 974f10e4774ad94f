"""Cluster targets: Kubernetes (server-side apply), a KFP server, an MLflow tracking server, and their composite."""
