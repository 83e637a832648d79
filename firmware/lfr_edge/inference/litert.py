"""Shared LiteRT interpreter wrapper: the CPU, EdgeTPU and GPU backends differ only in their delegate."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from lfr_edge.inference.base import BackendUnavailable, ModelTensors, TensorSpec


def import_interpreter() -> tuple[Any, Any, str]:
    """(Interpreter class, load_delegate, runtime name): ai-edge-litert, else tflite-runtime."""
    try:
        from ai_edge_litert.interpreter import Interpreter, load_delegate

        return Interpreter, load_delegate, "ai-edge-litert"
    except ImportError:
        pass
    try:
        from tflite_runtime.interpreter import Interpreter, load_delegate  # pragma: no cover

        return Interpreter, load_delegate, "tflite-runtime"  # pragma: no cover
    except ImportError:
        raise BackendUnavailable(
            "no LiteRT runtime: install the Python package ai-edge-litert (pip install ai-edge-litert), "
            "or tflite-runtime on boards without an ai-edge-litert wheel"
        ) from None


class LiteRTModel(ModelTensors):
    """One interpreter per model; not thread-safe (each pipeline thread loads its own)."""

    def __init__(self, interpreter: Any) -> None:
        self._it = interpreter
        self._it.allocate_tensors()
        self._in = self._it.get_input_details()
        self._out = self._it.get_output_details()
        self._inputs = tuple(TensorSpec(d["name"], tuple(int(x) for x in d["shape"]), d["dtype"]) for d in self._in)
        self._outputs = tuple(TensorSpec(d["name"], tuple(int(x) for x in d["shape"]), d["dtype"]) for d in self._out)

    def run(self, *inputs: npt.NDArray[np.float32]) -> list[npt.NDArray[np.float32]]:
        """Run once; the outputs are the only copies: the interpreter's input and output buffers are zeroed
        (a frame, a face crop or an embedding must not stay in them until the next call)."""
        try:
            for detail, (spec, array) in zip(self._in, self.checked(inputs), strict=True):
                data = np.ascontiguousarray(array, dtype=spec.dtype)
                self._it.set_tensor(detail["index"], data)
                if data is not array:
                    data.fill(0)  # a converted copy
            self._it.invoke()
            return [np.array(self._it.tensor(d["index"])(), dtype=np.float32) for d in self._out]
        finally:
            for detail in (*self._in, *self._out):
                self._it.tensor(detail["index"])().fill(0)


def load_model(model_path: Path, threads: int, delegates: list[Any] | None = None) -> LiteRTModel:
    interpreter_cls, _, _ = import_interpreter()
    try:
        it = interpreter_cls(model_path=str(model_path), num_threads=threads, experimental_delegates=delegates or None)
    except ValueError as exc:
        raise ValueError(f"{model_path}: LiteRT cannot load this model ({exc})") from exc
    return LiteRTModel(it)
