"""Watchlist scale: 1k to 1M subjects held by the unit's store, each size in a fresh process.

Per size: a real bundle (signed and sealed by the command centre's code, random unit embeddings, a tiny
photo each) is applied through `WatchlistSync.handle_message` (verify, decrypt, store) and timed; the
store's resident memory is the process's VmRSS after apply (bundle freed) minus before the bundle was
made; then single-probe top-3 searches are timed. Where building a bundle of that size would take too
long (1M in quick mode) the store is built from the matrix directly and apply is not timed.
"""

from __future__ import annotations

import gc
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from lfr_bench import watchlists
from lfr_bench.common import BenchContext, PartResult, format_table, ms_stats, not_measured, pyplot
from lfr_bench.procstat import memory_mb
from lfr_contracts.audit_events import AuditEvent

SIZES = (1_000, 10_000, 100_000, 1_000_000)
SUMMARY_KEYS = ("search_ms_1m", "search_ms_10k", "apply_s_100k")


def child(n: int, mode: str, seed: int, searches: int) -> dict[str, Any]:
    """One size in this process: apply (mode "bundle") or direct store ("matrix"), then searches."""
    gc.collect()
    base = memory_mb()["VmRSS"]
    matrix = watchlists.unit_vectors(n, watchlists.DIM, seed)
    apply_s = None
    if mode == "bundle":
        store, apply_s, bundle_mb = _apply_bundle(matrix)
    else:
        store, bundle_mb = watchlists.store_from_matrix(matrix), None
    del matrix
    gc.collect()
    after = memory_mb()
    probes = watchlists.unit_vectors(searches + 5, watchlists.DIM, seed + 1)
    samples = []
    for i in range(len(probes)):
        t0 = time.perf_counter()
        watchlists.search(store, probes[i : i + 1])
        if i >= 5:  # the first searches warm caches
            samples.append((time.perf_counter() - t0) * 1e3)
    return {
        "subjects": n,
        "mode": mode,
        "apply_s": apply_s,
        "bundle_mb": bundle_mb,
        "rss_before_mb": base,
        "rss_after_apply_mb": after["VmRSS"],
        "store_mb": round(after["VmRSS"] - base, 1),
        "peak_rss_mb": after["VmHWM"],
        "search": ms_stats(samples),
    }


def _apply_bundle(matrix: np.ndarray) -> tuple[Any, float, float]:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

    bundle = watchlists.watchlist_module("bundle")
    sync_mod = watchlists.watchlist_module("sync")
    centre, unit = Ed25519PrivateKey.generate(), X25519PrivateKey.generate()
    model_id = "mobilefacenet/bench/000000000000"
    photo = b"\xff\xd8" + bytes(300)  # a reference photo's worth of bytes
    subjects = [bundle.SubjectEntry(f"S{i:07d}", "wanted", "", matrix[i : i + 1], photo) for i in range(len(matrix))]
    now = watchlists.NOW
    payload = bundle.build_bundle(
        subjects, deployment="BENCH", unit_id="unit-bench", unit_key=unit.public_key(), version=1,
        valid_from=now - 60, valid_until=now + 86400, threshold=0.5, model_id=model_id,
        sign_key=centre, issued_at=now - 60,
    )  # fmt: skip
    del subjects
    size_mb = round(len(payload) / 2**20, 1)

    class Audit:
        def append(self, event: AuditEvent) -> None:
            pass

    sync = sync_mod.WatchlistSync(
        unit_id="unit-bench", model_id=model_id, command_centre_key=centre.public_key(), unit_key=unit,
        max_bundle_bytes=len(payload) + 1, ack_topic="bench/ack", publish=lambda t, p: True, audit=Audit(),
        record=watchlists.watchlist_module("lifecycle").LifecycleFile(
            Path(tempfile.mkdtemp(prefix="lfr-bench-")) / "lifecycle.json", "unit-bench", centre
        ),
    )  # fmt: skip
    t0 = time.perf_counter()
    sync.handle_message("bench/watchlist", payload)
    apply_s = time.perf_counter() - t0
    del payload
    if sync.store is None:
        raise RuntimeError("the bench bundle was refused")
    return sync.store, round(apply_s, 3), size_mb


def run(ctx: BenchContext) -> PartResult:
    try:
        watchlists.watchlist_module("store")
        watchlists.watchlist_module("sync")
    except watchlists.StoreUnavailable as exc:
        return not_measured("scale", str(exc), SUMMARY_KEYS)
    searches = 30 if ctx.quick else 200
    rows: list[dict[str, Any]] = []
    for n in SIZES:
        mode = "matrix" if ctx.quick and n >= 1_000_000 else "bundle"
        cmd = [sys.executable, "-m", "lfr_bench.scale", str(n), mode, str(ctx.seed), str(searches)]
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=1800)
        if done.returncode != 0:
            tail = " / ".join(done.stderr.strip().splitlines()[-2:])
            rows.append({"subjects": n, "mode": mode, "error": tail})
            continue
        rows.append(json.loads(done.stdout.strip().splitlines()[-1]))
    ok = {r["subjects"]: r for r in rows if "error" not in r}
    summary: dict[str, float | None] = {
        "search_ms_1m": ok[1_000_000]["search"]["median_ms"] if 1_000_000 in ok else None,
        "search_ms_10k": ok[10_000]["search"]["median_ms"] if 10_000 in ok else None,
        "apply_s_100k": ok[100_000]["apply_s"] if 100_000 in ok else None,
    }
    table = format_table(
        ["subjects", "how", "bundle MB", "apply s", "store MB", "peak RSS MB", "search med/p99 ms"],
        [
            [r["subjects"], r["mode"], "-", "-", "-", "-", r["error"]]
            if "error" in r
            else [r["subjects"], r["mode"], r["bundle_mb"], r["apply_s"], r["store_mb"], r["peak_rss_mb"],
                  f"{r['search']['median_ms']:.2f}/{r['search']['p99_ms']:.2f}"]
            for r in rows
        ],
    )  # fmt: skip
    plots = [_plot(ctx, list(ok.values()))] if ok else []
    notes = [
        "apply = verify signature + decrypt + build the locked store (WatchlistSync.handle_message)",
        f"search: one probe per call, top-3, {searches} calls; embeddings are seeded random unit vectors",
    ]
    if ctx.quick:
        notes.append("quick mode: the 1M store is built from its matrix directly (apply not timed)")
    return PartResult("scale", True, data={"rows": rows, "dim": watchlists.DIM}, table=table, plots=plots,
                      summary=summary, notes=notes)  # fmt: skip


def _plot(ctx: BenchContext, rows: list[dict[str, Any]]) -> str:
    plt = pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    n = [r["subjects"] for r in rows]
    axes[0].plot(n, [r["search"]["median_ms"] for r in rows], marker="o", label="median")
    axes[0].plot(n, [r["search"]["p99_ms"] for r in rows], marker="o", label="p99")
    axes[0].axhline(50, color="grey", linestyle="--", label="target at 1M (50 ms)")
    axes[0].set_ylabel("search ms per probe")
    axes[1].plot(n, [r["store_mb"] for r in rows], marker="o", label="store (RSS delta)")
    axes[1].plot(n, [r["peak_rss_mb"] for r in rows], marker="o", label="peak RSS of the process")
    axes[1].set_ylabel("MB")
    for ax in axes:
        ax.set_xscale("log")
        ax.set_xlabel("watchlist subjects")
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    path = ctx.out_dir / "scale.png"
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path.name


if __name__ == "__main__":
    size, how, seed_arg, count = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4]
    print(json.dumps(child(int(size), how, int(seed_arg), int(count))))
