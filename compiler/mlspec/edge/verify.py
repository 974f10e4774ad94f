"""Verify an edge package (a folder or its ``.tar.gz``) against a trusted Ed25519 public key.

Needs only the standard library and ``cryptography``, so it runs on the device that
runs the model. The order of checks: read every file (no links, folders or odd names),
check ``manifest.sig`` over the exact bytes of ``manifest.json`` with the trusted key,
then the manifest (canonical, known format, the signer it names is the trusted key),
then every file: none missing, none extra, each size and sha256 as listed.

Trust comes from the caller: a public key it holds, or a fingerprint pin it holds
(which the bundled ``signer.pub`` must match). Trusting the bundled key alone proves
nothing about who built the package and is refused unless asked for explicitly.
"""

from __future__ import annotations

import hashlib
import io
import json
import re
import tarfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mlspec.edge.errors import PackageInvalidError, SigningKeyError
from mlspec.edge.signing import fingerprint, load_public_key, verify_signature

FORMAT = "mlspec-edge-package"
SCHEMA_VERSION = 1
MANIFEST = "manifest.json"
SIGNATURE = "manifest.sig"
PUBLIC_KEY = "signer.pub"
MODEL = "model.onnx"
MAX_FILES = 16
MAX_PACKAGE_BYTES = 2 << 30  # a model larger than 2 GiB needs ONNX external data, which packages do not carry
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
_FINGERPRINT = re.compile(r"^sha256:[0-9a-f]{64}$")


def canonical_json(data: Any) -> bytes:
    """The manifest's exact bytes: sorted keys, two-space indent, ASCII, a trailing newline (the signed bytes)."""
    return (json.dumps(data, sort_keys=True, indent=2, ensure_ascii=True, allow_nan=False) + "\n").encode()


def sha256_hex(data: bytes) -> str:
    """Hex sha256 of ``data``."""
    return hashlib.sha256(data).hexdigest()


@dataclass(frozen=True)
class Manifest:
    """A verified package: its manifest and the bytes of every file, as checked (run these, not the files again)."""

    data: dict[str, Any]
    raw: bytes = field(repr=False)
    files: dict[str, bytes] = field(repr=False)
    source: str
    signer: str  # the trusted key's fingerprint

    @property
    def sha256(self) -> str:
        """The sha256 of ``manifest.json`` (what state records)."""
        return sha256_hex(self.raw)

    @property
    def deployment(self) -> str:
        """The Deployment it was built for."""
        return str(self.data["deployment"])

    @property
    def model(self) -> dict[str, Any]:
        """Registered model name, version, source sha256, task."""
        model: dict[str, Any] = self.data["model"]
        return model

    @property
    def inputs(self) -> list[dict[str, Any]]:
        """Input tensors: name, dtype, shape, and the features (name, dtype) by column."""
        inputs: list[dict[str, Any]] = self.data["inputs"]
        return inputs

    @property
    def outputs(self) -> list[dict[str, Any]]:
        """Output tensors: name, dtype, shape."""
        outputs: list[dict[str, Any]] = self.data["outputs"]
        return outputs

    @property
    def quantized(self) -> bool:
        """Whether the packaged model is the int8 one."""
        return bool(self.data["quantization"]["method"] != "none")

    @property
    def model_bytes(self) -> bytes:
        """The verified ``model.onnx``."""
        return self.files[MODEL]


def _read_folder(folder: Path) -> dict[str, bytes]:
    files: dict[str, bytes] = {}
    total = 0
    for entry in sorted(folder.iterdir()):
        if entry.is_symlink() or not entry.is_file():
            what = "a link" if entry.is_symlink() else "not a regular file"
            raise PackageInvalidError(f"{entry.name}: {what}; a package holds only regular files")
        if len(files) >= MAX_FILES:
            raise PackageInvalidError(f"{folder} holds more than {MAX_FILES} files; not an edge package")
        total += entry.stat().st_size
        if total > MAX_PACKAGE_BYTES:
            raise PackageInvalidError(f"{folder} is larger than {MAX_PACKAGE_BYTES} bytes; not an edge package")
        files[entry.name] = entry.read_bytes()
    return files


