"""YuNet as the unit runs it (the built model on onnx-cpu): boxes in frame pixels, keypoints in BlazeFace's slots
so alignment and the quality gate work unchanged, any frame size."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from fuzz_helpers import fuzz
from lfr_edge.config import Config, DetectConfig
from lfr_edge.inference.onnx_cpu import OnnxCpuBackend
from lfr_edge.models import load_manifest
from lfr_edge.vision.detect import KP_LEFT_EYE, KP_MOUTH, KP_NOSE, KP_RIGHT_EYE, Detection, largest
from lfr_edge.vision.yunet import YuNet, input_size
from lfr_tools.photos.image import read_image

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def yunet() -> YuNet:
    manifest = load_manifest(REPO / "models" / "manifest.toml")
    path, _ = manifest.artifact("yunet", "onnx", Config().models.dir)
    return YuNet(OnnxCpuBackend(threads=1).load(path), DetectConfig())


def test_the_input_is_the_frame_scaled_to_the_configured_width_padded_to_32() -> None:
    assert input_size(1280, 720, 640) == (640, 384, 0.5)
    assert input_size(1920, 1080, 640) == (640, 384, 1 / 3)
    assert input_size(1280, 720, 512) == (512, 288, 0.4)  # 288 is already a multiple of 32
    assert input_size(1280, 720, 448) == (448, 256, 0.35)  # the default width: 252 rows padded to 256
    assert input_size(320, 240, 640) == (320, 256, 1.0)  # never scaled up


@pytest.mark.faces
def test_a_face_in_a_720p_frame_comes_back_in_frame_pixels_with_blazeface_keypoints(yunet: YuNet, faces: Path) -> None:
    photo = read_image(sorted((faces / "wild" / "7205").glob("*.jpg"))[0])
    alone = largest(yunet.detect(photo))
    assert alone is not None
    frame = np.zeros((720, 1280, 3), np.uint8)
    h, w = min(photo.shape[0], 720), min(photo.shape[1], 1280 - 400)
    frame[:h, 400 : 400 + w] = photo[:h, :w]
    face = largest(yunet.detect(frame))
    assert face is not None
    shifted = np.array(alone.box) + np.array([400, 0, 400, 0])
    assert np.abs(np.array(face.box) - shifted).max() < 0.06 * alone.width  # the same face, at 0.4 of the resolution
    kp = face.keypoints
    assert kp.shape == (6, 2)
    assert kp[KP_RIGHT_EYE, 0] < kp[KP_NOSE, 0] < kp[KP_LEFT_EYE, 0]  # the subject's right eye on the image's left
    assert max(kp[KP_RIGHT_EYE, 1], kp[KP_LEFT_EYE, 1]) < kp[KP_NOSE, 1] < kp[KP_MOUTH, 1]
    assert face.eye_distance > 0.25 * face.width


def small_faces(yunet: YuNet, faces: Path, width: int) -> list[tuple[np.ndarray, Detection, np.ndarray]]:
    """(720p frame, the default pass's detection, true keypoints) for real photos shrunk so the face is about
    `width` px wide: the truth is the keypoints YuNet finds on the whole photo, scaled and moved with it."""
    out = []
    for k, path in enumerate(sorted((faces / "wild").glob("*/0.jpg"))[:20]):
        photo = read_image(path)
        whole = largest(yunet.detect(photo))
        if whole is None:
            continue
        scale = width / whole.width
        small = cv2.resize(photo, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)[:700, :1200]
        frame = np.zeros((720, 1280, 3), np.uint8)
        x0 = 40 + 50 * k
        frame[10 : 10 + small.shape[0], x0 : x0 + small.shape[1]] = small[:, : 1280 - x0]
        found = [d for d in yunet.detect(frame) if abs(d.box[0] - (whole.box[0] * scale + x0)) < width / 2]
        if found:
            out.append((frame, found[0], whole.keypoints[:4] * scale + np.array([x0, 10])))
    return out


@pytest.mark.faces
def test_refined_keypoints_of_a_small_face_are_closer_to_the_truth(yunet: YuNet, faces: Path) -> None:
    """A face 45 px wide is 16 px to the whole-frame pass at 448 wide; `refine` finds its keypoints again on a
    crop where it is 80 px wide. Error in eye distances, over real photos."""
    cases = small_faces(yunet, faces, 45)
    assert len(cases) >= 10
    coarse, refined = [], []
    for frame, detection, truth in cases:
        eyes = np.linalg.norm(truth[0] - truth[1])
        coarse.append(np.linalg.norm(detection.keypoints[:4] - truth, axis=1).mean() / eyes)
        refined.append(np.linalg.norm(yunet.refine(frame, detection)[:4] - truth, axis=1).mean() / eyes)
    assert np.mean(refined) < 0.6 * np.mean(coarse), (np.mean(refined), np.mean(coarse))


@pytest.mark.faces
def test_refine_keeps_the_keypoints_of_a_face_the_whole_frame_pass_saw_large(yunet: YuNet, faces: Path) -> None:
    """A crop where the face is 80 px wide would see it no better than the whole-frame pass did: no run."""
    photo = read_image(sorted((faces / "wild" / "7205").glob("*.jpg"))[0])
    scale = input_size(1280, 720, DetectConfig().yunet_width)[2]
    for enlarged, worth_it in ((2.0, False), (1.0, True)):  # the face 276 px wide (90 px to the pass), 138 px
        picture = cv2.resize(photo, None, fx=enlarged, fy=enlarged)[:720, :1280]
        frame = np.zeros((720, 1280, 3), np.uint8)
        frame[: picture.shape[0], : picture.shape[1]] = picture
        face = largest(yunet.detect(frame))
        assert face is not None and (face.width * scale < 80) == worth_it
        assert (yunet.refine(frame, face) is face.keypoints) != worth_it


def test_refine_keeps_the_detections_keypoints_when_the_crop_shows_no_face(yunet: YuNet) -> None:
    keypoints = np.arange(12, dtype=np.float32).reshape(6, 2) + 300
    nothing = Detection((280.0, 280.0, 330.0, 330.0), 0.9, keypoints)
    assert yunet.refine(np.zeros((720, 1280, 3), np.uint8), nothing) is keypoints


@fuzz(40)
@given(st.integers(1, 700), st.integers(1, 700), st.integers(0, 2**32 - 1))
def test_any_frame_size_gives_boxes_inside_the_frame(width: int, height: int, seed: int) -> None:
    model_path, _ = load_manifest(REPO / "models" / "manifest.toml").artifact("yunet", "onnx", Config().models.dir)
    detector = YuNet(OnnxCpuBackend(threads=1).load(model_path), DetectConfig(score_threshold=0.05))
    frame = np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)
    for d in detector.detect(frame):
        assert 0 <= d.box[0] < d.box[2] <= width and 0 <= d.box[1] < d.box[3] <= height
        assert d.keypoints.shape == (6, 2) and np.isfinite(d.keypoints).all()
