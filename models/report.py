"""Measure every built variant on real photos and pick the unit's default variants.

Per variant: file size, single-thread median latency of one invoke, and
- embedder: TAR at FAR 1e-3 over all pairs of `aligned/` (crops embedded directly) and of `wild/`
  (float detectors → largest face → alignment → embedding), flip-averaged as the unit runs it, and the
  cosine to the float embedding of the same face;
- detectors: share of `wild/` photos with a face, and agreement of the largest box with float's.
Faces, crops and embeddings stay in memory; only the figures are written.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import numpy.typing as npt

import corpus
from fetch import BuildError
from lfr_edge.config import DetectConfig
from lfr_edge.inference.litert import LiteRTModel, load_model
from lfr_edge.metrics import pair_scores, tar_at_far
from lfr_edge.vision.align import align_face
from lfr_edge.vision.detect import FULL_RANGE, SHORT_RANGE, BlazeFace, BlazeFaceSpec, FaceDetector, largest
from lfr_edge.vision.embed import Embedder

FAR = 1e-3
TAR_TOLERANCE = 0.005  # a variant may lose at most 0.5 points of TAR against float, on each set
# Latencies within 10% count as equal (float and weight-only int8 run the same float kernels; the rest is
# noise from a shared machine): among equals the smaller file wins.
LATENCY_TIE = 0.10
EVAL_THREADS = 2
# A variant this far from float is broken, not merely less accurate: the build stops.
MIN_MEAN_COSINE = 0.95
MIN_BOX_IOU = 0.8
DETECTORS = {"blazeface-short": SHORT_RANGE, "blazeface-full": FULL_RANGE}
EMBEDDER = "mobilefacenet"


@dataclass
class VariantFigures:
    size_bytes: int
    latency_ms: float  # median of one invoke, one thread
    tar_aligned: float | None = None
    tar_wild: float | None = None
    threshold_aligned: float | None = None
    threshold_wild: float | None = None
    cosine_mean: float | None = None  # to float, same faces
    cosine_min: float | None = None
    found_rate: float | None = None  # detectors: wild photos with a face
    box_iou_median: float | None = None  # detectors: largest box vs float's


@dataclass
class Report:
    figures: dict[str, dict[str, VariantFigures]] = field(default_factory=dict)
    defaults: dict[str, str] = field(default_factory=dict)
    reasons: dict[str, str] = field(default_factory=dict)
    corpus: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, sort_keys=True)

    @staticmethod
    def from_json(text: str) -> Report:
        data = json.loads(text)
        figures = {m: {v: VariantFigures(**f) for v, f in vs.items()} for m, vs in data["figures"].items()}
        return Report(figures, data["defaults"], data["reasons"], data["corpus"], data["seconds"])


def latencies_ms(paths: dict[str, Path], rounds: int = 12, per_round: int = 15) -> dict[str, float]:
    """Single-thread latency of one invoke per variant, robust to other work on the machine: the
    variants take turns (round-robin), and each gets the lowest of its per-round medians."""
    models = {name: load_model(path, threads=1) for name, path in paths.items()}
    inputs = {n: [np.zeros(s.shape, dtype=np.float32) for s in m.inputs] for n, m in models.items()}
    best = dict.fromkeys(models, float("inf"))
    for n, m in models.items():
        for _ in range(3):
            m.run(*inputs[n])
    for _ in range(rounds):
        for n, m in models.items():
            times = []
            for _ in range(per_round):
                t0 = time.perf_counter()
                m.run(*inputs[n])
                times.append(time.perf_counter() - t0)
            best[n] = min(best[n], float(np.median(times)) * 1e3)
    return best


def detector(model: LiteRTModel, spec: BlazeFaceSpec) -> FaceDetector:
    blaze = BlazeFace(model, spec)
    cfg = DetectConfig()
    if spec is FULL_RANGE:
        return FaceDetector(blaze, None, cfg.score_threshold, cfg.nms_iou, 1, cfg.max_faces)
    return FaceDetector(None, blaze, cfg.score_threshold, cfg.nms_iou, 1, cfg.max_faces)


def box_iou(a: tuple[float, ...], b: tuple[float, ...]) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def evaluate(artifacts: dict[str, dict[str, Path]], faces: Path) -> Report:
    """All figures for all variants; `artifacts[model][variant]` are built files in a staging dir."""
    start = time.perf_counter()
    report = Report()
    wild = corpus.wild_photos(faces)
    aligned = corpus.aligned_photos(faces)
    report.corpus = {"wild_photos": len(wild.images), "aligned_faces": len(aligned.images)}

    # Detectors: each variant alone on the whole photo, as the photo commands run it.
    largest_boxes: dict[str, list[tuple[float, float, float, float] | None]] = {}
    for name, spec in DETECTORS.items():
        report.figures[name] = {}
        speed = latencies_ms(artifacts[name])
        for variant, path in artifacts[name].items():
            det = detector(load_model(path, EVAL_THREADS), spec)
            boxes: list[tuple[float, float, float, float] | None] = [
                (d.box if (d := largest(det.detect(img))) else None) for img in wild.images
            ]
            fig = VariantFigures(path.stat().st_size, speed[variant])
            fig.found_rate = float(np.mean([b is not None for b in boxes]))
            if variant == "float":
                largest_boxes[name] = boxes
            else:
                ious = [box_iou(a, b) for a, b in zip(boxes, largest_boxes[name], strict=True) if a and b]
                fig.box_iou_median = float(np.median(ious)) if ious else 0.0
            report.figures[name][variant] = fig

    # Wild faces for the embedder: the unit's float detectors (both), largest face, aligned once.
    full = BlazeFace(load_model(artifacts["blazeface-full"]["float"], EVAL_THREADS), FULL_RANGE)
    short = BlazeFace(load_model(artifacts["blazeface-short"]["float"], EVAL_THREADS), SHORT_RANGE)
    cfg = DetectConfig()
    unit_detector = FaceDetector(full, short, cfg.score_threshold, cfg.nms_iou, cfg.tile_rows, cfg.max_faces)
    crops, crop_labels = [], []
    for img, label in zip(wild.images, wild.labels, strict=True):
        face = largest(unit_detector.detect(img))
        if face is not None:
            crops.append(align_face(img, face.keypoints))
            crop_labels.append(label)
    wild_faces = np.stack(crops)
    del wild, crops
    report.corpus["wild_faces_found"] = len(wild_faces)
    aligned_faces = np.stack(aligned.images)

    report.figures[EMBEDDER] = {}
    speed = latencies_ms(artifacts[EMBEDDER], rounds=8, per_round=8)
    reference: npt.NDArray[np.float32] | None = None
    for variant, path in artifacts[EMBEDDER].items():
        embedder = Embedder(load_model(path, EVAL_THREADS), flip_average=True)
        emb_aligned = embedder.embed(aligned_faces)
        emb_wild = embedder.embed(wild_faces)
        fig = VariantFigures(path.stat().st_size, speed[variant])
        fig.tar_aligned, fig.threshold_aligned = tar_at_far(*pair_scores(emb_aligned, aligned.labels), FAR)
        fig.tar_wild, fig.threshold_wild = tar_at_far(*pair_scores(emb_wild, crop_labels), FAR)
        if variant == "float":
            reference = emb_aligned
        elif reference is not None:
            cos = np.sum(emb_aligned * reference, axis=1)
            fig.cosine_mean, fig.cosine_min = float(cos.mean()), float(cos.min())
        report.figures[EMBEDDER][variant] = fig

    check_close_to_float(report)
    choose_defaults(report)
    report.seconds = time.perf_counter() - start
    return report


def check_close_to_float(report: Report) -> None:
    for model, variants in report.figures.items():
        for variant, fig in variants.items():
            if fig.cosine_mean is not None and fig.cosine_mean < MIN_MEAN_COSINE:
                raise BuildError(
                    f"{model}/{variant}: mean cosine to float embeddings is {fig.cosine_mean:.3f} "
                    f"(< {MIN_MEAN_COSINE}): the quantised model is broken; nothing was installed"
                )
            if fig.box_iou_median is not None and fig.box_iou_median < MIN_BOX_IOU:
                raise BuildError(
                    f"{model}/{variant}: its boxes overlap float's by a median IoU of "
                    f"{fig.box_iou_median:.2f} (< {MIN_BOX_IOU}): the quantised detector is broken; "
                    "nothing was installed"
                )


def _fastest(candidates: list[tuple[str, VariantFigures]]) -> str:
    best = min(fig.latency_ms for _, fig in candidates)
    ties = [(fig.size_bytes, name) for name, fig in candidates if fig.latency_ms <= best * (1 + LATENCY_TIE)]
    return min(ties)[1]


def choose_defaults(report: Report) -> None:
    """Embedder: the fastest variant within 0.5 points of float's TAR on both sets. Detectors: the
    fastest whose found rate is within 0.5 points of float's and whose boxes agree with float's."""
    emb = report.figures[EMBEDDER]
    ref = emb["float"]
    assert ref.tar_aligned is not None and ref.tar_wild is not None
    ok = [
        (name, fig)
        for name, fig in emb.items()
        if fig.tar_aligned is not None
        and fig.tar_wild is not None
        and fig.tar_aligned >= ref.tar_aligned - TAR_TOLERANCE
        and fig.tar_wild >= ref.tar_wild - TAR_TOLERANCE
    ]
    winner = _fastest(ok)
    fig = emb[winner]
    assert fig.tar_aligned is not None and fig.tar_wild is not None
    report.defaults[EMBEDDER] = winner
    report.reasons[EMBEDDER] = (
        f"{winner}: {fig.latency_ms:.2f} ms vs float {ref.latency_ms:.2f} ms "
        f"({ref.latency_ms / fig.latency_ms:.2f}x), "
        f"TAR@FAR1e-3 aligned {_pts(fig.tar_aligned, ref.tar_aligned)}, "
        f"wild {_pts(fig.tar_wild, ref.tar_wild)} points vs float; "
        f"{fig.size_bytes / 1e6:.1f} MB vs {ref.size_bytes / 1e6:.1f} MB"
    )
    rejected = [n for n in emb if n not in dict(ok)]
    if rejected:
        report.reasons[EMBEDDER] += f"; over the 0.5-point TAR budget: {', '.join(rejected)}"
    for name in DETECTORS:
        variants = report.figures[name]
        ref = variants["float"]
        assert ref.found_rate is not None
        ok = [
            (v, f)
            for v, f in variants.items()
            if f.found_rate is not None
            and f.found_rate >= ref.found_rate - TAR_TOLERANCE
            and (f.box_iou_median is None or f.box_iou_median >= 0.9)
        ]
        winner = _fastest(ok)
        fig = variants[winner]
        report.defaults[name] = winner
        report.reasons[name] = (
            f"{winner}: {fig.latency_ms:.2f} ms vs float {ref.latency_ms:.2f} ms, faces found in "
            f"{100 * (fig.found_rate or 0):.1f}% of wild photos (float {100 * ref.found_rate:.1f}%)"
        )


def _pts(value: float, reference: float) -> str:
    return f"{100 * (value - reference):+.2f}"


def markdown(report: Report) -> str:
    lines = [
        "# Models build report",
        "",
        f"Corpus: {report.corpus.get('aligned_faces', 0)} aligned faces, "
        f"{report.corpus.get('wild_photos', 0)} wild photos "
        f"({report.corpus.get('wild_faces_found', 0)} with a face for the embedder). "
        "Latency: median of one invoke, one thread. TAR at FAR 1e-3 over all genuine and impostor "
        "pairs, flip-averaged embeddings.",
        "",
        "| model | variant | size MB | ms (1 thread) | TAR aligned | TAR wild | cos to float mean/min "
        "| found (wild) | box IoU vs float |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for model, variants in report.figures.items():
        for variant, f in variants.items():
            mark = " (default)" if report.defaults.get(model) == variant else ""
            lines.append(
                f"| {model} | {variant}{mark} | {f.size_bytes / 1e6:.2f} | {f.latency_ms:.2f} "
                f"| {_pct(f.tar_aligned)} | {_pct(f.tar_wild)} | {_cos(f.cosine_mean, f.cosine_min)} "
                f"| {_pct(f.found_rate)} | {'' if f.box_iou_median is None else f'{f.box_iou_median:.3f}'} |"
            )
    lines += ["", "Defaults:", ""]
    lines += [f"- {model}: {reason}" for model, reason in report.reasons.items()]
    return "\n".join(lines) + "\n"


def _pct(x: float | None) -> str:
    return "" if x is None else f"{100 * x:.2f}%"


def _cos(mean: float | None, low: float | None) -> str:
    return "" if mean is None or low is None else f"{mean:.4f} / {low:.4f}"
