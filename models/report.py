"""Measure every built variant on real photos and pick the unit's default variants.

Per variant: file size, single-thread median latency of one invoke, and
- embedder: TAR at FAR 1e-3 over all pairs of `aligned/` (crops embedded directly) and of `wild/`
  (float detectors → largest face → alignment → embedding), flip-averaged as the unit runs it, and the
  cosine to the float embedding of the same face;
- detectors: share of `wild/` photos with a face, and agreement of the largest box with float's;
- ONNX variants (for the Jetson's ONNX Runtime backend, never a CPU unit's default): single-thread
  latency on ONNX Runtime's CPU provider, and agreement with the float .tflite on LiteRT over every photo
  and face of the corpus, prepared as calibration prepares them (letterboxed photos, aligned faces with
  their mirrors): the largest difference of the raw outputs and the cosine of the embeddings.
Faces, crops and embeddings stay in memory; only the figures are written.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import numpy.typing as npt

import corpus
from fetch import BuildError
from lfr_edge.config import DetectConfig
from lfr_edge.inference.base import LoadedModel
from lfr_edge.inference.litert import LiteRTModel, load_model
from lfr_edge.vision.align import align_face
from lfr_edge.vision.detect import FULL_RANGE, SHORT_RANGE, BlazeFace, BlazeFaceSpec, FaceDetector, largest
from lfr_edge.vision.embed import Embedder
from lfr_tools.metrics import pair_scores, tar_at_far

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
LITERT, ORT_CPU = "litert", "onnxruntime-cpu"
# The ONNX export is the same float32 function as the float .tflite: only the order of float additions
# differs (MLAS vs XNNPACK kernels, NCHW vs NHWC). Those rounding differences scale with the values
# summed, so the bound is relative to each output's largest magnitude on that input (BlazeFace short
# range's heads reach 1e4 px and -3e4 logits on real photos). Measured over the whole corpus: at most
# 2.3e-5 of the scale (short range), 5.5e-6 (full range), 2.5e-6 (MobileFaceNet); a wrong conversion
# is far off (SAME padding on the wrong side: 0.97 of the scale; resize with another coordinate mode:
# 0.72). The bound, 1e-4, leaves 4x headroom over float noise and is 7000x below those errors.
# Embeddings: measured cosine 1 - 2e-12 at worst; the bound is 1 - 1e-6.
ONNX_MAX_REL_DIFF = 1e-4
ONNX_MIN_COSINE = 1.0 - 1e-6


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
    runtime: str = LITERT  # ONNX variants: measured on ONNX Runtime's CPU provider
    max_abs_diff: float | None = None  # ONNX: raw outputs vs the float .tflite on LiteRT, worst element
    max_rel_diff: float | None = None  # ONNX: the same, over the output's largest magnitude


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


def load_ort_cpu(path: Path, threads: int) -> LoadedModel:
    """An ONNX model on ONNX Runtime's CPU provider, through the unit's ONNX model class."""
    import onnxruntime

    from lfr_edge.inference.onnx_tensorrt import OnnxModel

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    return OnnxModel(session, "CPUExecutionProvider")


def load_any(path: Path, threads: int) -> LoadedModel:
    return load_ort_cpu(path, threads) if path.suffix == ".onnx" else load_model(path, threads)


def latencies_ms(paths: dict[str, Path], rounds: int = 12, per_round: int = 15) -> dict[str, float]:
    """Single-thread latency of one invoke per variant, robust to other work on the machine: the
    variants take turns (round-robin), and each gets the lowest of its per-round medians."""
    models = {name: load_any(path, threads=1) for name, path in paths.items()}
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
    full, short = (blaze, None) if spec is FULL_RANGE else (None, blaze)
    return FaceDetector.from_config(full, short, DetectConfig(), tile_rows=1)


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
        for variant, path in litert_variants(artifacts[name]).items():
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
        for variant, path in onnx_variants(artifacts[name]).items():
            inputs = (corpus.detector_input(img, spec.input_size) for img in wild.images)
            report.figures[name][variant] = onnx_figures(artifacts[name]["float"], path, inputs, speed[variant])

    # Wild faces for the embedder: the unit's float detectors (both), largest face, aligned once.
    full = BlazeFace(load_model(artifacts["blazeface-full"]["float"], EVAL_THREADS), FULL_RANGE)
    short = BlazeFace(load_model(artifacts["blazeface-short"]["float"], EVAL_THREADS), SHORT_RANGE)
    unit_detector = FaceDetector.from_config(full, short, DetectConfig())
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
    for variant, path in litert_variants(artifacts[EMBEDDER]).items():
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
    for variant, path in onnx_variants(artifacts[EMBEDDER]).items():
        inputs = (corpus.embedder_input(face) for face in aligned.images)
        report.figures[EMBEDDER][variant] = onnx_figures(artifacts[EMBEDDER]["float"], path, inputs, speed[variant])

    check_close_to_float(report)
    choose_defaults(report)
    report.seconds = time.perf_counter() - start
    return report


def litert_variants(paths: dict[str, Path]) -> dict[str, Path]:
    return {v: p for v, p in paths.items() if p.suffix != ".onnx"}


def onnx_variants(paths: dict[str, Path]) -> dict[str, Path]:
    return {v: p for v, p in paths.items() if p.suffix == ".onnx"}


def onnx_figures(
    float_tflite: Path, onnx_file: Path, inputs: Iterable[npt.NDArray[np.float32]], latency_ms: float
) -> VariantFigures:
    """Run the ONNX export (ONNX Runtime, CPU) and the float .tflite (LiteRT) on the same inputs."""
    litert, ort = load_model(float_tflite, EVAL_THREADS), load_ort_cpu(onnx_file, EVAL_THREADS)
    names = [o.name for o in litert.outputs]
    if [o.name for o in ort.outputs] != names or [i.shape for i in ort.inputs] != [i.shape for i in litert.inputs]:
        raise BuildError(
            f"{onnx_file.name}: its inputs/outputs {[(i.name, i.shape) for i in ort.inputs]} -> "
            f"{[o.name for o in ort.outputs]} are not the float model's {[(i.name, i.shape) for i in litert.inputs]}"
            f" -> {names}; nothing was installed"
        )
    abs_diff, rel_diff, cosines = 0.0, 0.0, []
    for x in inputs:
        for want, got in zip(litert.run(x), ort.run(x), strict=True):
            diff = float(np.max(np.abs(got - want)))
            abs_diff = max(abs_diff, diff)
            rel_diff = max(rel_diff, diff / max(1.0, float(np.max(np.abs(want)))))
            if want.ndim == 2:  # embeddings [batch, D]: compare directions, as the matcher does
                cosines.extend(_cosines(want, got))
    fig = VariantFigures(onnx_file.stat().st_size, latency_ms, runtime=ORT_CPU)
    fig.max_abs_diff, fig.max_rel_diff = abs_diff, rel_diff
    if cosines:
        fig.cosine_mean, fig.cosine_min = float(np.mean(cosines)), float(np.min(cosines))
    return fig


def _cosines(a: npt.NDArray[np.float32], b: npt.NDArray[np.float32]) -> list[float]:
    a64, b64 = a.astype(np.float64), b.astype(np.float64)
    dots = np.sum(a64 * b64, axis=1) / (np.linalg.norm(a64, axis=1) * np.linalg.norm(b64, axis=1))
    return [float(c) for c in dots]


def check_onnx_agrees(model: str, variant: str, fig: VariantFigures) -> None:
    if fig.max_rel_diff is not None and fig.max_rel_diff > ONNX_MAX_REL_DIFF:
        raise BuildError(
            f"{model}/{variant}: the ONNX export disagrees with the float .tflite on the corpus: raw outputs "
            f"differ by up to {fig.max_abs_diff:.3g} ({fig.max_rel_diff:.2g} of the output's scale, bound "
            f"{ONNX_MAX_REL_DIFF:g}); models/onnx_export.py converts an op wrongly. Nothing was installed"
        )
    if fig.cosine_min is not None and fig.cosine_min < ONNX_MIN_COSINE:
        raise BuildError(
            f"{model}/{variant}: the ONNX export's embeddings differ from the float .tflite's: cosine down to "
            f"{fig.cosine_min:.9f} (bound {ONNX_MIN_COSINE:.9f}); nothing was installed"
        )


def check_close_to_float(report: Report) -> None:
    for model, variants in report.figures.items():
        for variant, fig in variants.items():
            if fig.runtime == ORT_CPU:
                check_onnx_agrees(model, variant, fig)
                continue
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
    emb = _litert_figures(report.figures[EMBEDDER])
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
        variants = _litert_figures(report.figures[name])
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


def _litert_figures(variants: dict[str, VariantFigures]) -> dict[str, VariantFigures]:
    """The variants a CPU unit can run: ONNX exports are for the Jetson backend, never a default."""
    return {v: f for v, f in variants.items() if f.runtime == LITERT}


def _pts(value: float, reference: float) -> str:
    return f"{100 * (value - reference):+.2f}"


def markdown(report: Report, unit_defaults: dict[str, str]) -> str:
    """The report. `unit_defaults` are the manifest's default variants, which the unit, the self-test and
    the daemon use; this machine's measured choice is shown beside them, and where the two differ, why the
    unit does not follow this machine (`models/build.py --record` moves the manifest to the measured one)."""
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
        for variant, f in _litert_figures(variants).items():
            marks = [
                *(["unit default"] if unit_defaults.get(model) == variant else []),
                *(["fastest within budget here"] if report.defaults.get(model) == variant else []),
            ]
            mark = f" ({', '.join(marks)})" if marks else ""
            lines.append(
                f"| {model} | {variant}{mark} | {f.size_bytes / 1e6:.2f} | {f.latency_ms:.2f} "
                f"| {_pct(f.tar_aligned)} | {_pct(f.tar_wild)} | {_cos(f.cosine_mean, f.cosine_min)} "
                f"| {_pct(f.found_rate)} | {'' if f.box_iou_median is None else f'{f.box_iou_median:.3f}'} |"
            )
    lines += [
        "",
        "The unit's defaults (models/manifest.toml, `default_variant`; the self-test and the daemon use these):",
        "",
    ]
    lines += [f"- {model}: {variant}" for model, variant in unit_defaults.items()]
    lines += ["", "This machine's measured choice (the fastest variant within the accuracy budget):", ""]
    for model, reason in report.reasons.items():
        unit = unit_defaults.get(model)
        differs = (
            ""
            if unit in (None, report.defaults.get(model))
            else (
                f" (the unit keeps {unit}: the manifest records the reference build's choice; "
                "`models/build.py --record` would make this one the default)"
            )
        )
        lines.append(f"- {model}: {reason}{differs}")
    lines += [
        "",
        "ONNX files, for the ONNX Runtime backends (`onnx-cpu`, `onnx-tensorrt`), run on ONNX Runtime's CPU "
        "provider: the exports against the float .tflite on LiteRT, over every wild photo (letterboxed) or "
        "aligned face and its mirror; the models published only as ONNX (YuNet, SFace) against their published "
        "files on onnx's reference evaluator, over a few real photos or faces. Bounds: raw outputs within "
        f"{ONNX_MAX_REL_DIFF:g} of their scale, embedding cosine >= 1 - {1 - ONNX_MIN_COSINE:.0e}.",
        "",
        "| model | variant | size MB | ms ORT CPU (1 thread) | ms LiteRT float (1 thread) | max abs diff "
        "| max diff / scale | cos to float mean/min |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for model, variants in report.figures.items():
        for variant, f in variants.items():
            if f.runtime != ORT_CPU:
                continue
            ref = variants.get("float")
            mark = " (unit default)" if unit_defaults.get(model) == variant else ""
            lines.append(
                f"| {model} | {variant}{mark} | {f.size_bytes / 1e6:.2f} | {f.latency_ms:.2f} "
                f"| {'' if ref is None else f'{ref.latency_ms:.2f}'} | {_sci(f.max_abs_diff)} "
                f"| {_sci(f.max_rel_diff)} | {_cos_near_one(f.cosine_mean, f.cosine_min)} |"
            )
    return "\n".join(lines) + "\n"


def _sci(x: float | None) -> str:
    return "" if x is None else f"{x:.2e}"


def _cos_near_one(mean: float | None, low: float | None) -> str:
    return "" if mean is None or low is None else f"1 - {1 - mean:.1e} / 1 - {1 - low:.1e}"


def _pct(x: float | None) -> str:
    return "" if x is None else f"{100 * x:.2f}%"


def _cos(mean: float | None, low: float | None) -> str:
    return "" if mean is None or low is None else f"{mean:.4f} / {low:.4f}"
