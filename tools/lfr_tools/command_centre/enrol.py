"""Enrolment: one photo in, one embedding and a small reference crop out, or the reason it is unusable.

The command centre must enrol with the unit's own embedding model (same alignment, quality gate and
embedder as the unit), so `PipelineEnroller` wraps `lfr_edge.vision.pipeline.FacePipeline`; the bundle
carries the pipeline's model id and a unit with another model refuses it. Faces are found in photo mode
(`lfr_tools.photos.photo_mode`): the subject, not a bystander; a small face enlarged and flagged.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import cv2
import numpy as np
import numpy.typing as npt

from lfr_edge.vision.image import encode_jpeg
from lfr_edge.vision.pipeline import FacePipeline
from lfr_tools.photos.photo_mode import PhotoFaceFinder

REFERENCE_MAX_SIDE = 128  # about 4 KB as JPEG: 10,000 subjects stay well under 100 MB
_REASONS = {
    "too_small": "too small",
    "blurred": "too blurred",
    "low_score": "face not clear enough",
    "turned_away": "face turned away",
}


@dataclass(frozen=True)
class Enrolment:
    embedding: npt.NDArray[np.float32] | None  # L2-normalised, None when unusable
    photo_jpeg: bytes
    reason: str  # "" when usable
    notes: tuple[str, ...] = ()  # usable, but a person should know (a small face, enlarged)


class Enroller(Protocol):
    model_id: str

    def enrol(self, image_rgb: npt.NDArray[np.uint8]) -> Enrolment: ...


def reference_crop(image: npt.NDArray[np.uint8], box: tuple[float, float, float, float]) -> bytes:
    """The face box with a margin, at most REFERENCE_MAX_SIDE pixels, as JPEG."""
    x1, y1, x2, y2 = box
    margin = 0.25 * max(x2 - x1, y2 - y1)
    h, w = image.shape[:2]
    left, top = max(0, int(x1 - margin)), max(0, int(y1 - margin))
    right, bottom = min(w, int(x2 + margin)), min(h, int(y2 + margin))
    crop: npt.NDArray[np.uint8] = image[top:bottom, left:right]
    scale = REFERENCE_MAX_SIDE / max(crop.shape[:2])
    if scale < 1:
        size = (max(1, round(crop.shape[1] * scale)), max(1, round(crop.shape[0] * scale)))
        crop = np.asarray(cv2.resize(crop, size), dtype=np.uint8)
    return encode_jpeg(np.ascontiguousarray(crop), quality=85)


class PipelineEnroller:
    """Enrols the photo's subject with the unit's embedder; refuses a photo without a clear subject, saying why."""

    def __init__(self, pipeline: FacePipeline, finder: PhotoFaceFinder | None = None) -> None:
        self.pipeline = pipeline
        self.finder = finder or PhotoFaceFinder.for_pipeline(pipeline)
        self.model_id = pipeline.model_id

    def enrol(self, image_rgb: npt.NDArray[np.uint8]) -> Enrolment:
        found = self.finder.subject(image_rgb)
        face = found.face
        if face is None:
            return Enrolment(None, b"", found.reason)
        try:
            if not face.quality.ok:
                return Enrolment(None, b"", _REASONS.get(face.quality.reason, face.quality.reason))
            embedding = self.pipeline.embed_aligned(face.aligned[None])[0].astype(np.float32)
        finally:
            face.aligned.fill(0)
        return Enrolment(embedding, reference_crop(image_rgb, face.detection.box), "", found.notes)
