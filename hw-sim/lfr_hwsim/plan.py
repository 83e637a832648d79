"""A scene plan: who walks where and when, chosen once from a seed, saved as JSON, rendered many times.

The plan holds only numbers and photo paths (relative to the faces folder), so the demo can hand the
exact same scene to the daemon's camera and to the ground-truth writer. Walkers move on a straight line
on the ground towards the camera; their face centre and width in the frame follow the perspective
projection, so faces grow as people approach (from about 30 px to 200+ px at 1280x720).
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from lfr_hwsim.facelocate import Box, FaceLocator

PHOTO_SUFFIXES = (".jpg", ".jpeg", ".png")
MIN_PHOTO_FACE_PX = 48.0  # smaller faces in the photo look like mush when scaled to 200 px

# The street seen by the van camera (metres): faces are 0.16 m wide, the camera sits just above them.
FACE_WIDTH_M = 0.16
CAMERA_ABOVE_FACE_M = 0.15
HORIZON = 0.40  # of the frame height
FOCAL = 0.86  # of the frame width (a 73 degree horizontal field of view)


class PlanError(ValueError):
    """A scene cannot be planned (no usable photos, bad plan file); the message says which."""


@dataclass(frozen=True)
class Walker:
    """One passer-by: a photo of one identity moving along a path across the frame."""

    id: int
    identity: str
    photo: str  # path relative to the faces folder
    photo_face: Box  # the face inside the photo, pixels
    t_enter: float  # seconds from the scene start
    duration_s: float  # time to walk the whole path
    start: tuple[float, float]  # face centre in the frame at entry, pixels
    end: tuple[float, float]  # face centre at the end of the path
    face_w_start: float  # face width in the frame at entry, pixels
    face_w_end: float
    speed_mps: float  # walking speed on the ground

    def at(self, t: float) -> tuple[float, float, float] | None:
        """(centre x, centre y, face width) at time t, perspective-correct; None outside the walk."""
        u = (t - self.t_enter) / self.duration_s
        if u < 0.0 or u > 1.0:
            return None
        a, b = (1.0 - u) / self.face_w_start, u / self.face_w_end  # 1/width is linear in distance
        width = 1.0 / (a + b)
        x = (self.start[0] * a + self.end[0] * b) * width
        y = (self.start[1] * a + self.end[1] * b) * width
        return x, y, width


@dataclass(frozen=True)
class Occluder:
    """A foreground rectangle (a pole or a sign) drawn in front of every walker."""

    kind: str  # "pole" or "sign"
    box: Box
    colour: tuple[int, int, int]


@dataclass(frozen=True)
class Light:
    """A lighting key: global gain and colour cast at time t, interpolated linearly between keys."""

    t: float
    gain: float
    cast: tuple[float, float, float]


@dataclass(frozen=True)
class ScenePlan:
    width: int
    height: int
    fps: float
    duration_s: float
    seed: int
    faces_dir: str
    walkers: tuple[Walker, ...]
    occluders: tuple[Occluder, ...]
    lights: tuple[Light, ...]
    watchlisted: tuple[str, ...]  # identities the demo puts on the watchlist
    unusable_photos: tuple[str, ...]  # photos tried where no face was found
    exposure: float = 0.3  # fraction of the frame interval the shutter is open (motion blur)

    @property
    def frames(self) -> int:
        return math.floor(self.duration_s * self.fps)

    def walker_photos(self, identity: str) -> set[str]:
        return {w.photo for w in self.walkers if w.identity == identity}

    def enrolment_photos(self, identity: str) -> list[Path]:
        """Photos of a watchlisted identity that no walker uses: what the command centre enrols."""
        folder = Path(self.faces_dir) / identity
        skip = self.walker_photos(identity) | set(self.unusable_photos)
        return [
            p
            for p in sorted(folder.iterdir())
            if p.suffix.lower() in PHOTO_SUFFIXES and f"{identity}/{p.name}" not in skip
        ]

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=1)

    def save(self, path: Path) -> None:
        path.write_text(self.to_json())


def load_plan(path: Path) -> ScenePlan:
    """Read a plan written by `ScenePlan.save`; raises PlanError naming the file and what is wrong."""
    try:
        raw = json.loads(path.read_text())
        return ScenePlan(
            width=int(raw["width"]),
            height=int(raw["height"]),
            fps=float(raw["fps"]),
            duration_s=float(raw["duration_s"]),
            seed=int(raw["seed"]),
            faces_dir=str(raw["faces_dir"]),
            walkers=tuple(
                Walker(
                    id=int(w["id"]),
                    identity=str(w["identity"]),
                    photo=str(w["photo"]),
                    photo_face=_box(w["photo_face"]),
                    t_enter=float(w["t_enter"]),
                    duration_s=float(w["duration_s"]),
                    start=_pair(w["start"]),
                    end=_pair(w["end"]),
                    face_w_start=float(w["face_w_start"]),
                    face_w_end=float(w["face_w_end"]),
                    speed_mps=float(w["speed_mps"]),
                )
                for w in raw["walkers"]
            ),
            occluders=tuple(
                Occluder(str(o["kind"]), _box(o["box"]), _rgb(o["colour"])) for o in raw["occluders"]
            ),
            lights=tuple(Light(float(k["t"]), float(k["gain"]), _cast(k["cast"])) for k in raw["lights"]),
            watchlisted=tuple(str(i) for i in raw["watchlisted"]),
            unusable_photos=tuple(str(p) for p in raw["unusable_photos"]),
            exposure=float(raw.get("exposure", 0.3)),
        )
    except OSError as exc:
        raise PlanError(f"scene plan {path}: cannot read: {exc}") from exc
    except (ValueError, KeyError, TypeError) as exc:
        raise PlanError(f"scene plan {path}: not a valid plan ({type(exc).__name__}: {exc})") from exc


def _box(v: Any) -> Box:
    x1, y1, x2, y2 = (float(c) for c in v)
    return x1, y1, x2, y2


def _pair(v: Any) -> tuple[float, float]:
    a, b = (float(c) for c in v)
    return a, b


def _rgb(v: Any) -> tuple[int, int, int]:
    r, g, b = (int(c) for c in v)
    return r, g, b


def _cast(v: Any) -> tuple[float, float, float]:
    r, g, b = (float(c) for c in v)
    return r, g, b


def list_identities(faces_dir: Path) -> dict[str, list[str]]:
    """identity -> its photo paths relative to faces_dir, for the layout `<identity>/<n>.jpg`."""
    if not faces_dir.is_dir():
        raise PlanError(f"faces folder {faces_dir} does not exist (set LFR_FACES or the faces_dir option)")
    found: dict[str, list[str]] = {}
    for sub in sorted(p for p in faces_dir.iterdir() if p.is_dir()):
        photos = sorted(f"{sub.name}/{f.name}" for f in sub.iterdir() if f.suffix.lower() in PHOTO_SUFFIXES)
        if photos:
            found[sub.name] = photos
    if not found:
        raise PlanError(f"faces folder {faces_dir} holds no photos in the layout <identity>/<n>.jpg")
    return found


def read_photo(path: Path) -> np.ndarray[Any, np.dtype[np.uint8]] | None:
    bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if bgr is None:
        return None
    return np.asarray(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB), dtype=np.uint8)


class _PhotoFaces:
    """Finds the face in each photo at most once, remembering the photos where none was found."""

    def __init__(self, faces_dir: Path, locator: FaceLocator) -> None:
        self.faces_dir = faces_dir
        self.locator = locator
        self.boxes: dict[str, Box | None] = {}

    def face(self, photo: str) -> Box | None:
        if photo not in self.boxes:
            image = read_photo(self.faces_dir / photo)
            box = None if image is None else self.locator(image)
            if box is not None and box[2] - box[0] < MIN_PHOTO_FACE_PX:
                box = None
            self.boxes[photo] = box
        return self.boxes[photo]

    def usable(self, photos: list[str]) -> list[str]:
        return [p for p in photos if self.face(p) is not None]

    @property
    def unusable(self) -> tuple[str, ...]:
        return tuple(sorted(p for p, b in self.boxes.items() if b is None))


@dataclass(frozen=True)
class PlanRequest:
    """What the caller asks for; everything else is drawn from the seed."""

    faces_dir: Path
    seed: int = 0
    width: int = 1280
    height: int = 720
    fps: float = 25.0
    duration_s: float = 60.0
    crowd: float = 3.0  # mean number of people in frame
    walkers: int = 0  # total passers-by; 0 = derived from crowd and duration
    watchlisted: int | tuple[str, ...] = 0  # how many identities to watchlist, or which
    occluders: int = 1  # poles with a sign
    lighting: bool = True
    exposure: float = 0.3  # shutter open time as a fraction of the frame interval


def build_plan(req: PlanRequest, locator: FaceLocator) -> ScenePlan:
    """Draw a scene from the seed; each watchlisted identity walks past once, with a photo of its own."""
    rng = np.random.default_rng(req.seed)
    identities = list_identities(req.faces_dir)
    faces = _PhotoFaces(req.faces_dir, locator)
    w, h, f = req.width, req.height, FOCAL * req.width

    trial = np.random.default_rng(req.seed + 1)
    mean_walk = float(np.mean([_draw_path(trial, w, h, f)[-1] for _ in range(200)]))
    count = req.walkers or max(1, round(req.crowd * req.duration_s / mean_walk))

    watch = _choose_watchlisted(rng, req.watchlisted, identities, faces)
    others = [i for i in identities if i not in watch]
    rng.shuffle(others)
    cast: list[tuple[str, str]] = []  # (identity, photo) per walker
    for ident in watch:
        usable = faces.usable(identities[ident])
        cast.append((ident, usable[int(rng.integers(len(usable)))]))
    pool = iter(others * (1 + count // max(1, len(others))))
    tried = 0
    while len(cast) < count:
        other = next(pool, None)
        if other is None or tried > 4 * count + len(identities):
            break
        tried += 1
        usable = faces.usable(identities[other])
        if usable:
            cast.append((other, usable[int(rng.integers(len(usable)))]))
    if not cast:
        raise PlanError(
            f"no usable face photos in {req.faces_dir}: tried {len(faces.boxes)} photos and found no face "
            f"at least {MIN_PHOTO_FACE_PX:.0f} px wide in any"
        )
    order = rng.permutation(len(cast))

    walkers = []
    for n, k in enumerate(order):
        ident, photo = cast[int(k)]
        start, end, w0, w1, speed, walk_s = _draw_path(rng, w, h, f)
        latest = max(0.0, req.duration_s - walk_s)
        box = faces.face(photo)
        assert box is not None
        walkers.append(
            Walker(
                id=n,
                identity=ident,
                photo=photo,
                photo_face=box,
                t_enter=round(float(rng.uniform(0.0, latest)), 3),
                duration_s=walk_s,
                start=start,
                end=end,
                face_w_start=w0,
                face_w_end=w1,
                speed_mps=speed,
            )
        )
    walkers.sort(key=lambda wk: wk.t_enter)
    walkers = [Walker(**{**asdict(wk), "id": i}) for i, wk in enumerate(walkers)]
    return ScenePlan(
        width=w,
        height=h,
        fps=req.fps,
        duration_s=req.duration_s,
        seed=req.seed,
        faces_dir=str(req.faces_dir),
        walkers=tuple(walkers),
        occluders=_draw_occluders(rng, req.occluders, w, h),
        lights=_draw_lights(rng, req.duration_s, req.lighting),
        watchlisted=tuple(watch),
        unusable_photos=faces.unusable,
        exposure=req.exposure,
    )


def _draw_path(
    rng: np.random.Generator, w: int, h: int, f: float
) -> tuple[tuple[float, float], tuple[float, float], float, float, float, float]:
    """A straight walk on the ground from far away to close by and off to one side."""
    z0, z1 = rng.uniform(5.0, 7.0), rng.uniform(0.75, 1.6)
    side = 1.0 if rng.random() < 0.5 else -1.0
    l0 = rng.uniform(-2.2, 2.2)
    l1 = side * rng.uniform(0.15, 0.45) * z1 * 1.8  # ends near the left or right edge
    speed = rng.uniform(1.0, 1.6)
    walk_s = math.hypot(z0 - z1, l1 - l0) / speed

    def project(lat: float, z: float) -> tuple[float, float]:
        return (round(w / 2 + f * lat / z, 2), round(h * HORIZON + f * CAMERA_ABOVE_FACE_M / z, 2))

    return (
        project(l0, z0),
        project(l1, z1),
        round(f * FACE_WIDTH_M / z0, 2),
        round(f * FACE_WIDTH_M / z1, 2),
        round(speed, 3),
        round(walk_s, 3),
    )


def _draw_occluders(rng: np.random.Generator, count: int, w: int, h: int) -> tuple[Occluder, ...]:
    out: list[Occluder] = []
    for _ in range(count):
        x = rng.uniform(0.22, 0.78) * w
        pw = 0.022 * w
        grey = int(rng.integers(70, 120))
        out.append(Occluder("pole", (x - pw / 2, 0.18 * h, x + pw / 2, float(h)), (grey, grey, grey + 8)))
        sw, sh = rng.uniform(0.09, 0.13) * w, rng.uniform(0.10, 0.16) * h
        top = rng.uniform(0.42, 0.55) * h  # at head height, so passers-by are sometimes hidden
        colour = ((30, 80, 170), (200, 40, 40), (230, 190, 30))[int(rng.integers(3))]
        out.append(Occluder("sign", (x - sw / 2, top, x + sw / 2, top + sh), colour))
    return tuple(out)


def _draw_lights(rng: np.random.Generator, duration_s: float, enabled: bool) -> tuple[Light, ...]:
    if not enabled:
        return (Light(0.0, 1.0, (1.0, 1.0, 1.0)),)
    keys = [Light(0.0, 1.0, (1.0, 1.0, 1.0))]
    t = 0.0
    while t < duration_s:
        t += float(rng.uniform(2.5, 6.0))
        cast = tuple(round(float(c), 3) for c in rng.uniform(0.9, 1.1, 3))
        keys.append(Light(round(t, 3), round(float(rng.uniform(0.7, 1.25)), 3), (cast[0], cast[1], cast[2])))
    return tuple(keys)


def _choose_watchlisted(
    rng: np.random.Generator,
    wanted: int | tuple[str, ...],
    identities: dict[str, list[str]],
    faces: _PhotoFaces,
) -> list[str]:
    """Identities with at least two usable photos: one to walk past, the rest to enrol from."""
    if isinstance(wanted, tuple):
        for ident in wanted:
            if ident not in identities:
                raise PlanError(f"watchlisted identity {ident!r} has no folder in {faces.faces_dir}")
            if len(faces.usable(identities[ident])) < 2:
                raise PlanError(
                    f"watchlisted identity {ident!r} needs two photos with a findable face "
                    "(one walks past, one is enrolled)"
                )
        return list(wanted)
    chosen: list[str] = []
    for k in rng.permutation(len(identities)):
        if len(chosen) >= wanted:
            break
        ident = list(identities)[int(k)]
        if len(identities[ident]) >= 2 and len(faces.usable(identities[ident])) >= 2:
            chosen.append(ident)
    if len(chosen) < wanted:
        raise PlanError(
            f"only {len(chosen)} identities in {faces.faces_dir} can be watchlisted, {wanted} asked"
        )
    return chosen
