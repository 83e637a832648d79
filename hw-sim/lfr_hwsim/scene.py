"""Renders a scene plan frame by frame: a street, passers-by pasted from real photos, and the ground truth.

Each walker is a head-and-shoulders crop of its photo with a soft elliptical alpha, scaled so the face
is exactly the planned width, blurred along its motion, and drawn far-to-near so nearer people and the
foreground pole/sign hide those behind. Per frame the work is a few OpenCV calls per walker on small
regions plus one lookup table for the lighting; nothing loops over pixels in Python.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import numpy.typing as npt

from lfr_hwsim.facelocate import Box
from lfr_hwsim.plan import Light, PlanError, ScenePlan, Walker, read_photo

Image = npt.NDArray[np.uint8]


@dataclass(frozen=True)
class FaceTruth:
    """Where one walker's face was drawn in one frame (synthetic walkers only: a test artefact)."""

    identity: str
    walker: int
    box: Box  # x1, y1, x2, y2 in frame pixels, may extend past the frame edge
    visible: float  # fraction of the face box not hidden by the frame edge, the pole/sign or nearer people
    blur_px: float  # length of the motion-blur streak
    watchlisted: bool

    @property
    def width(self) -> float:
        return self.box[2] - self.box[0]


@dataclass(frozen=True)
class FrameTruth:
    index: int
    t: float
    faces: tuple[FaceTruth, ...]

    def to_json(self) -> str:
        return json.dumps(
            {
                "frame": self.index,
                "t": round(self.t, 4),
                "faces": [
                    {
                        "identity": f.identity,
                        "walker": f.walker,
                        "box": [round(v, 1) for v in f.box],
                        "visible": round(f.visible, 3),
                        "blur_px": round(f.blur_px, 2),
                        "watchlisted": f.watchlisted,
                    }
                    for f in self.faces
                ],
            }
        )


@dataclass(frozen=True)
class Sprite:
    """A head-and-shoulders cut-out: RGBA, and where the face is inside it."""

    rgba: Image  # H x W x 4, colour premultiplied by the soft-edged alpha (resizes and blurs cleanly)
    face: Box  # face box in sprite pixels


def make_sprite(photo: Image, face: Box) -> Sprite:
    """Crop around the face (head, hair, shoulders) with a soft mask shaped like a head on shoulders."""
    ph, pw = photo.shape[:2]
    fx1, fy1, fx2, fy2 = face
    fw, fh = fx2 - fx1, fy2 - fy1
    cx = (fx1 + fx2) / 2
    x0, x1 = max(0, int(cx - 1.5 * fw)), min(pw, math.ceil(cx + 1.5 * fw))
    y0, y1 = max(0, int(fy1 - 0.7 * fh)), min(ph, math.ceil(fy2 + 1.9 * fh))
    crop = photo[y0:y1, x0:x1]
    h, w = crop.shape[:2]
    mask = np.zeros((h, w), np.uint8)
    ccx, fcy = cx - x0, (fy1 + fy2) / 2 - y0
    cv2.ellipse(
        mask, (round(ccx), round(fcy - 0.1 * fh)), (round(0.72 * fw), round(0.85 * fh)), 0, 0, 360, 255, -1
    )
    cv2.ellipse(
        mask, (round(ccx), round(fcy + 0.75 * fh)), (round(0.33 * fw), round(0.5 * fh)), 0, 0, 360, 255, -1
    )
    cv2.ellipse(
        mask, (round(ccx), round(fcy + 2.05 * fh)), (round(1.45 * fw), round(1.05 * fh)), 0, 0, 360, 255, -1
    )
    soft = max(1.0, 0.08 * fw)
    alpha = cv2.GaussianBlur(mask.astype(np.float32) / 255.0, (0, 0), soft)
    # fade out where the crop was cut by the photo border, so no straight edge shows
    ramp = max(2, round(2 * soft))
    yy = np.minimum(np.arange(h), np.arange(h)[::-1])[:, None]
    xx = np.minimum(np.arange(w), np.arange(w)[::-1])[None, :]
    alpha *= np.clip(np.minimum(yy, xx) / ramp, 0.0, 1.0)
    alpha *= np.clip((h - np.arange(h)) / (0.6 * fh), 0.0, 1.0)[:, None]  # the body fades out below
    premultiplied = np.round(crop * alpha[:, :, None]).astype(np.uint8)
    rgba = np.dstack([premultiplied, np.round(alpha * 255).astype(np.uint8)])
    return Sprite(np.ascontiguousarray(rgba), (fx1 - x0, fy1 - y0, fx2 - x0, fy2 - y0))


