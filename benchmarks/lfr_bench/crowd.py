"""Crowd throughput: the unit's own per-frame work (lfr_edge.daemon.worker: detect, quality, track by motion,
best shots embedded under the per-frame budget, 1:N match against a held 10,000-subject list) on the
simulator's seeded 1280x720 street scenes with 5, 10, 20 and 40 people in view walking through.

Frames are rendered before the clock starts, so the simulator's drawing is not counted (a real camera's
capture costs far less), and each run is one camera's frames back to back on one thread, as fast as it goes:
frames per second sustained over a window after a warm-up (the people already in view at the start arrive
together in the warm-up), embeddings per second, and the process's CPU time over the same window as a
share of the machine's cores. Beside it, the same frames with every passing face embedded on every frame
(`FacePipeline.process`, what the unit did before best shots): the cost that grew with people in view.
"""

from __future__ import annotations

import statistics
import time
from typing import Any

import numpy as np

from lfr_bench.common import BenchContext, PartResult, format_table
from lfr_bench.daemon_harness import synthetic_entries

SUMMARY_KEYS = (
    "crowd_fps_5",
    "crowd_fps_10",
    "crowd_fps_20",
    "crowd_fps_40",
    "crowd_embeddings_per_s_20",
    "crowd_cpu_share_20",
    "crowd_fps_20_every_face",
)
CROWDS = (5, 10, 20, 40)
FLOOR_FPS_20 = 25.0
SUBJECTS = 10_000
DURATION_S = 40.0  # walkers enter over the whole scene: its middle holds the asked-for crowd
Frames = list[np.ndarray[Any, np.dtype[np.uint8]]]


def run(ctx: BenchContext, cfg: Any) -> PartResult:
    from lfr_edge.vision.pipeline import build_pipeline

    warmup, window = (25, 100) if ctx.quick else (50, 375)
    pipeline = build_pipeline(cfg)
    store = held_watchlist(ctx, pipeline)
    rows: list[dict[str, Any]] = []
    for crowd in CROWDS:
        frames, in_view = render(ctx, crowd, warmup + window)
        best = best_shots(pipeline, cfg, store, [f.copy() for f in frames], warmup)
        every = every_face(pipeline, frames, warmup)
        rows.append({"crowd": crowd, "faces_in_view": in_view, "best_shots": best, "every_face": every})
    return result(ctx, rows, warmup, window)


def held_watchlist(ctx: BenchContext, pipeline: Any) -> Any:
    """A 10,000-subject list sealed and opened as the unit does (random embeddings: nobody in the scene
    matches, so every track ends unmatched and matching costs what it costs on a deployment)."""
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

    from lfr_contracts.bundle import AppliedHistory, build_bundle, open_bundle
    from lfr_edge.watchlist.store import WatchlistStore

    centre, unit, now = Ed25519PrivateKey.generate(), X25519PrivateKey.generate(), time.time()
    entries = synthetic_entries(SUBJECTS, ctx.faces_dir, ctx.seed, pipeline.embedder.dim)
    payload = build_bundle(
        entries, deployment="bench", unit_id="unit-a", unit_key=unit.public_key(), version=1, valid_from=now - 60,
        valid_until=now + 86400, threshold=0.5, model_id=pipeline.model_id, sign_key=centre, issued_at=now,
    )  # fmt: skip
    opened = open_bundle(
        payload, command_centre_key=centre.public_key(), unit_key=unit, unit_id="unit-a",
        model_id=pipeline.model_id, now=now, history=AppliedHistory(None, None, frozenset()), max_bytes=len(payload),
    )  # fmt: skip
    try:
        return WatchlistStore.from_opened(opened)
    finally:
        opened.wipe()


def render(ctx: BenchContext, crowd: int, count: int) -> tuple[Frames, tuple[float, float, float]]:
    """`count` frames from the middle of a seeded street scene with `crowd` people in view on average; the
    mean number of faces in them, of those at least half visible (in a crowd, nearer people hide many), and
    people arriving per second (the simulator's ground truth)."""
    from lfr_hwsim.facelocate import default_locator
    from lfr_hwsim.plan import PlanRequest, build_plan
    from lfr_hwsim.scene import SceneRenderer

    request = PlanRequest(ctx.faces_dir / "wild", seed=ctx.seed + crowd, duration_s=DURATION_S, crowd=float(crowd))
    renderer = SceneRenderer(build_plan(request, default_locator()))
    start = int(DURATION_S * 25 / 2) - count // 2
    frames, faces, visible, walkers = [], [], [], []
    for index in range(start, start + count):
        image, truth = renderer.render(index)
        frames.append(image)
        faces.append(len(truth.faces))
        visible.append(sum(1 for f in truth.faces if f.visible >= 0.5))
        walkers.append({f.walker for f in truth.faces})
    arriving = len(set().union(*walkers) - walkers[0]) / (count / 25)
    return frames, (round(statistics.mean(faces), 1), round(statistics.mean(visible), 1), round(arriving, 1))


