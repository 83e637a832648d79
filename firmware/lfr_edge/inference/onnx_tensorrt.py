"""ONNX Runtime with TensorRT on a Jetson, the engine cached per board and model hash.

TensorRT builds an engine for the exact GPU, TensorRT version and model on first load (minutes); it is
cached under `inference.engine_cache_dir/<board>/<model sha256 prefix>-<runtime versions>/`, so a new model
file, another board, or an upgraded onnxruntime/TensorRT (a new JetPack) gets a fresh engine.
`inference.tensorrt_precision` picks fp32, fp16 or int8 (int8 needs a QDQ-quantised ONNX model).

The session must really run on TensorRT, or on CUDA when `inference.tensorrt_fallback = "cuda"` says so:
ONNX Runtime quietly drops a provider it cannot load and runs on the CPU, so the active providers are
checked after loading and anything else is refused.
"""

from __future__ import annotations

import logging
import platform
import re
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from lfr_edge.config import InferenceConfig
from lfr_edge.inference.base import BackendUnavailable, ModelTensors, TensorSpec
from lfr_edge.models import sha256_file

log = logging.getLogger(__name__)

TENSORRT = "TensorrtExecutionProvider"
CUDA = "CUDAExecutionProvider"
DTYPES = {
    "tensor(float)": np.float32,
    "tensor(float16)": np.float16,
    "tensor(uint8)": np.uint8,
    "tensor(int8)": np.int8,
    "tensor(int32)": np.int32,
    "tensor(int64)": np.int64,
}


def import_onnxruntime() -> Any:
    try:
        import onnxruntime
    except ImportError:
        raise BackendUnavailable(
            "onnxruntime is missing: install the onnxruntime-gpu wheel built for this JetPack (NVIDIA "
            "publishes them for Jetson); the generic CPU wheel has no TensorRT provider"
        ) from None
    return onnxruntime


def board_id() -> str:
    """A file-name-safe name of this board (the device-tree model on a Jetson), for the engine cache."""
    try:
        model = Path("/proc/device-tree/model").read_text().strip("\x00\n ")
    except OSError:
        model = f"{platform.machine()}-{platform.node()}"
    return re.sub(r"[^A-Za-z0-9._-]+", "-", model).strip("-") or "unknown-board"


def runtime_tag(ort: Any) -> str:
    """The runtime versions an engine is only valid for."""
    try:
        import tensorrt

        trt_version = f"-trt{tensorrt.__version__}"
    except ImportError:
        trt_version = ""
    return f"ort{ort.__version__}{trt_version}"


class OnnxModel(ModelTensors):
    def __init__(self, session: Any, provider: str) -> None:
        self._session = session
        self.provider = provider
        self._inputs = tuple(self._spec(a) for a in session.get_inputs())
        self._outputs = tuple(self._spec(a) for a in session.get_outputs())

    @staticmethod
    def _spec(arg: Any) -> TensorSpec:
        shape = tuple(d if isinstance(d, int) else -1 for d in arg.shape)  # -1: a dynamic dimension
        if arg.type not in DTYPES:
            raise ValueError(f"tensor {arg.name!r} has type {arg.type}, which this backend does not feed")
        return TensorSpec(arg.name, shape, np.dtype(DTYPES[arg.type]))

    def run(self, *inputs: npt.NDArray[np.float32]) -> list[npt.NDArray[np.float32]]:
        checked = self.checked(inputs)
        feed = {spec.name: np.ascontiguousarray(array, dtype=spec.dtype) for spec, array in checked}
        try:
            outputs = self._session.run([o.name for o in self._outputs], feed)
        finally:
            for spec, array in checked:
                if feed[spec.name] is not array:
                    feed[spec.name].fill(0)  # a converted copy of a frame or a face
        # ONNX Runtime hands over fresh arrays: float32 ones are returned as they are (no second copy).
        return [np.asarray(o, dtype=np.float32) for o in outputs]


