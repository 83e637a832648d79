"""Face detection with OpenCV's YuNet in one pass over the whole frame, scaled down (`models.detector = "yunet"`).

One invoke on the frame at reduced resolution (448x256 for 720p) finds faces from about 30 px wide up,
where BlazeFace needs its full-range pass plus a grid of short-range tiles (the detection bench compares
them on the simulator's scenes). Anchor-free heads at strides 8, 16 and 32, decoded as OpenCV does.
Keypoints come out in BlazeFace's slots so alignment and the quality gate work unchanged: right eye, left
eye, nose tip, mouth centre (the mean of the corners); slots 4 and 5 hold the mouth corners (YuNet has no
ears, and nothing reads the ear slots).

Keypoints found at that scale are too coarse to align a small face well: a face about to be embedded has
them found again (`refine`) on a crop around it where it is 80 px wide (the detection bench measures it).
"""

from __future__ import annotations

import math

import cv2
import numpy as np
import numpy.typing as npt

from lfr_edge.config import DetectConfig
from lfr_edge.inference.base import LoadedModel
from lfr_edge.vision.detect import Detection, weighted_nms

FloatArray = npt.NDArray[np.float32]
Image = npt.NDArray[np.uint8]
STRIDES = (8, 16, 32)
REFINE_SIDE = 160  # px of the square crop `refine` runs on; the face fills half of it


def input_size(width: int, height: int, wanted_width: int) -> tuple[int, int, float]:
    """(input width, input height, scale): the frame scaled to `wanted_width` (at most its own width),
    both sides padded up to a multiple of 32."""
    scale = min(1.0, wanted_width / width)
    in_w = math.ceil(width * scale / 32) * 32
    in_h = math.ceil(height * scale / 32) * 32
    return in_w, in_h, scale


def scaled_input(image: Image, wanted_width: int, height: int | None = None) -> tuple[FloatArray, float]:
    """The RGB frame as YuNet's input: scaled, BGR, 0-255 float32, NCHW, padded with black at the right
    and bottom. `height` pads to at least that many rows (the models build's fixed test size)."""
    h, w = image.shape[:2]
    in_w, in_h, scale = input_size(w, h, wanted_width)
    in_h = max(in_h, height or 0)
    new_w, new_h = max(1, round(w * scale)), max(1, round(h * scale))
    small = image if scale == 1.0 else cv2.resize(image, (new_w, new_h), interpolation=cv2.INTER_LINEAR)
    batch = np.zeros((1, 3, in_h, in_w), np.float32)
    for channel in range(3):  # RGB -> BGR planes
        batch[0, channel, :new_h, :new_w] = small[:, :, 2 - channel]
    return batch, scale


def decode(outputs: dict[str, FloatArray], in_w: int, in_h: int, threshold: float) -> tuple[FloatArray, ...]:
    """(boxes x1y1x2y2, keypoints (N, 5, 2), scores) in input pixels, for anchors scoring at least `threshold`."""
    boxes, points, scores = [], [], []
    for s in STRIDES:
        cols = in_w // s
        score = np.sqrt(np.clip(outputs[f"cls_{s}"][0, :, 0] * outputs[f"obj_{s}"][0, :, 0], 0.0, 1.0))
        keep = np.flatnonzero(score >= threshold)
        if not len(keep):
            continue
        anchor = np.stack([keep % cols, keep // cols], axis=1).astype(np.float32)  # (col, row)
        bbox = outputs[f"bbox_{s}"][0, keep]
        centre = (anchor + bbox[:, :2]) * s
        size = np.exp(bbox[:, 2:4]) * s
        boxes.append(np.concatenate([centre - size / 2, centre + size / 2], axis=1))
        points.append((outputs[f"kps_{s}"][0, keep].reshape(-1, 5, 2) + anchor[:, None, :]) * s)
        scores.append(score[keep])
    if not scores:
        empty = np.zeros((0,), np.float32)
        return empty.reshape(0, 4), empty.reshape(0, 5, 2), empty
    return np.concatenate(boxes), np.concatenate(points), np.concatenate(scores).astype(np.float32)


def blazeface_slots(points: FloatArray) -> FloatArray:
    """YuNet's five landmarks in BlazeFace's six keypoint slots (see the module docstring)."""
    mouth = (points[3] + points[4]) / 2
    return np.stack([points[0], points[1], points[2], mouth, points[3], points[4]]).astype(np.float32)


class YuNet:
    """The whole frame in one invoke; detections in frame pixels, keypoints in BlazeFace's order."""

    def __init__(self, model: LoadedModel, cfg: DetectConfig) -> None:
        if tuple(model.inputs[0].shape[:2]) != (1, 3) or "cls_8" not in [o.name for o in model.outputs]:
            raise ValueError(f"yunet: model input is {tuple(model.inputs[0].shape)}, expected (1, 3, H, W)")
        self.model = model
        self.cfg = cfg
        self._names = [o.name for o in model.outputs]

    def detect(self, image: Image) -> list[Detection]:
        height, width = image.shape[:2]
        batch, scale = scaled_input(image, self.cfg.yunet_width)
        try:
            outputs = dict(zip(self._names, self.model.run(batch), strict=True))
        finally:
            batch.fill(0)
        boxes, points, scores = decode(outputs, batch.shape[3], batch.shape[2], self.cfg.score_threshold)
        merged = weighted_nms(boxes / scale, points / scale, scores, self.cfg.nms_iou, self.cfg.max_faces)
        detections = []
        for box, kps, score in merged:
            x1, y1 = float(np.clip(box[0], 0, width)), float(np.clip(box[1], 0, height))
            x2, y2 = float(np.clip(box[2], 0, width)), float(np.clip(box[3], 0, height))
            if x2 - x1 >= 2 and y2 - y1 >= 2:
                detections.append(Detection((x1, y1, x2, y2), score, blazeface_slots(kps)))
        return detections

    def refine(self, image: Image, face: Detection) -> FloatArray:
        """The face's keypoints found again on a crop around it; the detection's own when the whole-frame pass
        saw the face as large or the crop shows no face near its centre. The crop and model input are zeroed."""
        x1, y1, x2, y2 = face.box
        scale = REFINE_SIDE / (2.0 * max(x2 - x1, y2 - y1, 1.0))
        if scale <= input_size(image.shape[1], image.shape[0], self.cfg.yunet_width)[2]:
            return face.keypoints
        shift = REFINE_SIDE / 2 - scale * np.array([(x1 + x2) / 2, (y1 + y2) / 2], np.float32)
        matrix = np.array([[scale, 0.0, shift[0]], [0.0, scale, shift[1]]], np.float32)
        crop = cv2.warpAffine(image, matrix, (REFINE_SIDE, REFINE_SIDE), flags=cv2.INTER_LINEAR)
        batch = np.ascontiguousarray(crop[:, :, ::-1].transpose(2, 0, 1)[None], dtype=np.float32)  # BGR planes
        crop.fill(0)
        try:
            outputs = dict(zip(self._names, self.model.run(batch), strict=True))
        finally:
            batch.fill(0)
        boxes, points, scores = decode(outputs, REFINE_SIDE, REFINE_SIDE, self.cfg.score_threshold)
        offset = np.linalg.norm((boxes[:, :2] + boxes[:, 2:]) / 2 - REFINE_SIDE / 2, axis=1)
        near = np.flatnonzero(offset < REFINE_SIDE / 4)
        best = near[int(np.argmax(scores[near]))] if len(near) else None
        return face.keypoints if best is None else blazeface_slots(((points[best] - shift) / scale).astype(np.float32))
