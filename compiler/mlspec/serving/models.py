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

TENSORRT = "TensorrtExecutionProvider"
CUDA = "CUDAExecutionProvider"
CPU = "CPUExecutionProvider"
GPU_PROVIDERS = (TENSORRT, CUDA)  # preferred first when a GPU is asked for
SHORT = {TENSORRT: "TensorRT", CUDA: "CUDA"}


class ModelError(Exception):
    """A variant cannot be served: wrong checksum, unreadable file, no usable device, or an unfit model."""


def sha256_hex(data: bytes) -> str:
    """Hex sha256 digest of ``data``."""
    return hashlib.sha256(data).hexdigest()


@dataclass(frozen=True)
class DevicePlan:
    """The execution providers to ask onnxruntime for, the device they give, and why a GPU request fell back."""

    requested: str  # the spec's runtime.device
    device: str  # what the providers run on: gpu or cpu
    providers: tuple[str, ...]
    fallback_reason: str = ""

    @property
    def fallback(self) -> bool:
        """True when a GPU was asked for and the variant runs on CPU instead."""
        return bool(self.fallback_reason)


def plan_device(device: str, fallback: str, available: list[str] | None = None) -> DevicePlan:
    """Providers for ``device`` from onnxruntime's ``available`` ones: TensorRT, then CUDA, then CPU for a GPU.

    Without a GPU provider, ``fallback: cpu`` gives a CPU plan that says why; ``fallback: none`` raises ModelError.
    """
    have = list(ort.get_available_providers() if available is None else available)
    if device != "gpu":
        return DevicePlan(device, "cpu", (CPU,))
    gpu = tuple(p for p in GPU_PROVIDERS if p in have)
    if gpu:
        return DevicePlan(device, "gpu", (*gpu, CPU))
    reason = f"onnxruntime has no {CUDA} (has {', '.join(have) or 'none'})"
    if fallback == "cpu":
        return DevicePlan(device, "cpu", (CPU,), reason)
    raise ModelError(f"device: gpu asked for, but {reason} and fallback is none")


def choose_providers(device: str, fallback: str, available: list[str] | None = None) -> tuple[list[str], str]:
    """Execution providers for ``device`` and the device they give; raise ModelError when no fallback is allowed."""
    plan = plan_device(device, fallback, available)
    return list(plan.providers), plan.device


@dataclass
class LoadedModel:
    """One verified model in an onnxruntime session, and the device it runs on (and why, after a fallback)."""

    config: VariantConfig
    session: Any
    input_name: str
    output_name: str
    device: str
    n_features: int
    requested_device: str = "cpu"
    providers: tuple[str, ...] = (CPU,)  # the session's providers, as onnxruntime reports them
    fallback_reason: str = ""

    @property
    def fallback(self) -> bool:
        """True when a GPU was asked for and the variant runs on CPU."""
        return bool(self.fallback_reason)

    def device_info(self) -> dict[str, Any]:
        """What the variant runs on: device, requested_device, providers, fallback and fallback_reason."""
        return {
            "device": self.device,
            "requested_device": self.requested_device,
            "providers": list(self.providers),
            "fallback": self.fallback,
            "fallback_reason": self.fallback_reason,
        }

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


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def open_session(
    data: bytes, options: Any, plan: DevicePlan, fallback: str, variant: VariantConfig
) -> tuple[Any, DevicePlan]:
    """An onnxruntime session for ``plan``: each GPU provider that fails to initialise is dropped in turn (TensorRT,
    then CUDA); ending on CPU is a fallback (with its reason) when ``fallback`` is cpu, else a ModelError."""
    name = variant.name
    providers = list(plan.providers)
    reason = plan.fallback_reason
    while True:
        try:  # enable_fallback=0: onnxruntime must not retry on CPU behind our back; we do, and say why
            session = ort.InferenceSession(data, sess_options=options, providers=providers, enable_fallback=0)
        except Exception as exc:  # onnxruntime raises its own exception types
            gpu = [p for p in providers if p in GPU_PROVIDERS]
            if not gpu:
                raise ModelError(f"variant {name}: onnxruntime cannot load {variant.path}: {exc}") from exc
            reason = f"{SHORT[gpu[0]]} provider failed to initialise: {_first_line(exc)}"
            providers.remove(gpu[0])
            if len(gpu) == 1 and fallback != "cpu":
                raise ModelError(f"variant {name}: the {reason}; fallback is none") from exc
            log.warning("variant %s: the %s; trying %s", name, reason, ", ".join(providers))
            continue
        break
    used = tuple(session.get_providers())
    if plan.device == "gpu" and not any(p in GPU_PROVIDERS for p in used):
        # the GPU provider registered no device (e.g. missing CUDA libraries): onnxruntime runs on CPU only
        reason = reason or f"CUDA provider failed to initialise (the session has only {', '.join(used)})"
        if fallback != "cpu":
            raise ModelError(f"variant {name}: the {reason}; fallback is none")
        return session, DevicePlan(plan.requested, "cpu", used, reason)
    return session, DevicePlan(plan.requested, plan.device, used, plan.fallback_reason)


def session_options(threads: int = 1) -> ort.SessionOptions:
    """Options for a latency-bound session: sequential, ``threads`` intra-op threads, no spinning, quiet logs."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.log_severity_level = 3
    return options


def load_model(variant: VariantConfig, n_features: int, device: str, fallback: str, threads: int = 1) -> LoadedModel:
    """Verify and load one variant; raise ModelError saying why it cannot serve."""
    data = read_verified(variant)
    try:
        plan = plan_device(device, fallback)
    except ModelError as exc:
        raise ModelError(f"variant {variant.name}: {exc}") from None
    session, plan = open_session(data, session_options(threads), plan, fallback, variant)
    if plan.fallback:
        log.warning("variant %s: device gpu asked for, but %s; falling back to cpu", variant.name, plan.fallback_reason)
    inputs, outputs = session.get_inputs(), session.get_outputs()
    if len(inputs) != 1:
        raise ModelError(f"variant {variant.name}: the model takes {len(inputs)} inputs; mlspec serves one [N, F]")
    shape = inputs[0].shape
    if inputs[0].type != "tensor(float)" or len(shape) != 2:
        raise ModelError(f"variant {variant.name}: the model input is {inputs[0].type} {shape}, not FP32 [N, F]")
    if isinstance(shape[1], int) and shape[1] != n_features:
        raise ModelError(f"variant {variant.name}: the model takes {shape[1]} features; the config lists {n_features}")
    output = next((o for o in outputs if o.name == "score"), outputs[0])
    log.info(
        "variant %s (version %s) verified and loaded on %s (%s)",
        variant.name,
        variant.version,
        plan.device,
        ", ".join(plan.providers),
    )
    return LoadedModel(
        variant,
        session,
        inputs[0].name,
        output.name,
        plan.device,
        n_features,
        requested_device=device,
        providers=plan.providers,
        fallback_reason=plan.fallback_reason,
    )


def smoke_test(model: LoadedModel) -> None:
    """Run one all-zero row through ``model``; raise ModelError unless it gives one finite output row."""
    try:
        out = model.run(np.zeros((1, model.n_features), dtype=np.float32))
    except Exception as exc:
        raise ModelError(f"variant {model.config.name}: smoke inference failed: {exc}") from exc
    if out.shape[:1] != (1,) or not np.isfinite(out).all():
        raise ModelError(f"variant {model.config.name}: smoke inference gave {out.tolist()!r}, not one finite row")
