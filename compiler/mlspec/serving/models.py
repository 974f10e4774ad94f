"""ONNX model variants: decryption of encrypted files, sha256 verification of the exact bytes loaded, device choice,
and onnxruntime sessions."""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import onnxruntime as ort

from mlspec.serving.config import VariantConfig

if TYPE_CHECKING:
    from mlspec.crypto.keys import KeyResolver

log = logging.getLogger("mlspec.serving")

CUDA = "CUDAExecutionProvider"
CPU = "CPUExecutionProvider"


class ModelError(Exception):
    """A variant cannot be served: wrong checksum, unreadable file, no usable device, or an unfit model."""


def sha256_hex(data: bytes) -> str:
    """Hex sha256 digest of ``data``."""
    return hashlib.sha256(data).hexdigest()


def choose_providers(device: str, fallback: str, available: list[str] | None = None) -> tuple[list[str], str]:
    """Execution providers for ``device`` and the device they give; raise ModelError when no fallback is allowed."""
    have = ort.get_available_providers() if available is None else available
    if device != "gpu":
        return [CPU], "cpu"
    if CUDA in have:
        return [CUDA, CPU], "gpu"
    if fallback == "cpu":
        log.warning("device: gpu asked for, but onnxruntime has no %s (has %s); falling back to cpu", CUDA, have)
        return [CPU], "cpu"
    raise ModelError(
        f"device: gpu asked for, but onnxruntime has no {CUDA} (has {', '.join(have)}) and fallback is none"
    )


@dataclass
class LoadedModel:
    """One verified model in an onnxruntime session."""

    config: VariantConfig
    session: Any
    input_name: str
    output_name: str
    device: str
    n_features: int

    def run(self, rows: np.ndarray) -> np.ndarray:
        """Scores for ``rows`` (float32, shape [N, F])."""
        out: np.ndarray = self.session.run([self.output_name], {self.input_name: rows})[0]
        return out


def decrypt_variant(variant: VariantConfig, data: bytes, keys: KeyResolver | None = None) -> bytes:
    """The plaintext of an encrypted variant file (in memory), after its header's digest matches the config and
    the key and tags authenticate it; ModelError otherwise (the variant is refused, never served)."""
    from mlspec.crypto import CryptoError, KeyResolver, decrypt, open_envelope

    try:
        recorded = open_envelope(data).sha256
        if recorded != variant.sha256:
            raise ModelError(
                f"variant {variant.name}: {variant.path} holds a model with sha256 {recorded}, config expects "
                f"{variant.sha256}; refusing to load it"
            )
        return decrypt(data, keys or KeyResolver())
    except CryptoError as exc:
        raise ModelError(f"variant {variant.name}: cannot decrypt {variant.path}: {exc}; refusing to serve it") from exc


def read_verified(variant: VariantConfig, keys: KeyResolver | None = None) -> bytes:
    """The variant's model bytes (decrypted in memory when the file is an mlspec envelope), only when their sha256
    equals the configured one. ``keys`` resolves the envelope's key reference (default: file:// keys against
    $MLSPEC_PROJECT_ROOT or the working directory; kms:// through a registered provider)."""
    from mlspec.crypto.envelope import is_envelope

    try:
        with open(variant.path, "rb") as handle:
            data = handle.read()
    except OSError as exc:
        raise ModelError(f"variant {variant.name}: cannot read {variant.path}: {exc.strerror or exc}") from exc
    if is_envelope(data):
        data = decrypt_variant(variant, data, keys)
    digest = sha256_hex(data)
    if digest != variant.sha256:
        raise ModelError(
            f"variant {variant.name}: sha256 mismatch for {variant.path}: file has {digest}, "
            f"config expects {variant.sha256}; refusing to load unverified bytes"
        )
    return data


def load_model(variant: VariantConfig, n_features: int, device: str, fallback: str, threads: int = 1) -> LoadedModel:
    """Verify and load one variant; raise ModelError saying why it cannot serve."""
    data = read_verified(variant)
    providers, used = choose_providers(device, fallback)
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.log_severity_level = 3
    try:
        session = ort.InferenceSession(data, sess_options=options, providers=providers)
    except Exception as exc:  # onnxruntime raises its own exception types
        raise ModelError(f"variant {variant.name}: onnxruntime cannot load {variant.path}: {exc}") from exc
    if used == "gpu" and CUDA not in session.get_providers():
        if fallback != "cpu":
            raise ModelError(f"variant {variant.name}: the CUDA provider failed to initialise and fallback is none")
        log.warning("variant %s: the CUDA provider failed to initialise; falling back to cpu", variant.name)
        session = ort.InferenceSession(data, sess_options=options, providers=[CPU])
        used = "cpu"
    inputs, outputs = session.get_inputs(), session.get_outputs()
    if len(inputs) != 1:
        raise ModelError(f"variant {variant.name}: the model takes {len(inputs)} inputs; mlspec serves one [N, F]")
    shape = inputs[0].shape
    if inputs[0].type != "tensor(float)" or len(shape) != 2:
        raise ModelError(f"variant {variant.name}: the model input is {inputs[0].type} {shape}, not FP32 [N, F]")
    if isinstance(shape[1], int) and shape[1] != n_features:
        raise ModelError(f"variant {variant.name}: the model takes {shape[1]} features; the config lists {n_features}")
    output = next((o for o in outputs if o.name == "score"), outputs[0])
    log.info("variant %s (version %s) verified and loaded on %s", variant.name, variant.version, used)
    return LoadedModel(variant, session, inputs[0].name, output.name, used, n_features)


def smoke_test(model: LoadedModel) -> None:
    """Run one all-zero row through ``model``; raise ModelError unless it gives one finite output row."""
    try:
        out = model.run(np.zeros((1, model.n_features), dtype=np.float32))
    except Exception as exc:
        raise ModelError(f"variant {model.config.name}: smoke inference failed: {exc}") from exc
    if out.shape[:1] != (1,) or not np.isfinite(out).all():
        raise ModelError(f"variant {model.config.name}: smoke inference gave {out.tolist()!r}, not one finite row")
