"""Where the face is inside a labelled photo, found once when a scene plan is built.

The renderer pastes a head-and-shoulders crop of each photo and must know where the face sits in it, so
that the ground truth says exactly where a face was drawn. Two locators, tried in this order:
OpenCV's Haar cascade (OpenCV 4 builds ship it; OpenCV 5 moved it out of the main package) and a minimal
BlazeFace (the MediaPipe `.tflite` files the models build fetches) on ai-edge-litert. The result is stored
in the plan, so rendering a saved plan needs no locator at all.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
import numpy.typing as npt

Box = tuple[float, float, float, float]  # x1, y1, x2, y2 in pixels
FaceLocator = Callable[[npt.NDArray[np.uint8]], Box | None]  # RGB photo -> the main face, or None

# Where a BlazeFace file is looked for when no path is given (the models build's cache, then the env).
DETECTOR_ENV = "LFR_SIM_DETECTOR"
DETECTOR_NAMES = ("blazeface-full.float.tflite", "blazeface-short.float.tflite")
MODELS_CACHE = Path("~/.cache/lfr-edge/models")


class LocatorUnavailable(RuntimeError):
    """No way to find faces in photos here; the message says what to install or point at."""


def haar_locator() -> FaceLocator | None:
    """OpenCV's frontal-face Haar cascade, when this OpenCV build ships it."""
    cascade_cls = getattr(cv2, "CascadeClassifier", None)
    data = getattr(cv2, "data", None)
    if cascade_cls is None or data is None:
        return None
    path = Path(data.haarcascades) / "haarcascade_frontalface_default.xml"
    if not path.is_file():
        return None
    cascade = cascade_cls(str(path))

    def locate(photo: npt.NDArray[np.uint8]) -> Box | None:
        grey = cv2.cvtColor(photo, cv2.COLOR_RGB2GRAY)
        found = cascade.detectMultiScale(grey, scaleFactor=1.1, minNeighbors=5, minSize=(24, 24))
        if len(found) == 0:
            return None
        x, y, w, h = max(found, key=lambda r: int(r[2]) * int(r[3]))
        return float(x), float(y), float(x + w), float(y + h)

    return locate


def blazeface_locator(model_path: Path, min_score: float = 0.6) -> FaceLocator:
    """The unit's own BlazeFace detector (short range 128 or full range 192) on the whole photo; the
    largest confident face."""
    from lfr_edge.inference.litert import load_model
    from lfr_edge.vision.detect import FULL_RANGE, SHORT_RANGE, BlazeFace, FaceDetector, largest

    model = load_model(model_path, threads=1)
    size = model.inputs[0].shape[1]
    specs = {spec.input_size: spec for spec in (SHORT_RANGE, FULL_RANGE)}
    if size not in specs:
        raise LocatorUnavailable(f"{model_path}: input {model.inputs[0].shape} is not a BlazeFace model")
    blazeface = BlazeFace(model, specs[size])
    is_full = specs[size] is FULL_RANGE
    detector = FaceDetector(
        blazeface if is_full else None, None if is_full else blazeface, min_score, tile_rows=1
    )

    def locate(photo: npt.NDArray[np.uint8]) -> Box | None:
        face = largest(detector.detect(photo))
        return None if face is None else face.box

    return locate


def find_detector_model(explicit: Path | None = None) -> Path | None:
    """The BlazeFace file to use: the given path, else $LFR_SIM_DETECTOR, else the models cache."""
    if explicit is not None:
        return explicit
    env = os.environ.get(DETECTOR_ENV)
    if env:
        return Path(env)
    cache = MODELS_CACHE.expanduser()
    for name in DETECTOR_NAMES:
        if (cache / name).is_file():
            return cache / name
    for pattern in ("*full*.tflite", "*short*.tflite"):  # whatever names the models build gave them
        found = sorted(cache.glob(pattern)) if cache.is_dir() else []
        if found:
            return found[0]
    return None


def default_locator(model_path: Path | None = None) -> FaceLocator:
    """The Haar cascade if this OpenCV has it, else BlazeFace; raises LocatorUnavailable naming the fix."""
    if model_path is None:
        haar = haar_locator()
        if haar is not None:
            return haar
    path = find_detector_model(model_path)
    if path is None:
        raise LocatorUnavailable(
            "cannot find faces in photos: this OpenCV has no Haar cascade and no BlazeFace model was found "
            f"(set {DETECTOR_ENV} or the simulator option detector_model to a BlazeFace .tflite file, "
            f"or run `make models` to fill {MODELS_CACHE})"
        )
    if not path.is_file():
        raise LocatorUnavailable(f"face detector model {path} does not exist")
    return blazeface_locator(path)
