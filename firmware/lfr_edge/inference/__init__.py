"""Inference backends, one file each, chosen by `inference.backend` in the config."""

from __future__ import annotations

import importlib

from threadpoolctl import threadpool_limits

from lfr_edge.config import InferenceConfig
from lfr_edge.inference.base import Backend, BackendUnavailable, LoadedModel, TensorSpec

# config key -> module in this package that defines `create(cfg) -> Backend`
BACKENDS: dict[str, str] = {
    "litert-cpu": "litert_cpu",
    "litert-edgetpu": "litert_edgetpu",
    "litert-gpu": "litert_gpu",
    "hailo": "hailo",
    "onnx-tensorrt": "onnx_tensorrt",
    "onnx-cpu": "onnx_cpu",
}


def create_backend(cfg: InferenceConfig) -> Backend:
    """Import and build the configured backend (and only that one). numpy's BLAS gets one thread: the
    watchlist search's threads spun after each search, 0.4 of a core in a crowd (bench part crowd)."""
    threadpool_limits(1, user_api="blas")
    try:
        module_name = BACKENDS[cfg.backend]
    except KeyError:
        raise BackendUnavailable(
            f"inference.backend {cfg.backend!r} is unknown (known: {', '.join(BACKENDS)})"
        ) from None
    module = importlib.import_module(f"{__name__}.{module_name}")
    backend: Backend = module.create(cfg)
    return backend


__all__ = ["BACKENDS", "Backend", "BackendUnavailable", "LoadedModel", "TensorSpec", "create_backend"]
