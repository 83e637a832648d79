"""Detection on the simulator's walking street (1280x720, ground truth per frame): recall by true face width and
ms per frame, for each detector the unit can be configured with, built by the unit's own code.

Candidates: BlazeFace full range on the frame plus short-range tiles (`tile_rows` 2, the unit's default before
YuNet; 0 = the full-range pass alone), on LiteRT; YuNet in one pass at reduced width, on ONNX Runtime. The
detectors take turns on every frame (round-robin), so a busy machine slows them alike. A true face counts when
at least 90% of it is visible and it lies inside the frame; it is found when a detection overlaps it with
IoU > 0.3. Floors (issue 15): at least 95% of faces 50 px wide or more, 99% of faces 80 px or more.

Then what the unit's keypoints are worth to matching: each true face the configured detector finds (and the
quality gate passes) is embedded twice, from its whole-frame keypoints and from keypoints found again close
up (`FacePipeline.refine`, what the unit embeds), and scored against its own identity's enrolment (every
corpus photo of it enrolled as the command centre does, `PipelineEnroller`). Genuine scores only: the share
above the thresholds at 1 in 1,000 and 1 in 10,000 false accepts per comparison (the calibration table).
"""

from __future__ import annotations

import dataclasses
import tempfile
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from lfr_bench import regions
from lfr_bench.common import BenchContext, PartResult, format_table, ms_stats
from lfr_bench.frames import Box, recall
from lfr_edge.config import Config
from lfr_edge.inference import create_backend
from lfr_edge.vision.pipeline import pipeline_from_files, resolve_model_files

BINS = ((0, 50), (50, 80), (80, 120), (120, 100_000))
FLOORS = {50: 0.95, 80: 0.99}
MIN_VISIBLE = 0.9
STREET_S, STREET_FPS = 40, 25  # the street scene's length and frame rate (daemon_harness.street_plan)
SUMMARY_KEYS = (
    "detect_ms_720p_default",
    "recall_50px_default",
    "recall_80px_default",
    "genuine_median_whole_frame",
    "genuine_median_refined",
)


@dataclass(frozen=True)
class Candidate:
    name: str
    cfg: Config


def candidates(cfg: Config, threads: int) -> list[Candidate]:
    """Every detector worth comparing, each a complete unit config (backend, models, [detect])."""

    def unit(backend: str, detector: str, **detect: Any) -> Config:
        return dataclasses.replace(
            cfg,
            inference=dataclasses.replace(cfg.inference, backend=backend, threads=threads),  # type: ignore[arg-type]
            # the embedder plays no part here; each backend gets one it runs
            models=dataclasses.replace(
                cfg.models,
                detector=detector,  # type: ignore[arg-type]
                embedder="sface" if backend == "onnx-cpu" else "mobilefacenet",
            ),
            detect=dataclasses.replace(cfg.detect, **detect),
        )

    out = [
        Candidate("blazeface full + 2 rows of tiles", unit("litert-cpu", "both", tile_rows=2)),
        Candidate("blazeface full only", unit("litert-cpu", "both", tile_rows=0)),
    ]
    for width in (416, 448, 512, 640):
        for threshold in (0.6, 0.7):
            out.append(
                Candidate(
                    f"yunet {width} wide, score >= {threshold}",
                    unit("onnx-cpu", "yunet", yunet_width=width, score_threshold=threshold),
                )
            )
    return out


def street(ctx: BenchContext, frames: int) -> tuple[list[Any], list[Any]]:
    """`frames` frames spread over a seeded 1280x720 walking scene, and their ground truth."""
    return street_frames(ctx, np.linspace(25, STREET_S * STREET_FPS - 1, frames).round().astype(int).tolist())


def street_frames(ctx: BenchContext, indices: Iterable[int]) -> tuple[list[Any], list[Any]]:
    """These frames of the seeded 1280x720 walking scene, and their ground truth."""
    from lfr_bench.daemon_harness import street_plan
    from lfr_hwsim.plan import load_plan
    from lfr_hwsim.scene import SceneRenderer

    with tempfile.TemporaryDirectory() as work:
        path, _ = street_plan(ctx, Path(work), crowd=6.0, duration_s=STREET_S)
        plan = load_plan(path)
    renderer = SceneRenderer(plan, ctx.faces_dir / "wild")
    images, truths = [], []
    for index in indices:
        image, truth = renderer.render(int(index))
        images.append(image)
        truths.append(truth)
    return images, truths


def _int_box(box: tuple[float, float, float, float]) -> Box:
    return (int(box[0]), int(box[1]), int(box[2]), int(box[3]))


