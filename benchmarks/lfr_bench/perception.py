"""Perception speed per stage (detect, align, quality, embed, match) through the unit's FacePipeline.

For each variant, thread count (1 and all), frame size and face count: the pipeline's own stage timings
(`FrameFaces.stage_ms`, the figures the daemon reports), plus the 1:N search of the frame's embeddings
against a synthetic 10,000-subject watchlist held by the unit's store, and the whole frame's wall time.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from lfr_bench import watchlists
from lfr_bench.common import BenchContext, PartResult, format_table, ms_stats, pyplot
from lfr_bench.frames import FACE_COUNTS, RESOLUTIONS, FrameSet, recall
from lfr_bench.variants import BenchVariant, build
from lfr_edge.config import Config

STAGES = ("detect", "align", "quality", "embed", "match")
WATCHLIST_SIZE = 10_000
SUMMARY_KEYS = ("fps_720p_5faces", "frame_ms_720p_5faces", "detect_ms_720p", "embed_ms_per_face")


def run(ctx: BenchContext, cfg: Config, variants: list[BenchVariant], frameset: FrameSet) -> PartResult:
    # Quick mode times the default variant only, with enough samples for a stable median; the full
    # mode times every variant.
    n_frames, reps = (2, 4) if ctx.quick else (5, 10)
    if ctx.quick:
        variants = [v for v in variants if v.is_default]
    try:
        store: Any = watchlists.store_from_matrix(watchlists.unit_vectors(WATCHLIST_SIZE, watchlists.DIM, ctx.seed))
        match_note = f"match: top-3 search of the frame's embeddings in a {WATCHLIST_SIZE}-subject store"
    except watchlists.StoreUnavailable as exc:
        store = None
        match_note = f"match not measured: {exc}"
    threads = sorted({1, ctx.all_threads})
    rows: list[dict[str, Any]] = []
    for variant in variants:
        for n_threads in threads:
            pipeline = build(variant, cfg, n_threads)
            for width, height in RESOLUTIONS:
                for n_faces in FACE_COUNTS:
                    frames = frameset.frames(width, height, n_faces, n_frames)
                    samples: dict[str, list[float]] = {s: [] for s in (*STAGES, "frame")}
                    found = embedded = 0
                    pipeline.process(frames[0].image.copy())  # warm-up
                    for _ in range(reps):
                        for frame in frames:
                            image = frame.image.copy()  # the daemon zeroes its frames; keep ours
                            t0 = time.perf_counter()
                            result = pipeline.process(image)
                            probes = [f.embedding for f in result.faces if f.embedding is not None]
                            t1 = time.perf_counter()
                            if store is not None and probes:
                                watchlists.search(store, np.stack(probes))
                            t2 = time.perf_counter()
                            for stage, ms in result.stage_ms.items():
                                samples[stage].append(ms)
                            if store is not None:
                                samples["match"].append((t2 - t1) * 1e3)
                            samples["frame"].append((t2 - t0) * 1e3)
                            found += recall([f.detection.box for f in result.faces], frame.faces)
                            embedded += len(probes)
                    total = reps * len(frames)
                    rows.append(
                        {
                            "variant": variant.name,
                            "default": variant.is_default,
                            "threads": n_threads,
                            "resolution": f"{width}x{height}",
                            "faces": n_faces,
                            "faces_found_mean": round(found / total, 2),
                            "faces_embedded_mean": round(embedded / total, 2),
                            "stages": {s: ms_stats(v) for s, v in samples.items()},
                        }
                    )
    default = next(v for v in variants if v.is_default)
    head = _pick(rows, default.name, ctx.all_threads, "1280x720", 5)
    frame_ms = head["stages"]["frame"]["median_ms"]
    embedded = max(head["faces_embedded_mean"], 1e-9)
    summary = {
        "fps_720p_5faces": round(1000.0 / frame_ms, 1),
        "frame_ms_720p_5faces": frame_ms,
        "detect_ms_720p": head["stages"]["detect"]["median_ms"],
        "embed_ms_per_face": round(head["stages"]["embed"]["median_ms"] / embedded, 3),
    }
    table = format_table(
        ["variant", "thr", "frame", "faces (found/emb)", *[f"{s} med/p99" for s in STAGES], "frame med/p99"],
        [
            [
                r["variant"],
                r["threads"],
                r["resolution"],
                f"{r['faces']} ({r['faces_found_mean']}/{r['faces_embedded_mean']})",
                *[_medp99(r["stages"][s]) for s in STAGES],
                _medp99(r["stages"]["frame"]),
            ]
            for r in rows
        ],
    )
    plot = _plot(ctx, rows, default.name)
    data = {
        "frames_per_config": n_frames,
        "repetitions": reps,
        "sprite_photos": [s.photo for s in frameset.sprites],
        "seed": frameset.seed,
        "watchlist_size": WATCHLIST_SIZE if store is not None else None,
        "default_variant": default.name,
        "rows": rows,
    }
    notes = [
        match_note,
        "stage ms are FacePipeline.process's own stage timings; frame = process + match wall time",
        f"{n_frames} seeded frames x {reps} repetitions per row (p99 over few samples is close to the max)",
    ]
    return PartResult("perception", True, data=data, table=table, plots=[plot], summary=summary, notes=notes)


def _pick(rows: list[dict[str, Any]], variant: str, threads: int, res: str, faces: int) -> dict[str, Any]:
    return next(
        r
        for r in rows
        if r["variant"] == variant and r["threads"] == threads and r["resolution"] == res and r["faces"] == faces
    )


def _medp99(stats: dict[str, float]) -> str:
    if not stats["n"]:
        return "-"
    return f"{stats['median_ms']:.2f}/{stats['p99_ms']:.2f}"


def _plot(ctx: BenchContext, rows: list[dict[str, Any]], default: str) -> str:
    plt = pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
    ours = [r for r in rows if r["variant"] == default and r["threads"] == ctx.all_threads]
    labels = [f"{r['resolution']}\n{r['faces']} faces" for r in ours]
    bottom = np.zeros(len(ours))
    for stage in STAGES:
        values = np.array([r["stages"][stage]["median_ms"] if r["stages"][stage]["n"] else 0 for r in ours])
        axes[0].bar(labels, values, bottom=bottom, label=stage)
        bottom += values
    axes[0].set_ylabel("median ms per frame")
    axes[0].set_title(f"stages, variant {default}, {ctx.all_threads} threads")
    axes[0].tick_params(axis="x", labelsize=7)
    axes[0].legend()
    for variant in sorted({r["variant"] for r in rows}):
        for threads in sorted({r["threads"] for r in rows}):
            sel = [
                r for r in rows if r["variant"] == variant and r["threads"] == threads and r["resolution"] == "1280x720"
            ]
            axes[1].plot(
                [r["faces"] for r in sel],
                [r["stages"]["frame"]["median_ms"] for r in sel],
                marker="o",
                label=f"{variant}, {threads} thr",
            )
    axes[1].set_xlabel("faces in a 1280x720 frame")
    axes[1].set_ylabel("median ms per frame")
    axes[1].set_title("whole frame (detect to match)")
    axes[1].legend(fontsize=7)
    fig.tight_layout()
    path = ctx.out_dir / "perception.png"
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path.name
