"""A unit with two cameras, end to end: the real `lfr-edge run` with two simulator cameras (the source the
simulator registers by entry point), the real models, a real broker and the pty beacon.

A watchlisted person walks past cam0, then crosses into cam1's view while the subject's cooldown runs: one
alert, naming cam0. The cooldown is the unit's, shared by its cameras (lfr_edge.vision.match.Cooldowns).
Later, after the cooldown, the same person walks the same path past cam1 again: a second alert, naming cam1.
The crossing and that later walk are the same rendered frames (the same walker of the same plan), so the
later alert shows cam1 recognises the person on that path: the crossing was held back by the cooldown.
"""

from __future__ import annotations

import dataclasses
import json
import queue
import time
from pathlib import Path

import pytest

from lfr_contracts.audit_events import AlertRaised, FacesSeen
from lfr_contracts.beacon import Command, Pattern
from lfr_contracts.telemetry import CameraState, decode_telemetry
from lfr_edge.vision.pipeline import FacePipeline
from lfr_hwsim.broker import COMMAND_CENTRE
from lfr_hwsim.facelocate import default_locator
from lfr_hwsim.plan import PlanRequest, ScenePlan, Walker, build_plan
from lfr_hwsim.van import SimulatedVan, Subject
from lfr_tools.audit.report import read_events
from lfr_tools.command_centre.enrol import PipelineEnroller
from mqtt_fixtures import Collector

pytestmark = [pytest.mark.slow, pytest.mark.broker]

WANTED = "7205"  # an identity of ../shared/faces/wild
WIDTH, HEIGHT, FPS = 960, 540, 10.0
ENTER_S = 4.0  # cam0's walk starts this long after the cameras open (the watchlist is applied by then)
MIN_FACE_PX = 48.0  # a face at least this wide is one the unit can recognise (as the demo counts them)


@dataclasses.dataclass(frozen=True)
class Crossing:
    """The two cameras' scenes and the times that matter, in seconds after each camera opened."""

    cam0: ScenePlan
    cam1: ScenePlan
    walker: Walker
    cooldown_s: float
    crossing: tuple[float, float]  # the walk into cam1's view, within the cooldown
    again: tuple[float, float]  # the same walk on cam1, after the cooldown


def crossing_scenes(faces: Path) -> Crossing:
    request = PlanRequest(
        faces / "wild",
        seed=3,
        width=WIDTH,
        height=HEIGHT,
        fps=FPS,
        duration_s=60.0,
        walkers=1,
        watchlisted=(WANTED,),
        occluders=0,
        lighting=False,
    )
    base = build_plan(request, default_locator())
    (walker,) = base.walkers
    walk = walker.duration_s
    # The cooldown covers the crossing even if cam0 alerted at the walk's first usable frame and the machine
    # is slow; the later walk starts well after it, even if cam0 alerted at the walk's last frame.
    cooldown = 2 * walk + 8.0
    crossing = (ENTER_S + walk + 0.5, ENTER_S + 2 * walk + 0.5)
    again = (ENTER_S + walk + cooldown + 6.0, ENTER_S + 2 * walk + cooldown + 6.0)
    duration = again[1] + 1.0

    def scene(*starts: float) -> ScenePlan:
        walkers = tuple(dataclasses.replace(walker, id=i, t_enter=t) for i, t in enumerate(starts))
        return dataclasses.replace(base, walkers=walkers, duration_s=duration)

    return Crossing(scene(ENTER_S), scene(crossing[0], again[0]), walker, cooldown, crossing, again)


def simulator_camera(name: str, plan: ScenePlan, folder: Path) -> dict[str, object]:
    plan_file = folder / f"{name}-plan.json"
    plan.save(plan_file)
    return {
        "name": name,
        "source": "simulator",
        "width": plan.width,
        "height": plan.height,
        "fps": plan.fps,
        "options": {"plan_file": str(plan_file), "realtime": True, "truth_file": str(folder / f"{name}-truth.jsonl")},
    }


