"""OpenCV source: a real MJPG video file made here, plus a fake VideoCapture for loss and reconnect."""

from __future__ import annotations

import sys
import threading
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest

from lfr_contracts.camera import CameraConfig, CameraError, CameraUnavailable, EndOfStream
from lfr_contracts.errors import ConfigError
from lfr_edge.camera import create_source
from lfr_edge.camera.opencv import OpenCVSource, guess_backend

RED, GREEN, BLUE = (220, 30, 30), (30, 220, 30), (30, 30, 220)  # RGB


def write_video(path: Path, colours: list[tuple[int, int, int]], size: tuple[int, int] = (96, 64)) -> Path:
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter.fourcc(*"MJPG"), 25.0, size)
    assert writer.isOpened()
    for rgb in colours:
        writer.write(np.full((size[1], size[0], 3), rgb[::-1], dtype=np.uint8))
    writer.release()
    return path


def dominant(image: np.ndarray) -> int:
    return int(np.argmax(image.reshape(-1, 3).mean(axis=0)))


def make(uri: str, **options: Any) -> OpenCVSource:
    source = create_source(CameraConfig(name="cam-o", source="opencv", uri=uri, fps=25.0, options=options))
    assert isinstance(source, OpenCVSource)
    return source


def test_video_file_frames_come_back_in_rgb_at_their_size_then_end(tmp_path: Path) -> None:
    path = write_video(tmp_path / "clip.avi", [RED, GREEN, BLUE, RED])
    source = make(str(path))
    source.open()
    frames = [source.read() for _ in range(4)]
    with pytest.raises(EndOfStream):
        source.read()
    assert [dominant(f.image) for f in frames] == [0, 1, 2, 0]
    assert all(f.image.shape == (64, 96, 3) and f.image.dtype == np.uint8 for f in frames)
    red = frames[0].image.reshape(-1, 3).mean(axis=0)
    assert red[0] > 180 and red[2] < 80
    assert [f.index for f in frames] == [0, 1, 2, 3]
    assert source.stats.delivered == 4 and source.stats.dropped == 0 and source.stats.reconnects == 0
    source.close()
    source.close()


def test_a_file_that_disappears_is_retried_then_reported_lost(tmp_path: Path) -> None:
    path = write_video(tmp_path / "clip.avi", [RED, GREEN])
    source = make(str(path), reconnect_min_s=0.001, reconnect_max_s=0.002, reconnect_attempts=3)
    source.open()
    path.unlink()
    source.read(), source.read()  # what was already open still reads
    with pytest.raises(CameraError, match="3 reconnect attempts failed") as info:
        source.read()
    assert not isinstance(info.value, EndOfStream)


class FakeCapture:
    """cv2.VideoCapture's surface: read() -> (ok, BGR array), get/set by property id, isOpened, release."""

    def __init__(self, script: list[Any], opened: bool = True) -> None:
        self.script = list(script)  # per read: a (colour, msec) pair, or None for a failed read
        self.opened = opened
        self.props: dict[int, float] = {cv2.CAP_PROP_FPS: 25.0}
        self.released = False

    def isOpened(self) -> bool:
        return self.opened

    def read(self) -> tuple[bool, np.ndarray | None]:
        step = self.script.pop(0) if self.script else None
        if step is None:
            return False, None
        rgb, msec = step
        self.props[cv2.CAP_PROP_POS_MSEC] = msec
        self.props[cv2.CAP_PROP_POS_FRAMES] = self.props.get(cv2.CAP_PROP_POS_FRAMES, 0) + 1
        return True, np.full((48, 64, 3), rgb[::-1], dtype=np.uint8)

    def get(self, prop: int) -> float:
        return self.props.get(prop, 0.0)

    def set(self, prop: int, value: float) -> bool:
        self.props[prop] = value
        return True

    def release(self) -> None:
        self.released = True


class RecordingStop(threading.Event):
    """The source's stop event, recording each backoff wait instead of waiting."""

    def __init__(self) -> None:
        super().__init__()
        self.waits: list[float | None] = []

    def wait(self, timeout: float | None = None) -> bool:
        self.waits.append(timeout)
        return self.is_set()

    def clear(self) -> None:
        self.stopped = False

    def is_set(self) -> bool:
        return self.stopped


