"""Face detection with MediaPipe's BlazeFace models (short range and full range).

The models see a small square input (128 or 192 px). A van camera's frame is large and its faces are
small, so a detector runs the full-range model on the whole (letterboxed) frame for large faces and the
short-range model on overlapping square tiles for small ones, then merges everything with weighted NMS
(see ../shared/notes/models-and-runtime.md, "Detection on camera frames").
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np
import numpy.typing as npt

from lfr_edge.config import DetectConfig
from lfr_edge.inference.base import LoadedModel

FloatArray = npt.NDArray[np.float32]
Image = npt.NDArray[np.uint8]

# BlazeFace keypoint order (subject's right eye appears on the image's left).
KP_RIGHT_EYE, KP_LEFT_EYE, KP_NOSE, KP_MOUTH, KP_RIGHT_EAR, KP_LEFT_EAR = range(6)


@dataclass(frozen=True)
class Detection:
    """One face in frame pixels: box (x1, y1, x2, y2), score in [0, 1], six keypoints (x, y)."""

    box: tuple[float, float, float, float]
    score: float
    keypoints: FloatArray  # shape (6, 2)

    @property
    def width(self) -> float:
        return self.box[2] - self.box[0]

    @property
    def eye_distance(self) -> float:
        return float(np.linalg.norm(self.keypoints[KP_LEFT_EYE] - self.keypoints[KP_RIGHT_EYE]))


@dataclass(frozen=True)
class BlazeFaceSpec:
    """What differs between the two models: input size and anchor layout."""

    name: str
    input_size: int
    strides: tuple[int, ...]
    anchors_per_cell: tuple[int, ...]


SHORT_RANGE = BlazeFaceSpec("blazeface-short", 128, (8, 16), (2, 6))
FULL_RANGE = BlazeFaceSpec("blazeface-full", 192, (4,), (1,))


def make_anchors(spec: BlazeFaceSpec) -> FloatArray:
    """SSD anchor centres (x, y) in [0, 1], in the order of the model's output rows."""
    rows = []
    for stride, per_cell in zip(spec.strides, spec.anchors_per_cell, strict=True):
        cells = spec.input_size // stride
        ys, xs = np.mgrid[0:cells, 0:cells].astype(np.float32)
        centres = np.stack([(xs + 0.5) / cells, (ys + 0.5) / cells], axis=-1).reshape(-1, 1, 2)
        rows.append(np.repeat(centres, per_cell, axis=1).reshape(-1, 2))
    return np.concatenate(rows).astype(np.float32)


class BlazeFace:
    """One BlazeFace model: square RGB image in, detections in that image's pixels out."""

    def __init__(self, model: LoadedModel, spec: BlazeFaceSpec) -> None:
        shape = tuple(model.inputs[0].shape)
        if shape != (1, spec.input_size, spec.input_size, 3):
            raise ValueError(f"{spec.name}: model input is {shape}, expected (1, {spec.input_size}, ...)")
        self.model = model
        self.spec = spec
        self.anchors = make_anchors(spec)
        if self.model.outputs[0].shape[1] != len(self.anchors):
            raise ValueError(
                f"{spec.name}: model has {self.model.outputs[0].shape[1]} anchors, expected {len(self.anchors)}"
            )
        self._regressor_index = 0 if self.model.outputs[0].shape[-1] == 16 else 1

    def raw(self, square: Image) -> tuple[FloatArray, FloatArray]:
        """Scores (N,) and decoded boxes+keypoints (N, 16) in [0, 1] units of the square input."""
        size = self.spec.input_size
        if square.shape[:2] != (size, size):
            square = np.asarray(cv2.resize(square, (size, size), interpolation=cv2.INTER_LINEAR), dtype=np.uint8)
        tensor = (square.astype(np.float32) * (1.0 / 127.5) - 1.0)[None]
        outputs = self.model.run(tensor)
        regressors = outputs[self._regressor_index][0]
        logits = outputs[1 - self._regressor_index][0, :, 0]
        scores = 1.0 / (1.0 + np.exp(-np.clip(logits, -80.0, 80.0)))
        decoded = regressors / np.float32(size)
        decoded[:, 0:2] += self.anchors
        decoded[:, 4:16] += np.tile(self.anchors, (1, 6))
        return scores.astype(np.float32), decoded


