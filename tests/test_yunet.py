"""YuNet as the unit runs it (the built model on onnx-cpu): boxes in frame pixels, keypoints in BlazeFace's slots
so alignment and the quality gate work unchanged, any frame size."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from fuzz_helpers import fuzz
from lfr_edge.config import Config, DetectConfig
from lfr_edge.inference.onnx_cpu import OnnxCpuBackend
from lfr_edge.models import load_manifest
from lfr_edge.vision.detect import KP_LEFT_EYE, KP_MOUTH, KP_NOSE, KP_RIGHT_EYE, largest
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
    assert input_size(1280, 720, 512) == (512, 288, 0.4)  # the default width: 288 is already a multiple of 32
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


@fuzz(40)
@given(st.integers(1, 700), st.integers(1, 700), st.integers(0, 2**32 - 1))
def test_any_frame_size_gives_boxes_inside_the_frame(width: int, height: int, seed: int) -> None:
    model_path, _ = load_manifest(REPO / "models" / "manifest.toml").artifact("yunet", "onnx", Config().models.dir)
    detector = YuNet(OnnxCpuBackend(threads=1).load(model_path), DetectConfig(score_threshold=0.05))
    frame = np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)
    for d in detector.detect(frame):
        assert 0 <= d.box[0] < d.box[2] <= width and 0 <= d.box[1] < d.box[3] <= height
        assert d.keypoints.shape == (6, 2) and np.isfinite(d.keypoints).all()