def install_captures(monkeypatch: pytest.MonkeyPatch, captures: list[FakeCapture]) -> list[tuple[Any, int]]:
    opened: list[tuple[Any, int]] = []

    def video_capture(target: Any, api: int) -> FakeCapture:
        opened.append((target, api))
        return captures.pop(0)

    monkeypatch.setattr(cv2, "VideoCapture", video_capture)
    return opened


def test_lost_stream_reconnects_with_capped_doubling_backoff(monkeypatch: pytest.MonkeyPatch) -> None:
    first = FakeCapture([(RED, 40.0), (GREEN, 80.0), None])
    failing = [FakeCapture([], opened=False) for _ in range(4)]
    back = FakeCapture([(BLUE, 1000.0), (RED, 1040.0)])
    opened = install_captures(monkeypatch, [first, *failing, back])
    stop = RecordingStop()
    options = {"reconnect_min_s": 0.5, "reconnect_max_s": 2.0}
    cfg = CameraConfig(name="cam-o", source="opencv", uri="rtsp://127.0.0.1:8554/cam", fps=25.0, options=options)
    source = OpenCVSource(cfg, stop)
    source.open()
    colours = [dominant(source.read().image) for _ in range(4)]
    assert colours == [0, 1, 2, 0]
    assert source.stats.reconnects == 1
    assert stop.waits == [0.5, 1.0, 2.0, 2.0, 2.0]
    assert first.released and all(c.released for c in failing)
    assert opened[0] == ("rtsp://127.0.0.1:8554/cam", cv2.CAP_FFMPEG)
    assert source.stats.dropped == 0  # a new connection restarts the timestamp sequence


def test_gaps_in_stream_timestamps_count_as_dropped_frames(monkeypatch: pytest.MonkeyPatch) -> None:
    cap = FakeCapture([(RED, 40.0), (RED, 80.0), (RED, 200.0), (RED, 240.0)])
    install_captures(monkeypatch, [cap])
    source = make("rtsp://127.0.0.1:8554/cam")
    source.open()
    frames = [source.read() for _ in range(4)]
    assert [f.index for f in frames] == [0, 1, 4, 5]
    assert source.stats.dropped == 2 and source.stats.delivered == 4


def test_v4l2_device_gets_size_rate_and_fourcc(monkeypatch: pytest.MonkeyPatch) -> None:
    cap = FakeCapture([(GREEN, 10.0)])
    opened = install_captures(monkeypatch, [cap])
    source = make("0", fourcc="MJPG")
    source.open()
    assert opened == [(0, cv2.CAP_V4L2)]
    assert cap.props[cv2.CAP_PROP_FRAME_WIDTH] == 1280 and cap.props[cv2.CAP_PROP_FRAME_HEIGHT] == 720
    assert cap.props[cv2.CAP_PROP_FPS] == 25.0 and cap.props[cv2.CAP_PROP_BUFFERSIZE] == 1
    assert cap.props[cv2.CAP_PROP_FOURCC] == cv2.VideoWriter.fourcc(*"MJPG")


def test_missing_device_names_the_device_and_how_to_list_cameras() -> None:
    with pytest.raises(CameraUnavailable, match=r"/dev/video97: no such camera device.*v4l2-ctl"):
        make("/dev/video97").open()


def test_gstreamer_pipeline_without_gstreamer_in_opencv_names_the_apt_package(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(cv2.videoio_registry, "hasBackend", lambda api: api != cv2.CAP_GSTREAMER)
    source = make("v4l2src device=/dev/video0 ! videoconvert ! appsink")
    assert source.backend == "gstreamer"
    with pytest.raises(CameraUnavailable, match=r"without the gstreamer backend.*python3-opencv"):
        source.open()


def test_missing_opencv_names_the_package(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "cv2", None)
    with pytest.raises(CameraUnavailable, match="python3-opencv"):
        make("/dev/video0").open()


def test_backend_is_guessed_from_the_uri_and_bad_options_are_refused() -> None:
    assert guess_backend("/dev/video2") == "v4l2" and guess_backend("1") == "v4l2"
    assert guess_backend("rtsp://10.0.0.2/stream") == "ffmpeg"
    assert guess_backend("rtspsrc location=rtsp://x ! decodebin ! appsink") == "gstreamer"
    with pytest.raises(ConfigError, match=r"options\.backend"):
        make("0", backend="directshow")
    with pytest.raises(ConfigError, match="reconnect_min_s"):
        make("0", reconnect_min_s=0)
    with pytest.raises(ConfigError, match="unknown key 'retries'"):
        make("0", retries=3)
