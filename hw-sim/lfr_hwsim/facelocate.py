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


def _anchors(size: int) -> npt.NDArray[np.float32]:
    """SSD anchor centres (x, y), normalised, in the order the BlazeFace heads emit them."""
    layout = [(4, 1)] if size == 192 else [(8, 2), (16, 6)]  # (stride, anchors per cell)
    centres = []
    for stride, per_cell in layout:
        cells = size // stride
        ys, xs = np.mgrid[0:cells, 0:cells]
        grid = np.stack([(xs + 0.5) / cells, (ys + 0.5) / cells], axis=-1).reshape(-1, 1, 2)
        centres.append(np.repeat(grid, per_cell, axis=1).reshape(-1, 2))
    return np.concatenate(centres).astype(np.float32)


def blazeface_locator(model_path: Path, min_score: float = 0.6) -> FaceLocator:
    """BlazeFace (short range 128 or full range 192) on a letterboxed photo; the largest confident face."""
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError as exc:  # pragma: no cover - a dependency of the project
        raise LocatorUnavailable(f"ai-edge-litert is needed to find faces in photos: {exc}") from exc
    interpreter = Interpreter(model_path=str(model_path), num_threads=1)
    interpreter.allocate_tensors()
    inp = interpreter.get_input_details()[0]
    size = int(inp["shape"][1])
    if size not in (128, 192):
        raise LocatorUnavailable(f"{model_path}: input {inp['shape']} is not a BlazeFace model (128 or 192)")
    outputs = sorted(interpreter.get_output_details(), key=lambda d: int(d["shape"][-1]))
    score_index, box_index = outputs[0]["index"], outputs[-1]["index"]
    anchors = _anchors(size)

    def locate(photo: npt.NDArray[np.uint8]) -> Box | None:
        h, w = photo.shape[:2]
        side = max(h, w)
        square = np.zeros((side, side, 3), np.uint8)
        square[:h, :w] = photo
        x = cv2.resize(square, (size, size), interpolation=cv2.INTER_AREA).astype(np.float32)
        interpreter.set_tensor(inp["index"], (x / 127.5 - 1.0)[None])
        interpreter.invoke()
        logits = interpreter.get_tensor(score_index).reshape(-1)
        raw = interpreter.get_tensor(box_index).reshape(len(anchors), -1)
        scores = 1.0 / (1.0 + np.exp(-np.clip(logits, -80, 80)))
        keep = scores >= min_score
        if not keep.any():
            return None
        centre = anchors[keep] + raw[keep, 0:2] / size
        half = raw[keep, 2:4] / size / 2
        boxes = np.concatenate([centre - half, centre + half], axis=1) * side
        best = int(np.argmax((boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1]) * scores[keep]))
        x1, y1, x2, y2 = (float(v) for v in boxes[best])
        return max(0.0, x1), max(0.0, y1), min(float(w), x2), min(float(h), y2)

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
