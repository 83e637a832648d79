"""Replay source: a folder of images or a video file, paced or as fast as possible, looping or not."""

from __future__ import annotations

import logging
import queue
import threading
from pathlib import Path

import cv2
import numpy as np
import pytest

from lfr_contracts.camera import CameraConfig, CameraError, CameraUnavailable, EndOfStream
from lfr_contracts.errors import ConfigError
from lfr_edge.camera import create_source
from lfr_edge.camera.replay import ReplaySource

RED, GREEN, BLUE = (220, 30, 30), (30, 220, 30), (30, 30, 220)  # RGB


def solid_bgr(rgb: tuple[int, int, int], w: int = 64, h: int = 48) -> np.ndarray:
    return np.full((h, w, 3), rgb[::-1], dtype=np.uint8)


def dominant(image: np.ndarray) -> int:
    return int(np.argmax(image.reshape(-1, 3).mean(axis=0)))


def replay(uri: Path, **options: object) -> ReplaySource:
    cfg = CameraConfig(name="cam-r", source="replay", uri=str(uri), fps=25.0, options=dict(options))
    source = create_source(cfg)
    assert isinstance(source, ReplaySource)
    source.open()
    return source


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    cv2.imwrite(str(tmp_path / "a.png"), solid_bgr(RED))
    cv2.imwrite(str(tmp_path / "b.jpg"), solid_bgr(GREEN, 80, 60))
    (tmp_path / "c.jpg").write_bytes(b"\xff\xd8 this is not a jpeg at all")
    cv2.imwrite(str(tmp_path / "d.png"), solid_bgr(BLUE))
    (tmp_path / "notes.txt").write_text("ignored")
    return tmp_path


def test_folder_replays_sorted_images_in_rgb_skipping_the_corrupt_one(
    folder: Path, caplog: pytest.LogCaptureFixture
) -> None:
    source = replay(folder, realtime=False)
    with caplog.at_level(logging.WARNING):
        frames = [source.read() for _ in range(3)]
        with pytest.raises(EndOfStream):
            source.read()
    assert [dominant(f.image) for f in frames] == [0, 1, 2]
    assert [f.index for f in frames] == [0, 1, 2]
    assert frames[1].image.shape == (60, 80, 3) and frames[0].image.shape == (48, 64, 3)
    assert all(f.camera == "cam-r" and f.image.dtype == np.uint8 for f in frames)
    assert source.unreadable == [folder / "c.jpg"]
    assert str(folder / "c.jpg") in caplog.text
    assert source.stats.delivered == 3 and source.stats.dropped == 0


def test_as_fast_as_possible_spaces_timestamps_at_the_configured_rate(folder: Path) -> None:
    source = replay(folder, realtime=False, loop=True)
    frames = [source.read() for _ in range(7)]
    assert [dominant(f.image) for f in frames] == [0, 1, 2, 0, 1, 2, 0]
    steps = np.diff([f.timestamp for f in frames])
    assert np.allclose(steps, 1 / 25.0)
    assert source.stats.late == 0


def test_realtime_replay_waits_for_each_frame_slot(folder: Path) -> None:
    cfg = CameraConfig(name="cam-r", source="replay", uri=str(folder), fps=100.0, options={"loop": True})
    source = ReplaySource(cfg)
    source.open()
    frames = [source.read() for _ in range(5)]
    assert frames[-1].timestamp - frames[0].timestamp >= 4 * 0.01 * 0.9


def test_close_interrupts_a_reader_waiting_for_the_next_slot(folder: Path) -> None:
    cfg = CameraConfig(name="cam-r", source="replay", uri=str(folder), fps=0.2, options={"loop": True})
    source = ReplaySource(cfg)
    source.open()
    source.read()  # the first frame is due at once; the next one in 5 s
    outcome: queue.Queue[BaseException | None] = queue.Queue()

    def reader() -> None:
        try:
            source.read()
            outcome.put(None)
        except BaseException as exc:
            outcome.put(exc)

    thread = threading.Thread(target=reader)
    thread.start()
    source.close()
    assert isinstance(outcome.get(timeout=2), CameraError)
    thread.join(timeout=2)


def test_a_folder_of_only_unreadable_images_ends_instead_of_spinning(tmp_path: Path) -> None:
    (tmp_path / "x.png").write_bytes(b"not a png")
    (tmp_path / "y.jpg").write_bytes(b"")
    source = replay(tmp_path, realtime=False, loop=True)
    with pytest.raises(EndOfStream, match="nothing readable"):
        source.read()
    assert len(source.unreadable) == 2


def test_video_file_replays_and_loops(tmp_path: Path) -> None:
    path = tmp_path / "clip.avi"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter.fourcc(*"MJPG"), 25.0, (64, 48))
    for rgb in (RED, GREEN):
        writer.write(solid_bgr(rgb))
    writer.release()
    source = replay(path, realtime=False, loop=True)
    colours = [dominant(source.read().image) for _ in range(5)]
    assert colours == [0, 1, 0, 1, 0]
    source.close()
    once = replay(path, realtime=False)
    once.read(), once.read()
    with pytest.raises(EndOfStream):
        once.read()


def test_missing_and_empty_inputs_are_reported_by_path(tmp_path: Path) -> None:
    with pytest.raises(CameraUnavailable, match="no such video file or image folder"):
        replay(tmp_path / "absent")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(CameraUnavailable, match=r"no \.jpg or \.png"):
        replay(empty)
    with pytest.raises(CameraUnavailable, match="uri"):
        replay(Path(""))


def test_bad_options_name_the_key(folder: Path) -> None:
    with pytest.raises(ConfigError, match=r"options: unknown key 'speed'"):
        replay(folder, speed=2)
    with pytest.raises(ConfigError, match=r"options.loop: expected bool"):
        replay(folder, loop="yes")


def test_every_source_implements_the_frame_source_interface() -> None:
    from lfr_contracts.camera import FrameSource, SourceStats
    from lfr_edge.camera.jetson import JetsonSource
    from lfr_edge.camera.opencv import OpenCVSource
    from lfr_edge.camera.picamera2 import Picamera2Source

    cfg = CameraConfig(name="cam-x", uri="/dev/video0")
    sources: list[FrameSource] = [  # constructing a source imports no camera library
        ReplaySource(cfg),
        OpenCVSource(cfg),
        Picamera2Source(cfg),
        JetsonSource(cfg),
    ]
    for source in sources:
        assert source.name == "cam-x" and isinstance(source.stats, SourceStats)
        assert isinstance(source.describe(), str)
        source.close()
