"""Whether the model file a local training registered still holds the bytes it was registered with.

Cheap enough for every plan: no registry client, one file read per TrainingPipeline. The file path and the
plaintext model's sha256 come from state (what the apply recorded); a sealed file is decrypted in memory with the
project's file:// keys first, since state records the plaintext digest.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from mlspec.crypto import CryptoError, KeyResolver
from mlspec.crypto.envelope import read_plain


def model_file_problem(ids: dict[str, str], project_root: Path) -> str | None:
    """Why the registered model file no longer matches what state recorded, or None when it does (or state
    recorded no file: applied without engines, or by an older mlspec)."""
    path, wanted = ids.get("onnx_path"), ids.get("onnx_sha256")
    if not path or not wanted:
        return None
    what = f"{ids.get('model', 'the model')} v{ids.get('model_version', '?')}"
    if not Path(path).is_file():
        return f"{what}: its registered model file {path} is gone"
    try:
        plain = read_plain(path, KeyResolver(project_root))
    except (OSError, CryptoError) as exc:
        return f"{what}: its registered model file {path} cannot be read or opened: {exc}"
    actual = hashlib.sha256(plain).hexdigest()
    if actual != wanted:
        return f"{what}: {path} has sha256 {actual[:12]}…, not the {wanted[:12]}… it was registered with"
    return None
