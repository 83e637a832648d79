"""Alignment: a similarity transform of eyes, nose and mouth onto the 112x112 ArcFace template.

BlazeFace gives the mouth centre rather than its corners, so the template's mouth point is the mean of
the ArcFace template's two mouth corners. The transform is the least-squares similarity (Umeyama).
"""

from __future__ import annotations

import cv2
import numpy as np
import numpy.typing as npt

from lfr_edge.vision.detect import KP_LEFT_EYE, KP_MOUTH, KP_NOSE, KP_RIGHT_EYE

ALIGNED_SIZE = 112

# ArcFace 112x112 template: image-left eye, image-right eye, nose tip, mouth centre.
TEMPLATE = np.array([[38.2946, 51.6963], [73.5318, 51.5014], [56.0252, 71.7366], [56.1396, 92.2848]], dtype=np.float64)


def similarity_transform(src: npt.NDArray[np.floating], dst: npt.NDArray[np.floating]) -> npt.NDArray[np.float64]:
    """2x3 matrix of the least-squares similarity (rotation, uniform scale, translation) src -> dst."""
    src = np.asarray(src, dtype=np.float64)
    dst = np.asarray(dst, dtype=np.float64)
    src_mean, dst_mean = src.mean(0), dst.mean(0)
    src_c, dst_c = src - src_mean, dst - dst_mean
    cov = dst_c.T @ src_c / len(src)
    u, s, vt = np.linalg.svd(cov)
    d = np.ones(2)
    if np.linalg.det(u) * np.linalg.det(vt) < 0:
        d[-1] = -1
    rotation = u @ np.diag(d) @ vt
    var_src = (src_c**2).sum() / len(src)
    scale = (s * d).sum() / var_src if var_src > 0 else 1.0
    matrix = np.zeros((2, 3))
    matrix[:, :2] = scale * rotation
    matrix[:, 2] = dst_mean - scale * rotation @ src_mean
    return matrix


def alignment_points(keypoints: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
    """The four BlazeFace keypoints used for alignment, in template order (image-left eye first)."""
    return keypoints[[KP_RIGHT_EYE, KP_LEFT_EYE, KP_NOSE, KP_MOUTH]]


def align_face(image: npt.NDArray[np.uint8], keypoints: npt.NDArray[np.float32]) -> npt.NDArray[np.uint8]:
    """The 112x112 RGB aligned face crop (a new array; the frame is not kept)."""
    matrix = similarity_transform(alignment_points(keypoints), TEMPLATE)
    aligned = cv2.warpAffine(
        image, matrix, (ALIGNED_SIZE, ALIGNED_SIZE), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE
    )
    return np.asarray(aligned, dtype=np.uint8)
