"""Figures for the models published only as ONNX (YuNet, SFace), run on ONNX Runtime's CPU provider.

Their fixed files (models/onnx_fixes.py) must compute what the published files define: both are run on the
same real inputs, the fixed file on ONNX Runtime and the published one on onnx's reference evaluator
(which implements blocked DequantizeLinear), and the build stops when they disagree (report.py's bound for
ONNX files). Then: latency on one thread, YuNet's share of wild photos with a face, SFace's TAR at FAR 1e-3.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import numpy.typing as npt

import corpus
from report import ORT_CPU, VariantFigures, load_ort_cpu

REFERENCE_SAMPLES = 4  # the reference evaluator is slow (seconds per YuNet frame): a few real inputs
YUNET_SIZE = (384, 640)  # height, width: a 720p frame scaled to 640 wide, padded to a multiple of 32


def yunet_input(img: corpus.Image, height: int, width: int) -> npt.NDArray[np.float32]:
    """A photo scaled to fit height x width (padded with black), BGR 0-255, NCHW, as the detector feeds it."""
    from lfr_edge.vision.yunet import scaled_input

    batch, _ = scaled_input(img, width, height)
    return batch


def sface_input(face: corpus.Image) -> npt.NDArray[np.float32]:
    return np.ascontiguousarray(face.transpose(2, 0, 1)[None], dtype=np.float32)


def agreement(published: bytes, fixed: Path, inputs: list[npt.NDArray[np.float32]]) -> tuple[float, float]:
    """(largest absolute difference, largest difference over the output's scale) of every output."""
    import onnx
    from onnx.reference import ReferenceEvaluator

    reference = ReferenceEvaluator(onnx.load_from_string(published))
    model = load_ort_cpu(fixed, 2)
    name = model.inputs[0].name
    abs_diff = rel_diff = 0.0
    for x in inputs:
        for want, got in zip(reference.run(None, {name: x}), model.run(x), strict=True):
            diff = float(np.max(np.abs(np.asarray(want, np.float32) - got)))
            abs_diff = max(abs_diff, diff)
            rel_diff = max(rel_diff, diff / max(1.0, float(np.max(np.abs(want)))))
    return abs_diff, rel_diff


def latency_ms(path: Path, x: npt.NDArray[np.float32], rounds: int = 8, per_round: int = 10) -> float:
    """Lowest per-round median of one run on one thread (robust to other work on the machine)."""
    model = load_ort_cpu(path, 1)
    for _ in range(3):
        model.run(x)
    best = float("inf")
    for _ in range(rounds):
        times = []
        for _ in range(per_round):
            t0 = time.perf_counter()
            model.run(x)
            times.append(time.perf_counter() - t0)
        best = min(best, float(np.median(times)) * 1e3)
    return best


def evaluate(
    artifacts: dict[str, dict[str, Path]], published: dict[str, bytes], faces: Path
) -> dict[str, dict[str, VariantFigures]]:
    """Figures of every ONNX-only model in `artifacts` (their one variant, "onnx")."""
    figures: dict[str, dict[str, VariantFigures]] = {}
    if "yunet" in artifacts:
        path = artifacts["yunet"]["onnx"]
        wild = corpus.wild_photos(faces, REFERENCE_SAMPLES)
        inputs = [yunet_input(img, *YUNET_SIZE) for img in wild.images]
        fig = VariantFigures(path.stat().st_size, latency_ms(path, inputs[0]), runtime=ORT_CPU)
        fig.max_abs_diff, fig.max_rel_diff = agreement(published["yunet"], path, inputs)
        figures["yunet"] = {"onnx": fig}
    if "sface" in artifacts:
        path = artifacts["sface"]["onnx"]
        aligned = corpus.aligned_photos(faces, REFERENCE_SAMPLES)
        inputs = [sface_input(img) for img in aligned.images]
        fig = VariantFigures(path.stat().st_size, latency_ms(path, inputs[0]), runtime=ORT_CPU)
        fig.max_abs_diff, fig.max_rel_diff = agreement(published["sface"], path, inputs)
        figures["sface"] = {"onnx": fig}
    return figures