def usable_frames(truth_file: Path, identity: str, window: tuple[float, float]) -> int:
    """Frames the camera delivered to the unit, inside `window` (scene seconds), showing the person's face
    at a recognisable size (the simulator's ground truth)."""
    count = 0
    for line in truth_file.read_text().splitlines():
        frame = json.loads(line)
        if window[0] <= frame["t"] <= window[1]:
            count += any(
                f["identity"] == identity and f["box"][2] - f["box"][0] >= MIN_FACE_PX and f["visible"] >= 0.5
                for f in frame["faces"]
            )
    return count


def test_two_cameras_each_alert_names_its_camera_and_a_crossing_person_is_alerted_once(
    faces: Path, pipeline: FacePipeline, tmp_path: Path
) -> None:
    scenes = crossing_scenes(faces)
    with SimulatedVan(tmp_path / "van", unit_id="van-2cam") as van:
        enrol = scenes.cam0.enrolment_photos(WANTED)[:3]
        bundle = van.build_watchlist([Subject("S-7205", "wanted", tuple(enrol))], PipelineEnroller(pipeline), 0.5)
        van.publish_watchlist(bundle, wait_ack_s=None)
        cameras = [simulator_camera("cam0", scenes.cam0, tmp_path), simulator_camera("cam1", scenes.cam1, tmp_path)]
        config = van.write_config(
            cameras, match={"cooldown_s": scenes.cooldown_s}, daemon={"telemetry_interval_s": 0.5}
        )
        phone = van.handset()
        telemetry = Collector(van.broker, COMMAND_CENTRE)
        telemetry.subscribe(van.topics.telemetry)
        daemon = van.start_daemon(config)
        try:
            daemon.wait_for("READY", timeout=120)
            ready = time.time()
            # Both scenes end by themselves; the unit says so in its telemetry.
            deadline = time.monotonic() + scenes.cam0.duration_s + 60
            while True:
                assert time.monotonic() < deadline, f"the scenes did not end:\n{daemon.log_tail()}"
                assert daemon.proc.poll() is None, f"lfr-edge run exited:\n{daemon.log_tail()}"
                try:
                    body = decode_telemetry(telemetry.next(timeout=1.0).payload)
                except queue.Empty:
                    continue
                if all(body.cameras.get(c) == CameraState.ENDED for c in ("cam0", "cam1")):
                    break
            alerts = []
            while True:
                try:
                    alerts.append(phone.alerts.get(timeout=3.0).alert)
                except queue.Empty:
                    break
            assert van.beacon is not None
            beacon = van.beacon.executed()
        finally:
            assert daemon.terminate(timeout=10) == 0
            telemetry.close()
        events = read_events(van.paths.state / "audit.jsonl")

    # Each alert names its camera; the person crossing from cam0 to cam1 within the cooldown is alerted once.
    assert [(a.subject_id, a.camera) for a in alerts] == [("S-7205", "cam0"), ("S-7205", "cam1")], alerts
    raised = [e for e in events if isinstance(e, AlertRaised)]
    assert [(e.subject_id, e.camera) for e in raised] == [("S-7205", "cam0"), ("S-7205", "cam1")]
    first, second = alerts
    assert second.time - first.time >= scenes.cooldown_s
    # The crossing really was in cam1's view, in frames the unit received, before the cooldown ran out.
    truth = tmp_path / "cam1-truth.jsonl"
    assert usable_frames(truth, WANTED, scenes.crossing) >= 5, "cam1 never showed the crossing person"
    assert usable_frames(truth, WANTED, scenes.again) >= 5
    crossing_over_by = ready + scenes.crossing[1]  # each camera opened between spawning the unit and READY
    assert crossing_over_by < first.time + scenes.cooldown_s, (
        f"the machine was too slow for this scene: the crossing ended {crossing_over_by - first.time:.1f} s "
        f"after the first alert, the cooldown is {scenes.cooldown_s:.1f} s"
    )
    # The roof beacon showed each alert and beeped for each (two beeps by default).
    shown = [f for f in beacon if f.kind == Command.SET_PATTERN and f.args == bytes((Pattern.ALERT,))]
    assert len(shown) == 2 and sum(f.kind == Command.BUZZER for f in beacon) == 2 * 2
    seen = {c: sum(e.count for e in events if isinstance(e, FacesSeen) and e.camera == c) for c in ("cam0", "cam1")}
    assert seen["cam0"] > 0 and seen["cam1"] > 0, seen
