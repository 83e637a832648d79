"""The calibration table of every embedder the unit can run: what each cosine score means on the corpus.

For each embedder model id (one per variant: the id a watchlist carries), every pair of faces of the corpus
is scored, and `calibration.json` beside the built models records how many pairs of different people
(impostor pairs: all of them) and of the same person (genuine pairs) score at or above each score of a
0.005 grid (format: lfr_contracts.calibration). Faces: every `wild/` photo's subject, found as enrolment finds
it (photo mode) and aligned, and every `aligned/` crop; embedded the way the unit embeds them (its pipeline,
its config's flip-averaging). `lfr-watchlist build --false-alerts` reads the table to set a watchlist's
threshold from its size. Faces and embeddings stay in memory; only counts are written.
"""

from __future__ import annotations

import dataclasses
import os
import time
import typing
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

import corpus
from lfr_contracts import calibration
from lfr_contracts.calibration import CalibrationTable
from lfr_edge.config import Config, ModelsConfig, load_config_or_defaults
from lfr_edge.models import Manifest
from lfr_edge.vision.pipeline import BACKEND_VARIANTS, FacePipeline, build_pipeline
from lfr_tools.metrics import pair_scores
from lfr_tools.photos.photo_mode import PhotoFaceFinder

SECTION = "## Calibration"
GRID = np.round(np.arange(-1.0, 1.0 + 1e-9, 0.005), 4)


def embedder_models() -> tuple[Any, ...]:
    """Every embedder a unit can be configured to run: models.embedder's choices (its Literal's values)."""
    return typing.get_args(typing.get_type_hints(ModelsConfig)["embedder"])


def unit_configs(manifest: Manifest, manifest_path: Path, cache: Path) -> list[Config]:
    """A unit config per embedder variant a unit can run, the unit's defaults first (its photo mode finds the
    corpus's faces for every table). LiteRT runs the .tflite variants, onnx-cpu an ONNX-only embedder (SFace);
    an ONNX export of a .tflite model gets its float source's table (the build checks the two agree to a
    cosine of 1 - 1e-6)."""
    base = load_config_or_defaults(None)
    models = dataclasses.replace(base.models, dir=cache, manifest=manifest_path)
    onnx_cpu = dataclasses.replace(base.inference, backend="onnx-cpu")
    litert = dataclasses.replace(base.inference, backend="litert-cpu")
    configs = [dataclasses.replace(base, models=models)]
    for name in embedder_models():
        if manifest.model(name).onnx_only:
            on_onnx = dataclasses.replace(models, detector="yunet", embedder=name)
            configs.append(dataclasses.replace(base, models=on_onnx, inference=onnx_cpu))
            continue
        for v in manifest.model(name).variants:
            if v.name not in BACKEND_VARIANTS.values():
                on_litert = dataclasses.replace(models, detector="both", embedder=name, embedder_variant=v.name)
                configs.append(dataclasses.replace(base, models=on_litert, inference=litert))
    return configs


def model_ids(manifest: Manifest) -> set[str]:
    """The model ids watchlists can carry, as the unit's pipeline names them (every variant of every embedder)."""
    return {f"{name}/{v.name}/{v.sha256[:12]}" for name in embedder_models() for v in manifest.model(name).variants}


def corpus_faces(pipeline: FacePipeline, faces: Path) -> tuple[npt.NDArray[np.uint8], list[str], str]:
    """Aligned faces and their identities: each wild photo's subject (photo mode), then the aligned crops."""
    finder = PhotoFaceFinder.for_pipeline(pipeline)
    wild = corpus.wild_photos(faces)
    crops, labels = [], []
    for image, label in zip(wild.images, wild.labels, strict=True):
        face = finder.subject(image, refuse_ambiguous=False).face
        if face is not None:
            crops.append(face.aligned)
            labels.append(f"wild/{label}")
    found = len(crops)
    aligned = corpus.aligned_photos(faces)
    crops += aligned.images
    labels += [f"aligned/{label}" for label in aligned.labels]
    described = (
        f"{len(set(labels))} identities: {found} of {len(wild.images)} wild photos, {len(aligned.images)} aligned faces"
    )
    return np.stack(crops), labels, described


