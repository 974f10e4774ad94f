"""Writing fresh rows into a Feast online store, as a push would: the tests' stand-in for live feature updates."""

from __future__ import annotations

from pathlib import Path


def fresh_online_features(repo: Path, service_name: str, keys: list[int]) -> None:
    """Write features for ``keys`` into the online store as a push would, stamped now (the demo data is older
    than the views' ttl, so what materialization wrote is past its age)."""
    import datetime as dt

    import numpy as np
    import pandas as pd
    from feast import FeatureStore

    store = FeatureStore(repo_path=str(repo))
    rng = np.random.default_rng(7)
    for projection in store.get_feature_service(service_name).feature_view_projections:
        view = store.get_feature_view(projection.name)
        frame = pd.DataFrame(dict.fromkeys(view.join_keys, keys))
        for field in view.features:
            integer = "Int" in str(field.dtype)
            values = rng.integers(0, 20, len(keys)) if integer else rng.random(len(keys)).astype("float32")
            frame[field.name] = values
        frame[view.batch_source.timestamp_field] = pd.Timestamp(dt.datetime.now(dt.UTC))
        store.write_to_online_store(view.name, frame)
