"""Photo mode (lfr_tools.photos.photo_mode) on real photos: a face in every photo, the subject rather than a
bystander, a small face enlarged and flagged rather than refused, and every refusal with its reason."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import replace
from pathlib import Path

import cv2
import numpy as np
import numpy.typing as npt
import pytest

from lfr_edge.config import Config
from lfr_edge.vision.align import align_face
from lfr_edge.vision.detect import FaceDetector
from lfr_edge.vision.pipeline import FacePipeline, build_pipeline
from lfr_tools.command_centre.enrol import PipelineEnroller
from lfr_tools.photos.image import read_image
from lfr_tools.photos.photo_mode import PhotoFaceFinder

pytestmark = [pytest.mark.faces, pytest.mark.slow]
Image = npt.NDArray[np.uint8]


@pytest.fixture(scope="module")
def finder(pipeline: FacePipeline) -> PhotoFaceFinder:
    return PhotoFaceFinder.for_pipeline(pipeline)


@pytest.fixture(scope="module")
def wild(faces: Path) -> list[Path]:
    return sorted((faces / "wild").glob("*/*.jpg"))


def test_photo_mode_finds_a_face_in_every_wild_photo_and_more_than_the_frame_path(
    wild: list[Path], pipeline: FacePipeline, finder: PhotoFaceFinder
) -> None:
    frame_path = photo_mode = 0
    for path in wild:
        image = read_image(path)
        frame_path += bool(pipeline.detect(image))
        photo_mode += bool(finder.detect(image))
    assert len(wild) > 700
    assert photo_mode >= frame_path, (photo_mode, frame_path)
    assert photo_mode >= 0.995 * len(wild), f"{photo_mode} of {len(wild)}"


def test_in_group_photos_the_subject_is_chosen_not_a_bystander(
    wild: list[Path], pipeline: FacePipeline, finder: PhotoFaceFinder
) -> None:
    """Who the subject is comes from the identity's single-face photos: the face in a group photo that looks
    most like them. Photo mode must choose that face (nearly always), and more often than `largest face`
    (the old rule) did."""
    singles: dict[str, list[npt.NDArray[np.float32]]] = defaultdict(list)
    groups = []
    for path in wild:
        image = read_image(path)
        found = finder.detect(image)
        if not found:
            continue
        embeddings = pipeline.embed_aligned(np.stack([align_face(image, d.keypoints) for d in found]))
        if len(found) == 1:
            singles[path.parent.name].append(embeddings[0])
        else:
            largest = max(range(len(found)), key=lambda i: found[i].width)
            groups.append((path, embeddings, largest))
    checked, chosen_right, largest_right = 0, 0, 0
    for path, embeddings, largest in groups:
        if not singles[path.parent.name]:
            continue
        centre = np.mean(singles[path.parent.name], axis=0)
        similarity = embeddings @ (centre / np.linalg.norm(centre))
        truth = int(np.argmax(similarity))
        if similarity[truth] < 0.3:  # the labelled person may not be in view at all
            continue
        checked += 1
        chosen_right += truth == 0  # detect() ranks the subject first
        largest_right += truth == largest
    # Measured with YuNet (the default): 59 of 60 (the miss, wild/7244/4.jpg: a subject far off-centre beside a
    # larger face), largest face 46 of 60; the short-range BlazeFace's photo mode 23 of 24, largest 15 of 24.
    assert checked >= 15, checked
    assert chosen_right >= 0.9 * checked, f"photo mode chose the subject in {chosen_right} of {checked}"
    assert chosen_right > largest_right, (chosen_right, largest_right)


def with_bystander(subject: Image, bystander: Image, finder: PhotoFaceFinder, scale: float) -> Image:
    """The subject's photo, widened on both sides; at the left edge, the bystander's face (with its
    surroundings) pasted `scale` times the width of the subject's face."""
    subject_face, bystander_face = finder.detect(subject)[0], finder.detect(bystander)[0]
    x1, y1, x2, y2 = (int(v) for v in bystander_face.box)
    margin = (x2 - x1) // 3
    crop = bystander[max(0, y1 - margin) : y2 + margin, max(0, x1 - margin) : x2 + margin]
    factor = scale * subject_face.width / bystander_face.width
    crop = np.asarray(cv2.resize(crop, None, fx=factor, fy=factor), np.uint8)[: subject.shape[0]]
    h, w = subject.shape[:2]
    canvas = np.full((h, w + 2 * crop.shape[1], 3), 128, np.uint8)
    canvas[:, crop.shape[1] : crop.shape[1] + w] = subject
    top = max(0, int(subject_face.box[1]) - crop.shape[0] // 4)
    rows = min(crop.shape[0], h - top)
    canvas[top : top + rows, : crop.shape[1]] = crop[:rows]
    return canvas


def best_single_face_photo(paths: list[Path], finder: PhotoFaceFinder) -> Image:
    for path in paths:
        image = read_image(path)
        found = finder.detect(image)
        if len(found) == 1 and found[0].score > 0.9:
            return image
    raise AssertionError(f"no clear single-face photo among {paths}")


def test_a_larger_bystander_at_the_edge_loses_to_the_centred_subject(
    faces: Path, pipeline: FacePipeline, finder: PhotoFaceFinder
) -> None:
    people = sorted(p for p in (faces / "wild").iterdir() if p.is_dir())
    subject_photos, bystander_photos = sorted(people[3].glob("*.jpg")), sorted(people[40].glob("*.jpg"))
    subject = best_single_face_photo(subject_photos, finder)
    bystander = best_single_face_photo(bystander_photos, finder)
    enroller = PipelineEnroller(pipeline, finder)
    picture = with_bystander(subject, bystander, finder, 1.4)
    assert len(finder.detect(picture)) >= 2
    result = enroller.enrol(picture)
    assert result.embedding is not None, result.reason
    alone = enroller.enrol(subject).embedding
    other = enroller.enrol(bystander).embedding
    assert alone is not None and other is not None
    assert float(result.embedding @ alone) > 0.5 > 0.2 > float(result.embedding @ other), (
        float(result.embedding @ alone),
        float(result.embedding @ other),
    )


def test_a_small_face_is_enlarged_and_flagged_not_refused(
    faces: Path, pipeline: FacePipeline, finder: PhotoFaceFinder
) -> None:
    photos = sorted((faces / "wild").iterdir())[7].glob("*.jpg")
    photo = best_single_face_photo(sorted(photos), finder)
    face = finder.detect(photo)[0]
    scale = 10.0 / face.eye_distance  # eyes 10 px apart: below the quality gate's 14
    small = np.asarray(cv2.resize(photo, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA), np.uint8)
    canvas = np.full((max(small.shape[0], 240), max(small.shape[1], 320), 3), 90, np.uint8)
    canvas[: small.shape[0], : small.shape[1]] = small
    enroller = PipelineEnroller(pipeline, finder)
    result = enroller.enrol(canvas)
    assert result.embedding is not None, result.reason
    assert result.notes and "small face" in result.notes[0] and "enlarged" in result.notes[0]
    full = enroller.enrol(photo)
    assert full.embedding is not None and not full.notes
    assert float(result.embedding @ full.embedding) > 0.5  # the same person, from far fewer pixels


def test_every_refusal_names_its_reason(faces: Path, pipeline: FacePipeline, finder: PhotoFaceFinder) -> None:
    enroller = PipelineEnroller(pipeline, finder)
    blank = enroller.enrol(np.full((300, 300, 3), 127, np.uint8))
    assert blank.embedding is None and blank.reason == "no face"
    person = best_single_face_photo(sorted(sorted((faces / "wild").iterdir())[5].glob("*.jpg")), finder)
    twins = np.concatenate([person, person], axis=1)  # the same face twice, equally far from the centre
    refused = enroller.enrol(twins)
    assert refused.embedding is None and "several faces" in refused.reason and "crop" in refused.reason


def test_a_blazeface_unit_gets_the_short_range_photo_mode_and_full_range_alone_is_refused(
    wild: list[Path], unit_config: Config
) -> None:
    """Photo mode follows the unit's detector: the short-range BlazeFace (whole photo, then tiles) on a
    BlazeFace unit; a unit with only the full-range model is told what to set."""
    short = build_pipeline(replace(unit_config, models=replace(unit_config.models, detector="short")))
    finder = PhotoFaceFinder.for_pipeline(short)
    assert isinstance(finder.whole, FaceDetector) and finder.whole.short_range is not None
    photos = wild[::50]
    assert sum(bool(finder.detect(read_image(p))) for p in photos) == len(photos)
    full = build_pipeline(replace(unit_config, models=replace(unit_config.models, detector="full")))
    with pytest.raises(ValueError, match=r'models\.detector = "yunet", "both" or "short"'):
        PhotoFaceFinder.for_pipeline(full)
