"""The camera-source interface, the contract between the van and every source (its own: replay, OpenCV,
Picamera2, Jetson; and plugins such as the simulator, registered in the `lfr_edge.camera_sources` entry-point
group), and the `[[cameras]]` config section a source is built from.

A source is opened once, then `read()` is called from the capture thread. It returns the next frame as an
RGB uint8 array with its capture timestamp, or raises `CameraError` when the device is gone (the capture
loop reopens it). Every source counts dropped and late frames the same way, in `SourceStats`.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

from lfr_contracts.errors import ConfigError
from lfr_contracts.settings import Range, Setting, Text, bounds, check_number, check_text, setting
from lfr_contracts.untrusted import excerpt


@dataclass(frozen=True)
class CameraConfig:
    """One table per camera: the source that delivers its frames, and what it asks of the camera."""

    name: str = setting("cam0", "the camera's name; every alert names its camera", text=Text.IDENTIFIER)
    source: str = setting("", "the camera source: replay, opencv, picamera2, jetson, or a plugin's (simulator)")
    uri: str = setting("", "device path, RTSP URL, video file or image folder, by source")
    width: int = setting(1280, "frame width asked of the camera, pixels", ge=16, le=16384)
    height: int = setting(720, "frame height asked of the camera, pixels", ge=16, le=16384)
    fps: float = setting(25.0, "frame rate asked of the camera", gt=0.0, le=1000.0)
    options: dict[str, Any] = setting(
        help="the source's own options (below); checked by the source", default_factory=dict
    )


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


@dataclass(frozen=True)
class SourceOption:
    """One key of a source's `options` table, declared beside the source: its types, default, description
    and, for numbers, its range. `docs/config.md` lists every source's table."""

    types: tuple[type, ...]
    default: Any
    help: str
    range: Range | None = None


def option(
    types: type | tuple[type, ...],
    default: Any,
    help: str,
    *,
    ge: float | None = None,
    gt: float | None = None,
    le: float | None = None,
    lt: float | None = None,
) -> SourceOption:
    span = bounds(ge=ge, gt=gt, le=le, lt=lt)
    return SourceOption(types if isinstance(types, tuple) else (types,), default, help, span)


def source_options(name: str, options: dict[str, Any], known: Mapping[str, SourceOption]) -> dict[str, Any]:
    """A source's `options` checked against its table, with the defaults filled in: an unknown key, a wrong
    type, a number out of range or not finite, or text holding a control character is a ConfigError naming
    the key."""
    for key in options:
        if key not in known:
            raise ConfigError(
                f"cameras[{name}].options: unknown key {excerpt(key)} (known: {', '.join(sorted(known)) or 'none'})"
            )
    checked = {key: declared.default for key, declared in known.items()}
    for key, value in options.items():
        checked[key] = _check_option(f"cameras[{name}].options.{key}", value, known[key])
    return checked


def _check_option(key: str, value: Any, declared: SourceOption) -> Any:
    types = declared.types
    if isinstance(value, bool) and bool not in types:
        raise ConfigError(f"{key}: {value!r} has the wrong type")
    if not isinstance(value, types):
        wanted = " or ".join(t.__name__ for t in types)
        raise ConfigError(f"{key}: expected {wanted}, got {excerpt(value)}")
    if isinstance(value, int | float) and not isinstance(value, bool):
        check_number(key, value, Setting(declared.help, declared.range))
    texts = value if isinstance(value, list) else [value]
    for text in texts:
        if isinstance(text, str):
            check_text(key, text, Text.ANY)
    return value