def countable(truth: Any, width: int, height: int) -> list[Box]:
    return [
        _int_box(f.box)
        for f in truth.faces
        if f.visible >= MIN_VISIBLE and f.box[0] >= 0 and f.box[1] >= 0 and f.box[2] <= width and f.box[3] <= height
    ]


@dataclass
class Tally:
    """One detector's ms samples, found/total faces per width bin, detections matching no drawn face."""

    ms: list[float] = dataclasses.field(default_factory=list)
    found: list[int] = dataclasses.field(default_factory=lambda: [0] * len(BINS))
    total: list[int] = dataclasses.field(default_factory=lambda: [0] * len(BINS))
    unmatched: int = 0


def measure(detectors: dict[str, Any], images: list[Any], truths: list[Any], reps: int) -> dict[str, Tally]:
    """Every detector on every frame in turn; recall on the first pass, time on every pass."""
    stats = {n: Tally() for n in detectors}
    for rep in range(reps):
        for image, truth in zip(images, truths, strict=True):
            h, w = image.shape[:2]
            faces = countable(truth, w, h)
            every_face = [f.box for f in truth.faces]
            for name, detect in detectors.items():
                frame = image.copy()
                t0 = time.perf_counter()
                boxes = [d.box for d in detect(frame)]
                stats[name].ms.append((time.perf_counter() - t0) * 1e3)
                if rep > 0:
                    continue  # recall once; later repetitions only time
                for k, (lo, hi) in enumerate(BINS):
                    in_bin = [b for b in faces if lo <= b[2] - b[0] < hi]
                    stats[name].total[k] += len(in_bin)
                    stats[name].found[k] += recall(boxes, in_bin)
                stats[name].unmatched += len(boxes) - recall(every_face, [_int_box(b) for b in boxes])
    return stats


def run(ctx: BenchContext, cfg: Config) -> PartResult:
    n_frames, reps = (30, 2) if ctx.quick else (80, 3)
    images, truths = street(ctx, n_frames)
    rows_data: list[dict[str, Any]] = []
    table_rows = []
    for threads in sorted({1, ctx.all_threads}):
        detectors = {}
        for c in candidates(cfg, threads):
            files = resolve_model_files(c.cfg)
            backend = create_backend(c.cfg.inference)
            detectors[c.name] = pipeline_from_files(files, backend, c.cfg.detect, c.cfg.quality).detect
        for name, s in measure(detectors, images, truths, reps).items():
            at = {lo: recall_at(s, lo) for lo in (50, 80)}
            timing = ms_stats(s.ms)
            found_50 = sum(f for f, (lo, _) in zip(s.found, BINS, strict=True) if lo >= 50) / n_frames
            row = {
                "detector": name, "threads": threads, "frames": n_frames, "timing": timing,
                "found_by_width": {f"{b[0]}-{b[1]}": [s.found[k], s.total[k]] for k, b in enumerate(BINS)},
                "recall_50px": at[50], "recall_80px": at[80], "unmatched_per_frame": s.unmatched / n_frames,
                "meets_floors": at[50] >= FLOORS[50] and at[80] >= FLOORS[80],
                "faces_50px_found_per_ms": found_50 / timing["median_ms"],
            }  # fmt: skip
            rows_data.append(row)
            table_rows.append([
                name, threads, *[f"{f}/{t}" for f, t in zip(s.found, s.total, strict=True)],
                f"{100 * at[50]:.1f}%", f"{100 * at[80]:.1f}%", "yes" if row["meets_floors"] else "no",
                f"{timing['median_ms']:.1f}/{timing['p99_ms']:.1f}", f"{row['faces_50px_found_per_ms']:.2f}",
                f"{row['unmatched_per_frame']:.2f}",
            ])  # fmt: skip
    table = format_table(
        ["detector", "thr", *[f"{lo}-{hi if hi < 100_000 else ''} px" for lo, hi in BINS], ">=50 px", ">=80 px",
         "floors", "ms med/p99", "faces>=50/ms", "unmatched/frame"],
        table_rows,
    )  # fmt: skip
    refined = refinement(ctx, cfg, images, truths)
    table += "\n\n" + refinement_table(refined)
    regions_table, regions_rows = regions.run(ctx, cfg) if cfg.models.detector == "yunet" else ("", [])
    table += "\n\n" + regions_table
    default = _default_name(cfg)
    head = next((r for r in rows_data if r["detector"] == default and r["threads"] == ctx.all_threads), None)
    summary = {
        "detect_ms_720p_default": head["timing"]["median_ms"] if head else None,
        "recall_50px_default": head["recall_50px"] if head else None,
        "recall_80px_default": head["recall_80px"] if head else None,
        **{f"genuine_median_{k}": v["median"] for k, v in refined.items()},
    }
    notes = [
        f"{n_frames} frames of a seeded 1280x720 walking street (crowd 6), {reps} timed passes each, round-robin",
        f"a true face counts when >= {MIN_VISIBLE:.0%} visible and inside the frame; found: IoU > 0.3",
        "unmatched: detections overlapping no drawn face (photos can hold second, unlabelled faces)",
        f"the unit's configured detector: {default}",
        "keypoints: the walkers are drawn from the same corpus photos the enrolment uses, so genuine scores are "
        "higher than on a street; compare the two rows with each other",
    ]
    data = {"rows": rows_data, "keypoints": refined, "regions": regions_rows}
    return PartResult("detection", True, data=data, table=table, summary=summary, notes=notes)


