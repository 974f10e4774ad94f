"""``python -m mlspec.serving --config /abs/serving.json``: serve one Deployment until SIGTERM."""

from __future__ import annotations

import argparse
import logging
import sys


def main(argv: list[str] | None = None) -> int:
    """Parse arguments, configure logging to stderr and run the server; return the exit code."""
    parser = argparse.ArgumentParser(prog="python -m mlspec.serving", description=__doc__)
    parser.add_argument("--config", required=True, help="absolute path of the serving config JSON")
    parser.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=args.log_level, stream=sys.stderr, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    from mlspec.serving.server import run

    return run(args.config)


if __name__ == "__main__":
    sys.exit(main())