def _read_tar(path: Path) -> dict[str, bytes]:
    files: dict[str, bytes] = {}
    total = 0
    top: str | None = None
    try:
        with tarfile.open(path, "r:*") as archive:
            for member in archive:
                parts = member.name.rstrip("/").split("/")
                if member.name.startswith("/") or ".." in parts or len(parts) > 2:
                    raise PackageInvalidError(f"{path.name}: member {member.name!r} is outside the package folder")
                if top is None:
                    top = parts[0]
                if parts[0] != top:
                    raise PackageInvalidError(f"{path.name}: members in two folders ({top!r}, {parts[0]!r})")
                if member.isdir() and len(parts) == 1:
                    continue
                if not member.isfile() or len(parts) != 2:
                    raise PackageInvalidError(f"{path.name}: member {member.name!r} is not a regular file")
                name = parts[1]
                if name in files:
                    raise PackageInvalidError(f"{path.name}: {name} appears twice")
                if len(files) >= MAX_FILES:
                    raise PackageInvalidError(f"{path.name} holds more than {MAX_FILES} files; not an edge package")
                total += member.size
                if total > MAX_PACKAGE_BYTES:
                    raise PackageInvalidError(f"{path.name} unpacks to more than {MAX_PACKAGE_BYTES} bytes")
                handle = archive.extractfile(member)
                if handle is None:
                    raise PackageInvalidError(f"{path.name}: member {member.name!r} cannot be read")
                files[name] = handle.read()
    except (tarfile.TarError, EOFError, OSError) as exc:
        raise PackageInvalidError(f"{path}: not a readable tar archive: {exc}") from None
    return files


def read_package(package: str | Path) -> dict[str, bytes]:
    """Every file of a package folder or ``.tar.gz``, by name (nothing is extracted to disk)."""
    path = Path(package)
    if path.is_dir():
        files = _read_folder(path)
    elif path.is_file():
        files = _read_tar(path)
    else:
        raise PackageInvalidError(f"{path}: no such package (a folder or a .tar.gz)")
    for name in files:
        if not _NAME.match(name):
            raise PackageInvalidError(f"{name!r}: not a file name a package may hold")
    return files


def trusted_key(
    files: dict[str, bytes],
    public_key: bytes | str | None,
    pin: str | None,
    trust_bundled_key: bool,
) -> bytes:
    """The raw public key to verify with, from what the caller trusts; SigningKeyError when nothing is trusted."""
    if public_key is not None:
        return load_public_key(public_key, "the trusted public key")
    bundled = files.get(PUBLIC_KEY)
    if pin is not None:
        pin = pin.strip().lower()
        if not _FINGERPRINT.match(pin):
            raise SigningKeyError(f"{pin!r} is not a key fingerprint (sha256:<64 hex digits>)")
        if bundled is None:
            raise PackageInvalidError(f"{PUBLIC_KEY} is missing, so the pinned fingerprint cannot be checked")
        raw = load_public_key(bundled, PUBLIC_KEY)
        if fingerprint(raw) != pin:
            raise PackageInvalidError(f"{PUBLIC_KEY} is the key {fingerprint(raw)}, not the pinned {pin}")
        return raw
    if trust_bundled_key:
        if bundled is None:
            raise PackageInvalidError(f"{PUBLIC_KEY} is missing: there is no bundled key to trust")
        return load_public_key(bundled, PUBLIC_KEY)
    raise SigningKeyError(
        "no trusted key: give the signer's public key (PEM) or its fingerprint; the key bundled in the package "
        "proves nothing about who built it"
    )


def _check_manifest(raw: bytes, signer: bytes) -> dict[str, Any]:
    try:
        data = json.loads(raw)
    except ValueError as exc:
        raise PackageInvalidError(f"{MANIFEST}: not JSON ({exc})") from None
    if not isinstance(data, dict) or canonical_json(data) != raw:
        raise PackageInvalidError(f"{MANIFEST}: not a canonical manifest (sorted keys, two-space indent)")
    if data.get("format") != FORMAT or data.get("schema_version") != SCHEMA_VERSION:
        raise PackageInvalidError(
            f"{MANIFEST}: format {data.get('format')!r} version {data.get('schema_version')!r}; this verifier reads "
            f"{FORMAT} version {SCHEMA_VERSION}"
        )
    named = (data.get("signer") or {}).get("public_key_sha256")
    if named != fingerprint(signer):
        raise PackageInvalidError(f"{MANIFEST}: names the signer {named}, not the trusted key {fingerprint(signer)}")
    listed = data.get("files")
    if not isinstance(listed, dict) or MODEL not in listed:
        raise PackageInvalidError(f"{MANIFEST}: lists no {MODEL}")
    return data


