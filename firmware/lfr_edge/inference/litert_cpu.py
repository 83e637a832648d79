"""LiteRT on the CPU with XNNPACK (the default backend, and the one CI runs)."""

from __future__ import annotations

from pathlib import Path

from lfr_edge.config import InferenceConfig
from lfr_edge.inference.litert import LiteRTModel, import_interpreter, load_model


class LiteRTCpuBackend:
    name = "litert-cpu"

    def __init__(self, threads: int) -> None:
        _, _, self._runtime = import_interpreter()  # fail now, with the fix, if no runtime is installed
        self.threads = threads

    def load(self, model_path: Path) -> LiteRTModel:
        return load_model(model_path, self.threads)

    def describe(self) -> str:
        return f"litert-cpu ({self._runtime}, XNNPACK, {self.threads} threads)"


def create(cfg: InferenceConfig) -> LiteRTCpuBackend:
    return LiteRTCpuBackend(cfg.threads)
