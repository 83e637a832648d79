"""Photo mode: find the subject of a photo (enrolment, `lfr-photos embed`), not the faces of a street frame.

A van's frame path (full range on the letterboxed frame plus short-range tiles, threshold 0.6) is tuned for
small faces in a wide view; on photos it loses faces (1% of a public benchmark of press photos) and its
"largest face" sometimes takes a bystander. A photo is framed around its subject, so:

- the unit's own detector sees the whole photo first, at a photo threshold (0.5): YuNet (the default) at the
  photo's own scale and small, or the short-range BlazeFace; only when that finds no face, or only a small or
  off-centre one, does a second scale look again (YuNet: the photo enlarged twice; BlazeFace: two rows of
  overlapping tiles);
- the subject is the largest face weighted by its closeness to the centre (and by the detector's score), so a
  large bystander at the edge loses to the centred subject; two faces this cannot tell apart are refused,
  with that reason;
- a small face is upscaled (the region around it enlarged, detected again for sharper keypoints) and
  flagged, not refused: an old low-resolution photo of a wanted person still enrols, and says so.

Nothing of a photo is kept: the caller gets the aligned face and the figures, and decides.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Protocol

import cv2
import numpy as np
import numpy.typing as npt

from lfr_edge.config import QualityConfig
from lfr_edge.vision.align import align_face
from lfr_edge.vision.detect import BlazeFace, Detection, FaceDetector, weighted_nms
from lfr_edge.vision.pipeline import FacePipeline
from lfr_edge.vision.quality import QualityVerdict, assess
from lfr_edge.vision.yunet import YuNet

Image = npt.NDArray[np.uint8]

PHOTO_THRESHOLD = 0.5  # a plain short-range pass at 0.5 found a face in every photo of a public benchmark
SECOND_SCALE_BELOW = 0.12  # a subject narrower than this share of the photo's short side: look again, tiled
SECOND_SCALE_OFF_CENTRE = 0.6  # the best face is far from the centre: a smaller subject may be there
CENTRE_FALLOFF = 2.5  # weight = exp(-CENTRE_FALLOFF * d^2), d: distance to the centre / half the diagonal
# Faces at the photo threshold are often not faces (a patterned dress at 0.52): the weight falls with the
# detector's score cubed. On ../shared/faces/wild's photos with two or more faces and a known subject, the
# largest face was a bystander or no face in 8 of 23; width x centre x score^3 in 1 (tests/test_photo_mode.py).
SCORE_POWER = 3
AMBIGUOUS_RATIO = 0.8  # a runner-up with at least this share of the subject's weight: cannot tell them apart
UPSCALE_EYE_PX = 28.0  # a face whose eyes are closer than min_eye_distance_px is enlarged to this
MIN_FACE_PX = 8.0  # below this width there is nothing to enlarge


@dataclass(frozen=True)
class PhotoFace:
    detection: Detection  # in the photo's pixels
    aligned: Image  # 112x112 RGB
    quality: QualityVerdict  # judged where the face was aligned (the enlarged region for a small face)
    upscaled: float  # 1.0, or the factor a small face was enlarged by


@dataclass(frozen=True)
class PhotoSubject:
    face: PhotoFace | None  # None when refused
    faces_found: int
    reason: str  # why there is no subject ("" when there is one)
    notes: tuple[str, ...] = ()  # flags a person should see (an upscaled face)


def centre_weight(det: Detection, width: int, height: int) -> float:
    """1 at the photo's centre, falling off towards the corners."""
    cx, cy = (det.box[0] + det.box[2]) / 2, (det.box[1] + det.box[3]) / 2
    half_diagonal = math.hypot(width, height) / 2
    d = math.hypot(cx - width / 2, cy - height / 2) / max(half_diagonal, 1.0)
    return math.exp(-CENTRE_FALLOFF * d * d)


def subject_weight(det: Detection, width: int, height: int) -> float:
    return det.width * centre_weight(det, width, height) * det.score**SCORE_POWER


def rank_faces(detections: list[Detection], width: int, height: int) -> list[Detection]:
    """The faces, most likely subject first."""
    return sorted(detections, key=lambda d: -subject_weight(d, width, height))


class FaceSource(Protocol):
    """One way of finding faces in an image: a detector at one scale."""

    def detect(self, image: Image) -> list[Detection]: ...