def _to_xyxy(decoded: FloatArray) -> FloatArray:
    cx, cy, w, h = decoded[:, 0], decoded[:, 1], decoded[:, 2], decoded[:, 3]
    return np.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], axis=1)


def weighted_nms(
    boxes: FloatArray, keypoints: FloatArray, scores: FloatArray, iou: float, limit: int
) -> list[tuple[FloatArray, FloatArray, float]]:
    """MediaPipe's weighted NMS: each cluster's box and keypoints are the score-weighted mean."""
    order = np.argsort(-scores)
    boxes, keypoints, scores = boxes[order], keypoints[order], scores[order]
    areas = np.maximum(boxes[:, 2] - boxes[:, 0], 0) * np.maximum(boxes[:, 3] - boxes[:, 1], 0)
    alive = np.ones(len(scores), dtype=bool)
    out: list[tuple[FloatArray, FloatArray, float]] = []
    for i in range(len(scores)):
        if not alive[i]:
            continue
        x1 = np.maximum(boxes[i, 0], boxes[:, 0])
        y1 = np.maximum(boxes[i, 1], boxes[:, 1])
        x2 = np.minimum(boxes[i, 2], boxes[:, 2])
        y2 = np.minimum(boxes[i, 3], boxes[:, 3])
        inter = np.maximum(x2 - x1, 0) * np.maximum(y2 - y1, 0)
        overlap = inter / np.maximum(areas[i] + areas - inter, 1e-9)
        members = alive & (overlap > iou)
        weights = scores[members][:, None]
        box = (boxes[members] * weights).sum(0) / weights.sum()
        kps = (keypoints[members] * weights[:, :, None]).sum(0) / weights.sum()
        out.append((box, kps, float(scores[i])))
        alive &= ~members
        if len(out) >= limit:
            break
    return out


@dataclass(frozen=True)
class Window:
    """A square region of the frame (possibly padded past its edges) fed to one model invoke."""

    x: int
    y: int
    side: int


def tile_windows(width: int, height: int, rows: int, overlap: float = 0.25) -> list[Window]:
    """Overlapping square tiles covering the frame in `rows` rows."""
    short = min(width, height)
    side = math.ceil(short / (rows * (1 - overlap) + overlap)) if rows > 1 else short
    side = min(side, short)
    n_cols = 1 if width <= side else math.ceil((width - side) / (side * (1 - overlap))) + 1
    n_rows = 1 if height <= side else math.ceil((height - side) / (side * (1 - overlap))) + 1
    xs = np.linspace(0, max(width - side, 0), n_cols).round().astype(int)
    ys = np.linspace(0, max(height - side, 0), n_rows).round().astype(int)
    return [Window(int(x), int(y), side) for y in ys for x in xs]


