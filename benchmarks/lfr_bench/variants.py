"""Which model variants the bench runs: every embedder variant in the manifest, verified like the unit.

For each embedder variant V the detectors run their variant of the same name when the manifest has one
(so `int8-static` is int8 end to end), else their default. `--models-from DIR` (development only, before
`make models` has run) runs the raw source files found in DIR as one variant named `source-float`.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

from lfr_edge.config import Config, DetectConfig, QualityConfig
from lfr_edge.inference import create_backend
from lfr_edge.models import Manifest, ModelError, load_manifest
from lfr_edge.vision.detect import FULL_RANGE, SHORT_RANGE
from lfr_edge.vision.pipeline import EMBEDDER_MODEL, FacePipeline, ModelFiles, pipeline_from_files, resolve_model_files

SOURCE_FILES = {
    "full_range": "face_detection_full_range.tflite",
    "short_range": "face_detection_short_range.tflite",
    "embedder": "MobileFaceNet.tflite",
}


@dataclass(frozen=True)
class BenchVariant:
    name: str  # the embedder variant's name in the manifest, or "unit default"
    files: ModelFiles
    is_default: bool  # the unit's default variant (what the daemon runs)
    sizes_bytes: dict[str, int]
    backend: str = "litert-cpu"  # what runs it


class VariantsUnavailable(RuntimeError):
    """No model artifacts to benchmark; the message says how to get them."""


def _detector_variant(manifest: Manifest, model: str, name: str) -> str:
    names = {v.name for v in manifest.model(model).variants}
    return name if name in names else "default"


def manifest_variants(cfg: Config) -> list[BenchVariant]:
    """Every MobileFaceNet variant the manifest lists on LiteRT (BlazeFace detecting), and the unit's configured
    models when they are others (YuNet, SFace on ONNX Runtime), their files verified against their sha256."""
    litert = cfg.inference.backend == "litert-cpu" and cfg.models.embedder == EMBEDDER_MODEL
    litert = litert and cfg.models.detector != "yunet"
    try:
        manifest = load_manifest(cfg.models.manifest)
        entry = manifest.model(EMBEDDER_MODEL)
    except ModelError as exc:
        raise VariantsUnavailable(f"{exc} (run `make models`)") from exc
    models_dir = cfg.models.dir.expanduser()
    out = []
    for v in entry.variants:
        if v.is_onnx:
            continue  # the bench runs LiteRT; ONNX exports are the onnx-tensorrt backend's
        try:
            full, _ = manifest.artifact(
                FULL_RANGE.name, _detector_variant(manifest, FULL_RANGE.name, v.name), models_dir
            )
            short, _ = manifest.artifact(
                SHORT_RANGE.name, _detector_variant(manifest, SHORT_RANGE.name, v.name), models_dir
            )
            emb, _ = manifest.artifact(EMBEDDER_MODEL, v.name, models_dir)
        except ModelError as exc:
            raise VariantsUnavailable(str(exc)) from exc
        files = ModelFiles(full, short, emb, f"{EMBEDDER_MODEL}/{v.name}/{v.sha256[:12]}")
        out.append(BenchVariant(v.name, files, litert and v.name == entry.default_variant, _sizes(files)))
    if not litert:
        try:
            unit = resolve_model_files(cfg)
        except ModelError as exc:
            raise VariantsUnavailable(str(exc)) from exc
        out.insert(0, BenchVariant("unit default", unit, True, _sizes(unit), cfg.inference.backend))
    if not out:
        raise VariantsUnavailable(f"{cfg.models.manifest}: no {EMBEDDER_MODEL} variant built (run `make models`)")
    return out


def source_variant(folder: Path) -> BenchVariant:
    paths = {key: folder / name for key, name in SOURCE_FILES.items()}
    missing = [str(p) for p in paths.values() if not p.is_file()]
    if missing:
        raise VariantsUnavailable(f"--models-from: missing {', '.join(missing)}")
    files = ModelFiles(paths["full_range"], paths["short_range"], paths["embedder"], "mobilefacenet/source")
    return BenchVariant("source-float", files, True, _sizes(files))


def _sizes(files: ModelFiles) -> dict[str, int]:
    named = {"full_range": files.full_range, "short_range": files.short_range, "yunet": files.yunet}
    named["embedder"] = files.embedder
    return {k: p.stat().st_size for k, p in named.items() if p is not None}


def bench_variants(cfg: Config, models_from: Path | None) -> list[BenchVariant]:
    return [source_variant(models_from)] if models_from is not None else manifest_variants(cfg)


def build(variant: BenchVariant, cfg: Config, threads: int) -> FacePipeline:
    """The unit's pipeline (same stages, same config) for `variant` on `threads` threads of its backend."""
    backend = create_backend(dataclasses.replace(cfg.inference, backend=variant.backend, threads=threads))  # type: ignore[arg-type]
    detect: DetectConfig = cfg.detect
    quality: QualityConfig = cfg.quality
    return pipeline_from_files(variant.files, backend, detect, quality, cfg.embed.flip_average)
