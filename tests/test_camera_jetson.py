"""Jetson source against a fake `jetson_utils` with NVIDIA's names (videoSource, cudaToNumpy, ...)."""

from __future__ import annotations

import sys
import types
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pytest

from lfr_contracts.camera import CameraConfig, CameraError, CameraUnavailable, EndOfStream
from lfr_edge.camera import create_source
from lfr_edge.camera.jetson import JetsonSource

W, H = 32, 24


class FakeCudaImage:
    """cudaImage's attributes: width, height, channels, format, timestamp (ns), mapped; memory: `_buffer`."""

    def __init__(self, buffer: np.ndarray, timestamp: int) -> None:
        self._buffer = buffer
        self.height, self.width, self.channels = buffer.shape
        self.format = "rgb8"
        self.timestamp = timestamp
        self.mapped = True


class FakeVideoSource:
    instances: ClassVar[list[FakeVideoSource]] = []

    def __init__(self, uri: str = "", argv: list[str] | None = None, positionArg: int = -1, options: Any = None):
        if uri.startswith("csi://9"):
            raise Exception("jetson.utils -- failed to create videoSource device")
        self.uri, self.argv = uri, list(argv or [])
        self.ring = [np.zeros((H, W, 3), np.uint8) for _ in range(2)]  # reused, like videoSource's buffers
        self.script: list[Any] = []  # per Capture: (RGB colour, ns), None (timeout), or "error"
        self.streaming = True
        self.captures: list[tuple[str, int]] = []
        self.closed = False
        FakeVideoSource.instances.append(self)

    def Capture(self, format: str = "rgb8", timeout: int = -1, stream: int = 0) -> FakeCudaImage | None:
        self.captures.append((format, timeout))
        step = self.script.pop(0) if self.script else "error"
        if step == "error":
            self.streaming = False
            raise Exception("jetson.utils -- videoSource failed to capture image")
        if step is None:
            return None
        assert isinstance(step, tuple)
        rgb, ns = step
        buffer = self.ring[len(self.captures) % 2]
        buffer[:] = rgb
        return FakeCudaImage(buffer, ns)

    def IsStreaming(self) -> bool:
        return self.streaming

    def GetFrameRate(self) -> float:
        return 30.0

    def GetWidth(self) -> int:
        return W

    def GetHeight(self) -> int:
        return H

    def Close(self) -> None:
        self.closed = True
        self.streaming = False


@pytest.fixture
def fake_ju(monkeypatch: pytest.MonkeyPatch) -> types.ModuleType:
    module = types.ModuleType("jetson_utils")
    names = vars(module)

    def cuda_device_synchronize() -> None:
        names["synchronized"] += 1

    names.update(
        synchronized=0,
        videoSource=FakeVideoSource,
        cudaToNumpy=lambda image: image._buffer,  # zero-copy view
        cudaDeviceSynchronize=cuda_device_synchronize,
    )
    monkeypatch.setitem(sys.modules, "jetson_utils", module)
    FakeVideoSource.instances = []
    return module


def make(uri: str, **options: Any) -> JetsonSource:
    cfg = CameraConfig(name="cam-j", source="jetson", uri=uri, width=W, height=H, fps=30.0, options=options)
    source = create_source(cfg)
    assert isinstance(source, JetsonSource)
    return source


def test_csi_frames_are_copied_out_of_the_reused_cuda_buffers(fake_ju: types.ModuleType) -> None:
    source = make("csi://0", timeout_ms=500, argv=["--input-flip=rotate-180"])
    source.open()
    video = FakeVideoSource.instances[0]
    assert video.uri == "csi://0"
    assert video.argv == [
        f"--input-width={W}",
        f"--input-height={H}",
        "--input-rate=30",
        "--input-flip=rotate-180",
    ]
    video.script = [
        ((200, 10, 10), 1_000_000_000),
        ((10, 200, 10), 1_033_333_333),
        ((10, 10, 200), 1_066_666_666),
    ]
    frames = [source.read() for _ in range(3)]
    assert [tuple(f.image[0, 0]) for f in frames] == [(200, 10, 10), (10, 200, 10), (10, 10, 200)]
    assert frames[0].image.shape == (H, W, 3)
    assert video.captures == [("rgb8", 500)] * 3
    assert fake_ju.synchronized == 3
    assert source.stats.dropped == 0 and [f.index for f in frames] == [0, 1, 2]
    source.close()
    source.close()
    assert video.closed


def test_gaps_in_stream_timestamps_count_as_dropped(fake_ju: types.ModuleType) -> None:
    source = make("/dev/video0")
    source.open()
    FakeVideoSource.instances[0].script = [((1, 1, 1), int(t * 1e9 / 30)) for t in (30, 31, 35)]
    frames = [source.read() for _ in range(3)]
    assert [f.index for f in frames] == [0, 1, 5] and source.stats.dropped == 3


def test_timeout_while_streaming_is_a_stall_and_a_live_stream_that_stops_is_lost(
    fake_ju: types.ModuleType,
) -> None:
    source = make("rtsp://127.0.0.1:8554/cam")
    source.open()
    FakeVideoSource.instances[0].script = [None, "error"]
    with pytest.raises(CameraError, match="no frame within 1000 ms"):
        source.read()
    with pytest.raises(CameraError, match="stopped streaming") as info:
        source.read()
    assert not isinstance(info.value, EndOfStream)


def test_a_video_file_ends_with_end_of_stream(fake_ju: types.ModuleType, tmp_path: Path) -> None:
    clip = tmp_path / "clip.mp4"
    clip.write_bytes(b"")
    source = make(str(clip))
    source.open()
    FakeVideoSource.instances[0].script = [((5, 5, 5), 1), "error"]
    source.read()
    with pytest.raises(EndOfStream):
        source.read()


def test_device_that_cannot_open_is_unavailable(fake_ju: types.ModuleType) -> None:
    with pytest.raises(CameraUnavailable, match="videoSource cannot open csi://9"):
        make("csi://9").open()


def test_pypi_impostor_jetson_utils_is_refused_with_the_explanation(monkeypatch: pytest.MonkeyPatch) -> None:
    impostor = types.ModuleType("jetson_utils")
    vars(impostor)["__version__"] = "0.0.3"
    monkeypatch.setitem(sys.modules, "jetson_utils", impostor)
    with pytest.raises(CameraUnavailable, match=r"unrelated PyPI package `jetson-utils`.*jetson-inference"):
        make("csi://0").open()


def test_missing_jetson_utils_says_to_build_jetson_inference(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "jetson_utils", None)
    with pytest.raises(CameraUnavailable, match="not installed: build NVIDIA's jetson-inference"):
        make("csi://0").open()
