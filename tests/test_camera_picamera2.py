"""Picamera2 source against a fake `picamera2` module with the library's call names and return shapes."""

from __future__ import annotations

import sys
import time
import types
from typing import Any, ClassVar

import numpy as np
import pytest

from lfr_contracts.camera import CameraConfig, CameraError, CameraUnavailable
from lfr_contracts.errors import ConfigError
from lfr_edge.camera import create_source
from lfr_edge.camera.picamera2 import Picamera2Source

W, H = 64, 48


class FakeRequest:
    """A CompletedRequest: make_array(name) -> HxWx3 uint8, stored B, G, R; get_metadata(); release()."""

    def __init__(self, bgr: np.ndarray, metadata: dict[str, Any], camera: FakePicamera2) -> None:
        self._bgr, self._metadata, self._camera = bgr, metadata, camera

    def make_array(self, name: str) -> np.ndarray:
        assert name == "main" and not self._camera.released_last
        return self._bgr.copy()

    def get_metadata(self) -> dict[str, Any]:
        return dict(self._metadata)

    def release(self) -> None:
        self._camera.released += 1


class FakePicamera2:
    cameras: ClassVar[list[dict[str, Any]]] = [{"Model": "imx708", "Num": 0}]
    instances: ClassVar[list[FakePicamera2]] = []

    def __init__(self, camera_num: int = 0) -> None:
        self.camera_num = camera_num
        self.config: dict[str, Any] | None = None
        self.started = self.stopped = self.closed = False
        self.released = 0
        self.released_last = False
        self.frames: list[tuple[tuple[int, int, int], int]] = []  # (RGB colour, SensorTimestamp ns)
        FakePicamera2.instances.append(self)

    @staticmethod
    def global_camera_info() -> list[dict[str, Any]]:
        return FakePicamera2.cameras

    def create_video_configuration(
        self,
        main: dict[str, Any] | None = None,
        lores: dict[str, Any] | None = None,
        raw: dict[str, Any] | None = None,
        controls: dict[str, Any] | None = None,
        buffer_count: int = 6,
        **kwargs: Any,
    ) -> dict[str, Any]:
        return {
            "use_case": "video",
            "main": main,
            "lores": lores,
            "controls": controls,
            "buffer_count": buffer_count,
        }

    def configure(self, config: dict[str, Any]) -> None:
        self.config = config

    def start(self) -> None:
        assert self.config is not None, "configure() before start()"
        self.started = True

    def capture_request(self) -> FakeRequest:
        assert self.started
        if not self.frames:
            raise RuntimeError("Camera frontend has timed out!")
        rgb, ts = self.frames.pop(0)
        assert self.config is not None
        w, h = self.config["main"]["size"]
        bgr = np.full((h, w, 3), rgb[::-1], dtype=np.uint8)  # RGB888 is B, G, R in memory
        duration_us = int(1e6 / self.config["controls"]["FrameRate"])
        return FakeRequest(bgr, {"SensorTimestamp": ts, "FrameDuration": duration_us, "ExposureTime": 9000}, self)

    def stop(self) -> None:
        self.stopped = True

    def close(self) -> None:
        self.closed = True


@pytest.fixture
def fake_picamera2(monkeypatch: pytest.MonkeyPatch) -> type[FakePicamera2]:
    module = types.ModuleType("picamera2")
    vars(module)["Picamera2"] = FakePicamera2
    monkeypatch.setitem(sys.modules, "picamera2", module)
    FakePicamera2.instances = []
    monkeypatch.setattr(FakePicamera2, "cameras", [{"Model": "imx708", "Num": 0}])
    return FakePicamera2


def make(**options: Any) -> Picamera2Source:
    cfg = CameraConfig(name="cam-p", source="picamera2", width=W, height=H, fps=25.0, options=options)
    source = create_source(cfg)
    assert isinstance(source, Picamera2Source)
    return source


def test_frames_are_rgb_at_the_configured_size_with_sensor_timestamps(
    fake_picamera2: type[FakePicamera2],
) -> None:
    source = make()
    source.open()
    camera = fake_picamera2.instances[0]
    assert camera.config is not None
    assert camera.config["main"] == {"size": (W, H), "format": "RGB888"}
    assert camera.config["controls"] == {"FrameRate": 25.0}
    boot = time.clock_gettime_ns(time.CLOCK_BOOTTIME)
    camera.frames = [((220, 30, 30), boot), ((30, 30, 220), boot + 40_000_000)]
    first, second = source.read(), source.read()
    assert first.image.shape == (H, W, 3) and first.image.dtype == np.uint8
    assert tuple(first.image[0, 0]) == (220, 30, 30) and tuple(second.image[0, 0]) == (30, 30, 220)
    assert second.timestamp - first.timestamp == pytest.approx(0.040, abs=1e-9)  # the sensor's spacing, exactly
    assert abs(first.timestamp - time.monotonic()) < 1.0  # on the pipeline's monotonic clock
    assert camera.released == 2
    assert source.stats.dropped == 0 and source.stats.late == 0
    source.close()
    source.close()
    assert camera.stopped and camera.closed


def test_gaps_in_sensor_timestamps_count_as_dropped_and_late(fake_picamera2: type[FakePicamera2]) -> None:
    source = make()
    source.open()
    camera = fake_picamera2.instances[0]
    camera.frames = [((9, 9, 9), t * 40_000_000) for t in (10, 11, 14, 15)]
    frames = [source.read() for _ in range(4)]
    assert [f.index for f in frames] == [0, 1, 4, 5]
    assert source.stats.dropped == 2 and source.stats.late == 1 and source.stats.delivered == 4


def test_a_failed_capture_is_a_camera_error(fake_picamera2: type[FakePicamera2]) -> None:
    source = make()
    source.open()
    with pytest.raises(CameraError, match="capture failed: Camera frontend has timed out"):
        source.read()


def test_no_camera_module_names_the_cable_check(
    fake_picamera2: type[FakePicamera2], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(FakePicamera2, "cameras", [])
    with pytest.raises(CameraUnavailable, match=r"no camera module 0 detected \(0 found\).*rpicam-hello"):
        make().open()
    with pytest.raises(CameraUnavailable, match="no camera module 1"):
        make(camera_num=1).open()


def test_missing_picamera2_names_the_apt_package(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "picamera2", None)
    with pytest.raises(CameraUnavailable, match=r"sudo apt install python3-picamera2.*cannot be pip-installed"):
        make().open()


def test_unknown_option_is_refused() -> None:
    with pytest.raises(ConfigError, match="unknown key 'hdr'"):
        make(hdr=True)
