"""The simulator's scene: real photos walking towards the camera, with ground truth matching the pixels."""

from __future__ import annotations

import itertools
import os
from pathlib import Path

import cv2
import numpy as np
import pytest

from lfr_hwsim.facelocate import Box, FaceLocator, LocatorUnavailable, default_locator
from lfr_hwsim.plan import PlanError, PlanRequest, ScenePlan, build_plan, load_plan
from lfr_hwsim.scene import SceneRenderer, make_background

pytestmark = pytest.mark.faces


@pytest.fixture(scope="module")
def locator() -> FaceLocator:
    try:
        return default_locator()
    except LocatorUnavailable as exc:
        if os.environ.get("LFR_REQUIRE_FACES") == "1":
            pytest.fail(str(exc))
        pytest.skip(str(exc))


@pytest.fixture(scope="module")
def request_(faces_dir: Path) -> PlanRequest:
    return PlanRequest(faces_dir=faces_dir / "wild", seed=11, duration_s=16.0, crowd=3.5, watchlisted=2)


@pytest.fixture(scope="module")
def plan(request_: PlanRequest, locator: FaceLocator) -> ScenePlan:
    return build_plan(request_, locator)


@pytest.fixture(scope="module")
def renderer(plan: ScenePlan) -> SceneRenderer:
    return SceneRenderer(plan)


def iou(a: Box, b: Box) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


def test_same_plan_and_seed_give_identical_frames(
    request_: PlanRequest, plan: ScenePlan, renderer: SceneRenderer, locator: FaceLocator
) -> None:
    again = build_plan(request_, locator)
    assert again == plan
    other = SceneRenderer(again)
    for index in (0, 57, 213):
        a, ta = renderer.render(index)
        b, tb = other.render(index)
        assert np.array_equal(a, b)
        assert ta == tb
    different = build_plan(PlanRequest(**{**request_.__dict__, "seed": 12}), locator)
    assert different.walkers != plan.walkers


def test_plan_survives_a_round_trip_through_json(plan: ScenePlan, tmp_path: Path) -> None:
    plan.save(tmp_path / "plan.json")
    assert load_plan(tmp_path / "plan.json") == plan


def test_a_damaged_plan_file_is_refused_naming_the_file(plan: ScenePlan, tmp_path: Path) -> None:
    path = tmp_path / "plan.json"
    path.write_text(plan.to_json().replace('"walkers"', '"walkrs"'))
    with pytest.raises(PlanError, match=r"plan\.json.*walkers"):
        load_plan(path)


def test_truth_boxes_are_where_a_detector_finds_the_faces(
    plan: ScenePlan, renderer: SceneRenderer, locator: FaceLocator
) -> None:
    checked = found = 0
    for index in range(0, plan.frames, 9):
        image, truth = renderer.render(index)
        for face in truth.faces:
            if face.visible < 1.0 or face.width < 60:
                continue
            x1, y1, x2, y2 = face.box
            w = x2 - x1
            cx0, cy0 = max(0, round(x1 - w)), max(0, round(y1 - w))
            crop = image[cy0 : round(y2 + w), cx0 : round(x2 + w)]
            seen = locator(np.ascontiguousarray(crop))
            checked += 1
            if seen is not None and iou((seen[0] + cx0, seen[1] + cy0, seen[2] + cx0, seen[3] + cy0), face.box) > 0.5:
                found += 1
    assert checked >= 20
    assert found / checked >= 0.9, f"detector agreed with the truth on {found} of {checked} faces"


