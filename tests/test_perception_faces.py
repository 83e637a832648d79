"""The perception core on real photos: detection rate, verification accuracy, the embed command.

The accuracy floors are what this model measurably reaches on this corpus (models/build-report.md):
MobileFaceNet's TAR at FAR 1e-3 is about 0.82 on `aligned/` (the corpus holds near-profile, occluded and
some mislabelled crops) and about 0.86 on `wild/`; the floors sit a little below to absorb the
difference between variants, so a broken alignment or preprocessing (which drops TAR to ~0.75 or far
lower, e.g. BGR input) fails them.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from lfr_edge.vision.detect import largest
from lfr_edge.vision.pipeline import FacePipeline
from lfr_tools.metrics import pair_scores, tar_at_far
from lfr_tools.photos.image import ImageError, decode_image, read_image

pytestmark = pytest.mark.slow


def test_a_face_is_detected_in_at_least_98_percent_of_wild_photos(faces: Path, pipeline: FacePipeline) -> None:
    photos = sorted((faces / "wild").glob("*/*.jpg"))
    found = sum(largest(pipeline.detect(read_image(p))) is not None for p in photos)
    assert len(photos) > 700
    assert found / len(photos) >= 0.98, f"{found} of {len(photos)}"


def test_same_person_pairs_outscore_different_people_on_aligned_faces(faces: Path, pipeline: FacePipeline) -> None:
    paths = sorted((faces / "aligned").glob("*/*.png"))
    crops = np.stack([read_image(p) for p in paths])
    labels = [p.parent.name for p in paths]
    genuine, impostor = pair_scores(pipeline.embed_aligned(crops), labels)
    tar, threshold = tar_at_far(genuine, impostor, 1e-3)
    assert tar >= 0.80, f"TAR at FAR 1e-3 = {tar:.3f} (threshold {threshold:.3f})"
    assert np.median(genuine) > np.percentile(impostor, 99.9)


def test_embed_command_writes_the_npz_and_reports_unreadable_files(faces: Path, tmp_path: Path) -> None:
    good = sorted((faces / "wild" / "7205").glob("*.jpg"))[:2]
    garbage = tmp_path / "not-a-photo.jpg"
    garbage.write_bytes(b"\x00" * 100)
    listing = tmp_path / "list.txt"
    listing.write_text("\n".join([str(good[0]), str(garbage), str(tmp_path / "missing.jpg"), str(good[1])]))
    out = tmp_path / "out.npz"
    result = subprocess.run(
        [sys.executable, "-m", "lfr_tools.photos.cli", "embed", "--list", str(listing), "--npz", str(out)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "not-a-photo.jpg" in result.stderr and "missing.jpg" in result.stderr
    data = np.load(out)
    assert list(data["found"]) == [True, False, False, True]
    assert data["emb"].shape == (4, 128) and not data["emb"][1].any()  # SFace, the default embedder: 128-d
    np.testing.assert_allclose(np.linalg.norm(data["emb"][[0, 3]], axis=1), 1.0, rtol=1e-5)
    assert float(data["emb"][0] @ data["emb"][3]) > 0.4  # two photos of the same person
    assert (data["boxes"][0, 2:] > data["boxes"][0, :2]).all()


def test_embed_command_without_a_readable_list_exits_non_zero(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "lfr_tools.photos.cli", "embed", "--list", str(tmp_path / "nope.txt"), "--npz", "x.npz"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 2 and "cannot read the list" in result.stderr


@pytest.mark.parametrize("data", [b"", b"GIF89a....", b"\xff\xd8\xff\xe0" + b"\x00" * 50])
def test_garbage_photo_bytes_give_a_clear_image_error(data: bytes) -> None:
    with pytest.raises(ImageError, match="not a readable image"):
        decode_image(data, "upload.jpg")
