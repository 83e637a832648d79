"""`python -m lfr_bench.watchlist_scale`: apply time and memory of a 10,000-subject bundle, and 1:N search.

Prints median and p99 over several runs (a benchmark command, not a timed test). Targets: applying a
10,000-subject bundle (verify + decrypt + load) under 2 s and under 100 MB of extra memory.
"""

from __future__ import annotations

import argparse
import gc
import time
from pathlib import Path

import numpy as np
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from lfr_contracts import bundle
from lfr_edge.vision.image import encode_jpeg
from lfr_edge.watchlist.store import WatchlistStore

MODEL = "bench/model/000000000000"


def _status_kb(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


def _reset_peak() -> bool:
    try:
        Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM to the current RSS
        return True
    except OSError:
        return False


def _stats(samples_ms: list[float]) -> str:
    a = np.array(samples_ms)
    return f"median {np.median(a):.1f} ms, p99 {np.percentile(a, 99):.1f} ms (n={len(a)})"


def synthetic_subjects(n: int, dim: int) -> list[bundle.SubjectEntry]:
    rng = np.random.default_rng(0)
    emb = rng.standard_normal((n, dim)).astype(np.float32)
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    # a face-sized crop with smooth content, as a real reference crop compresses (noise would not)
    yy, xx = np.mgrid[0:112, 0:96]
    crop = np.stack([(xx * 2) % 256, (yy * 2) % 256, (xx + yy) % 256], axis=2).astype(np.uint8)
    jpeg = encode_jpeg(crop, quality=85)
    return [bundle.SubjectEntry(f"S{i:06d}", "wanted", f"case {i}", emb[i : i + 1], jpeg) for i in range(n)]


def bench_apply(n: int, dim: int, runs: int) -> None:
    centre, unit = Ed25519PrivateKey.generate(), X25519PrivateKey.generate()
    now = time.time()
    t0 = time.perf_counter()
    data = bundle.build_bundle(
        synthetic_subjects(n, dim), deployment="BENCH", unit_id="unit-a", unit_key=unit.public_key(),
        version=1, valid_from=now - 60, valid_until=now + 3600, threshold=0.5, model_id=MODEL,
        sign_key=centre, issued_at=now,
    )  # fmt: skip
    print(f"built a {n}-subject bundle (dim {dim}): {len(data) / 1e6:.1f} MB in {time.perf_counter() - t0:.2f} s")
    times, extra_mb = [], []
    for _ in range(runs):
        gc.collect()
        base = _status_kb("VmRSS")
        peak_ok = _reset_peak()
        t = time.perf_counter()
        opened = bundle.open_bundle(
            data, command_centre_key=centre.public_key(), unit_key=unit, unit_id="unit-a", model_id=MODEL,
            now=time.time(), history=bundle.AppliedHistory(), max_bytes=1 << 30,
        )  # fmt: skip
        store = WatchlistStore.from_opened(opened)
        opened.wipe()
        times.append((time.perf_counter() - t) * 1e3)
        extra_mb.append(((_status_kb("VmHWM") if peak_ok else _status_kb("VmRSS")) - base) / 1024)
        store.wipe()
        del opened, store
    print(f"apply (verify + decrypt + load) {n} subjects: {_stats(times)}")
    a = np.array(extra_mb)
    print(f"extra RSS while applying (peak): median {np.median(a):.1f} MB, max {a.max():.1f} MB")


def bench_search(n: int, dim: int, runs: int) -> None:
    rng = np.random.default_rng(1)
    matrix = rng.standard_normal((n, dim)).astype(np.float32)
    now = time.time()
    header = bundle.BundleHeader("BENCH", "unit-a", 1, now, now - 60, now + 3600, 0.5, MODEL, n, dim, 1, "")
    store = WatchlistStore(header, matrix, np.arange(n, dtype=np.int32), [])
    del matrix
    probes = rng.standard_normal((runs, dim)).astype(np.float32)
    probes /= np.linalg.norm(probes, axis=1, keepdims=True)
    store.search(probes[:1], now)  # warm-up
    times = []
    for i in range(runs):
        t = time.perf_counter()
        store.search(probes[i : i + 1], now, k=3)
        times.append((time.perf_counter() - t) * 1e3)
    print(f"search 1 probe vs {n} subjects: {_stats(times)}")
    store.wipe()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--subjects", type=int, default=10_000)
    parser.add_argument("--dim", type=int, default=192)
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--search-runs", type=int, default=200)
    args = parser.parse_args()
    bench_apply(args.subjects, args.dim, args.runs)
    for n in (100_000, 1_000_000):
        bench_search(n, args.dim, args.search_runs if n < 1_000_000 else max(20, args.search_runs // 10))


if __name__ == "__main__":
    main()
