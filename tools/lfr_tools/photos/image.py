"""Reading photos (enrolment, offline embedding, benchmarks, tests): RGB uint8 arrays, with clear errors.

The header's declared size is checked before anything is decoded, so a decompression bomb is refused cheaply.
"""

from __future__ import annotations

import struct
from pathlib import Path

import cv2
import numpy as np
import numpy.typing as npt

from lfr_edge.vision.image import ImageError

__all__ = ["MAX_FILE_BYTES", "MAX_PIXELS", "ImageError", "declared_size", "decode_image", "read_image"]

MAX_PIXELS = 50_000_000  # a larger "photo" is refused rather than exhausting memory
MAX_FILE_BYTES = 64 * 1024 * 1024  # the largest JPEG or PNG read (a 50-megapixel PNG is ~ 40 MiB)
_PNG = b"\x89PNG\r\n\x1a\n"
_JPEG = b"\xff\xd8\xff"
# JPEG start-of-frame markers (they carry the size): C0-CF except DHT (C4), JPG (C8) and DAC (CC).
_SOF = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}


def read_image(path: Path) -> npt.NDArray[np.uint8]:
    try:
        with path.open("rb") as fh:
            data = fh.read(MAX_FILE_BYTES + 1)
    except OSError as exc:
        raise ImageError(f"{path}: cannot read ({exc.strerror})") from exc
    if not data:
        raise ImageError(f"{path}: empty file")
    return decode_image(data, str(path))


def declared_size(data: bytes) -> tuple[int, int] | None:
    """(width, height) as a PNG's IHDR or a JPEG's start-of-frame states it, read before decoding; None when
    the bytes are neither a PNG nor a JPEG, or the header is cut short."""
    if data.startswith(_PNG):
        if len(data) < 24 or data[12:16] != b"IHDR":
            return None
        width, height = struct.unpack(">II", data[16:24])
        return width, height
    if not data.startswith(_JPEG):
        return None
    at = 2
    while at + 4 <= len(data):
        if data[at] != 0xFF:
            return None
        marker = data[at + 1]
        if marker == 0xFF:  # fill byte
            at += 1
            continue
        if marker in (0x01, *range(0xD0, 0xD8)):  # markers without a length
            at += 2
            continue
        (length,) = struct.unpack(">H", data[at + 2 : at + 4])
        if marker in _SOF:
            if at + 9 > len(data) or length < 7:
                return None
            height, width = struct.unpack(">HH", data[at + 5 : at + 9])
            return width, height
        if marker == 0xDA or length < 2:  # start of scan before any frame header, or a broken length
            return None
        at += 2 + length
    return None


def decode_image(data: bytes, name: str = "image") -> npt.NDArray[np.uint8]:
    """Decode JPEG/PNG bytes to RGB; refuses other formats, garbage and decompression bombs (the size the
    header declares is checked before anything is decoded)."""
    if not data:
        raise ImageError(f"{name}: not a readable image (empty)")
    if len(data) > MAX_FILE_BYTES:
        raise ImageError(f"{name}: {len(data)} bytes is too large for a photo (at most {MAX_FILE_BYTES})")
    size = declared_size(data)
    if size is None:
        raise ImageError(f"{name}: not a readable image (JPEG or PNG expected)")
    width, height = size
    if width == 0 or height == 0 or width * height > MAX_PIXELS:
        raise ImageError(f"{name}: {width}x{height} is too large or empty, not decoded (at most {MAX_PIXELS} pixels)")
    try:
        bgr = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), cv2.IMREAD_COLOR)
    except cv2.error as exc:
        raise ImageError(f"{name}: not a readable image ({exc.msg})") from exc
    if bgr is None:
        raise ImageError(f"{name}: not a readable image (JPEG or PNG expected)")
    if bgr.ndim != 3 or bgr.shape[0] * bgr.shape[1] > MAX_PIXELS:
        raise ImageError(f"{name}: {bgr.shape[1]}x{bgr.shape[0]} is too large")
    return np.ascontiguousarray(bgr[:, :, ::-1])