def letterbox_window(width: int, height: int) -> Window:
    """The square that holds the whole frame, centred (the model's input is square)."""
    side = max(width, height)
    return Window((width - side) // 2, (height - side) // 2, side)


def crop_square(image: Image, win: Window, size: int) -> Image:
    """The window's pixels resized to size x size; parts outside the frame are black. Bilinear, as
    MediaPipe's own image-to-tensor step does: faster than area averaging and as good for BlazeFace
    (measured on the simulator's scenes)."""
    h, w = image.shape[:2]
    x1, y1, x2, y2 = max(win.x, 0), max(win.y, 0), min(win.x + win.side, w), min(win.y + win.side, h)
    scale = size / win.side
    region = image[y1:y2, x1:x2]
    out_w, out_h = max(1, round((x2 - x1) * scale)), max(1, round((y2 - y1) * scale))
    resized = np.asarray(cv2.resize(region, (out_w, out_h), interpolation=cv2.INTER_LINEAR), dtype=np.uint8)
    if (out_w, out_h) == (size, size):
        return resized
    canvas = np.zeros((size, size, 3), dtype=np.uint8)
    ox, oy = round((x1 - win.x) * scale), round((y1 - win.y) * scale)
    out_h, out_w = min(out_h, size - oy), min(out_w, size - ox)
    canvas[oy : oy + out_h, ox : ox + out_w] = resized[:out_h, :out_w]
    return canvas


class FaceDetector:
    """Runs one or both BlazeFace models over a frame of any size and merges their detections."""

    def __init__(
        self,
        full_range: BlazeFace | None,
        short_range: BlazeFace | None,
        score_threshold: float = 0.6,
        nms_iou: float = 0.3,
        tile_rows: int = 2,
        max_faces: int = 50,
    ) -> None:
        if full_range is None and short_range is None:
            raise ValueError("FaceDetector needs at least one BlazeFace model")
        self.full_range = full_range
        self.short_range = short_range
        self.score_threshold = score_threshold
        self.nms_iou = nms_iou
        self.tile_rows = tile_rows
        self.max_faces = max_faces

    @classmethod
    def from_config(
        cls,
        full_range: BlazeFace | None,
        short_range: BlazeFace | None,
        cfg: DetectConfig,
        tile_rows: int | None = None,
    ) -> FaceDetector:
        """The detector as `[detect]` configures it (`tile_rows` overrides the config's, e.g. for photos)."""
        rows = cfg.tile_rows if tile_rows is None else tile_rows
        return cls(full_range, short_range, cfg.score_threshold, cfg.nms_iou, rows, cfg.max_faces)

    def plan(self, width: int, height: int) -> list[tuple[BlazeFace, Window]]:
        """Which model sees which window. With both models: full range on the whole frame, short range
        on `tile_rows` rows of tiles (0: none, the fastest and blind to faces under ~80 px at 720p);
        with one model alone: the whole frame."""
        jobs: list[tuple[BlazeFace, Window]] = []
        whole = letterbox_window(width, height)
        if self.full_range is not None:
            jobs.append((self.full_range, whole))
        if self.short_range is not None:
            if self.full_range is None:
                jobs.append((self.short_range, whole))
            if self.tile_rows > 0 and (self.full_range is not None or self.tile_rows > 1):
                jobs.extend((self.short_range, w) for w in tile_windows(width, height, self.tile_rows))
        return jobs

    def detect(self, image: Image) -> list[Detection]:
        height, width = image.shape[:2]
        all_boxes, all_kps, all_scores = [], [], []
        for model, win in self.plan(width, height):
            scores, decoded = model.raw(crop_square(image, win, model.spec.input_size))
            keep = scores >= self.score_threshold
            if not keep.any():
                continue
            dec = decoded[keep] * np.float32(win.side)
            boxes = _to_xyxy(dec) + np.array([win.x, win.y, win.x, win.y], dtype=np.float32)
            kps = dec[:, 4:16].reshape(-1, 6, 2) + np.array([win.x, win.y], dtype=np.float32)
            all_boxes.append(boxes)
            all_kps.append(kps)
            all_scores.append(scores[keep])
        if not all_scores:
            return []
        merged = weighted_nms(
            np.concatenate(all_boxes),
            np.concatenate(all_kps),
            np.concatenate(all_scores),
            self.nms_iou,
            self.max_faces,
        )
        detections = []
        for box, kps, score in merged:
            x1, y1 = float(np.clip(box[0], 0, width)), float(np.clip(box[1], 0, height))
            x2, y2 = float(np.clip(box[2], 0, width)), float(np.clip(box[3], 0, height))
            if x2 - x1 < 2 or y2 - y1 < 2:
                continue
            detections.append(Detection((x1, y1, x2, y2), score, kps.astype(np.float32)))
        return detections


def largest(detections: Sequence[Detection]) -> Detection | None:
    return max(detections, key=lambda d: d.width, default=None)