def sprite_pyramid(
    sprite: Sprite, largest_face: float = 256.0, smallest_face: float = 24.0
) -> tuple[Sprite, ...]:
    """The sprite at face widths halving from `largest_face`, so each frame resizes by less than 2x."""
    face_w = sprite.face[2] - sprite.face[0]
    level = _scaled(sprite, largest_face / face_w) if face_w > largest_face else sprite
    levels = [level]
    while (level.face[2] - level.face[0]) / 2 >= smallest_face:
        level = _scaled(level, 0.5)
        levels.append(level)
    return tuple(levels)


def _scaled(sprite: Sprite, scale: float) -> Sprite:
    h, w = sprite.rgba.shape[:2]
    nw, nh = max(1, round(w * scale)), max(1, round(h * scale))
    rgba = np.asarray(cv2.resize(sprite.rgba, (nw, nh), interpolation=cv2.INTER_AREA), np.uint8)
    sx, sy = nw / w, nh / h
    x1, y1, x2, y2 = sprite.face
    return Sprite(rgba, (x1 * sx, y1 * sy, x2 * sx, y2 * sy))


def pick_level(levels: tuple[Sprite, ...], face_width: float) -> Sprite:
    """The smallest level whose face is at least `face_width` (downscale), else the largest (upscale)."""
    for level in reversed(levels):
        if level.face[2] - level.face[0] >= face_width:
            return level
    return levels[0]


