"""Raspberry Pi camera modules through Picamera2 (libcamera), the Pi's own camera stack.

Picamera2 comes from Raspberry Pi OS's apt archive (`python3-picamera2`); it cannot be pip-installed usefully
(it needs libcamera's Python bindings), so it is imported only when this source is selected.
Options: `camera_num` (0), `buffer_count` (4).

Frames are the RGB888 main stream at the configured size. Picamera2's "RGB888" is stored B, G, R in memory
(the order OpenCV expects), so the channels are reversed once here. Timestamps and dropped frames come
from the sensor: `SensorTimestamp` (ns, CLOCK_BOOTTIME) and `FrameDuration` (us) in each request's metadata.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import numpy.typing as npt

from lfr_contracts.camera import (
    CameraConfig,
    CameraError,
    CameraUnavailable,
    Frame,
    SourceStats,
    frames_skipped,
    monotonic,
    option,
    source_options,
)

OPTIONS = {
    "camera_num": option(int, 0, "which camera module (rpicam-hello --list-cameras)", ge=0, le=15),
    "buffer_count": option(int, 4, "libcamera buffers", ge=1, le=32),
}

INSTALL_HINT = (
    "Picamera2 is not installed: on Raspberry Pi OS run `sudo apt install python3-picamera2` "
    "(it comes with libcamera from apt; it cannot be pip-installed, and does not work on x86)"
)


def import_picamera2() -> Any:
    try:
        from picamera2 import Picamera2
    except ImportError as exc:
        raise CameraUnavailable(f"{INSTALL_HINT} ({exc})") from None
    return Picamera2


def boottime_offset_s(samples: int = 7) -> float:
    """time.monotonic() minus CLOCK_BOOTTIME, in seconds: the two clocks differ by the time the board was
    suspended, so the offset is fixed while the camera runs. Of several readings it keeps the one whose two
    monotonic reads lie closest together, the one least disturbed by the scheduler."""
    best_span, best_offset = float("inf"), 0.0
    for _ in range(samples):
        before = time.monotonic()
        boot = time.clock_gettime(time.CLOCK_BOOTTIME)
        after = time.monotonic()
        if after - before < best_span:
            best_span, best_offset = after - before, (before + after) / 2 - boot
    return best_offset


class Picamera2Source:
    def __init__(self, cfg: CameraConfig) -> None:
        options = source_options(cfg.name, cfg.options, OPTIONS)
        self.name = cfg.name
        self.width, self.height, self.fps = cfg.width, cfg.height, cfg.fps
        self.camera_num: int = options["camera_num"]
        self.buffer_count: int = options["buffer_count"]
        self.stats = SourceStats()
        self._camera: Any = None
        self._model = ""
        self._index = 0
        self._last_sensor_ns: int | None = None
        self._boot_offset_s = 0.0

    def open(self) -> None:
        picamera2_cls = import_picamera2()
        cameras = picamera2_cls.global_camera_info()
        if self.camera_num >= len(cameras):
            raise CameraUnavailable(
                f"camera {self.name}: no camera module {self.camera_num} detected ({len(cameras)} found); "
                "check the ribbon cable and `rpicam-hello --list-cameras`"
            )
        self._model = str(cameras[self.camera_num].get("Model", "unknown"))
        try:
            camera = picamera2_cls(self.camera_num)
            config = camera.create_video_configuration(
                main={"size": (self.width, self.height), "format": "RGB888"},
                controls={"FrameRate": self.fps},
                buffer_count=self.buffer_count,
            )
            camera.configure(config)
            camera.start()
        except Exception as exc:  # libcamera reports a busy or failed camera as plain RuntimeErrors
            raise CameraUnavailable(
                f"camera {self.name}: Picamera2 cannot start camera {self.camera_num}: {exc}"
            ) from exc
        self._camera = camera
        self._last_sensor_ns = None
        self._boot_offset_s = boottime_offset_s()  # once per open: frame intervals keep the sensor's spacing

    def read(self) -> Frame:
        if self._camera is None:
            raise CameraError(f"camera {self.name}: not open")
        try:
            request = self._camera.capture_request()
        except Exception as exc:
            raise CameraError(f"camera {self.name}: capture failed: {exc}") from exc
        try:
            bgr = request.make_array("main")
            metadata: dict[str, Any] = request.get_metadata()
        finally:
            request.release()
        if bgr.shape != (self.height, self.width, 3):
            raise CameraError(f"camera {self.name}: got a {bgr.shape} array, configured {self.height}x{self.width}x3")
        image: npt.NDArray[np.uint8] = np.ascontiguousarray(bgr[:, :, ::-1], dtype=np.uint8)
        sensor_ns = metadata.get("SensorTimestamp")
        interval_s = float(metadata.get("FrameDuration", 1e6 / self.fps)) / 1e6
        gap = 0
        if isinstance(sensor_ns, int):
            if self._last_sensor_ns is not None:
                gap = frames_skipped((sensor_ns - self._last_sensor_ns) / 1e9, interval_s)
            self._last_sensor_ns = sensor_ns
            timestamp = sensor_ns / 1e9 + self._boot_offset_s
        else:
            timestamp = monotonic()
        self._index += gap
        self.stats.record(timestamp, interval_s, gap)
        frame = Frame(self.name, self._index, timestamp, image)
        self._index += 1
        return frame

    def close(self) -> None:
        camera, self._camera = self._camera, None
        if camera is not None:
            camera.stop()
            camera.close()

    def describe(self) -> str:
        size = f"{self.width}x{self.height} @ {self.fps:g} fps"
        return f"picamera2 camera {self.camera_num} ({self._model}, {size})"


def create(cfg: CameraConfig) -> Picamera2Source:
    return Picamera2Source(cfg)
