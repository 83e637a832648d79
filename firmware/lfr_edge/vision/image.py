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
