"""Apply a rendered Feast repository and materialize its online store: runs as its own process.

``feast apply`` changes the working directory and may exit the interpreter, so the
platform target runs this module in a child process:
``python -m mlspec.runtime.feature_store <repo> [--end ISO-8601]``. It prints one JSON
line: the registered views and services and the materialized window.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import io
import json
import os
import sys
from pathlib import Path

# Materialize from here: old enough for any history the offline store holds.
EPOCH = dt.datetime(2000, 1, 1, tzinfo=dt.UTC)


def apply_and_materialize(repo: Path, end: dt.datetime) -> dict[str, object]:
    """``feast apply`` the repository, then load the latest value of every online feature up to ``end``."""
    from feast import FeatureStore
    from feast.repo_config import load_repo_config
    from feast.repo_operations import apply_total

    config = load_repo_config(repo, repo / "feature_store.yaml")
    sys.path.insert(0, str(repo))  # feast imports the definitions as top-level modules of the repository
    chatter = io.StringIO()
    with contextlib.redirect_stdout(chatter):  # feast prints progress; the caller wants one JSON line
        apply_total(config, repo, skip_source_validation=False)
        store = FeatureStore(repo_path=str(repo))
        online = [view.name for view in store.list_feature_views() if view.online]
        if online:
            store.materialize(start_date=EPOCH, end_date=end, feature_views=online)
    return {
        "project": store.project,
        "feature_views": sorted(v.name for v in store.list_feature_views()),
        "feature_services": sorted(s.name for s in store.list_feature_services()),
        "materialized": sorted(online),
        "materialized_until": end.isoformat(),
    }


def main(argv: list[str] | None = None) -> int:
    """Entry point of the child process."""
    parser = argparse.ArgumentParser(prog="python -m mlspec.runtime.feature_store")
    parser.add_argument("repo", type=Path)
    parser.add_argument("--end", default=None, help="materialize up to this time (ISO 8601); default now")
    args = parser.parse_args(argv)
    end = dt.datetime.fromisoformat(args.end) if args.end else dt.datetime.now(dt.UTC)
    repo = args.repo.resolve()
    cwd = Path.cwd()
    try:
        result = apply_and_materialize(repo, end)
    except Exception as exc:  # reported to the parent as one line; it turns it into a TargetError
        sys.stdout.write(json.dumps({"error": f"{type(exc).__name__}: {exc}"}) + "\n")
        return 1
    finally:
        os.chdir(cwd)
    sys.stdout.write(json.dumps(result) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
