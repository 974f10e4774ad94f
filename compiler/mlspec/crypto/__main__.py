"""``python -m mlspec.crypto``: rotate the key of encrypted artifacts, or show an envelope's header.

python -m mlspec.crypto rotate --old file://.mlspec/keys/old.key --new file://.mlspec/keys/local.key FILE...
python -m mlspec.crypto inspect FILE...
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from mlspec.crypto.envelope import open_envelope, rewrap_file
from mlspec.crypto.errors import CryptoError
from mlspec.crypto.keys import KeyResolver


def rotate(paths: list[str], old_ref: str, new_ref: str, root: str | None = None, *, create: bool = False) -> int:
    """Re-wrap each file's data key from ``old_ref`` to ``new_ref`` (payloads untouched); returns how many."""
    keys = KeyResolver(root)
    old = keys.resolve(old_ref)
    new = KeyResolver(root, create=create).resolve(new_ref)
    for path in paths:
        rewrap_file(path, old, new)
    return len(paths)


def main(argv: list[str] | None = None) -> int:
    """The command line; exit 0 on success, 1 on a crypto error, 2 on usage errors."""
    parser = argparse.ArgumentParser(prog="python -m mlspec.crypto", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    rot = sub.add_parser("rotate", help="re-wrap data keys from one key to another (payloads unchanged)")
    rot.add_argument("--old", required=True, help="the key reference the files are wrapped with now")
    rot.add_argument("--new", required=True, help="the key reference to wrap them with")
    rot.add_argument("--root", help="project root for relative file:// keys (default: $MLSPEC_PROJECT_ROOT or .)")
    rot.add_argument("--create", action="store_true", help="create the new file:// key when missing (0600)")
    rot.add_argument("files", nargs="+")
    ins = sub.add_parser("inspect", help="print envelope headers (no key needed)")
    ins.add_argument("files", nargs="+")
    args = parser.parse_args(argv)
    try:
        if args.command == "rotate":
            count = rotate(args.files, args.old, args.new, args.root, create=args.create)
            sys.stdout.write(f"re-wrapped {count} artifact(s) from {args.old} to {args.new}\n")
        else:
            for path in args.files:
                env = open_envelope(Path(path).read_bytes())
                shown = {"file": path, "identity": env.identity, "sha256": env.sha256, "size": env.size,
                         "key_ref": env.kek_ref, "key_id": env.kek_id, "version": env.version}  # fmt: skip
                sys.stdout.write(json.dumps(shown) + "\n")
    except (CryptoError, OSError) as exc:
        sys.stderr.write(f"error: {exc}\n")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
