"""Encoding a picture on the unit (a match's context picture), and the error every image reader shares.

Reading and decoding photos (enrolment, offline embedding, benchmarks) happens off the van:
lfr_tools.photos.image.
"""

from __future__ import annotations

import cv2
import numpy as np
import numpy.typing as npt


class ImageError(ValueError):
    """A photo cannot be read: missing, not an image, or unreasonably large."""


def encode_jpeg(rgb: npt.NDArray[np.uint8], quality: int = 85) -> bytes:
    ok, buf = cv2.imencode(".jpg", np.ascontiguousarray(rgb[:, :, ::-1]), [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise ImageError("JPEG encoding failed")
    return bytes(buf.tobytes())


def context_jpeg(frame: npt.NDArray[np.uint8], box: tuple[float, float, float, float], max_px: int) -> bytes:
    """Head and shoulders around a face box (x1, y1, x2, y2) of an RGB frame, at most `max_px` a side, as
    JPEG: what lets an officer find the person. For matches only; the scaled copy is zeroed once encoded."""
    x1, y1, x2, y2 = box
    w, h = x2 - x1, y2 - y1
    height, width = frame.shape[:2]
    left, right = max(0, int(x1 - 0.9 * w)), min(width, int(x2 + 0.9 * w))
    top, bottom = max(0, int(y1 - 0.5 * h)), min(height, int(y2 + 1.6 * h))
    if right - left < 2 or bottom - top < 2:
        return b""
    region = frame[top:bottom, left:right]
    scale = min(1.0, max_px / max(region.shape[:2]))
    size = (max(1, round(region.shape[1] * scale)), max(1, round(region.shape[0] * scale)))
    scaled = np.asarray(cv2.resize(region, size, interpolation=cv2.INTER_AREA), dtype=np.uint8)
    try:
        return encode_jpeg(scaled, quality=80)
    finally:
        scaled.fill(0)