def _check_files(files: dict[str, bytes], listed: dict[str, Any]) -> None:
    for name in sorted(listed):
        entry = listed[name]
        if name in (MANIFEST, SIGNATURE) or not _NAME.match(name):
            raise PackageInvalidError(f"{MANIFEST}: lists {name!r}, which a manifest cannot cover")
        if name not in files:
            raise PackageInvalidError(f"{name}: listed in {MANIFEST} but missing from the package")
        data = files[name]
        if len(data) != entry.get("size"):
            raise PackageInvalidError(
                f"{name}: {len(data)} bytes, {MANIFEST} says {entry.get('size')}; the file changed after signing"
            )
        digest = sha256_hex(data)
        if digest != entry.get("sha256"):
            raise PackageInvalidError(
                f"{name}: sha256 {digest[:16]}… does not match {MANIFEST}'s {str(entry.get('sha256'))[:16]}…; "
                "the file changed after signing"
            )
    extra = sorted(set(files) - set(listed) - {MANIFEST, SIGNATURE})
    if extra:
        raise PackageInvalidError(f"{', '.join(extra)}: not listed in {MANIFEST}; a package holds only signed files")


def verify_package(
    package: str | Path,
    public_key: bytes | str | None = None,
    *,
    fingerprint_pin: str | None = None,
    trust_bundled_key: bool = False,
) -> Manifest:
    """Check a package folder or ``.tar.gz``; returns its manifest and verified bytes, or raises
    PackageInvalidError naming the file that fails (SigningKeyError when no usable trusted key is given).

    ``public_key``: the trusted signer's PEM (or raw 32 bytes). ``fingerprint_pin``: ``sha256:<hex>`` of the
    trusted key, which the bundled ``signer.pub`` must match. ``trust_bundled_key``: trust ``signer.pub`` as it is
    (proves integrity only, not who signed: callers must say so to the user).
    """
    files = read_package(package)
    for required in (MANIFEST, SIGNATURE):
        if required not in files:
            raise PackageInvalidError(f"{required}: missing from {package}; not a signed edge package")
    signer = trusted_key(files, public_key, fingerprint_pin, trust_bundled_key)
    raw = files[MANIFEST]
    if not verify_signature(signer, files[SIGNATURE], raw):
        raise PackageInvalidError(
            f"{SIGNATURE}: the signature of {MANIFEST} does not verify with the trusted key {fingerprint(signer)} "
            f"({MANIFEST} was changed after signing, or another key signed it)"
        )
    data = _check_manifest(raw, signer)
    _check_files(files, data["files"])
    return Manifest(data=data, raw=raw, files=files, source=str(package), signer=fingerprint(signer))


def manifest_of(package: str | Path) -> dict[str, Any]:
    """The manifest as it is, UNVERIFIED (for display only: never trust it without verify_package)."""
    raw = read_package(package).get(MANIFEST)
    if raw is None:
        raise PackageInvalidError(f"{MANIFEST}: missing from {package}")
    try:
        data: dict[str, Any] = json.loads(raw)
    except ValueError as exc:
        raise PackageInvalidError(f"{MANIFEST}: not JSON ({exc})") from None
    return data


def tar_bytes(folder: Path, top: str, mtime: int) -> bytes:
    """A deterministic ``.tar.gz`` of a package folder: files sorted, under ``top/``, fixed owner, modes and times
    (``mtime``), gzip without a timestamp or name. The same folder gives the same bytes."""
    import gzip

    buffer = io.BytesIO()
    with (
        gzip.GzipFile(filename="", mode="wb", fileobj=buffer, mtime=0, compresslevel=9) as zipped,
        tarfile.open(fileobj=zipped, mode="w", format=tarfile.USTAR_FORMAT) as archive,
    ):
        folder_info = tarfile.TarInfo(top)
        folder_info.type, folder_info.mode, folder_info.mtime = tarfile.DIRTYPE, 0o755, mtime
        archive.addfile(folder_info)
        for path in sorted(folder.iterdir()):
            data = path.read_bytes()
            info = tarfile.TarInfo(f"{top}/{path.name}")
            info.size, info.mode, info.mtime = len(data), 0o644, mtime
            archive.addfile(info, io.BytesIO(data))
    return buffer.getvalue()
