"""The simulator as a camera source: options, pacing, ground truth file, stall and disconnect faults."""

from __future__ import annotations

import json
import os
import queue
import statistics
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from lfr_contracts.camera import CameraConfig, CameraError, EndOfStream, Frame
from lfr_contracts.errors import ConfigError
from lfr_edge.camera import create_source
from lfr_hwsim.camera import SimulatorSource, create, write_control
from lfr_hwsim.facelocate import LocatorUnavailable, default_locator
from lfr_hwsim.plan import PlanRequest, build_plan, load_plan
from lfr_hwsim.scene import SceneRenderer

W, H = 640, 360


def camera(fps: float = 25.0, **options: Any) -> CameraConfig:
    return CameraConfig(name="cam0", source="simulator", width=W, height=H, fps=fps, options=options)


@pytest.fixture(scope="module")
def plan_file(faces_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 640x360 plan at 25 fps, built once (finding faces in photos is the slow part)."""
    try:
        locator = default_locator()
    except LocatorUnavailable as exc:
        if os.environ.get("LFR_REQUIRE_FACES") == "1":
            pytest.fail(str(exc))
        pytest.skip(str(exc))
    plan = build_plan(PlanRequest(faces_dir / "wild", seed=5, width=W, height=H, fps=25.0, duration_s=8.0), locator)
    path = tmp_path_factory.mktemp("sim") / "plan.json"
    plan.save(path)
    return path


@pytest.fixture
def opened() -> Iterator[list[SimulatorSource]]:
    sources: list[SimulatorSource] = []
    yield sources
    for s in sources:
        s.close()


def open_source(opened: list[SimulatorSource], cfg: CameraConfig) -> SimulatorSource:
    source = create(cfg)
    opened.append(source)
    source.open()
    return source


@pytest.mark.parametrize(
    ("options", "named"),
    [
        ({"seeed": 3}, "seeed"),
        ({"seed": "three"}, "options.seed"),
        ({"seed": -1}, "options.seed"),
        ({"realtime": 1}, "options.realtime"),
        ({"duration_s": 0}, "options.duration_s"),
        ({"watchlisted": [3, 4]}, "options.watchlisted"),
        ({"plan_file": "/nonexistent/plan.json"}, "options.plan_file"),
        ({"control_file": 7}, "options.control_file"),
        ({"faces_dir": "/nonexistent/faces"}, "options.faces_dir"),
    ],
)
def test_a_bad_option_is_refused_naming_it(options: dict[str, Any], named: str) -> None:
    with pytest.raises(ConfigError, match=named.replace(".", r"\.")):
        create(camera(**options))


def test_a_plan_for_another_resolution_is_refused_naming_plan_file(plan_file: Path) -> None:
    cfg = CameraConfig(name="cam0", source="simulator", width=1280, height=720, options={"plan_file": str(plan_file)})
    with pytest.raises(ConfigError, match=r"options\.plan_file.*640x360"):
        create(cfg)


def test_a_folder_without_usable_photos_is_refused_naming_faces_dir(tmp_path: Path, plan_file: Path) -> None:
    (tmp_path / "someone").mkdir()
    (tmp_path / "someone" / "0.jpg").write_bytes(b"\xff\xd8 broken")
    with pytest.raises(ConfigError, match=r"options\.faces_dir: no usable face photos"):
        create(camera(faces_dir=str(tmp_path), duration_s=2.0))


def test_the_registry_builds_the_simulator_from_config(plan_file: Path, opened: list[SimulatorSource]) -> None:
    source = create_source(camera(plan_file=str(plan_file)))
    assert isinstance(source, SimulatorSource)
    opened.append(source)
    assert "simulator cam0: 640x360" in source.describe()


def test_frames_are_the_plans_frames(plan_file: Path, opened: list[SimulatorSource]) -> None:
    source = open_source(opened, camera(plan_file=str(plan_file), realtime=False))
    renderer = SceneRenderer(source.plan)
    for expected in range(5):
        frame = source.read()
        assert frame.camera == "cam0" and frame.index == expected
        assert frame.image.shape == (H, W, 3) and frame.image.dtype == np.uint8
        assert np.array_equal(frame.image, renderer.render(expected)[0])


def test_real_time_frames_follow_the_frame_interval_without_drift(
    plan_file: Path, opened: list[SimulatorSource]
) -> None:
    source = open_source(opened, camera(plan_file=str(plan_file), realtime=True))
    frames = [source.read() for _ in range(30)]
    stamps = [f.timestamp for f in frames]
    gaps = np.diff(stamps)
    interval = 1 / 25
    assert statistics.median(gaps) == pytest.approx(interval, abs=0.004)
    # an absolute schedule: the span is set by the first and last index, not by summed sleeps
    span = stamps[-1] - stamps[0]
    assert span == pytest.approx((frames[-1].index - frames[0].index) * interval, abs=0.015)
    assert source.stats.delivered == 30


def test_as_fast_as_possible_does_not_wait_for_the_frame_interval(
    plan_file: Path, opened: list[SimulatorSource]
) -> None:
    source = open_source(opened, camera(fps=25.0, plan_file=str(plan_file), realtime=False))
    started = time.monotonic()
    frames = [source.read() for _ in range(50)]
    elapsed = time.monotonic() - started
    assert [f.index for f in frames] == list(range(50))
    assert elapsed < 50 / 25 / 2  # at least twice real time, even on a busy machine
    assert source.stats.dropped == 0


def test_the_scene_ends_with_end_of_stream_unless_looping(plan_file: Path, opened: list[SimulatorSource]) -> None:
    source = open_source(opened, camera(plan_file=str(plan_file), realtime=False))
    total = source.plan.frames
    for _ in range(total):
        source.read()
    with pytest.raises(EndOfStream):
        source.read()
    looping = open_source(opened, camera(plan_file=str(plan_file), realtime=False, loop=True))
    for _ in range(total):
        looping.read()
    again = looping.read()
    assert again.index == total
    assert np.array_equal(again.image, SceneRenderer(looping.plan).render(0)[0])


def test_the_truth_file_gets_one_line_per_delivered_frame(
    plan_file: Path, opened: list[SimulatorSource], tmp_path: Path
) -> None:
    truth = tmp_path / "truth.jsonl"
    source = open_source(opened, camera(plan_file=str(plan_file), realtime=False, truth_file=str(truth)))
    frames = [source.read() for _ in range(60)]
    lines = [json.loads(line) for line in truth.read_text().splitlines()]
    assert [line["frame"] for line in lines] == [f.index for f in frames]
    expected = SceneRenderer(source.plan).render(59)[1]
    assert [tuple(f["box"]) for f in lines[-1]["faces"]] == [tuple(round(v, 1) for v in f.box) for f in expected.faces]
    assert {"identity", "walker", "box", "visible", "blur_px", "watchlisted"} <= set(lines[-1]["faces"][0])


def reader(source: SimulatorSource, out: queue.Queue[Frame | Exception], stop: threading.Event) -> None:
    while not stop.is_set():
        try:
            out.put(source.read())
        except CameraError as exc:
            out.put(exc)
            return


def test_a_stall_blocks_read_until_the_control_file_resumes_it(
    plan_file: Path, opened: list[SimulatorSource], tmp_path: Path
) -> None:
    control = tmp_path / "camera.json"
    source = open_source(opened, camera(plan_file=str(plan_file), realtime=True, loop=True, control_file=str(control)))
    frames: queue.Queue[Frame | Exception] = queue.Queue()
    stop = threading.Event()
    thread = threading.Thread(target=reader, args=(source, frames, stop), daemon=True)
    thread.start()
    assert isinstance(frames.get(timeout=5), Frame)
    write_control(control, "stall")
    for _ in range(50):  # frames already under way may still arrive; then nothing for a while
        try:
            frames.get(timeout=0.5)
        except queue.Empty:
            break
    else:
        pytest.fail("frames kept coming during a stall")
    last_index = source.stats.delivered
    write_control(control, "ok")
    resumed = frames.get(timeout=5)
    assert isinstance(resumed, Frame)
    assert source.stats.dropped > 0  # the frames the camera did not deliver during the stall
    assert resumed.index > last_index
    stop.set()
    source.close()  # also wakes a read blocked in a stall
    thread.join(timeout=5)
    assert not thread.is_alive()


def test_close_wakes_a_read_blocked_in_a_stall(plan_file: Path, opened: list[SimulatorSource], tmp_path: Path) -> None:
    control = tmp_path / "camera.json"
    write_control(control, "stall")
    source = open_source(opened, camera(plan_file=str(plan_file), control_file=str(control)))
    frames: queue.Queue[Frame | Exception] = queue.Queue()
    thread = threading.Thread(target=reader, args=(source, frames, threading.Event()), daemon=True)
    thread.start()
    with pytest.raises(queue.Empty):
        frames.get(timeout=0.3)
    source.close()
    assert isinstance(frames.get(timeout=5), CameraError)


def test_a_disconnect_raises_until_the_camera_is_reopened_after_the_fault(
    plan_file: Path, opened: list[SimulatorSource], tmp_path: Path
) -> None:
    control = tmp_path / "camera.json"
    source = open_source(opened, camera(plan_file=str(plan_file), realtime=False, loop=True, control_file=str(control)))
    source.read()
    write_control(control, "disconnect")
    deadline = time.monotonic() + 5
    with pytest.raises(CameraError, match="simulated disconnect"):
        while time.monotonic() < deadline:
            source.read()
    with pytest.raises(CameraError, match="not open"):
        source.read()
    with pytest.raises(CameraError, match="simulated disconnect"):
        source.open()
    write_control(control, "ok")
    source.open()
    assert isinstance(source.read(), Frame)
    assert source.stats.reconnects == 1


def test_a_bad_control_file_is_ignored_and_the_state_kept(
    plan_file: Path, opened: list[SimulatorSource], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    control = tmp_path / "camera.json"
    source = open_source(opened, camera(plan_file=str(plan_file), realtime=False, loop=True, control_file=str(control)))
    control.write_text('{"camera": "explode"}')
    started = time.monotonic()
    while time.monotonic() - started < 0.3:  # long enough for several polls
        source.read()
    assert "camera control file" in caplog.text and "explode" in caplog.text
    with pytest.raises(ValueError, match="explode"):
        write_control(control, "explode")


def test_building_from_options_uses_the_seed(faces_dir: Path, plan_file: Path, opened: list[SimulatorSource]) -> None:
    options: dict[str, Any] = {
        "faces_dir": str(faces_dir / "wild"),
        "seed": 5,
        "duration_s": 8.0,
        "realtime": False,
    }
    a = open_source(opened, camera(**options))
    b = open_source(opened, camera(**options))
    assert a.plan == b.plan
    assert np.array_equal(a.read().image, b.read().image)
    assert a.plan == load_plan(plan_file)  # the plan file written from the same settings is the same scene
