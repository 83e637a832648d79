"""Benchmark frames: real face photos composited at realistic sizes onto a noisy background.

Each face is cut from a `wild/` photo around the box our detector finds (setup, not timed), scaled so
the face is as wide as a passer-by's at that frame size, and pasted at seeded, non-overlapping grid
positions. The same seed gives the same frames, photo list and truth boxes on every machine.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import numpy.typing as npt

from lfr_edge.vision.detect import largest
from lfr_edge.vision.pipeline import FacePipeline
from lfr_tools.photos.image import ImageError, read_image

Image = npt.NDArray[np.uint8]
Box = tuple[int, int, int, int]


@dataclass(frozen=True)
class Sprite:
    photo: str
    pixels: Image  # RGB crop around the face
    face: tuple[float, float, float, float]  # the face box inside `pixels`


@dataclass(frozen=True)
class BenchFrame:
    image: Image
    faces: list[Box]  # true face boxes (x1, y1, x2, y2)
    photos: list[str]  # the photo each face came from


def wild_photos(faces_dir: Path) -> list[Path]:
    return sorted((faces_dir / "wild").glob("*/*.jpg"))


def make_sprites(pipeline: FacePipeline, photos: list[Path], count: int, seed: int) -> list[Sprite]:
    """Up to `count` face crops from a seeded sample of photos (photos without a face are skipped)."""
    rng = np.random.default_rng(seed)
    sprites: list[Sprite] = []
    for index in rng.permutation(len(photos)):
        path = photos[int(index)]
        try:
            image = read_image(path)
        except ImageError:
            continue
        face = largest(pipeline.detect(image))
        if face is None or face.width < 60:
            continue
        x1, y1, x2, y2 = face.box
        cx, cy, w = (x1 + x2) / 2, (y1 + y2) / 2, x2 - x1
        half = 0.9 * w  # head, hair and some shoulders: a detector needs context
        h, wd = image.shape[:2]
        cx1, cy1 = max(0, int(cx - half)), max(0, int(cy - half))
        cx2, cy2 = min(wd, int(cx + half)), min(h, int(cy + half * 1.15))
        crop = np.ascontiguousarray(image[cy1:cy2, cx1:cx2])
        sprites.append(Sprite(str(path), crop, (x1 - cx1, y1 - cy1, x2 - cx1, y2 - cy1)))
        if len(sprites) >= count:
            break
    return sprites


def background(width: int, height: int, rng: np.random.Generator) -> Image:
    """A grey street-ish gradient with sensor noise."""
    ramp = np.linspace(70, 150, height, dtype=np.float32)[:, None, None]
    tint = rng.uniform(0.85, 1.15, size=3).astype(np.float32)
    base = np.broadcast_to(ramp * tint, (height, width, 3))
    noise = rng.normal(0, 8, size=(height, width, 3)).astype(np.float32)
    return np.clip(base + noise, 0, 255).astype(np.uint8)


def _grid(n: int, width: int, height: int) -> tuple[int, int]:
    cols = max(1, math.ceil(math.sqrt(n * width / height)))
    rows = math.ceil(n / cols)
    return cols, rows


def compose(sprites: list[Sprite], width: int, height: int, n_faces: int, seed: int) -> BenchFrame:
    """A frame of `n_faces` faces, face widths 0.3-0.45 of a grid cell (at most 220 px)."""
    rng = np.random.default_rng(seed)
    frame = background(width, height, rng)
    cols, rows = _grid(n_faces, width, height)
    cell_w, cell_h = width // cols, height // rows
    cells = rng.permutation(cols * rows)[:n_faces]
    boxes: list[Box] = []
    used: list[str] = []
    for k, cell in enumerate(cells):
        sprite = sprites[int(rng.integers(len(sprites))) if k >= len(sprites) else k]
        fx1, fy1, fx2, fy2 = sprite.face
        face_w = min(220.0, min(cell_w, cell_h) * float(rng.uniform(0.3, 0.45)))
        scale = face_w / (fx2 - fx1)
        sh, sw = sprite.pixels.shape[:2]
        new_w, new_h = max(1, round(sw * scale)), max(1, round(sh * scale))
        new_w, new_h = min(new_w, cell_w), min(new_h, cell_h)
        resized = cv2.resize(sprite.pixels, (new_w, new_h), interpolation=cv2.INTER_AREA)
        col, row = int(cell) % cols, int(cell) // cols
        ox = col * cell_w + int(rng.integers(0, cell_w - new_w + 1))
        oy = row * cell_h + int(rng.integers(0, cell_h - new_h + 1))
        frame[oy : oy + new_h, ox : ox + new_w] = resized
        boxes.append(
            (
                int(ox + fx1 * scale),
                int(oy + fy1 * scale),
                int(min(ox + fx2 * scale, ox + new_w)),
                int(min(oy + fy2 * scale, oy + new_h)),
            )
        )
        used.append(sprite.photo)
    return BenchFrame(frame, boxes, used)


def recall(found: list[tuple[float, float, float, float]], truth: list[Box], iou_min: float = 0.3) -> int:
    """How many true faces have a detection overlapping them (IoU above `iou_min`)."""
    hits = 0
    for tx1, ty1, tx2, ty2 in truth:
        for fx1, fy1, fx2, fy2 in found:
            iw = max(0.0, min(tx2, fx2) - max(tx1, fx1))
            ih = max(0.0, min(ty2, fy2) - max(ty1, fy1))
            inter = iw * ih
            union = (tx2 - tx1) * (ty2 - ty1) + (fx2 - fx1) * (fy2 - fy1) - inter
            if union > 0 and inter / union > iou_min:
                hits += 1
                break
    return hits


RESOLUTIONS = ((640, 480), (1280, 720), (1920, 1080))
FACE_COUNTS = (1, 5, 20)


@dataclass(frozen=True)
class FrameSet:
    """The sprites every part composes its frames from, so ours and the peer see the same pixels."""

    sprites: list[Sprite]
    seed: int

    def frames(self, width: int, height: int, n_faces: int, count: int) -> list[BenchFrame]:
        return [
            compose(self.sprites, width, height, n_faces, self.seed + 7919 * k + width + 13 * n_faces)
            for k in range(count)
        ]
