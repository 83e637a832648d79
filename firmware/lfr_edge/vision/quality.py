"""Quality before embedding: refuse faces too small, too unsure, too blurred or turned too far, and score
the rest so a track embeds only its best shots (lfr_edge.daemon.worker).

Every threshold comes from the config; every rejection has a reason so the daemon can count them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np
import numpy.typing as npt

from lfr_edge.config import QualityConfig
from lfr_edge.vision.detect import KP_LEFT_EYE, KP_NOSE, KP_RIGHT_EYE, Detection

REASONS = ("too_small", "low_score", "blurred", "turned_away")


@dataclass(frozen=True)
class QualityVerdict:
    ok: bool
    reason: str  # "" when ok, else one of REASONS
    eye_distance_px: float
    sharpness: float
    yaw_deg: float
    detector_score: float = 1.0

    @property
    def score(self) -> float:
        """A single figure to rank a track's faces by: larger, sharper, more frontal and surer is better."""
        frontal = max(0.0, math.cos(math.radians(self.yaw_deg)))
        return self.eye_distance_px * frontal * min(1.0, self.sharpness / 100.0 + 0.5) * self.detector_score


def estimate_yaw_deg(keypoints: npt.NDArray[np.float32]) -> float:
    """Head yaw from where the nose sits between the eyes (0 frontal, 90 profile); coarse but cheap."""
    left, right, nose = keypoints[KP_RIGHT_EYE], keypoints[KP_LEFT_EYE], keypoints[KP_NOSE]
    half = float(np.linalg.norm(right - left)) / 2
    if half < 1e-6:
        return 90.0
    axis = (right - left) / (2 * half)
    offset = float(np.dot(nose - (left + right) / 2, axis)) / half
    return math.degrees(math.asin(max(-1.0, min(1.0, offset))))


def sharpness(aligned: npt.NDArray[np.uint8]) -> float:
    """Variance of the Laplacian of the grey aligned face: low means blurred."""
    grey = cv2.cvtColor(aligned, cv2.COLOR_RGB2GRAY)
    edges = cv2.Laplacian(grey, cv2.CV_32F)
    try:
        return float(edges.var())
    finally:
        grey.fill(0)  # copies of a face: overwritten, not left to the allocator
        edges.fill(0)


def assess(detection: Detection, aligned: npt.NDArray[np.uint8], cfg: QualityConfig) -> QualityVerdict:
    eye = detection.eye_distance
    yaw = estimate_yaw_deg(detection.keypoints)
    sharp = sharpness(aligned)
    reason = ""
    if eye < cfg.min_eye_distance_px:
        reason = "too_small"
    elif detection.score < cfg.min_score:
        reason = "low_score"
    elif abs(yaw) > cfg.max_yaw_deg:
        reason = "turned_away"
    elif sharp < cfg.min_sharpness:
        reason = "blurred"
    return QualityVerdict(not reason, reason, eye, sharp, yaw, detection.score)