class OnnxTensorRTBackend:
    name = "onnx-tensorrt"

    def __init__(
        self,
        cache_dir: Path,
        precision: str = "fp16",
        fallback: str = "none",
        board: str | None = None,
        device_id: int = 0,
        explicit_providers: list[tuple[str, dict[str, Any]]] | None = None,
    ) -> None:
        """`explicit_providers` replaces TensorRT/CUDA with exactly these providers (tests only)."""
        self._ort = import_onnxruntime()
        self.cache_dir = cache_dir
        self.precision = precision
        self.fallback = fallback
        self.board = board or board_id()
        self.device_id = device_id
        self._explicit = explicit_providers
        available = set(self._ort.get_available_providers())
        wanted = [p for p, _ in explicit_providers] if explicit_providers else self._allowed()
        if not available & set(wanted):
            raise BackendUnavailable(
                f"onnxruntime {self._ort.__version__} has none of {', '.join(wanted)} (it has "
                f"{', '.join(sorted(available))}): install the onnxruntime-gpu wheel built for this JetPack"
            )

    def _allowed(self) -> list[str]:
        return [TENSORRT, CUDA] if self.fallback == "cuda" else [TENSORRT]

    def engine_dir(self, model_sha256: str) -> Path:
        return self.cache_dir / self.board / f"{model_sha256[:16]}-{runtime_tag(self._ort)}"

    def providers(self, engine_dir: Path) -> list[tuple[str, dict[str, Any]]]:
        if self._explicit is not None:
            return self._explicit
        tensorrt = {
            "device_id": self.device_id,
            "trt_fp16_enable": self.precision in ("fp16", "int8"),
            "trt_int8_enable": self.precision == "int8",
            "trt_engine_cache_enable": True,
            "trt_engine_cache_path": str(engine_dir),
            "trt_timing_cache_enable": True,
            "trt_timing_cache_path": str(engine_dir),
        }
        chosen: list[tuple[str, dict[str, Any]]] = [(TENSORRT, tensorrt)]
        if self.fallback == "cuda":
            chosen.append((CUDA, {"device_id": self.device_id}))
        available = set(self._ort.get_available_providers())
        return [(name, options) for name, options in chosen if name in available]

    def load(self, model_path: Path) -> OnnxModel:
        engine_dir = self.engine_dir(sha256_file(model_path))
        try:
            engine_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise BackendUnavailable(
                f"inference.engine_cache_dir: cannot create {engine_dir} ({exc.strerror})"
            ) from exc
        options = self._ort.SessionOptions()
        try:
            session = self._ort.InferenceSession(
                str(model_path), sess_options=options, providers=self.providers(engine_dir)
            )
        except Exception as exc:  # onnxruntime raises its own Fail/InvalidGraph/... exceptions
            raise ValueError(f"{model_path}: ONNX Runtime cannot load this model ({exc})") from exc
        active = list(session.get_providers())
        allowed = [p for p, _ in self._explicit] if self._explicit else self._allowed()
        if not active or active[0] not in allowed:
            raise BackendUnavailable(
                f"{model_path.name}: ONNX Runtime would run it on {', '.join(active) or 'nothing'}, not on "
                f"{' or '.join(allowed)}; refusing to fall back (check the CUDA and TensorRT libraries)"
            )
        if active[0] != allowed[0]:
            log.warning("%s: TensorRT is not active; running on %s as configured", model_path.name, active[0])
        return OnnxModel(session, active[0])

    def describe(self) -> str:
        return (
            f"onnx-tensorrt (onnxruntime {self._ort.__version__}, {self.precision}, "
            f"fallback {self.fallback}, engines in {self.cache_dir / self.board})"
        )


def create(cfg: InferenceConfig) -> OnnxTensorRTBackend:
    return OnnxTensorRTBackend(cfg.engine_cache_dir, cfg.tensorrt_precision, cfg.tensorrt_fallback)
