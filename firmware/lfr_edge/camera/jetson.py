"""Cameras on a Jetson through NVIDIA's jetson_utils.videoSource (CSI via Argus, V4L2, RTSP, files).

`cameras[].uri` is `csi://0`, `/dev/video0`, `rtsp://...` or a video file. Options: `timeout_ms` (1000), the
longest wait for one frame before read() reports a stall, and `argv`, extra videoSource flags (e.g.
`["--input-flip=rotate-180"]`).

jetson_utils comes from building jetson-inference on the board; the PyPI package called `jetson-utils` is an
unrelated project that shadows the module name, and is refused with an explanation. Frames are captured as
rgb8 in CUDA mapped memory; cudaToNumpy() maps that buffer without a copy, and one copy is taken because
videoSource reuses its ring of buffers.
"""

from __future__ import annotations

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

OPTIONS = {
    "timeout_ms": option(int, 1000, "longest wait for one frame before read() reports a stall", ge=1, le=600_000),
    "argv": option(list, [], 'extra videoSource flags (strings), e.g. ["--input-flip=rotate-180"]'),
}

BUILD_HINT = (
    "build NVIDIA's jetson-inference on the Jetson (git clone --recursive "
    "https://github.com/dusty-nv/jetson-inference; cd jetson-inference; mkdir build; cd build; cmake ..; "
    "make -j$(nproc); sudo make install; sudo ldconfig), or run inside its container"
)
NOT_INSTALLED = f"NVIDIA's jetson_utils is not installed: {BUILD_HINT}"
IMPOSTOR = (
    "the jetson_utils module found has no videoSource: it is the unrelated PyPI package `jetson-utils`, "
    f"not NVIDIA's. Remove it (pip uninstall jetson-utils) and {BUILD_HINT}"
)
LIVE_SCHEMES = ("csi://", "v4l2://", "rtsp://", "rtp://", "webrtc://", "/dev/")


def import_jetson_utils() -> Any:
    try:
        import jetson_utils
    except ImportError:
        raise CameraUnavailable(NOT_INSTALLED) from None
    if not hasattr(jetson_utils, "videoSource") or not hasattr(jetson_utils, "cudaToNumpy"):
        raise CameraUnavailable(IMPOSTOR)
    return jetson_utils


class JetsonSource:
    def __init__(self, cfg: CameraConfig) -> None:
        options = source_options(cfg.name, cfg.options, OPTIONS)
        self.name = cfg.name
        self.uri = cfg.uri or "csi://0"
        self.width, self.height, self.fps = cfg.width, cfg.height, cfg.fps
        self.timeout_ms: int = options["timeout_ms"]
        extra = options["argv"]
        if not all(isinstance(arg, str) for arg in extra):
            raise ConfigError(f"cameras[{cfg.name}].options.argv: expected a list of strings")
        self.argv = [
            f"--input-width={self.width}",
            f"--input-height={self.height}",
            f"--input-rate={self.fps:g}",
            *extra,
        ]
        self.stats = SourceStats()
        self._ju: Any = None
        self._source: Any = None
        self._index = 0
        self._last_stream_ns: int | None = None

    def open(self) -> None:
        ju = import_jetson_utils()
        try:
            source = ju.videoSource(self.uri, argv=self.argv)
        except Exception as exc:  # jetson_utils raises a bare Exception("failed to create videoSource device")
            raise CameraUnavailable(f"camera {self.name}: videoSource cannot open {self.uri}: {exc}") from exc
        self._ju, self._source = ju, source
        self._last_stream_ns = None

    def _is_file(self) -> bool:
        return not self.uri.startswith(LIVE_SCHEMES) and (self.uri.startswith("file://") or Path(self.uri).exists())

    def _stopped(self, why: str) -> CameraError:
        if self._is_file():
            return EndOfStream(f"{self.uri}: end of video")
        return CameraError(f"camera {self.name}: {self.uri} {why}")

    def read(self) -> Frame:
        if self._source is None:
            raise CameraError(f"camera {self.name}: not open")
        try:
            cuda_image = self._source.Capture(format="rgb8", timeout=self.timeout_ms)
        except Exception as exc:  # capture failed: a closed stream, a device error, or a file at its end
            if not self._source.IsStreaming():
                raise self._stopped("stopped streaming") from exc
            raise CameraError(f"camera {self.name}: capture failed: {exc}") from exc
        if cuda_image is None:
            if not self._source.IsStreaming():
                raise self._stopped("stopped streaming")
            raise CameraError(f"camera {self.name}: no frame within {self.timeout_ms} ms")
        timestamp = monotonic()
        self._ju.cudaDeviceSynchronize()  # the colour conversion into the buffer runs on the GPU
        mapped = self._ju.cudaToNumpy(cuda_image)
        image: npt.NDArray[np.uint8] = np.array(mapped, dtype=np.uint8, copy=True)
        gap = self._gap(int(getattr(cuda_image, "timestamp", 0)))
        self._index += gap
        self.stats.record(timestamp, 1.0 / self.fps, gap)
        frame = Frame(self.name, self._index, timestamp, image)
        self._index += 1
        return frame

    def _gap(self, stream_ns: int) -> int:
        if stream_ns <= 0:
            return 0
        rate = float(self._source.GetFrameRate() or self.fps)
        gap = 0
        if self._last_stream_ns is not None:
            gap = frames_skipped((stream_ns - self._last_stream_ns) / 1e9, 1.0 / rate)
        self._last_stream_ns = stream_ns
        return gap

    def close(self) -> None:
        source, self._source = self._source, None
        if source is not None:
            source.Close()

    def describe(self) -> str:
        return f"jetson videoSource {self.uri} ({self.width}x{self.height} @ {self.fps:g} fps asked)"


def create(cfg: CameraConfig) -> JetsonSource:
    return JetsonSource(cfg)
