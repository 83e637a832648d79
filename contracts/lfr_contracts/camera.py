"""The camera-source interface, the contract between the van and every source (its own: replay, OpenCV,
Picamera2, Jetson; and plugins such as the simulator, registered in the `lfr_edge.camera_sources` entry-point
group), and the `[[cameras]]` config section a source is built from.

A source is opened once, then `read()` is called from the capture thread. It returns the next frame as an
RGB uint8 array with its capture timestamp, or raises `CameraError` when the device is gone (the capture
loop reopens it). Every source counts dropped and late frames the same way, in `SourceStats`.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

from lfr_contracts.errors import ConfigError


@dataclass(frozen=True)
class CameraConfig:
    name: str = "cam0"
    source: str = ""  # a name in the `lfr_edge.camera_sources` entry-point group: replay, opencv, ...
    uri: str = ""  # device path, RTSP url, video file or image folder, by source
    width: int = 1280
    height: int = 720
    fps: float = 25.0
    queue_size: int = 4
    options: dict[str, Any] = field(default_factory=dict)  # source-specific, validated by the source


class CameraError(RuntimeError):
    """The camera cannot deliver frames (missing library, device gone, stream ended)."""


class CameraUnavailable(CameraError):
    """The library or device for the selected source is missing; the message names what to install."""


class EndOfStream(CameraError):
    """A finite source (a file, a folder, a scripted scene) has no more frames."""


@dataclass(frozen=True)
class Frame:
    camera: str  # the camera's name from the config; every alert names its camera
    index: int  # frame counter of this source, from 0, counting dropped frames too
    timestamp: float  # capture time, seconds (time.monotonic() clock, or the sensor's, converted)
    image: npt.NDArray[np.uint8]  # H x W x 3, RGB


@dataclass
class SourceStats:
    """Counters every source keeps the same way (reported in telemetry)."""

    delivered: int = 0
    dropped: int = 0  # frames the device produced that we never saw (sequence gaps)
    late: int = 0  # frames delivered more than 1.5 frame intervals after the previous one
    reconnects: int = 0
    last_frame_at: float = field(default=0.0)

    def record(self, timestamp: float, expected_interval_s: float, gap: int = 0) -> None:
        """Account one delivered frame; `gap` is how many frames the device skipped before it."""
        if self.delivered and expected_interval_s > 0 and timestamp - self.last_frame_at > 1.5 * expected_interval_s:
            self.late += 1
        self.dropped += max(0, gap)
        self.delivered += 1
        self.last_frame_at = timestamp


class FrameSource(Protocol):
    name: str
    stats: SourceStats

    def open(self) -> None:
        """Acquire the device; raises CameraUnavailable naming the package or device that is missing."""
        ...

    def read(self) -> Frame:
        """Block until the next frame; raises CameraError if the device is lost, EndOfStream at the end."""
        ...

    def close(self) -> None:
        """Release the device; safe to call twice."""
        ...

    def describe(self) -> str:
        """One line for logs and the self-test."""
        ...


def monotonic() -> float:
    return time.monotonic()


def frames_skipped(delta_s: float, interval_s: float) -> int:
    """How many frames the device produced between two delivered ones, from their capture times."""
    if interval_s <= 0 or delta_s <= 0:
        return 0
    return max(0, round(delta_s / interval_s) - 1)


def source_options(name: str, options: dict[str, Any], known: dict[str, tuple[type, ...]]) -> dict[str, Any]:
    """Check a source's `options` table: an unknown key or a wrong type is a ConfigError naming the key."""
    for key, value in options.items():
        if key not in known:
            raise ConfigError(
                f"cameras[{name}].options: unknown key {key!r} (known: {', '.join(sorted(known)) or 'none'})"
            )
        types = known[key]
        if isinstance(value, bool) and bool not in types:
            raise ConfigError(f"cameras[{name}].options.{key}: {value!r} has the wrong type")
        if not isinstance(value, types):
            wanted = " or ".join(t.__name__ for t in types)
            raise ConfigError(f"cameras[{name}].options.{key}: expected {wanted}, got {value!r}")
    return options
