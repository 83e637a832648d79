"""EdgeTPU and GPU LiteRT backends: a fake interpreter/delegate loader with LiteRT's names, and the real
LiteRT runtime for the missing-library messages (neither delegate library exists on these machines)."""

from __future__ import annotations

import sys
import types
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from lfr_edge.config import InferenceConfig
from lfr_edge.inference import BackendUnavailable, create_backend
from lfr_edge.inference.litert_edgetpu import EdgeTpuBackend
from lfr_edge.inference.litert_gpu import LiteRTGpuBackend


class FakeDelegate:
    def __init__(self, library: str, options: dict[str, Any]) -> None:
        self.library, self.options = library, options


class FakeInterpreter:
    """ai_edge_litert.interpreter.Interpreter's surface used by LiteRTModel; the model doubles its input."""

    made: list[FakeInterpreter] = []  # noqa: RUF012

    def __init__(self, model_path: str, num_threads: int, experimental_delegates: Any = None) -> None:
        self.model_path, self.num_threads, self.delegates = model_path, num_threads, experimental_delegates
        self.tensors: dict[int, np.ndarray] = {}
        FakeInterpreter.made.append(self)

    def allocate_tensors(self) -> None:
        pass

    def get_input_details(self) -> list[dict[str, Any]]:
        return [{"name": "input", "index": 0, "shape": np.array([1, 4, 4, 3]), "dtype": np.float32}]

    def get_output_details(self) -> list[dict[str, Any]]:
        return [{"name": "output", "index": 1, "shape": np.array([1, 4, 4, 3]), "dtype": np.float32}]

    def set_tensor(self, index: int, value: np.ndarray) -> None:
        self.tensors[index] = np.array(value)  # the interpreter copies into its own buffer

    def invoke(self) -> None:
        self.tensors[1] = self.tensors[0] * 2

    def get_tensor(self, index: int) -> np.ndarray:
        return np.array(self.tensors[index])

    def tensor(self, index: int) -> Any:
        """A function returning a view of the interpreter's own buffer (LiteRTModel zeroes it after run)."""
        return lambda: self.tensors.setdefault(index, np.zeros((1, 4, 4, 3), np.float32))


@pytest.fixture
def fake_litert(monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    state: dict[str, Any] = {"present": {"libedgetpu.so.1", "libtensorflowlite_gpu_delegate.so"}, "loads": []}

    def load_delegate(library: str, options: dict[str, Any] | None = None) -> FakeDelegate:
        if library not in state["present"]:
            raise ValueError(f"Failed to load delegate from {library}\n")
        state["loads"].append((library, options))
        return FakeDelegate(library, options or {})

    module = types.ModuleType("ai_edge_litert.interpreter")
    vars(module).update(Interpreter=FakeInterpreter, load_delegate=load_delegate)
    monkeypatch.setitem(sys.modules, "ai_edge_litert.interpreter", module)
    FakeInterpreter.made = []
    return state


def compiled_model(tmp_path: Path, compiled: bool = True) -> Path:
    path = tmp_path / ("face_edgetpu.tflite" if compiled else "face_int8.tflite")
    body = b"TFL3....edgetpu-custom-op...." if compiled else b"TFL3....CONV_2D...."
    path.write_bytes(body)
    return path


def test_edgetpu_is_selected_by_config_and_binds_the_configured_device(
    fake_litert: dict[str, Any], tmp_path: Path
) -> None:
    backend = create_backend(InferenceConfig(backend="litert-edgetpu", device="usb:0", threads=1))
    assert isinstance(backend, EdgeTpuBackend)
    model = backend.load(compiled_model(tmp_path))
    second = backend.load(compiled_model(tmp_path))
    assert fake_litert["loads"] == [("libedgetpu.so.1", {"device": "usb:0"})] * 2
    first_it, second_it = FakeInterpreter.made
    assert first_it.delegates[0] is not second_it.delegates[0]  # one delegate per interpreter
    assert first_it.num_threads == 1
    assert model.inputs[0].shape == (1, 4, 4, 3) and model.outputs[0].shape == (1, 4, 4, 3)
    out = model.run(np.ones((1, 4, 4, 3), np.float32))
    assert np.all(out[0] == 2.0)
    assert "usb:0" in backend.describe()
    del second


def test_edgetpu_refuses_a_model_not_compiled_for_it(fake_litert: dict[str, Any], tmp_path: Path) -> None:
    backend = create_backend(InferenceConfig(backend="litert-edgetpu"))
    with pytest.raises(ValueError, match=r"not compiled for the EdgeTPU.*edgetpu_compiler.*_edgetpu\.tflite"):
        backend.load(compiled_model(tmp_path, compiled=False))
    assert FakeInterpreter.made == []
    assert fake_litert["loads"] == [("libedgetpu.so.1", {})]


@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")  # LiteRT Delegate.__del__ bug
def test_edgetpu_without_libedgetpu_names_the_debian_package_and_repository() -> None:
    with pytest.raises(BackendUnavailable, match=r"libedgetpu\.so\.1.*Coral apt repository.*libedgetpu1-std"):
        create_backend(InferenceConfig(backend="litert-edgetpu"))


def test_gpu_delegate_is_loaded_by_the_configured_library_name(fake_litert: dict[str, Any], tmp_path: Path) -> None:
    fake_litert["present"].add("/opt/litert/libgpu.so")
    backend = create_backend(InferenceConfig(backend="litert-gpu", gpu_delegate_library="/opt/litert/libgpu.so"))
    assert isinstance(backend, LiteRTGpuBackend)
    model = backend.load(compiled_model(tmp_path, compiled=False))
    assert fake_litert["loads"] == [("/opt/litert/libgpu.so", None)]
    assert FakeInterpreter.made[0].delegates[0].library == "/opt/litert/libgpu.so"
    assert model.outputs[0].name == "output"


@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")  # LiteRT Delegate.__del__ bug
def test_gpu_without_its_delegate_library_stops_instead_of_using_the_cpu() -> None:
    with pytest.raises(BackendUnavailable, match=r"'libmissing_gpu\.so'.*no silent CPU fallback"):
        create_backend(InferenceConfig(backend="litert-gpu", gpu_delegate_library="libmissing_gpu.so"))