def test_truth_boxes_cover_pixels_that_differ_from_the_background(plan: ScenePlan, renderer: SceneRenderer) -> None:
    background = make_background(plan.seed, plan.width, plan.height).astype(np.int16)
    image, truth = renderer.render(plan.frames // 2)
    gain = np.median(image.astype(np.float32) / np.maximum(background, 1))  # undo the lighting roughly
    assert truth.faces
    for face in truth.faces:
        if face.visible < 1.0:
            continue
        x1, y1, x2, y2 = (round(v) for v in face.box)
        drawn = image[y1:y2, x1:x2].astype(np.float32)
        behind = background[y1:y2, x1:x2] * gain
        assert np.mean(np.abs(drawn - behind)) > 12, f"nothing drawn in the box of walker {face.walker}"


def test_faces_grow_as_walkers_approach(plan: ScenePlan) -> None:
    for w in plan.walkers:
        widths = []
        for u in np.linspace(0, 0.999, 20):
            position = w.at(w.t_enter + w.duration_s * u)
            assert position is not None  # inside the walk
            widths.append(position[2])
        assert all(b > a for a, b in itertools.pairwise(widths))
    assert min(w.face_w_start for w in plan.walkers) < 35
    assert max(w.face_w_end for w in plan.walkers) > 200


def test_several_people_are_in_frame_at_once(plan: ScenePlan, renderer: SceneRenderer) -> None:
    in_frame = [len(renderer.render(i)[1].faces) for i in range(0, plan.frames, 10)]
    assert max(in_frame) >= 4
    assert np.mean(in_frame) >= 2


def test_walkers_are_hidden_and_blurred_somewhere(plan: ScenePlan, renderer: SceneRenderer) -> None:
    faces = [f for i in range(0, plan.frames, 4) for f in renderer.render(i)[1].faces]
    assert any(0.05 < f.visible < 0.9 for f in faces)
    assert any(f.visible > 0.99 for f in faces)
    assert max(f.blur_px for f in faces) > 4


def test_lighting_changes_over_time_only_when_asked(
    request_: PlanRequest, plan: ScenePlan, locator: FaceLocator
) -> None:
    corner = [SceneRenderer(plan).render(i)[0][:100, :100].mean() for i in range(0, plan.frames, 50)]
    assert max(corner) - min(corner) > 10
    flat = build_plan(PlanRequest(**{**request_.__dict__, "lighting": False}), locator)
    corner = [SceneRenderer(flat).render(i)[0][:100, :100].mean() for i in range(0, flat.frames, 50)]
    assert max(corner) - min(corner) < 0.5


def test_each_watchlisted_identity_walks_and_keeps_a_photo_to_enrol(plan: ScenePlan, faces_dir: Path) -> None:
    assert len(plan.watchlisted) == 2
    for ident in plan.watchlisted:
        assert any(w.identity == ident for w in plan.walkers)
        enrol = plan.enrolment_photos(ident)
        assert enrol
        assert all(p.parent == faces_dir / "wild" / ident for p in enrol)
        assert not {f"{ident}/{p.name}" for p in enrol} & plan.walker_photos(ident)


def test_a_folder_without_usable_photos_is_a_clear_error(tmp_path: Path, locator: FaceLocator) -> None:
    rng = np.random.default_rng(0)
    for ident in ("a", "b"):
        (tmp_path / ident).mkdir()
        noise = rng.integers(0, 255, (240, 320, 3), dtype=np.uint8)
        cv2.imwrite(str(tmp_path / ident / "0.jpg"), noise)
    (tmp_path / "b" / "1.jpg").write_bytes(b"not a jpeg")
    with pytest.raises(PlanError, match="no usable face photos"):
        build_plan(PlanRequest(faces_dir=tmp_path, duration_s=5), locator)


def test_a_folder_without_photos_in_the_layout_is_a_clear_error(tmp_path: Path, locator: FaceLocator) -> None:
    (tmp_path / "notes.txt").write_text("no photos here")
    with pytest.raises(PlanError, match=r"<identity>/<n>\.jpg"):
        build_plan(PlanRequest(faces_dir=tmp_path), locator)
    with pytest.raises(PlanError, match="does not exist"):
        build_plan(PlanRequest(faces_dir=tmp_path / "missing"), locator)
