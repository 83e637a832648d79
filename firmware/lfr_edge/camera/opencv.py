"""USB/V4L2 cameras, RTSP streams and GStreamer pipelines through OpenCV's VideoCapture, with reconnect.

`cameras[].uri` is `/dev/videoN` or an index (`0`), an `rtsp://` URL (or a video file), or a GStreamer
pipeline ending in `appsink`. Options:
- `backend`: "v4l2", "ffmpeg" or "gstreamer"; by default guessed from the uri.
- `reconnect_min_s` / `reconnect_max_s` (0.5 / 10): backoff between reconnect attempts, doubling.
- `reconnect_attempts` (10): attempts before read() gives up with CameraError (the daemon reopens later).
- `fourcc` (V4L2 only, e.g. "MJPG"): the pixel format to ask the camera for.
- `buffer_size` (1): frames OpenCV may queue; 1 keeps latency low (V4L2, some GStreamer pipelines).

Dropped frames come from gaps in the stream's timestamps (CAP_PROP_POS_MSEC), or else its frame counter.
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
    frames_skipped,
    monotonic,
    option,
    source_options,
)
from lfr_contracts.errors import ConfigError

log = logging.getLogger(__name__)

OPTIONS = {
    "backend": option(str, "", '"v4l2", "ffmpeg" or "gstreamer"; by default guessed from the uri'),
    "reconnect_min_s": option((int, float), 0.5, "first wait before reconnecting, doubling", gt=0, le=3600),
    "reconnect_max_s": option((int, float), 10.0, "longest wait between reconnects", gt=0, le=3600),
    "reconnect_attempts": option(int, 10, "attempts before read() gives up (the daemon reopens later)", ge=1, le=1000),
    "fourcc": option(str, "", 'V4L2 only: the pixel format to ask the camera for, e.g. "MJPG"'),
    "buffer_size": option(int, 1, "frames OpenCV may queue; 1 keeps latency low", ge=1, le=64),
}
BACKENDS = ("v4l2", "ffmpeg", "gstreamer")


def import_cv2() -> Any:
    try:
        import cv2
    except ImportError:
        raise CameraUnavailable(
            "OpenCV is missing: sudo apt install python3-opencv on the board "
            "(or pip install opencv-python-headless, which has no GStreamer)"
        ) from None
    return cv2


def guess_backend(uri: str) -> str:
    if uri.isdigit() or uri.startswith("/dev/video"):
        return "v4l2"
    if "!" in uri:
        return "gstreamer"
    return "ffmpeg"


class OpenCVSource:
    def __init__(self, cfg: CameraConfig, stop: threading.Event | None = None) -> None:
        """`stop` is set by close() and paces the reconnect backoff (its wait); a test passes one that
        records the waits instead of sleeping through them."""
        options = source_options(cfg.name, cfg.options, OPTIONS)
        self.name = cfg.name
        self.uri = cfg.uri
        self.width, self.height, self.fps = cfg.width, cfg.height, cfg.fps
        self.backend: str = options["backend"] or guess_backend(cfg.uri)
        if self.backend not in BACKENDS:
            raise ConfigError(
                f"cameras[{cfg.name}].options.backend: {self.backend!r} is not one of {', '.join(BACKENDS)}"
            )
        self.reconnect_min_s = float(options["reconnect_min_s"])
        self.reconnect_max_s = float(options["reconnect_max_s"])
        self.reconnect_attempts: int = options["reconnect_attempts"]
        if self.reconnect_max_s < self.reconnect_min_s:
            raise ConfigError(f"cameras[{cfg.name}].options: need reconnect_min_s <= reconnect_max_s")
        self.fourcc: str = options["fourcc"]
        self.buffer_size: int = options["buffer_size"]
        self.stats = SourceStats()
        self._stop = stop if stop is not None else threading.Event()
        self._cv2: Any = None
        self._cap: Any = None
        self._is_file = False
        self._index = 0
        self._last_msec: float | None = None
        self._last_pos: float | None = None

    def open(self) -> None:
        if not self.uri:
            raise CameraUnavailable(f"cameras[{self.name}].uri: give /dev/videoN, an rtsp:// URL or a pipeline")
        cv2 = self._cv2 = import_cv2()
        api = self._api()
        if not cv2.videoio_registry.hasBackend(api):
            hint = " (pip's opencv wheels have none: use sudo apt install python3-opencv)" * (
                self.backend == "gstreamer"
            )
            raise CameraUnavailable(f"this OpenCV was built without the {self.backend} backend{hint}")
        if self.backend == "v4l2" and not self.uri.isdigit() and not Path(self.uri).exists():
            raise CameraUnavailable(
                f"{self.uri}: no such camera device; is it plugged in? (`v4l2-ctl --list-devices`, "
                "package v4l-utils; the service user needs the video group)"
            )
        self._is_file = self.backend == "ffmpeg" and Path(self.uri).is_file()
        self._stop.clear()
        self._cap = self._connect()
        if self._cap is None:
            raise CameraUnavailable(f"camera {self.name}: OpenCV ({self.backend}) cannot open {self.uri}")

    def _api(self) -> int:
        cv2 = self._cv2
        return int({"v4l2": cv2.CAP_V4L2, "ffmpeg": cv2.CAP_FFMPEG, "gstreamer": cv2.CAP_GSTREAMER}[self.backend])

    def _connect(self) -> Any:
        """One attempt to open the stream; None when it does not open."""
        cv2 = self._cv2
        target: int | str = int(self.uri) if self.uri.isdigit() else self.uri
        cap = cv2.VideoCapture(target, self._api())
        if self.backend == "v4l2":
            if self.fourcc:
                cap.set(cv2.CAP_PROP_FOURCC, cv2.VideoWriter.fourcc(*self.fourcc))
            cap.set(cv2.CAP_PROP_FRAME_WIDTH, self.width)
            cap.set(cv2.CAP_PROP_FRAME_HEIGHT, self.height)
            cap.set(cv2.CAP_PROP_FPS, self.fps)
        if self.backend != "ffmpeg" or not self._is_file:
            cap.set(cv2.CAP_PROP_BUFFERSIZE, self.buffer_size)
        if not cap.isOpened():
            cap.release()
            return None
        self._last_msec = self._last_pos = None
        return cap

    def read(self) -> Frame:
        if self._cv2 is None or self._stop.is_set():
            raise CameraError(f"camera {self.name}: not open")
        while True:
            if self._cap is None:
                self._cap = self._reconnect()
            ok, bgr = self._cap.read()
            if ok and bgr is not None:
                break
            if self._is_file and Path(self.uri).is_file():
                raise EndOfStream(f"{self.uri}: end of video")
            log.warning("camera %s: lost %s, reconnecting", self.name, self.uri)
            self._cap.release()
            self._cap = None
        timestamp = monotonic()
        gap = self._gap()
        self._index += gap
        image: npt.NDArray[np.uint8] = self._cv2.cvtColor(bgr, self._cv2.COLOR_BGR2RGB)
        self.stats.record(timestamp, 1.0 / self.fps, gap)
        frame = Frame(self.name, self._index, timestamp, image)
        self._index += 1
        return frame

    def _gap(self) -> int:
        """Frames the device produced that were never read, from stream timestamps or the frame counter."""
        cv2 = self._cv2
        device_fps = float(self._cap.get(cv2.CAP_PROP_FPS) or 0.0)
        interval_s = 1.0 / (device_fps if 1 <= device_fps <= 240 else self.fps)  # some streams report 90000
        msec = float(self._cap.get(cv2.CAP_PROP_POS_MSEC) or 0.0)
        pos = float(self._cap.get(cv2.CAP_PROP_POS_FRAMES) or 0.0)
        gap = 0
        if msec > 0 and self._last_msec is not None and msec > self._last_msec:
            gap = frames_skipped((msec - self._last_msec) / 1000.0, interval_s)
        elif pos > 0 and self._last_pos is not None and pos > self._last_pos:
            gap = int(pos - self._last_pos) - 1
        self._last_msec = msec if msec >= 0 else None
        self._last_pos = pos if pos > 0 else None
        return gap

    def _reconnect(self) -> Any:
        """Reopen with doubling, capped backoff; CameraError when every attempt fails or on close()."""
        delay = self.reconnect_min_s
        for attempt in range(1, self.reconnect_attempts + 1):
            if self._stop.wait(delay):
                raise CameraError(f"camera {self.name}: closed")
            cap = self._connect()
            if cap is not None:
                self.stats.reconnects += 1
                log.info("camera %s: reconnected to %s (attempt %d)", self.name, self.uri, attempt)
                return cap
            log.warning("camera %s: reconnect attempt %d failed", self.name, attempt)
            delay = min(self.reconnect_max_s, delay * 2)
        raise CameraError(f"camera {self.name}: {self.uri} lost, {self.reconnect_attempts} reconnect attempts failed")

    def close(self) -> None:
        self._stop.set()
        if self._cap is not None:
            self._cap.release()
            self._cap = None

    def describe(self) -> str:
        return f"opencv {self.backend} {self.uri} ({self.width}x{self.height} @ {self.fps:g} fps asked)"


def create(cfg: CameraConfig) -> OpenCVSource:
    return OpenCVSource(cfg)
