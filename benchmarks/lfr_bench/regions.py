"""Re-detection in regions around live tracks, beside the unit's one pass (the comparison issue 15 asks for).

On consecutive frames (25 fps) of the detection part's seeded street, with ground truth, three ways to find
the faces of each frame, each carrying its own previous frame's faces as its "live tracks":
- one pass: YuNet at the unit's width on every frame (what the unit runs);
- low pass + regions: YuNet at 320 wide on every frame, and for each face of the previous frame it did not
  find again, YuNet on a crop around where that face was (the face half of the crop's 160 px), the way a
  tracker looks for a face it lost;
- full pass every 3rd frame + regions: YuNet at the unit's width on every third frame and, in between, on a
  crop around each face of the previous frame (a new arrival waits for the next full pass).
Recall by true face width and ms per frame are counted as in the detection part; faces >= 50 px found per
ms decide.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from typing import Any

import cv2
import numpy as np

from lfr_bench.common import BenchContext, format_table, ms_stats
from lfr_bench.frames import recall
from lfr_edge.config import Config
from lfr_edge.inference import create_backend
from lfr_edge.vision.detect import Detection
from lfr_edge.vision.pipeline import pipeline_from_files, resolve_model_files
from lfr_edge.vision.track import iou_matrix
from lfr_edge.vision.yunet import REFINE_SIDE, YuNet

LOW_WIDTH = 320
FULL_EVERY = 3
Strategy = Callable[[Any, list[Detection], int], list[Detection]]


def yunet_at(cfg: Config, width: int) -> YuNet:
    unit = dataclasses.replace(cfg, detect=dataclasses.replace(cfg.detect, yunet_width=width))
    pipeline = pipeline_from_files(resolve_model_files(unit), create_backend(unit.inference), unit.detect, unit.quality)
    assert isinstance(pipeline.detector, YuNet), "the regions part compares YuNet strategies"
    return pipeline.detector


def in_region(yunet: YuNet, image: Any, box: tuple[float, float, float, float]) -> list[Detection]:
    """The face nearest the centre of a crop around `box` (the face half of it, as `YuNet.refine` crops), found
    by the unit's own `detect` on the crop, in frame pixels."""
    x1, y1, x2, y2 = box
    scale = REFINE_SIDE / (2.0 * max(x2 - x1, y2 - y1, 1.0))
    shift = REFINE_SIDE / 2 - scale * np.array([(x1 + x2) / 2, (y1 + y2) / 2], np.float32)
    matrix = np.array([[scale, 0.0, shift[0]], [0.0, scale, shift[1]]], np.float32)
    crop = np.asarray(cv2.warpAffine(image, matrix, (REFINE_SIDE, REFINE_SIDE), flags=cv2.INTER_LINEAR), np.uint8)
    centre = REFINE_SIDE / 2
    near = [d for d in yunet.detect(crop) if np.hypot(*(np.add(d.box[:2], d.box[2:]) / 2 - centre)) < centre / 2]
    if not near:
        return []
    best = max(near, key=lambda d: d.score)
    corners = (np.array(best.box, np.float32).reshape(2, 2) - shift) / scale
    x1, y1, x2, y2 = (float(v) for v in corners.ravel())
    return [Detection((x1, y1, x2, y2), best.score, ((best.keypoints - shift) / scale).astype(np.float32))]


def not_found_again(previous: list[Detection], found: list[Detection]) -> list[Detection]:
    if not previous or not found:
        return list(previous)
    iou = iou_matrix(np.array([d.box for d in previous], np.float32), np.array([d.box for d in found], np.float32))
    return [d for d, best in zip(previous, iou.max(axis=1), strict=True) if best <= 0.3]


def strategies(cfg: Config) -> dict[str, Strategy]:
    one, low = yunet_at(cfg, cfg.detect.yunet_width), yunet_at(cfg, LOW_WIDTH)

    def one_pass(image: Any, previous: list[Detection], index: int) -> list[Detection]:
        return one.detect(image)

    def low_and_regions(image: Any, previous: list[Detection], index: int) -> list[Detection]:
        found = low.detect(image)
        for lost in not_found_again(previous, found):
            found += in_region(one, image, lost.box)
        return found

    def full_sometimes(image: Any, previous: list[Detection], index: int) -> list[Detection]:
        if index % FULL_EVERY == 0:
            return one.detect(image)
        found: list[Detection] = []
        for face in previous:
            found += not_found_again(in_region(one, image, face.box), found)
        return found

    return {
        f"one pass, {cfg.detect.yunet_width} wide (the unit)": one_pass,
        f"{LOW_WIDTH} wide + regions around faces lost": low_and_regions,
        f"{cfg.detect.yunet_width} wide every {FULL_EVERY} frames + regions around every face": full_sometimes,
    }


def run(ctx: BenchContext, cfg: Config) -> tuple[str, list[dict[str, Any]]]:
    """(table, rows) for the consecutive frames of the street."""
    from lfr_bench.detection import BINS, Tally, countable, recall_at, street_frames

    images, truths = street_frames(ctx, range(25, 25 + (50 if ctx.quick else 150)))
    rows: list[dict[str, Any]] = []
    for name, strategy in strategies(cfg).items():
        tally, previous = Tally(), list[Detection]()
        for index, (image, truth) in enumerate(zip(images, truths, strict=True)):
            t0 = time.perf_counter()
            previous = strategy(image, previous, index)
            tally.ms.append((time.perf_counter() - t0) * 1e3)
            faces = countable(truth, image.shape[1], image.shape[0])
            for k, (lo, hi) in enumerate(BINS):
                in_bin = [b for b in faces if lo <= b[2] - b[0] < hi]
                tally.total[k] += len(in_bin)
                tally.found[k] += recall([d.box for d in previous], in_bin)
        timing = ms_stats(tally.ms)
        found_50 = sum(f for f, (lo, _) in zip(tally.found, BINS, strict=True) if lo >= 50) / len(images)
        rows.append({
            "strategy": name, "frames": len(images), "timing": timing,
            "found_by_width": {f"{b[0]}-{b[1]}": [tally.found[k], tally.total[k]] for k, b in enumerate(BINS)},
            "recall_50px": recall_at(tally, 50), "recall_80px": recall_at(tally, 80),
            "faces_50px_found_per_ms": found_50 / timing["median_ms"],
        })  # fmt: skip
    table = format_table(
        ["finding faces on consecutive frames", ">=50 px", ">=80 px", "ms med/p99", "faces>=50/ms"],
        [
            [r["strategy"], f"{100 * r['recall_50px']:.1f}%", f"{100 * r['recall_80px']:.1f}%",
             f"{r['timing']['median_ms']:.1f}/{r['timing']['p99_ms']:.1f}", f"{r['faces_50px_found_per_ms']:.2f}"]
            for r in rows
        ],
    )  # fmt: skip
    return table, rows