def recall_at(s: Tally, floor: int) -> float:
    found = sum(f for f, (lo, _) in zip(s.found, BINS, strict=True) if lo >= floor)
    total = sum(t for t, (lo, _) in zip(s.total, BINS, strict=True) if lo >= floor)
    return found / total if total else float("nan")


def _default_name(cfg: Config) -> str:
    if cfg.models.detector == "yunet":
        return f"yunet {cfg.detect.yunet_width} wide, score >= {cfg.detect.score_threshold}"
    return "blazeface full + 2 rows of tiles" if cfg.detect.tile_rows == 2 else "blazeface full only"


def refinement(ctx: BenchContext, cfg: Config, images: list[Any], truths: list[Any]) -> dict[str, dict[str, float]]:
    """Genuine scores of the street's faces, embedded from whole-frame and from refined keypoints."""
    from lfr_edge.models import load_calibration
    from lfr_edge.vision.pipeline import build_pipeline
    from lfr_tools.command_centre.enrol import PipelineEnroller
    from lfr_tools.photos.image import read_image

    pipeline = build_pipeline(cfg)
    enroller = PipelineEnroller(pipeline)
    gallery: dict[str, Any] = {}
    for identity in sorted({f.identity for truth in truths for f in truth.faces}):
        rows = [enroller.enrol(read_image(p)).embedding for p in sorted((ctx.faces_dir / "wild" / identity).glob("*"))]
        if kept := [r for r in rows if r is not None]:
            gallery[identity] = np.stack(kept)
    scores: dict[str, list[float]] = {"whole_frame": [], "refined": []}
    for image, truth in zip(images, truths, strict=True):
        for face, identity in found_faces(pipeline, image, truth, gallery):
            scores["whole_frame"].append(float((gallery[identity] @ pipeline.embed_crops([face.aligned])[0]).max()))
            pipeline.refine(image, face)
            scores["refined"].append(float((gallery[identity] @ pipeline.embed_crops([face.aligned])[0]).max()))
    table, _ = load_calibration(cfg.models.dir, pipeline.model_id)
    cuts = {"1e-3": table.threshold_for(1e-3).threshold, "1e-4": table.threshold_for(1e-4).threshold} if table else {}
    return {
        name: {"faces": len(v), "median": round(float(np.median(v)), 3) if v else float("nan")}
        | {f"above_{far}": round(float(np.mean(np.array(v) >= cut)), 3) for far, cut in cuts.items()}
        | {f"threshold_{far}": cut for far, cut in cuts.items()}
        for name, v in scores.items()
    }


def found_faces(pipeline: Any, image: Any, truth: Any, gallery: dict[str, Any]) -> list[tuple[Any, str]]:
    """(face, its true identity) for each countable true face of an enrolled identity the detector found
    (IoU > 0.3) and the quality gate passed."""
    from lfr_edge.vision.track import iou_matrix

    h, w = image.shape[:2]
    wanted = [f for f in truth.faces if f.identity in gallery and _int_box(f.box) in countable(truth, w, h)]
    faces = [f for f in pipeline.observe(image)[0] if f.quality.ok]
    if not wanted or not faces:
        return []
    iou = iou_matrix(
        np.array([f.box for f in wanted], np.float32), np.array([f.detection.box for f in faces], np.float32)
    )
    return [(faces[int(j)], wanted[i].identity) for i, j in enumerate(iou.argmax(axis=1)) if iou[i, j] > 0.3]


def refinement_table(refined: dict[str, dict[str, float]]) -> str:
    labels = {
        "whole_frame": "keypoints of the whole-frame pass",
        "refined": "keypoints found again close up (the unit)",
    }
    return format_table(
        ["faces embedded from", "faces", "genuine score median", "share >= threshold at FAR 1e-3 / 1e-4"],
        [
            [labels[name], r["faces"], r["median"], f"{r.get('above_1e-3', float('nan')):.1%} / "
             f"{r.get('above_1e-4', float('nan')):.1%}"]
            for name, r in refined.items()
        ],
    )  # fmt: skip
