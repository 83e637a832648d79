"""LiteRT with its GPU delegate (OpenCL / OpenGL ES), loaded by name from `inference.gpu_delegate_library`.

The delegate library is not part of the ai-edge-litert wheel: it is built for the board. If it cannot be
loaded the backend stops with the fix; it never falls back to the CPU on its own.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from lfr_edge.config import InferenceConfig
from lfr_edge.inference.base import BackendUnavailable
from lfr_edge.inference.litert import LiteRTModel, import_interpreter, load_model


class LiteRTGpuBackend:
    name = "litert-gpu"

    def __init__(self, threads: int, library: str) -> None:
        _, self._load_delegate, self._runtime = import_interpreter()
        self.threads = threads
        self.library = library
        self._spare: Any = self._delegate()  # fail now, with the fix, if the library is missing

    def _delegate(self) -> Any:
        try:
            return self._load_delegate(self.library)
        except (ValueError, OSError) as exc:
            raise BackendUnavailable(
                f"cannot load the LiteRT GPU delegate {self.library!r} ({exc}). Build "
                "libtensorflowlite_gpu_delegate.so for this board from the LiteRT sources (bazel target "
                "tflite/delegates/gpu:libtensorflowlite_gpu_delegate.so) with its OpenCL or OpenGL ES driver "
                "installed, then put it on the library path or set inference.gpu_delegate_library to its "
                "full path. There is no silent CPU fallback: "
                'set inference.backend = "litert-cpu" to run on the CPU.'
            ) from None

    def load(self, model_path: Path) -> LiteRTModel:
        delegate, self._spare = (self._spare, None) if self._spare is not None else (self._delegate(), None)
        return load_model(model_path, self.threads, [delegate])

    def describe(self) -> str:
        return f"litert-gpu ({self._runtime}, delegate {self.library})"


def create(cfg: InferenceConfig) -> LiteRTGpuBackend:
    return LiteRTGpuBackend(cfg.threads, cfg.gpu_delegate_library)