def best_shots(pipeline: Any, cfg: Any, store: Any, frames: Frames, warmup: int) -> dict[str, float]:
    """The unit's worker over the frames (it zeroes each frame once its faces are found)."""
    from lfr_contracts.camera import Frame
    from lfr_edge.daemon.alerting import Alerter
    from lfr_edge.daemon.worker import PipelineWorker

    worker = PipelineWorker(
        pipeline, ["cam0"], cfg.track, cfg.match, lambda: store, Alerter("unit-a", [], NoAudit()), embed_cfg=cfg.embed
    )
    samples: list[float] = []
    embedded = 0
    for index, image in enumerate(frames):
        if index == warmup:
            embedded, cpu0, wall0 = worker.stats.faces_embedded, time.process_time(), time.perf_counter()
        t0 = time.perf_counter()
        worker.process([Frame("cam0", index, index / 25, image)])
        samples.append((time.perf_counter() - t0) * 1e3)
    wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
    worker.end_all_tracks()
    return figures(samples[warmup:], wall, cpu) | {
        "embeddings_per_s": round((worker.stats.faces_embedded - embedded) / wall, 1),
        "faces_per_frame": round(worker.stats.faces_seen / max(1, worker.stats.frames), 1),
    }


def every_face(pipeline: Any, frames: Frames, warmup: int) -> dict[str, float]:
    """Every passing face of every frame embedded (no tracking, no matching: a lower bound of the old cost)."""
    samples: list[float] = []
    embedded = 0
    for index, image in enumerate(frames):
        if index == warmup:
            embedded, cpu0, wall0 = 0, time.process_time(), time.perf_counter()
        t0 = time.perf_counter()
        faces = pipeline.process(image).faces
        samples.append((time.perf_counter() - t0) * 1e3)
        for face in faces:
            face.aligned.fill(0)
            if face.embedding is not None:
                embedded += index >= warmup
                face.embedding.fill(0)
        image.fill(0)
    wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
    return figures(samples[warmup:], wall, cpu) | {"embeddings_per_s": round(embedded / wall, 1)}


def figures(samples: list[float], wall: float, cpu: float) -> dict[str, float]:
    import os

    ordered = sorted(samples)
    return {
        "fps": round(len(samples) / wall, 1),
        "frame_ms_p50": round(statistics.median(ordered), 1),
        "frame_ms_p99": round(ordered[max(0, int(np.ceil(0.99 * len(ordered))) - 1)], 1),
        "cpu_share": round(cpu / wall / (os.cpu_count() or 1), 2),
        "cpu_ms_per_frame": round(cpu * 1e3 / len(samples), 1),  # what a frame costs, whatever else runs
    }


class NoAudit:
    def append(self, event: object) -> None:
        raise AssertionError("a random watchlist matched a passer-by in the crowd bench")


def result(ctx: BenchContext, rows: list[dict[str, Any]], warmup: int, window: int) -> PartResult:
    table = format_table(
        ["people in view", "faces in frame / half visible / arriving per s (truth)", "faces detected/frame", "fps",
         "frame ms p50/p99", "embeddings/s", "CPU share", "CPU ms/frame", "every face: fps",
         "every face: embeddings/s", "every face: CPU ms/frame"],
        [
            [r["crowd"], "{} / {} / {}".format(*r["faces_in_view"]), r["best_shots"]["faces_per_frame"],
             r["best_shots"]["fps"],
             f"{r['best_shots']['frame_ms_p50']}/{r['best_shots']['frame_ms_p99']}",
             r["best_shots"]["embeddings_per_s"], r["best_shots"]["cpu_share"], r["best_shots"]["cpu_ms_per_frame"],
             r["every_face"]["fps"], r["every_face"]["embeddings_per_s"], r["every_face"]["cpu_ms_per_frame"]]
            for r in rows
        ],
    )  # fmt: skip
    by_crowd = {r["crowd"]: r for r in rows}
    fps_20 = by_crowd[20]["best_shots"]["fps"]
    notes = [
        f"Simulator street scenes, 1280x720, seeds {ctx.seed}+N, {warmup} frames of warm-up then {window} "
        f"measured, pre-rendered; one thread feeding the unit's worker back to back; a {SUBJECTS:,}-subject list "
        "held. CPU share = the process's CPU time over the window / wall time / cores (1.0 = every core); "
        "CPU ms/frame = the process's CPU time per frame (its threads together), less sensitive to other load.",
        f"Floor: {FLOOR_FPS_20:g} fps with 20 people in view: {fps_20:g} fps, "
        + ("held." if fps_20 >= FLOOR_FPS_20 else "NOT held."),
        "'every face' is the same frames with every passing face embedded on every frame (the unit before best "
        "shots), without tracking or matching.",
        "This machine is shared with other work (other engineers' builds and tests on the same 2 cores), so "
        "figures vary from run to run: repeat before believing one.",
    ]
    return PartResult(
        "crowd",
        True,
        data={"rows": rows, "warmup_frames": warmup, "window_frames": window, "subjects": SUBJECTS},
        table=table,
        summary={
            **{f"crowd_fps_{c}": by_crowd[c]["best_shots"]["fps"] for c in CROWDS},
            "crowd_embeddings_per_s_20": by_crowd[20]["best_shots"]["embeddings_per_s"],
            "crowd_cpu_share_20": by_crowd[20]["best_shots"]["cpu_share"],
            "crowd_fps_20_every_face": by_crowd[20]["every_face"]["fps"],
        },
        notes=notes,
    )