def table(model_id: str, described: str, embeddings: npt.NDArray[np.float32], labels: list[str]) -> CalibrationTable:
    genuine, impostor = pair_scores(embeddings, labels)
    impostor.sort()
    genuine.sort()
    # pairs scoring at or above each grid score (the matcher accepts score >= threshold)
    false_accepts = len(impostor) - np.searchsorted(impostor, GRID, side="left")
    genuine_accepts = len(genuine) - np.searchsorted(genuine, GRID, side="left")
    return CalibrationTable(
        model_id=model_id,
        corpus=described,
        impostor_pairs=len(impostor),
        genuine_pairs=len(genuine),
        impostor_max=round(float(impostor[-1]), 6),
        scores=tuple(float(s) for s in GRID),
        false_accepts=tuple(int(c) for c in false_accepts),
        genuine_accepts=tuple(int(c) for c in genuine_accepts),
    )


def measure(configs: Iterable[Config], faces: Path, onnx_twins: dict[str, str]) -> list[CalibrationTable]:
    """One table per config's embedder, plus the ONNX exports' (`onnx_twins`: onnx id -> float id)."""
    tables: list[CalibrationTable] = []
    crops: npt.NDArray[np.uint8] | None = None
    labels: list[str] = []
    described = ""
    for cfg in configs:
        pipeline = build_pipeline(cfg)
        if pipeline.model_id in {t.model_id for t in tables}:
            continue  # the defaults' embedder, measured first
        if crops is None:
            crops, labels, described = corpus_faces(pipeline, faces)
        embeddings = pipeline.embed_aligned(crops)
        tables.append(table(pipeline.model_id, described, embeddings, labels))
        embeddings.fill(0)
    if crops is not None:
        crops.fill(0)
    by_id = {t.model_id: t for t in tables}
    for onnx_id, float_id in onnx_twins.items():
        if float_id in by_id:
            tables.append(dataclasses.replace(by_id[float_id], model_id=onnx_id))
    return tables


def onnx_twins(manifest: Manifest) -> dict[str, str]:
    """The ONNX export's model id -> its float source's, for each embedder built from a .tflite source."""
    twins: dict[str, str] = {}
    for name in embedder_models():
        names = {v.name: f"{name}/{v.name}/{v.sha256[:12]}" for v in manifest.model(name).variants}
        twins |= {names[o]: names["float"] for o in BACKEND_VARIANTS.values() if o in names and "float" in names}
    return twins


def is_current(manifest: Manifest, cache: Path) -> bool:
    """The cache holds a calibration table for every embedder model id of this manifest."""
    path = cache / calibration.CALIBRATION_FILE
    try:
        held = calibration.decode(path.read_bytes())
    except (OSError, calibration.CalibrationError):
        return False
    return model_ids(manifest) <= set(held)


def write(manifest: Manifest, manifest_path: Path, cache: Path, faces: Path) -> list[CalibrationTable]:
    """Measure and write `calibration.json` (atomically) into the cache; the artifacts must be installed."""
    started = time.perf_counter()
    tables = measure(unit_configs(manifest, manifest_path, cache), faces, onnx_twins(manifest))
    target = cache / calibration.CALIBRATION_FILE
    tmp = target.with_name(f"{target.name}.{os.getpid()}.tmp")
    tmp.write_bytes(calibration.encode(tables))
    tmp.replace(target)
    print(f"calibration tables for {len(tables)} model ids in {target} ({time.perf_counter() - started:.0f} s)")
    return tables


def markdown(tables: list[CalibrationTable]) -> str:
    """The report's section: per model id, the pairs measured and the thresholds at FAR 1e-3 and 1e-4."""
    lines = [
        f"{SECTION} (`calibration.json`: score -> false-accept rate, for `lfr-watchlist build --false-alerts`)",
        "",
        "| model id | impostor pairs | genuine pairs | threshold @ FAR 1e-3 (genuine accepted) "
        "| @ FAR 1e-4 | @ FAR 1e-5 | highest impostor score |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for t in tables:
        cells = []
        for far in (1e-3, 1e-4, 1e-5):
            choice = t.threshold_for(far)
            note = "" if choice.supported else ", below the corpus's resolution"
            cells.append(f"{choice.threshold:.3f} ({100 * choice.genuine_accept_rate:.1f}%{note})")
        pairs = f"{t.impostor_pairs:,} | {t.genuine_pairs:,}"
        lines.append(f"| {t.model_id} | {pairs} | {' | '.join(cells)} | {t.impostor_max:.3f} |")
    if tables:
        lines += ["", f"Corpus: {tables[0].corpus}; every pair of faces of different identities is an impostor pair."]
    return "\n".join(lines) + "\n"
