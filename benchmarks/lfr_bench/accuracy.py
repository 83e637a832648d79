"""Accuracy with the unit's own pipeline: verification (ROC) and 1:N identification, per variant.

`wild/` photos go through detection, alignment and embedding exactly as enrolment and the offline
`lfr-photos embed` tool do (`embed_photos`: the largest face of each photo); `aligned/` crops are embedded
directly. The peer part runs the same photo lists and the same protocol (identification.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from lfr_bench import identification as idm
from lfr_bench.common import BenchContext, PartResult, format_table, pyplot
from lfr_bench.variants import BenchVariant, build
from lfr_edge.config import Config
from lfr_tools.photos.embed import embed_photos
from lfr_tools.photos.image import read_image

FARS = (1e-1, 1e-2, 1e-3, 1e-4)
FPIRS = (0.1, 0.01, 0.001)
ROC_GRID = tuple(float(x) for x in np.logspace(-5, -0.2, 25))
QUICK_IDENTITIES = 30
SUMMARY_KEYS = ("tar_far_1e3", "tar_far_1e4", "fnir_fpir_1e2", "fnir_fpir_1e3")


@dataclass(frozen=True)
class PhotoSet:
    wild: list[Path]
    wild_labels: list[str]
    aligned: list[Path]
    aligned_labels: list[str]


def photo_set(ctx: BenchContext) -> PhotoSet:
    """All photos, or in quick mode a seeded subset of the wild/ identities (aligned/ is small: all)."""
    wild = sorted((ctx.faces_dir / "wild").glob("*/*.jpg"))
    identities = sorted({p.parent.name for p in wild})
    if ctx.quick:
        rng = np.random.default_rng(ctx.seed)
        keep = set(rng.permutation(identities)[:QUICK_IDENTITIES].tolist())
        wild = [p for p in wild if p.parent.name in keep]
    aligned = sorted((ctx.faces_dir / "aligned").glob("*/*.png"))
    return PhotoSet(wild, [p.parent.name for p in wild], aligned, [p.parent.name for p in aligned])


@dataclass(frozen=True)
class ScoredSet:
    """A photo set's similarity matrix (higher = more alike) and which photos had a face."""

    scores: npt.NDArray[np.float64]
    found: npt.NDArray[np.bool_]
    labels: list[str]


def evaluate(wild: ScoredSet, aligned: ScoredSet, seed: int) -> dict[str, Any]:
    """Verification on both sets and 1:N identification on wild/: the same for us and the peer."""
    out: dict[str, Any] = {}
    for name, scored in (("wild", wild), ("aligned", aligned)):
        gen, imp = idm.verification_scores(scored.scores, scored.labels, scored.found)
        out[name] = {
            "photos": len(scored.labels),
            "faces_found": int(scored.found.sum()),
            "genuine_pairs": len(gen),
            "impostor_pairs": len(imp),
            "at_far": idm.roc_points(gen, imp, FARS),
            "roc": idm.roc_points(gen, imp, [f for f in ROC_GRID if f * len(imp) >= 1 or f == ROC_GRID[0]]),
        }
    split = idm.split_identities(wild.labels, wild.found, seed)
    searches = idm.search_rank1(wild.scores, wild.labels, wild.found, split)
    at_fpir = []
    for fpir in FPIRS:
        fnir, threshold = idm.fnir_at_fpir(searches, fpir)
        at_fpir.append({"fpir": fpir, "fnir": round(fnir, 4), "threshold": round(threshold, 4)})
    out["identification"] = {
        "protocol": "rank-1; max over 2 enrolment templates per subject, seeded half enrolled",
        "enrolled_subjects": len(split.enrolled),
        "enrolment_templates": len(split.enrol_rows),
        "mated_searches": len(split.mated_rows),
        "nonmated_searches": len(split.nonmated_rows),
        "at_fpir": at_fpir,
        "curve": idm.threshold_curve(searches),
    }
    return out


def headline(result: dict[str, Any]) -> dict[str, float | None]:
    """TAR at FAR 1e-3/1e-4 on wild/ and FNIR at FPIR 1e-2/1e-3."""
    tar = {p["far"]: p["tar"] for p in result["wild"]["at_far"]}
    fnir = {p["fpir"]: p["fnir"] for p in result["identification"]["at_fpir"]}
    return {
        "tar_far_1e3": tar[1e-3],
        "tar_far_1e4": tar[1e-4],
        "fnir_fpir_1e2": fnir[0.01],
        "fnir_fpir_1e3": fnir[0.001],
    }


