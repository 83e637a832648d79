"""The model manifest, as the unit reads it: which artifact files exist and what their sha256 must be.

`models/manifest.toml` is written by hand (sources, contracts) and by `models/build.py --record`
(artifact hashes, the default variant). The unit refuses any model file whose hash is not the manifest's.
"""

from __future__ import annotations

import hashlib
import tomllib
from dataclasses import dataclass
from pathlib import Path


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


def load_manifest(path: Path) -> Manifest:
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ModelError(f"cannot read the model manifest {path}: {exc.strerror}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ModelError(f"the model manifest {path} is not valid TOML: {exc}") from exc
    try:
        sources = {
            s["name"]: Source(s["name"], s["kind"], s["package"], s["version"], s["sha256"])
            for s in data.get("source", [])
        }
        models = {}
        for m in data.get("model", []):
            variants = tuple(
                Variant(v["name"], v["file"], v["sha256"], v.get("description", "")) for v in m.get("variant", [])
            )
            entry = ModelEntry(
                name=m["name"],
                source=m["source"],
                path=m["path"],
                sha256=m["sha256"],
                inputs=m["inputs"],
                outputs=m["outputs"],
                variants=variants,
                default_variant=m.get("default_variant", "float"),
            )
            if entry.source not in sources:
                raise ModelError(f"{path}: model {entry.name!r} names unknown source {entry.source!r}")
            if any(v.is_onnx and v.name == entry.default_variant for v in variants):
                raise ModelError(
                    f"{path}: model {entry.name!r}: default_variant {entry.default_variant!r} is an ONNX "
                    "file, which the CPU unit (LiteRT) cannot run; the default must be a .tflite variant"
                )
            models[entry.name] = entry
    except KeyError as exc:
        raise ModelError(f"{path}: an entry lacks the key {exc.args[0]!r}") from exc
    return Manifest(path=path, sources=sources, models=models)
