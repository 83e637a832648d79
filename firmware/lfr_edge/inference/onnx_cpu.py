"""ONNX Runtime on the CPU: runs the models published only as ONNX (YuNet, SFace) and the ONNX exports.

Inputs and outputs go through IOBinding into numpy buffers this backend owns: the input is read where the
caller holds it (or from one conversion buffer), the model writes its outputs straight into preallocated
arrays, and every buffer is zeroed after each run, so no copy of a face or an embedding is left in them.
Its arena holds the last run's activations until the next: the embedder's `scrub()` overwrites them. Thread
spinning is off: on a two-core unit a spinning idle pool takes the core the other stage needs.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from lfr_edge.config import InferenceConfig
from lfr_edge.inference.base import BackendUnavailable, ModelTensors, TensorSpec
from lfr_edge.inference.onnx_tensorrt import DTYPES

CPU = "CPUExecutionProvider"
FloatArray = npt.NDArray[np.float32]


def import_onnxruntime() -> Any:
    try:
        import onnxruntime
    except ImportError:
        raise BackendUnavailable(
            "onnxruntime is missing: install the version requirements.lock pins (`pip install onnxruntime`; "
            "wheels exist for x86_64 and aarch64)"
        ) from None
    return onnxruntime


class OrtCpuModel(ModelTensors):
    """One session; outputs bound to arrays allocated once per input shape (a blank run learns the shapes)."""

    def __init__(self, session: Any) -> None:
        self._session = session
        self._inputs = tuple(_spec(a) for a in session.get_inputs())
        self._outputs = tuple(_spec(a) for a in session.get_outputs())
        self._bound: dict[tuple[tuple[int, ...], ...], tuple[Any, list[FloatArray], list[FloatArray]]] = {}

    def _binding(self, shapes: tuple[tuple[int, ...], ...]) -> tuple[Any, list[FloatArray], list[FloatArray]]:
        """(IOBinding, input conversion buffers, output buffers) for inputs of these shapes."""
        if shapes not in self._bound:
            blanks = {s.name: np.zeros(shape, s.dtype) for s, shape in zip(self._inputs, shapes, strict=True)}
            shaped = self._session.run(None, blanks)  # nobody's face: only to learn the output shapes
            outs = [np.zeros(o.shape, np.float32) for o in shaped]
            binding = self._session.io_binding()
            for spec, out in zip(self._outputs, outs, strict=True):
                binding.bind_output(spec.name, "cpu", 0, np.float32, out.shape, out.ctypes.data)
            ins = [np.zeros(shape, s.dtype) for s, shape in zip(self._inputs, shapes, strict=True)]
            self._bound[shapes] = (binding, ins, outs)
        return self._bound[shapes]

    def run(self, *inputs: FloatArray) -> list[FloatArray]:
        """Run once; returns copies of the outputs. The bound input and output buffers are zeroed."""
        checked = self.checked(inputs)
        binding, ins, outs = self._binding(tuple(tuple(a.shape) for _, a in checked))
        try:
            for (spec, array), buffer in zip(checked, ins, strict=True):
                fed = array
                if array.dtype != spec.dtype or not array.flags.c_contiguous:
                    np.copyto(buffer, array, casting="unsafe")
                    fed = buffer
                binding.bind_cpu_input(spec.name, fed)
            self._session.run_with_iobinding(binding)
            return [out.copy() for out in outs]
        finally:
            for buffer in (*ins, *outs):
                buffer.fill(0)


def _spec(arg: Any) -> TensorSpec:
    shape = tuple(d if isinstance(d, int) else -1 for d in arg.shape)  # -1: a dynamic dimension
    if arg.type != "tensor(float)":
        raise ValueError(f"tensor {arg.name!r} has type {arg.type}; the onnx-cpu backend feeds float32 only")
    return TensorSpec(arg.name, shape, np.dtype(DTYPES[arg.type]))


class OnnxCpuBackend:
    name = "onnx-cpu"

    def __init__(self, threads: int) -> None:
        self._ort = import_onnxruntime()  # fail now, with the fix, if the runtime is not installed
        self.threads = threads

    def load(self, model_path: Path) -> OrtCpuModel:
        options = self._ort.SessionOptions()
        options.intra_op_num_threads = self.threads
        options.inter_op_num_threads = 1
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        try:
            session = self._ort.InferenceSession(str(model_path), options, providers=[CPU])
        except Exception as exc:  # onnxruntime raises its own Fail/InvalidGraph/... exceptions
            raise ValueError(f"{model_path}: ONNX Runtime cannot load this model ({exc})") from exc
        return OrtCpuModel(session)

    def describe(self) -> str:
        return f"onnx-cpu (onnxruntime {self._ort.__version__}, {self.threads} threads)"


def create(cfg: InferenceConfig) -> OnnxCpuBackend:
    return OnnxCpuBackend(cfg.threads)