class AtScale:
    """A detector run on the photo resized so its long side is `long_side` pixels (at most `most` times its own),
    its detections mapped back to the photo's pixels. The resized copy is zeroed after use."""

    def __init__(self, detector: FaceSource, long_side: int, most: float = 1.0) -> None:
        self.detector = detector
        self.long_side = long_side
        self.most = most

    def detect(self, image: Image) -> list[Detection]:
        height, width = image.shape[:2]
        factor = min(self.long_side / max(height, width), self.most)
        if abs(factor - 1.0) < 0.02:
            return self.detector.detect(image)
        size = (max(1, round(width * factor)), max(1, round(height * factor)))
        method = cv2.INTER_AREA if factor < 1 else cv2.INTER_CUBIC
        resized = np.asarray(cv2.resize(image, size, interpolation=method), dtype=np.uint8)
        try:
            found = self.detector.detect(resized)
        finally:
            resized.fill(0)
        back = np.float32(1.0 / factor)
        return [
            Detection(
                (d.box[0] / factor, d.box[1] / factor, d.box[2] / factor, d.box[3] / factor),
                d.score,
                (d.keypoints * back).astype(np.float32),
            )
            for d in found
        ]


class Merged:
    """Several looks at one photo, a face seen by more than one counted once (weighted NMS)."""

    def __init__(self, sources: tuple[FaceSource, ...], nms_iou: float = 0.3, max_faces: int = 50) -> None:
        self.sources = sources
        self.nms_iou = nms_iou
        self.max_faces = max_faces

    def detect(self, image: Image) -> list[Detection]:
        found = [d for source in self.sources for d in source.detect(image)]
        if len(found) < 2:
            return found
        boxes = np.array([d.box for d in found], np.float32)
        points = np.stack([d.keypoints for d in found]).astype(np.float32)
        scores = np.array([d.score for d in found], np.float32)
        merged = weighted_nms(boxes, points, scores, self.nms_iou, self.max_faces)
        return [Detection((float(b[0]), float(b[1]), float(b[2]), float(b[3])), s, k) for b, k, s in merged]


# YuNet: the whole photo at its own scale (at most YUNET_LONG_SIDE on its long side) and small (YUNET_SMALL_SIDE:
# YuNet misses a face filling most of an 800 px photo, scoring it 0.33, and finds it at 0.94 at 320 px); when
# that finds none or only a small or off-centre face, the photo enlarged YUNET_CLOSER times as well (at most
# YUNET_CLOSER_LONG_SIDE).
YUNET_LONG_SIDE = 1280
YUNET_SMALL_SIDE = 320
YUNET_CLOSER = 2.0
YUNET_CLOSER_LONG_SIDE = 2560


