"""Memory: the daemon's resident memory with a 10,000-subject watchlist, at steady state.

The camera is a replay of real photos at 25 fps: frames come from outside the daemon, as from a real
camera. (The simulator's street camera renders inside the daemon's own process, and its photo cut-outs
would add 90-150 MB that a van unit does not have; the pipeline part runs on it.)

The watchlist is synthetic (random unit embeddings, one 128 px reference JPEG of the real size per
subject) but otherwise real: signed and sealed with `build_bundle` for the unit's key and its own model
id, published retained by the command centre and applied by the daemon's watchlist sync. Figures come
from /proc/<pid>/status: VmRSS (resident now) and VmHWM (the peak since start, which includes the
moment the bundle was verified, decrypted and parsed).

Then the worst case the unit file's MemoryMax must hold: while the 10,000-subject list is held, a replacement
as large as `watchlist.max_bundle_bytes` allows is applied on top of it (`daemon_rss_peak_replace_at_limit_mb`).
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from lfr_bench.common import BenchContext, PartResult, format_table, not_measured, pyplot
from lfr_bench.daemon_harness import (
    Sample,
    TelemetryWatch,
    bench_van,
    sealed_bundle,
    start_ready,
    synthetic_entries,
    unit_model_id,
    van_missing,
)
from lfr_bench.procstat import memory_mb

SUMMARY_KEYS = (
    "daemon_rss_mb_10k",
    "daemon_rss_steady_mb_10k",
    "daemon_rss_peak_apply_mb_10k",
    "daemon_rss_mb_no_watchlist",
    "daemon_rss_peak_replace_at_limit_mb",
    "bundle_limit_mb",
)
SUBJECTS = 10_000
TARGET_MB = 300.0


@dataclass
class WatchlistRun:
    """Memory before and after the unit applied the 10,000-subject watchlist, and the steady window's
    telemetry (so the same run also gives the pipeline's rates with that watchlist held)."""

    before: dict[str, float]
    steady: dict[str, float]
    trace: list[dict[str, Any]]
    applied_at: float
    bundle_bytes: int
    window: list[Sample]
    at_limit: dict[str, float]  # the replacement as large as the config allows: its size and the peak after it


def settings(ctx: BenchContext) -> tuple[float, float]:
    """Seconds to settle (after READY, after the apply) and of the steady window."""
    return (2.0, 5.0) if ctx.quick else (10.0, 30.0)


def bench_bundle(ctx: BenchContext, van: Any) -> bytes:
    entries = synthetic_entries(SUBJECTS, ctx.faces_dir, ctx.seed)
    return sealed_bundle(van, entries, 0.5, unit_model_id(), version=int(time.time()))


def watchlist_run(
    van: Any,
    watch: TelemetryWatch,
    pid: int,
    bundle: bytes,
    settle_s: float,
    window_s: float,
    entries_for: Callable[[int], list[Any]] | None = None,
) -> WatchlistRun:
    """With the daemon READY: settle, publish the bundle as the command centre, wait for the unit's
    ack, settle again, then a steady window; with `entries_for`, then a replacement at the size limit."""
    trace: list[dict[str, Any]] = []
    started = time.monotonic()
    before, _ = sample(watch, pid, started, trace, settle_s, "no watchlist")
    ack = van.publish_watchlist(bundle, wait_ack_s=60.0)
    if ack is None or ack.get("status") != "applied" or ack.get("subjects") != SUBJECTS:
        raise RuntimeError(f"the unit did not apply the {SUBJECTS}-subject watchlist: {ack}")
    applied_at = time.monotonic() - started
    sample(watch, pid, started, trace, settle_s, "settling")
    steady, window = sample(watch, pid, started, trace, window_s, "steady")
    if entries_for is None:
        return WatchlistRun(before, steady, trace, round(applied_at, 2), len(bundle), window, {})
    at_limit = replace_at_limit(van, pid, bundle, entries_for)
    sample(watch, pid, started, trace, settle_s, "after the replacement at the limit")
    return WatchlistRun(before, steady, trace, round(applied_at, 2), len(bundle), window, at_limit)


def replace_at_limit(van: Any, pid: int, first: bytes, entries_for: Callable[[int], list[Any]]) -> dict[str, float]:
    """Apply, on top of the held list, a bundle just under the config's `watchlist.max_bundle_bytes` (the
    subjects it holds are scaled from the first bundle's bytes per subject); the unit's peak after it."""
    from lfr_edge.config import WatchlistConfig

    limit = WatchlistConfig().max_bundle_bytes
    count = int(limit * 0.98 / (len(first) / SUBJECTS))
    while True:
        bundle = sealed_bundle(van, entries_for(count), 0.5, unit_model_id(), version=int(time.time()) + 1)
        if len(bundle) <= limit:
            break
        count = int(count * 0.98)
    ack = van.publish_watchlist(bundle, wait_ack_s=180.0)
    if ack is None or ack.get("status") != "applied" or ack.get("subjects") != count:
        raise RuntimeError(f"the unit did not apply the {count}-subject watchlist at the limit: {ack}")
    after = memory_mb(pid)
    return {
        "limit_mb": limit / 2**20,
        "bundle_mb": len(bundle) / 2**20,
        "subjects": count,
        "hwm_mb": after["VmHWM"],
        "rss_mb": after["VmRSS"],
    }


def run(ctx: BenchContext, pipeline: PartResult | None = None) -> PartResult:
    """A daemon of its own on a replay camera (`pipeline` is accepted for the CLI's uniform call)."""
    missing = van_missing(ctx)
    if missing is not None:
        return not_measured("memory", missing, SUMMARY_KEYS)
    settle_s, window_s = settings(ctx)
    with bench_van("memory") as van:
        photos = sorted((ctx.faces_dir / "wild").glob("*/*.jpg"))[:100]
        folder = van.dir / "replay"
        folder.mkdir()
        for i, photo in enumerate(photos):
            (folder / f"{i:04d}.jpg").symlink_to(photo)
        scene = {"camera": "replay", "photos": len(photos), "fps": 25.0, "seed": ctx.seed, "crowd": 1}
        bundle = bench_bundle(ctx, van)
        camera = {"name": "cam0", "source": "replay", "uri": str(folder), "fps": 25.0}
        camera["options"] = {"realtime": True, "loop": True}
        config = van.write_config([camera], daemon={"telemetry_interval_s": 1.0})
        watch = TelemetryWatch(van)
        daemon = start_ready(van, config)
        watch.pid = daemon.proc.pid
        try:
            entries_for = functools.partial(synthetic_entries, faces_dir=ctx.faces_dir, seed=ctx.seed)
            held = watchlist_run(van, watch, daemon.proc.pid, bundle, settle_s, window_s, entries_for)
        finally:
            daemon.terminate(timeout=10)
            watch.stop()
    return result(ctx, scene, as_data(held, settle_s, window_s), "a run of its own")


def as_data(held: WatchlistRun, settle_s: float, window_s: float) -> dict[str, Any]:
    return {
        "before": held.before,
        "steady": held.steady,
        "trace": held.trace,
        "applied_at_s": held.applied_at,
        "bundle_bytes": held.bundle_bytes,
        "at_limit": held.at_limit,
        "settle_s": settle_s,
        "window_s": window_s,
    }


def sample(
    watch: TelemetryWatch, pid: int, started: float, trace: list[dict[str, Any]], seconds: float, phase: str
) -> tuple[dict[str, float], list[Sample]]:
    """Resident memory at every telemetry message for `seconds`: the last reading, the window's peak,
    and the telemetry samples."""
    end = time.monotonic() + seconds
    peak_rss = 0.0
    last: dict[str, float] = {}
    window: list[Sample] = []
    while time.monotonic() < end or len(window) < 2:
        message = watch.next()
        window.append(message)
        last = memory_mb(pid)
        peak_rss = max(peak_rss, last["VmRSS"])
        trace.append(
            {
                "t": round(message.received - started, 2),
                "phase": phase,
                **last,
                "fps": message.telemetry.fps,
                "subjects": message.telemetry.watchlist.subjects or 0,
            }
        )
    return {"rss_mb": last["VmRSS"], "hwm_mb": last["VmHWM"], "rss_peak_window_mb": peak_rss}, window


def result(ctx: BenchContext, scene: dict[str, Any], held: dict[str, Any], where: str) -> PartResult:
    before, steady, trace = held["before"], held["steady"], held["trace"]
    bundle_bytes, applied_at = held["bundle_bytes"], held["applied_at_s"]
    settle_s, window_s = held["settle_s"], held["window_s"]
    rows = [
        ["before the watchlist (steady)", before["rss_mb"], before["rss_peak_window_mb"], before["hwm_mb"]],
        [f"{SUBJECTS:,} subjects (steady)", steady["rss_mb"], steady["rss_peak_window_mb"], steady["hwm_mb"]],
    ]
    limit = held["at_limit"]
    rows.append(
        [
            f"{limit['subjects']:,} subjects ({limit['bundle_mb']:.1f} MiB) applied on top of it",
            limit["rss_mb"],
            "",
            limit["hwm_mb"],
        ]
    )
    table = format_table(["daemon", "VmRSS MB (last)", "VmRSS MB (window peak)", "VmHWM MB (peak since start)"], rows)
    notes = [
        f"Headline `daemon_rss_mb_10k` = the peak VmRSS over the steady window ({steady['rss_peak_window_mb']:g} "
        f"MB); target under {TARGET_MB:g} MB: {'met' if steady['rss_peak_window_mb'] < TARGET_MB else 'NOT met'}. "
        f"VmHWM, the peak since start, is {steady['hwm_mb']:g} MB: it includes the moment the "
        f"{bundle_bytes / 1e6:.1f} MB bundle was received, verified, decrypted and re-sealed in RAM.",
        f"The watchlist adds {steady['rss_mb'] - before['rss_mb']:.1f} MB resident at steady state "
        f"({SUBJECTS:,} subjects, one 192-d embedding and one ~4.6 KB reference JPEG each).",
        f"The worst case for the unit file's MemoryMax: while the {SUBJECTS:,}-subject list was held, a replacement "
        f"of {limit['bundle_mb']:.1f} MiB (the largest under `watchlist.max_bundle_bytes` = {limit['limit_mb']:g} "
        f"MiB) was applied on top of it; the peak since start is then {limit['hwm_mb']:g} MB.",
        f"Camera: a replay of {scene['photos']} `wild/` photos at 25 fps, looping; {settle_s:g} s to settle "
        f"after READY and after the watchlist was applied, then {window_s:g} s of steady state; {where}.",
    ]
    plot = "memory.png"
    plot_trace(ctx, trace, applied_at, plot)
    return PartResult(
        "memory",
        True,
        data={"subjects": SUBJECTS, "scene": scene, "seed": ctx.seed, "measured_in": where, **held},
        table=table,
        plots=[plot],
        summary={
            "daemon_rss_mb_10k": steady["rss_peak_window_mb"],
            "daemon_rss_steady_mb_10k": steady["rss_mb"],
            "daemon_rss_peak_apply_mb_10k": steady["hwm_mb"],
            "daemon_rss_mb_no_watchlist": before["rss_mb"],
            "daemon_rss_peak_replace_at_limit_mb": limit["hwm_mb"],
            "bundle_limit_mb": limit["limit_mb"],
        },
        notes=notes,
    )


def plot_trace(ctx: BenchContext, trace: list[dict[str, Any]], applied_at: float, name: str) -> None:
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(8, 3.5))
    ax.plot([p["t"] for p in trace], [p["VmRSS"] for p in trace], marker="o", label="VmRSS")
    ax.plot([p["t"] for p in trace], [p["VmHWM"] for p in trace], linestyle="--", label="VmHWM (peak)")
    ax.axvline(applied_at, color="red", alpha=0.6, label=f"{SUBJECTS:,}-subject watchlist applied")
    ax.axhline(TARGET_MB, color="grey", linestyle=":", label=f"target {TARGET_MB:g} MB")
    ax.set_xlabel("seconds since READY")
    ax.set_ylabel("MB")
    ax.set_title("lfr-edge daemon resident memory")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(ctx.out_dir / name, dpi=100)
    plt.close(fig)
