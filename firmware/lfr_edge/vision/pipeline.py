"""detect → quality → (the caller picks which faces are worth it) → embed, on one frame held in memory.

A `FacePipeline` is built once from the config (models verified against the manifest, loaded on the
configured backend) and then called per frame. It keeps no per-frame state: what it returns is all there
is, and the caller decides what to keep (the tracker keeps only what a track needs, and overwrites it).
The faces' crops and embeddings are the only copies left (the batch handed to the embedder is zeroed), so
a caller that overwrites them leaves nothing of a passer-by behind.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import numpy.typing as npt

from lfr_edge.config import Config, DetectConfig, QualityConfig
from lfr_edge.inference import create_backend
from lfr_edge.inference.base import Backend
from lfr_edge.models import ModelError, load_manifest
from lfr_edge.vision.align import align_face
from lfr_edge.vision.detect import FULL_RANGE, SHORT_RANGE, BlazeFace, Detection, FaceDetector
from lfr_edge.vision.embed import Embedder
from lfr_edge.vision.quality import QualityVerdict, assess
from lfr_edge.vision.yunet import YuNet

Image = npt.NDArray[np.uint8]
EMBEDDER_MODEL = "mobilefacenet"  # the default of models.embedder
YUNET = "yunet"
# Backends that cannot run .tflite files, and the variant of every model they run instead (the models
# build exports it, or the model is published only as ONNX: YuNet, SFace). The embedder's model id then
# names that variant, and a watchlist is enrolled for one model id: a Jetson unit's watchlists must be
# enrolled with the Jetson's own model id (mobilefacenet/onnx/... or sface/onnx/...), or the unit refuses them.
BACKEND_VARIANTS = {"onnx-tensorrt": "onnx", "onnx-cpu": "onnx"}
Detector = FaceDetector | YuNet


@dataclass(frozen=True)
class Face:
    detection: Detection
    quality: QualityVerdict
    aligned: Image  # 112x112x3 RGB; lives in RAM only
    embedding: npt.NDArray[np.float32] | None  # None when the quality gate refused the face


@dataclass(frozen=True)
class FrameFaces:
    faces: list[Face]
    stage_ms: dict[str, float] = field(default_factory=dict)  # detect, quality, align, embed


@dataclass(frozen=True)
class ModelFiles:
    """The verified model files a pipeline runs, and the id watchlists are enrolled with."""

    full_range: Path | None
    short_range: Path | None
    embedder: Path
    model_id: str  # e.g. "mobilefacenet/int8-static/3f2a9c01d4e5": a bundle for another id is refused
    yunet: Path | None = None  # models.detector = "yunet": the one detector


class FacePipeline:
    def __init__(self, detector: Detector, embedder: Embedder, quality: QualityConfig, model_id: str) -> None:
        self.detector = detector
        self.embedder = embedder
        self.quality = quality
        self.model_id = model_id

    def apply(self, quality: QualityConfig) -> None:
        """A reloaded [quality] section: the gate for the next frame."""
        self.quality = quality

    def detect(self, image: Image) -> list[Detection]:
        return self.detector.detect(image)

    def observe(self, image: Image) -> tuple[list[Face], dict[str, float]]:
        """All faces in the frame with their quality verdicts, none embedded yet (the caller picks which are
        worth it); the crops of faces the gate refused are overwritten at once."""
        t0 = time.perf_counter()
        detections = self.detector.detect(image)
        t1 = time.perf_counter()
        aligned = [align_face(image, d.keypoints) for d in detections]
        t2 = time.perf_counter()
        verdicts = [assess(d, a, self.quality) for d, a in zip(detections, aligned, strict=True)]
        for crop, verdict in zip(aligned, verdicts, strict=True):
            if not verdict.ok:
                crop.fill(0)
        t3 = time.perf_counter()
        faces = [Face(d, v, a, None) for d, v, a in zip(detections, verdicts, aligned, strict=True)]
        return faces, {"detect": (t1 - t0) * 1e3, "align": (t2 - t1) * 1e3, "quality": (t3 - t2) * 1e3}

    def refine(self, image: Image, face: Face) -> None:
        """Before a face is embedded: its crop redone in place from keypoints found close up (YuNet only)."""
        if isinstance(self.detector, YuNet):
            aligned = align_face(image, self.detector.refine(image, face.detection))
            np.copyto(face.aligned, aligned)
            aligned.fill(0)

    def embed_crops(self, crops: list[Image]) -> npt.NDArray[np.float32]:
        """One embedding row per aligned crop; the batch handed to the model is zeroed, the rows are the only
        copies (the caller overwrites them)."""
        if not crops:
            return np.zeros((0, self.embedder.dim), dtype=np.float32)
        batch = np.stack(crops)
        try:
            return self.embedder.embed(batch)
        finally:
            batch.fill(0)

    def process(self, image: Image, embed: bool = True) -> FrameFaces:
        """All faces in the frame, each with its quality verdict; embeddings for all that pass (photos,
        enrolment, tools: the live unit embeds only a track's best shots, lfr_edge.daemon.worker)."""
        faces, stage_ms = self.observe(image)
        t0 = time.perf_counter()
        passing = [i for i, f in enumerate(faces) if f.quality.ok] if embed else []
        rows = self.embed_crops([faces[i].aligned for i in passing])
        for i, row in zip(passing, rows, strict=True):  # views of one array: the caller overwrites them
            faces[i] = Face(faces[i].detection, faces[i].quality, faces[i].aligned, row)
        stage_ms["embed"] = (time.perf_counter() - t0) * 1e3
        return FrameFaces(faces, stage_ms)

    def forget(self) -> None:
        """Overwrite what the last faces left in the embedding model's workspace (when a track ends)."""
        self.embedder.scrub()

    def embed_aligned(self, faces: Image) -> npt.NDArray[np.float32]:
        """Embeddings of already-aligned 112x112 crops (the corpus's `aligned/` set, enrolment tools)."""
        return self.embedder.embed(faces)


def model_variants(cfg: Config, variant: str | None = None) -> tuple[str, str]:
    """(detector variant, embedder variant) for the configured backend: the manifest's defaults and the
    asked-for embedder variant, or the one variant a non-LiteRT backend runs (BACKEND_VARIANTS)."""
    wanted = variant or cfg.models.embedder_variant
    only = BACKEND_VARIANTS.get(cfg.inference.backend)
    if only is None:
        return "default", wanted
    if wanted not in ("default", only):
        raise ModelError(
            f"inference.backend = {cfg.inference.backend!r} runs the {only!r} model variants, not the "
            f'embedder variant {wanted!r}: leave models.embedder_variant at "default"'
        )
    return only, only


def resolve_model_files(cfg: Config, variant: str | None = None) -> ModelFiles:
    """Find the configured models' artifacts and verify each against the manifest's sha256."""
    manifest = load_manifest(cfg.models.manifest)
    models_dir = cfg.models.dir.expanduser()
    full = short = yunet = None
    detector_variant, embedder_variant = model_variants(cfg, variant)
    for name in (cfg.models.embedder, *([YUNET] if cfg.models.detector == YUNET else [])):
        if manifest.model(name).onnx_only and cfg.inference.backend not in BACKEND_VARIANTS:
            raise ModelError(
                f'{name} exists only as ONNX: set inference.backend = "onnx-cpu" (or "onnx-tensorrt" on a '
                f"Jetson) to run it; {cfg.inference.backend!r} cannot: with it set models.detector = "
                '"both" and models.embedder = "mobilefacenet"'
            )
    if cfg.models.detector == YUNET:
        yunet, _ = manifest.artifact(YUNET, detector_variant, models_dir)
    if cfg.models.detector in ("full", "both"):
        full, _ = manifest.artifact(FULL_RANGE.name, detector_variant, models_dir)
    if cfg.models.detector in ("short", "both"):
        short, _ = manifest.artifact(SHORT_RANGE.name, detector_variant, models_dir)
    embedder_path, v = manifest.artifact(cfg.models.embedder, embedder_variant, models_dir)
    return ModelFiles(full, short, embedder_path, f"{cfg.models.embedder}/{v.name}/{v.sha256[:12]}", yunet)


def pipeline_from_files(
    files: ModelFiles,
    backend: Backend,
    detect: DetectConfig,
    quality: QualityConfig,
    flip_average: bool = True,
) -> FacePipeline:
    detector: Detector
    if files.yunet is not None:
        detector = YuNet(backend.load(files.yunet), detect)
    else:
        full = BlazeFace(backend.load(files.full_range), FULL_RANGE) if files.full_range else None
        short = BlazeFace(backend.load(files.short_range), SHORT_RANGE) if files.short_range else None
        detector = FaceDetector.from_config(full, short, detect)
    embedder = Embedder(backend.load(files.embedder), flip_average)
    return FacePipeline(detector, embedder, quality, files.model_id)


def build_pipeline(cfg: Config, variant: str | None = None) -> FacePipeline:
    """The unit's pipeline as configured: verified models on the configured backend."""
    files = resolve_model_files(cfg, variant)
    backend = create_backend(cfg.inference)
    return pipeline_from_files(files, backend, cfg.detect, cfg.quality, cfg.embed.flip_average)