class PhotoFaceFinder:
    """The unit's detector over a whole photo at one or two scales, and the subject's face."""

    def __init__(
        self, whole: FaceSource, closer: FaceSource, quality: QualityConfig, threshold: float = PHOTO_THRESHOLD
    ) -> None:
        self.whole = whole  # the whole photo at its own scale
        self.closer = closer  # a second look for small or off-centre faces
        # A face the photo threshold found is not refused again for its detector score.
        self.quality = replace(quality, min_score=min(quality.min_score, threshold))

    @classmethod
    def short_range(
        cls, model: BlazeFace, quality: QualityConfig, threshold: float = PHOTO_THRESHOLD
    ) -> PhotoFaceFinder:
        """The short-range BlazeFace on the whole photo, then the whole photo plus two rows of tiles."""
        whole = FaceDetector(None, model, threshold, tile_rows=0)
        return cls(whole, FaceDetector(None, model, threshold, tile_rows=2), quality, threshold)

    @classmethod
    def yunet(cls, model: YuNet, quality: QualityConfig, threshold: float = PHOTO_THRESHOLD) -> PhotoFaceFinder:
        """YuNet on the whole photo at its own scale and small, then enlarged YUNET_CLOSER times as well."""
        unscaled = YuNet(model.model, replace(model.cfg, score_threshold=threshold, yunet_width=3840))
        whole = Merged((AtScale(unscaled, YUNET_LONG_SIDE), AtScale(unscaled, YUNET_SMALL_SIDE)), model.cfg.nms_iou)
        closer = Merged((whole, AtScale(unscaled, YUNET_CLOSER_LONG_SIDE, YUNET_CLOSER)), model.cfg.nms_iou)
        return cls(whole, closer, quality, threshold)

    @classmethod
    def for_pipeline(cls, pipeline: FacePipeline, threshold: float = PHOTO_THRESHOLD) -> PhotoFaceFinder:
        """Photo mode on the detector the unit's pipeline already loaded: YuNet, or the short-range BlazeFace."""
        detector = pipeline.detector
        if isinstance(detector, YuNet):
            return cls.yunet(detector, pipeline.quality, threshold)
        if isinstance(detector.short_range, BlazeFace):
            return cls.short_range(detector.short_range, pipeline.quality, threshold)
        raise ValueError(
            'photo mode needs YuNet or the short-range BlazeFace: set models.detector = "yunet", "both" or "short"'
        )

    def detect(self, image: Image) -> list[Detection]:
        """Every face, most likely subject first: the whole photo, then tiles when that found none, or only a small
        or off-centre one."""
        height, width = image.shape[:2]
        found = rank_faces(self.whole.detect(image), width, height)
        if (
            not found
            or found[0].width < SECOND_SCALE_BELOW * min(width, height)
            or centre_weight(found[0], width, height) < SECOND_SCALE_OFF_CENTRE
        ):
            found = rank_faces(self.closer.detect(image), width, height)
        return found

    def subject(self, image: Image, *, refuse_ambiguous: bool = True) -> PhotoSubject:
        """The photo's subject, aligned and judged; or the reason there is none. Enrolment refuses a photo
        whose subject it cannot tell (`refuse_ambiguous`); an offline tool may take the best guess."""
        height, width = image.shape[:2]
        faces = self.detect(image)
        if not faces:
            return PhotoSubject(None, 0, "no face")
        main = faces[0]
        if len(faces) > 1 and refuse_ambiguous:
            lead, runner = (subject_weight(d, width, height) for d in faces[:2])
            if runner >= AMBIGUOUS_RATIO * lead:
                return PhotoSubject(
                    None,
                    len(faces),
                    f"several faces ({len(faces)}): two of similar size near the centre, cannot tell which is the "
                    "subject; crop the photo to one person",
                )
        if main.width < MIN_FACE_PX:
            return PhotoSubject(None, len(faces), f"too small ({main.width:.0f} px wide, even enlarged)")
        if main.eye_distance >= self.quality.min_eye_distance_px:
            aligned = align_face(image, main.keypoints)
            return PhotoSubject(PhotoFace(main, aligned, assess(main, aligned, self.quality), 1.0), len(faces), "")
        face = self._enlarged(image, main)
        note = (
            f"small face (eyes {main.eye_distance:.0f} px apart, {main.width:.0f} px wide): enlarged "
            f"{face.upscaled:.1f}x; a better photo would match more surely"
        )
        return PhotoSubject(face, len(faces), "", (note,))

    def _enlarged(self, image: Image, det: Detection) -> PhotoFace:
        """A small face: its region enlarged (bicubic), detected again there for sharper keypoints, aligned."""
        factor = UPSCALE_EYE_PX / max(det.eye_distance, 1.0)
        side = 2.5 * max(det.box[2] - det.box[0], det.box[3] - det.box[1])
        cx, cy = (det.box[0] + det.box[2]) / 2, (det.box[1] + det.box[3]) / 2
        h, w = image.shape[:2]
        x1, y1 = max(0, int(cx - side / 2)), max(0, int(cy - side / 2))
        x2, y2 = min(w, int(cx + side / 2) + 1), min(h, int(cy + side / 2) + 1)
        region = image[y1:y2, x1:x2]
        size = (max(1, round((x2 - x1) * factor)), max(1, round((y2 - y1) * factor)))
        big = np.asarray(cv2.resize(region, size, interpolation=cv2.INTER_CUBIC), dtype=np.uint8)
        try:
            again = self.whole.detect(big)
            centre = np.array([(cx - x1) * factor, (cy - y1) * factor])
            near = [d for d in again if np.hypot(*(np.array(d.box[:2]) + d.box[2:]) / 2 - centre) < side * factor / 4]
            if near:
                best = max(near, key=lambda d: d.score)
                aligned = align_face(big, best.keypoints)
                verdict = assess(best, aligned, self.quality)
            else:  # not found again: the first keypoints, scaled into the enlarged region
                keypoints = ((det.keypoints - np.array([x1, y1], np.float32)) * np.float32(factor)).astype(np.float32)
                aligned = align_face(big, keypoints)
                verdict = assess(Detection(det.box, det.score, keypoints), aligned, self.quality)
        finally:
            big.fill(0)
        return PhotoFace(det, aligned, verdict, factor)
