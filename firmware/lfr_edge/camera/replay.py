"""Replay a video file or a folder of images as a camera, for demos, tests and re-running recorded scenes.

`cameras[].uri` is the file or folder, `cameras[].fps` the rate. Options:
- `realtime` (default true): pace frames at `fps` on the wall clock; false delivers as fast as the reader
  asks, with timestamps spaced 1/fps apart so time-based logic (tracks, cooldowns) behaves the same.
- `loop` (default false): start again at the end instead of raising EndOfStream.

Images are delivered at their own size. An unreadable image is logged by path and skipped.
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from lfr_contracts.camera import (
    CameraConfig,
    CameraError,
    CameraUnavailable,
    EndOfStream,
    Frame,
    SourceStats,
    monotonic,
    option,
    source_options,
)
from lfr_contracts.settings import expand_path
from lfr_edge.camera.opencv import import_cv2

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")
OPTIONS = {
    "realtime": option(bool, True, "pace frames at fps; false: as fast as read, with timestamps 1/fps apart"),
    "loop": option(bool, False, "start again at the end instead of ending the stream"),
}


class ReplaySource:
    def __init__(self, cfg: CameraConfig) -> None:
        options = source_options(cfg.name, cfg.options, OPTIONS)
        self.name = cfg.name
        self.path = expand_path(f"cameras[{cfg.name}].uri", cfg.uri)
        self.interval_s = 1.0 / cfg.fps
        self.realtime: bool = options["realtime"]
        self.loop: bool = options["loop"]
        self.stats = SourceStats()
        self.unreadable: list[Path] = []  # images skipped because they could not be decoded
        self._stop = threading.Event()
        self._cv2: Any = None
        self._images: list[Path] = []
        self._position = 0  # next image in the folder
        self._capture: Any = None  # cv2.VideoCapture for a video file
        self._delivered_this_pass = 0
        self._index = 0
        self._started_at = 0.0

    def open(self) -> None:
        if not self.uri_given():
            raise CameraUnavailable(f"cameras[{self.name}].uri: give the video file or image folder to replay")
        self._cv2 = import_cv2()
        if self.path.is_dir():
            self._images = sorted(p for p in self.path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
            if not self._images:
                raise CameraUnavailable(f"{self.path}: no .jpg or .png images in this folder")
        elif self.path.is_file():
            self._capture = self._cv2.VideoCapture(str(self.path), self._cv2.CAP_FFMPEG)
            if not self._capture.isOpened():
                raise CameraUnavailable(f"{self.path}: OpenCV cannot open this video file")
        else:
            raise CameraUnavailable(f"{self.path}: no such video file or image folder")
        self._stop.clear()
        self._started_at = monotonic()

    def uri_given(self) -> bool:
        return bool(str(self.path)) and str(self.path) != "."

    def read(self) -> Frame:
        if self._cv2 is None or self._stop.is_set():
            raise CameraError(f"camera {self.name}: not open")
        bgr = self._next_bgr()
        image: npt.NDArray[np.uint8] = self._cv2.cvtColor(bgr, self._cv2.COLOR_BGR2RGB)
        timestamp = self._pace()
        self.stats.record(timestamp, self.interval_s if self.realtime else 0.0)
        frame = Frame(self.name, self._index, timestamp, image)
        self._index += 1
        return frame

    def _next_bgr(self) -> npt.NDArray[np.uint8]:
        while True:
            bgr = self._next_from_folder() if self._images else self._next_from_video()
            if bgr is not None:
                self._delivered_this_pass += 1
                return bgr

    def _end_of_pass(self) -> None:
        """At the end of the file or folder: start again, or stop."""
        if not self.loop:
            raise EndOfStream(f"{self.path}: end of replay")
        if self._delivered_this_pass == 0:
            raise EndOfStream(f"{self.path}: nothing readable to replay")
        self._delivered_this_pass = 0

    def _next_from_folder(self) -> npt.NDArray[np.uint8] | None:
        if self._position >= len(self._images):
            self._end_of_pass()
            self._position = 0
        path = self._images[self._position]
        self._position += 1
        bgr = self._cv2.imread(str(path), self._cv2.IMREAD_COLOR)
        if bgr is None:
            log.warning("%s: unreadable image, skipped", path)
            self.unreadable.append(path)
            return None
        return np.asarray(bgr, dtype=np.uint8)

    def _next_from_video(self) -> npt.NDArray[np.uint8] | None:
        ok, bgr = self._capture.read()
        if ok and bgr is not None:
            return np.asarray(bgr, dtype=np.uint8)
        self._end_of_pass()
        self._capture.release()
        self._capture = self._cv2.VideoCapture(str(self.path), self._cv2.CAP_FFMPEG)
        return None

    def _pace(self) -> float:
        """Wait for this frame's slot when real-time; returns the frame's timestamp."""
        due = self._started_at + self._index * self.interval_s
        if not self.realtime:
            return due
        delay = due - monotonic()
        if delay < -self.interval_s:  # the reader fell behind: restart the clock rather than burst
            self._started_at -= delay
        if delay > 0 and self._stop.wait(delay):
            raise CameraError(f"camera {self.name}: closed")
        return monotonic()

    def close(self) -> None:
        self._stop.set()
        if self._capture is not None:
            self._capture.release()
            self._capture = None

    def describe(self) -> str:
        kind = f"{len(self._images)} images" if self._images else "video file"
        pace = f"{1 / self.interval_s:g} fps" if self.realtime else "as fast as read"
        return f"replay {self.path} ({kind}, {pace}{', looping' if self.loop else ''})"


def create(cfg: CameraConfig) -> ReplaySource:
    return ReplaySource(cfg)
