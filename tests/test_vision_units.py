"""Vision stages on synthetic inputs: anchors, tiling, NMS, alignment, quality (no models needed)."""

from __future__ import annotations

import math

import cv2
import numpy as np

from lfr_edge.config import QualityConfig
from lfr_edge.vision.align import TEMPLATE, align_face, similarity_transform
from lfr_edge.vision.detect import (
    FULL_RANGE,
    SHORT_RANGE,
    Detection,
    Window,
    crop_square,
    letterbox_window,
    make_anchors,
    tile_windows,
    weighted_nms,
)
from lfr_edge.vision.quality import assess, estimate_yaw_deg


def test_anchor_layout_matches_the_models_output_rows() -> None:
    assert make_anchors(SHORT_RANGE).shape == (896, 2)
    assert make_anchors(FULL_RANGE).shape == (2304, 2)
    short = make_anchors(SHORT_RANGE)
    # first stride-8 cell holds two anchors at its centre
    np.testing.assert_allclose(short[0], [0.5 / 16, 0.5 / 16])
    np.testing.assert_allclose(short[1], short[0])


def test_tiles_cover_every_pixel_of_a_1080p_frame() -> None:
    covered = np.zeros((1080, 1920), dtype=bool)
    tiles = tile_windows(1920, 1080, rows=2)
    for t in tiles:
        covered[t.y : t.y + t.side, t.x : t.x + t.side] = True
    assert covered.all()
    assert all(t.side == tiles[0].side for t in tiles)
    assert len({t.y for t in tiles}) == 2


def test_letterbox_crop_keeps_aspect_and_pads_black() -> None:
    image = np.full((100, 200, 3), 255, dtype=np.uint8)
    square = crop_square(image, letterbox_window(200, 100), 64)
    assert square.shape == (64, 64, 3)
    assert square[0, 32].sum() == 0 and square[32, 32].sum() == 3 * 255


def test_crop_square_of_a_window_inside_the_frame_is_a_plain_resize() -> None:
    image = np.arange(60 * 60 * 3, dtype=np.uint8).reshape(60, 60, 3)
    out = crop_square(image, Window(10, 10, 20), 20)
    np.testing.assert_array_equal(out, image[10:30, 10:30])


def test_weighted_nms_merges_overlapping_boxes_and_keeps_separate_ones() -> None:
    boxes = np.array([[0, 0, 10, 10], [1, 1, 11, 11], [50, 50, 60, 60]], dtype=np.float32)
    kps = np.zeros((3, 6, 2), dtype=np.float32)
    scores = np.array([0.9, 0.6, 0.8], dtype=np.float32)
    merged = weighted_nms(boxes, kps, scores, iou=0.3, limit=10)
    assert len(merged) == 2
    box, _, score = merged[0]
    assert score == np.float32(0.9)
    np.testing.assert_allclose(box, (boxes[0] * 0.9 + boxes[1] * 0.6) / 1.5, rtol=1e-6)


def test_similarity_transform_recovers_a_known_rotation_scale_and_shift() -> None:
    angle, scale, shift = math.radians(20), 2.5, np.array([30.0, -12.0])
    rot = scale * np.array([[math.cos(angle), -math.sin(angle)], [math.sin(angle), math.cos(angle)]])
    src = TEMPLATE.copy()
    dst = src @ rot.T + shift
    matrix = similarity_transform(src, dst)
    np.testing.assert_allclose(matrix[:, :2], rot, atol=1e-9)
    np.testing.assert_allclose(matrix[:, 2], shift, atol=1e-9)


def _keypoints_for(template_scale: float, offset: tuple[float, float]) -> np.ndarray:
    kps = np.zeros((6, 2), dtype=np.float32)
    kps[[0, 1, 2, 3]] = TEMPLATE * template_scale + np.array(offset)
    kps[4] = kps[0] - [10, 0]
    kps[5] = kps[1] + [10, 0]
    return kps


def test_alignment_maps_keypoints_onto_the_template() -> None:
    image = np.zeros((400, 400, 3), dtype=np.uint8)
    kps = _keypoints_for(2.0, (100, 80))
    for x, y in kps[:4].astype(int):
        image[y - 2 : y + 3, x - 2 : x + 3] = 255
    aligned = align_face(image, kps)
    assert aligned.shape == (112, 112, 3)
    for tx, ty in TEMPLATE.round().astype(int):
        assert aligned[ty, tx].max() > 100


def test_quality_gate_names_the_reason_for_each_refusal() -> None:
    rng = np.random.default_rng(0)
    sharp = rng.integers(0, 255, (112, 112, 3), dtype=np.uint8)
    flat = np.full((112, 112, 3), 128, dtype=np.uint8)
    cfg = QualityConfig(min_eye_distance_px=14, min_score=0.6, min_sharpness=15, max_yaw_deg=45)
    good = Detection((0, 0, 100, 100), 0.9, _keypoints_for(1.0, (0, 0)))
    assert assess(good, sharp, cfg).ok
    tiny = Detection((0, 0, 10, 10), 0.9, _keypoints_for(0.2, (0, 0)))
    assert assess(tiny, sharp, cfg).reason == "too_small"
    unsure = Detection((0, 0, 100, 100), 0.3, _keypoints_for(1.0, (0, 0)))
    assert assess(unsure, sharp, cfg).reason == "low_score"
    assert assess(good, flat, cfg).reason == "blurred"
    turned = _keypoints_for(1.0, (0, 0))
    turned[2, 0] = turned[1, 0] + 2  # nose beyond the far eye: profile
    assert assess(Detection((0, 0, 100, 100), 0.9, turned), sharp, cfg).reason == "turned_away"


def test_yaw_is_zero_for_a_frontal_face_and_signed_when_turned() -> None:
    kps = _keypoints_for(1.0, (0, 0))
    kps[2, 0] = (kps[0, 0] + kps[1, 0]) / 2
    assert abs(estimate_yaw_deg(kps)) < 1.0
    kps[2, 0] += 8
    assert estimate_yaw_deg(kps) > 10


def test_the_quality_score_ranks_bigger_sharper_frontal_and_surer_faces_higher() -> None:
    """The figure a track's best shots are chosen by (before any embedding): each factor counts."""
    rng = np.random.default_rng(1)
    sharp = rng.integers(0, 255, (112, 112, 3), dtype=np.uint8)
    soft = np.asarray(cv2.GaussianBlur(sharp, (0, 0), 2.5), dtype=np.uint8)
    cfg = QualityConfig(min_eye_distance_px=0, min_score=0, min_sharpness=0, max_yaw_deg=90)
    base = assess(Detection((0, 0, 100, 100), 0.9, _keypoints_for(1.0, (0, 0))), sharp, cfg).score
    assert assess(Detection((0, 0, 200, 200), 0.9, _keypoints_for(2.0, (0, 0))), sharp, cfg).score > base
    assert assess(Detection((0, 0, 100, 100), 0.9, _keypoints_for(1.0, (0, 0))), soft, cfg).score < base
    assert assess(Detection((0, 0, 100, 100), 0.6, _keypoints_for(1.0, (0, 0))), sharp, cfg).score < base
    turned = _keypoints_for(1.0, (0, 0))
    turned[2, 0] += 15
    assert assess(Detection((0, 0, 100, 100), 0.9, turned), sharp, cfg).score < base
