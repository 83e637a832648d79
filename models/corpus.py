"""Real photos for calibration and evaluation, read from the face corpus into memory (never written out).

Every selection is a fixed, sorted list: the same corpus gives the same samples in the same order, so
calibration (whose moving average depends on order) gives the same artifact bytes every time.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import numpy.typing as npt

from fetch import BuildError
from lfr_edge.vision.detect import crop_square, letterbox_window

Image = npt.NDArray[np.uint8]


@dataclass(frozen=True)
class Photos:
    images: list[Image]  # RGB uint8
    labels: list[str]  # identity per image
    paths: list[Path]


def sorted_files(root: Path, pattern: str) -> list[Path]:
    files = sorted(root.glob(pattern))
    if not files:
        raise BuildError(
            f"no files matching {pattern} under {root}: point --faces (or LFR_FACES) at the face corpus "
            "(wild/<id>/*.jpg and aligned/<name>/*.png, see ../shared/faces/README.md)"
        )
    return files


def spread(items: list[Path], count: int) -> list[Path]:
    """`count` items evenly spaced over the sorted list (covers every identity, deterministic)."""
    if count >= len(items):
        return list(items)
    picks = np.linspace(0, len(items) - 1, count).round().astype(int)
    return [items[i] for i in picks]


def read_rgb(path: Path) -> Image:
    bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if bgr is None:
        raise BuildError(f"cannot read the corpus photo {path}")
    return np.ascontiguousarray(bgr[:, :, ::-1])


def load(files: list[Path]) -> Photos:
    return Photos([read_rgb(p) for p in files], [p.parent.name for p in files], files)


def aligned_photos(faces: Path, count: int | None = None) -> Photos:
    files = sorted_files(faces / "aligned", "*/*.png")
    return load(spread(files, count) if count else files)


def wild_photos(faces: Path, count: int | None = None) -> Photos:
    files = sorted_files(faces / "wild", "*/*.jpg")
    return load(spread(files, count) if count else files)


def embedder_input(face: Image) -> npt.NDArray[np.float32]:
    """One batch: the aligned face and its mirror, as the unit runs them (flip-averaging)."""
    x = (face.astype(np.float32) - 127.5) * (1.0 / 128.0)
    return np.stack([x, x[:, ::-1]])


def embedder_samples(aligned: Photos) -> list[dict[str, Any]]:
    return [{"input": embedder_input(img)} for img in aligned.images]


def detector_input(img: Image, size: int) -> npt.NDArray[np.float32]:
    """The photo letterboxed to the detector's square input, scaled to [-1, 1] as the unit does."""
    square = crop_square(img, letterbox_window(img.shape[1], img.shape[0]), size)
    batch: npt.NDArray[np.float32] = (square.astype(np.float32) * (1.0 / 127.5) - 1.0)[None]
    return batch


def detector_samples(wild: Photos, size: int) -> list[dict[str, Any]]:
    return [{"input": detector_input(img, size)} for img in wild.images]