def run(ctx: BenchContext, cfg: Config, variants: list[BenchVariant], photos: PhotoSet) -> PartResult:
    aligned_images = np.stack([read_image(p) for p in photos.aligned])
    per_variant: dict[str, Any] = {}
    for variant in variants:
        pipeline = build(variant, cfg, ctx.all_threads)
        wild = embed_photos(pipeline, [str(p) for p in photos.wild], progress=False)
        aligned_emb = np.concatenate(
            [pipeline.embed_aligned(aligned_images[i : i + 64]) for i in range(0, len(aligned_images), 64)]
        )
        per_variant[variant.name] = evaluate(
            ScoredSet(wild.emb.astype(np.float64) @ wild.emb.T.astype(np.float64), wild.found, photos.wild_labels),
            ScoredSet(
                aligned_emb.astype(np.float64) @ aligned_emb.T.astype(np.float64),
                np.ones(len(aligned_emb), dtype=bool),
                photos.aligned_labels,
            ),
            ctx.seed,
        )
        per_variant[variant.name]["model_id"] = variant.files.model_id
    default = next(v for v in variants if v.is_default).name
    rows = []
    for name, res in per_variant.items():
        w = {p["far"]: p for p in res["wild"]["at_far"]}
        a = {p["far"]: p for p in res["aligned"]["at_far"]}
        f = {p["fpir"]: p for p in res["identification"]["at_fpir"]}
        rows.append(
            [
                name + (" (default)" if name == default else ""),
                f"{res['wild']['faces_found']}/{res['wild']['photos']}",
                f"{w[1e-3]['tar']:.4f} @ {w[1e-3]['threshold']:.3f}",
                f"{w[1e-4]['tar']:.4f} @ {w[1e-4]['threshold']:.3f}",
                f"{a[1e-3]['tar']:.4f} @ {a[1e-3]['threshold']:.3f}",
                f"{a[1e-4]['tar']:.4f} @ {a[1e-4]['threshold']:.3f}",
                f"{f[0.01]['fnir']:.4f} @ {f[0.01]['threshold']:.3f}",
                f"{f[0.001]['fnir']:.4f} @ {f[0.001]['threshold']:.3f}",
            ]
        )
    table = format_table(
        [
            "variant",
            "wild faces",
            "wild TAR@FAR1e-3 (thr)",
            "wild TAR@1e-4",
            "aligned TAR@1e-3",
            "aligned TAR@1e-4",
            "FNIR@FPIR1e-2 (thr)",
            "FNIR@FPIR1e-3",
        ],
        rows,
    )
    data = {
        "default_variant": default,
        "seed": ctx.seed,
        "wild_photos": [str(p) for p in photos.wild],
        "aligned_photos": [str(p) for p in photos.aligned],
        "variants": per_variant,
    }
    plots = [plot_roc(ctx, {k: v for k, v in per_variant.items()}, "accuracy-roc.png")]
    plots.append(plot_identification(ctx, per_variant, "accuracy-identification.png"))
    notes = [
        "scores are cosine similarities; acceptance is score > threshold",
        "a photo with no detected face fails all its comparisons (counted, not dropped)",
        f"quick mode: {QUICK_IDENTITIES} seeded wild/ identities" if ctx.quick else "all photos",
    ]
    return PartResult(
        "accuracy",
        True,
        data=data,
        table=table,
        plots=plots,
        summary=headline(per_variant[default]),
        notes=notes,
    )


def plot_roc(ctx: BenchContext, results: dict[str, Any], filename: str) -> str:
    plt = pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.5))
    for ax, subset in zip(axes, ("wild", "aligned"), strict=True):
        for name, res in results.items():
            roc = res[subset]["roc"]
            ax.plot([p["far"] for p in roc], [p["tar"] for p in roc], marker=".", label=name)
        ax.set_xscale("log")
        ax.set_xlabel("false accept rate")
        ax.set_ylabel("true accept rate")
        ax.set_title(f"verification ROC, {subset}/")
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    path = ctx.out_dir / filename
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path.name


def plot_identification(ctx: BenchContext, results: dict[str, Any], filename: str) -> str:
    plt = pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.5))
    for name, res in results.items():
        curve = res["identification"]["curve"]
        axes[0].plot([p["fpir"] for p in curve], [p["fnir"] for p in curve], marker=".", label=name)
        axes[1].plot([p["threshold"] for p in curve], [p["fnir"] for p in curve], label=f"{name} FNIR")
        axes[1].plot([p["threshold"] for p in curve], [p["fpir"] for p in curve], "--", label=f"{name} FPIR")
    axes[0].set_xscale("log")
    axes[0].set_xlabel("FPIR (non-mated searches alarming)")
    axes[0].set_ylabel("FNIR (mated searches missed, rank 1)")
    axes[0].set_title("1:N identification (wild/)")
    axes[1].set_xlabel("threshold")
    axes[1].set_ylabel("rate")
    axes[1].set_yscale("log")
    axes[1].set_title("threshold curve")
    for ax in axes:
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    path = ctx.out_dir / filename
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path.name