def make_background(seed: int, width: int, height: int) -> Image:
    """A street-ish backdrop from the seed alone: sky, building fronts with windows, pavement."""
    rng = np.random.default_rng(seed + 7919)
    img = np.zeros((height, width, 3), np.float32)
    horizon = int(0.40 * height)
    sky = np.linspace(0.0, 1.0, horizon)[:, None, None]
    img[:horizon] = (1 - sky) * np.array([120, 160, 215]) + sky * np.array([200, 210, 225])
    ground = np.linspace(0.0, 1.0, height - horizon)[:, None, None]
    img[horizon:] = (1 - ground) * np.array([125, 122, 118]) + ground * np.array([85, 82, 80])
    x = 0
    while x < width:
        bw = int(rng.integers(width // 10, width // 4))
        top = int(rng.integers(int(0.02 * height), int(0.25 * height)))
        colour = rng.uniform(70, 190, 3)
        img[top:horizon, x : x + bw] = colour
        win = colour * rng.uniform(0.35, 0.6)
        for wy in range(top + 12, horizon - 20, 34):
            for wx in range(x + 10, x + bw - 22, 30):
                img[wy : wy + 18, wx : wx + 14] = win
        x += bw + int(rng.integers(0, 12))
    for k in range(-6, 7):  # paving lines towards the vanishing point
        cv2.line(img, (width // 2, horizon), (width // 2 + k * width // 3, height), (95.0, 92.0, 90.0), 2)
    img += rng.normal(0.0, 4.0, img.shape).astype(np.float32)
    out: Image = np.clip(img, 0, 255).astype(np.uint8)
    return out


def motion_blur(rgba: Image, dx: float, dy: float) -> Image:
    """Smear along (dx, dy) pixels; streaks under 1.5 px are left sharp.

    Short streaks use a line kernel; long ones rotate the motion onto the x axis, box-blur and rotate
    back, since OpenCV's filter2D switches to a slow DFT for kernels of 11 px and more.
    """
    length = math.hypot(dx, dy)
    if length < 1.5:
        return rgba
    size = math.ceil(length) | 1
    if size <= 9:
        k = np.zeros((size, size), np.float32)
        c, hx, hy = size // 2, dx / length * (size - 1) / 2, dy / length * (size - 1) / 2
        cv2.line(k, (round(c - hx), round(c - hy)), (round(c + hx), round(c + hy)), 1.0, 1, cv2.LINE_AA)
        return np.asarray(cv2.filter2D(rgba, -1, k / k.sum(), borderType=cv2.BORDER_CONSTANT), np.uint8)
    h, w = rgba.shape[:2]
    angle = math.degrees(math.atan2(dy, dx))
    cos, sin = abs(math.cos(math.radians(angle))), abs(math.sin(math.radians(angle)))
    rw, rh = math.ceil(w * cos + h * sin) + size, math.ceil(w * sin + h * cos) + size
    turn = cv2.getRotationMatrix2D((w / 2, h / 2), angle, 1.0)
    turn[:, 2] += (rw / 2 - w / 2, rh / 2 - h / 2)
    flat = cv2.warpAffine(rgba, turn, (rw, rh), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT)
    flat = cv2.blur(flat, (round(length), 1), borderType=cv2.BORDER_CONSTANT)
    back = cv2.warpAffine(
        flat, cv2.invertAffineTransform(turn), (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT
    )
    return np.asarray(back, np.uint8)


def lighting_at(lights: tuple[Light, ...], t: float) -> tuple[float, tuple[float, float, float]]:
    """Gain and colour cast at time t, linear between keys."""
    prev = lights[0]
    for key in lights[1:]:
        if key.t >= t:
            u = (t - prev.t) / (key.t - prev.t) if key.t > prev.t else 1.0
            gain = prev.gain + (key.gain - prev.gain) * u
            cast = tuple(a + (b - a) * u for a, b in zip(prev.cast, key.cast, strict=True))
            return gain, (cast[0], cast[1], cast[2])
        prev = key
    return prev.gain, prev.cast


class SceneRenderer:
    """Turns a plan into frames; loads every walker's photo once, at construction."""

    def __init__(self, plan: ScenePlan, faces_dir: Path | None = None) -> None:
        self.plan = plan
        root = Path(faces_dir if faces_dir is not None else plan.faces_dir)
        self.background = make_background(plan.seed, plan.width, plan.height)
        self.sprites: dict[str, tuple[Sprite, ...]] = {}
        for w in plan.walkers:
            if w.photo not in self.sprites:
                photo = read_photo(root / w.photo)
                if photo is None:
                    raise PlanError(f"scene plan photo {root / w.photo} cannot be read")
                self.sprites[w.photo] = sprite_pyramid(make_sprite(photo, w.photo_face))
        self.watchlisted = frozenset(plan.watchlisted)
        self.occluders = [
            (round(o.box[0]), round(o.box[1]), round(o.box[2]), round(o.box[3]), o.colour)
            for o in plan.occluders
        ]
        self._lut = np.zeros((1, 256, 3), np.uint8)
        self._ramp = np.arange(256, dtype=np.float32)

    @property
    def frames(self) -> int:
        return self.plan.frames

    def render(self, index: int) -> tuple[Image, FrameTruth]:
        """The frame at `index` (time index / fps) and who is where in it."""
        plan = self.plan
        t = index / plan.fps
        frame = self.background.copy()
        active = []
        for w in plan.walkers:
            pos = w.at(t)
            if pos is not None:
                active.append((pos[2], w, pos))
        active.sort(key=lambda a: a[0])  # far (small) first, near last
        placed = [self._draw_walker(frame, w, pos, t) for _, w, pos in active]
        for x1, y1, x2, y2, colour in self.occluders:
            cv2.rectangle(frame, (x1, y1), (x2 - 1, y2 - 1), colour, -1)
        self._apply_lighting(frame, t)
        faces = tuple(
            FaceTruth(
                identity=w.identity,
                walker=w.id,
                box=box,
                visible=self._visible(box, placed[i + 1 :]),
                blur_px=blur,
                watchlisted=w.identity in self.watchlisted,
            )
            for i, (w, box, blur, _, _, _) in enumerate(placed)
        )
        return frame, FrameTruth(index, t, tuple(sorted(faces, key=lambda f: f.walker)))

    def _draw_walker(
        self, frame: Image, w: Walker, pos: tuple[float, float, float], t: float
    ) -> tuple[Walker, Box, float, int, int, npt.NDArray[np.uint8]]:
        cx, cy, width = pos
        sprite = pick_level(self.sprites[w.photo], width)
        fx1, fy1, fx2, fy2 = sprite.face
        scale = width / (fx2 - fx1)
        sh, sw = sprite.rgba.shape[:2]
        nw, nh = max(1, round(sw * scale)), max(1, round(sh * scale))
        sx, sy = nw / sw, nh / sh
        interp = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
        rgba: Image = np.asarray(cv2.resize(sprite.rgba, (nw, nh), interpolation=interp), np.uint8)
        ox = round(cx - (fx1 + fx2) / 2 * sx)
        oy = round(cy - (fy1 + fy2) / 2 * sy)
        box = (ox + fx1 * sx, oy + fy1 * sy, ox + fx2 * sx, oy + fy2 * sy)
        # motion blur: how far the face centre moves while the shutter is open
        dt = self.plan.exposure / self.plan.fps
        later = w.at(min(t + dt, w.t_enter + w.duration_s))
        dx, dy = (later[0] - cx, later[1] - cy) if later is not None else (0.0, 0.0)
        rgba = motion_blur(rgba, dx, dy)
        self._composite(frame, rgba, ox, oy)
        return w, box, math.hypot(dx, dy), ox, oy, rgba[:, :, 3]

    @staticmethod
    def _composite(frame: Image, rgba: Image, ox: int, oy: int) -> None:
        fh, fw = frame.shape[:2]
        h, w = rgba.shape[:2]
        x0, y0, x1, y1 = max(0, ox), max(0, oy), min(fw, ox + w), min(fh, oy + h)
        if x0 >= x1 or y0 >= y1:
            return
        src = rgba[y0 - oy : y1 - oy, x0 - ox : x1 - ox]
        roi = frame[y0:y1, x0:x1]
        behind = cv2.cvtColor(cv2.bitwise_not(src[:, :, 3]), cv2.COLOR_GRAY2RGB)  # 255 - alpha
        cv2.add(cv2.multiply(roi, behind, scale=1 / 255), src[:, :, :3], dst=roi)

    def _apply_lighting(self, frame: Image, t: float) -> None:
        gain, cast = lighting_at(self.plan.lights, t)
        if gain == 1.0 and cast == (1.0, 1.0, 1.0):
            return
        for c in range(3):
            self._lut[0, :, c] = np.clip(self._ramp * (gain * cast[c]), 0, 255).astype(np.uint8)
        cv2.LUT(frame, self._lut, dst=frame)

    def _visible(self, box: Box, nearer: list[tuple[Walker, Box, float, int, int, Any]]) -> float:
        """Fraction of the face box in the frame and hidden by neither the foreground nor nearer people."""
        x1, y1, x2, y2 = round(box[0]), round(box[1]), round(box[2]), round(box[3])
        area = max(1, (x2 - x1) * (y2 - y1))
        cx1, cy1 = max(0, x1), max(0, y1)
        cx2, cy2 = min(self.plan.width, x2), min(self.plan.height, y2)
        if cx1 >= cx2 or cy1 >= cy2:
            return 0.0
        hidden = np.zeros((cy2 - cy1, cx2 - cx1), bool)
        for ox1, oy1, ox2, oy2, _ in self.occluders:
            hidden[max(0, oy1 - cy1) : max(0, oy2 - cy1), max(0, ox1 - cx1) : max(0, ox2 - cx1)] = True
        for _, _, _, ox, oy, alpha in nearer:
            h, w = alpha.shape
            ax1, ay1, ax2, ay2 = max(cx1, ox), max(cy1, oy), min(cx2, ox + w), min(cy2, oy + h)
            if ax1 < ax2 and ay1 < ay2:
                cover = alpha[ay1 - oy : ay2 - oy, ax1 - ox : ax2 - ox] > 127
                hidden[ay1 - cy1 : ay2 - cy1, ax1 - cx1 : ax2 - cx1] |= cover
        return float(hidden.size - np.count_nonzero(hidden)) / area


def write_truth(path: Path, truths: list[FrameTruth]) -> None:
    with path.open("a") as fh:
        for truth in truths:
            fh.write(truth.to_json() + "\n")
