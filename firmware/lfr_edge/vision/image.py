"""Reading photos (enrolment, offline embedding, tests): RGB uint8 arrays, with clear errors."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import numpy.typing as npt

MAX_PIXELS = 50_000_000  # a larger "photo" is refused rather than exhausting memory


class ImageError(ValueError):
    """A photo cannot be read: missing, not an image, or unreasonably large."""


def read_image(path: Path) -> npt.NDArray[np.uint8]:
    try:
        data = np.fromfile(path, dtype=np.uint8)
    except OSError as exc:
        raise ImageError(f"{path}: cannot read ({exc.strerror})") from exc
    if data.size == 0:
        raise ImageError(f"{path}: empty file")
    return decode_image(data.tobytes(), str(path))


def decode_image(data: bytes, name: str = "image") -> npt.NDArray[np.uint8]:
    """Decode JPEG/PNG bytes to RGB; refuses garbage and decompression bombs."""
    if not data:
        raise ImageError(f"{name}: not a readable image (empty)")
    try:
        bgr = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), cv2.IMREAD_COLOR)
    except cv2.error as exc:
        raise ImageError(f"{name}: not a readable image ({exc.msg})") from exc
    if bgr is None:
        raise ImageError(f"{name}: not a readable image (JPEG or PNG expected)")
    if bgr.shape[0] * bgr.shape[1] > MAX_PIXELS:
        raise ImageError(f"{name}: {bgr.shape[1]}x{bgr.shape[0]} is too large")
    return np.ascontiguousarray(bgr[:, :, ::-1])


def encode_jpeg(rgb: npt.NDArray[np.uint8], quality: int = 85) -> bytes:
    ok, buf = cv2.imencode(".jpg", np.ascontiguousarray(rgb[:, :, ::-1]), [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise ImageError("JPEG encoding failed")
    return bytes(buf.tobytes())
