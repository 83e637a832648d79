"""Synthetic watchlists held by the unit's own store (`lfr_edge.watchlist`), for search and scale runs.

The embeddings are random unit vectors (seeded): search cost depends on the matrix size, not on whose
faces they are. The store and bundle modules are imported at run time so that the bench still runs
(and says what it could not measure) on a checkout without them.
"""

from __future__ import annotations

import importlib
import time
from types import ModuleType
from typing import Any

import numpy as np
import numpy.typing as npt

DIM = 192
NOW = time.time()


class StoreUnavailable(RuntimeError):
    """The watchlist store is not in this checkout."""


def watchlist_module(name: str) -> ModuleType:
    try:
        return importlib.import_module(f"lfr_edge.watchlist.{name}")
    except ImportError as exc:
        raise StoreUnavailable(f"lfr_edge.watchlist.{name} is not in this checkout ({exc})") from exc


def unit_vectors(n: int, dim: int, seed: int) -> npt.NDArray[np.float32]:
    rng = np.random.default_rng(seed)
    out = np.empty((n, dim), dtype=np.float32)
    step = 65536
    for start in range(0, n, step):  # in slices, so 1M rows never need a float64 copy
        block = rng.standard_normal((min(step, n - start), dim), dtype=np.float32)
        block /= np.linalg.norm(block, axis=1, keepdims=True)
        out[start : start + len(block)] = block
    return out


def header(n: int, dim: int, model_id: str = "mobilefacenet/bench/000000000000") -> Any:
    bundle = watchlist_module("bundle")
    return bundle.BundleHeader("BENCH", "unit-bench", 1, NOW - 60, NOW - 60, NOW + 86400, 0.5, model_id, n, dim, 0, "")


def store_from_matrix(matrix: npt.NDArray[np.float32]) -> Any:
    """A WatchlistStore holding `matrix` (one row per subject), built with the store's own constructor."""
    store = watchlist_module("store")
    n = len(matrix)
    return store.WatchlistStore(header(n, matrix.shape[1]), matrix, np.arange(n, dtype=np.int32), [])


def search(store: Any, probes: npt.NDArray[np.float32], k: int = 3) -> tuple[Any, Any]:
    """The store's 1:N search, as the matcher calls it."""
    result = store.search(probes, NOW, k)
    return result.indices, result.scores
