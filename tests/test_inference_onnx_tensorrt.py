"""ONNX Runtime + TensorRT backend: a fake onnxruntime (providers, sessions) for the TensorRT behaviour, and
the real CPU onnxruntime wheel for the model path, with the CPU provider given explicitly (tests only)."""

from __future__ import annotations

import logging
import sys
import types
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from lfr_edge.config import InferenceConfig, parse_config
from lfr_edge.inference import BackendUnavailable, create_backend
from lfr_edge.inference.onnx_tensorrt import OnnxModel, OnnxTensorRTBackend, board_id
from lfr_edge.models import sha256_file

TRT, CUDA, CPU = "TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"


class NodeArg:
    def __init__(self, name: str, shape: list[Any], type: str) -> None:
        self.name, self.shape, self.type = name, shape, type


class FakeSession:
    """InferenceSession: providers that fail to load are dropped and the CPU added, as onnxruntime does."""

    made: list[FakeSession] = []  # noqa: RUF012

    def __init__(self, path: str, sess_options: Any = None, providers: Any = None) -> None:
        self.path, self.requested = path, list(providers or [])
        loadable = FakeOrt.loadable
        self.active = [name for name, _ in self.requested if name in loadable] + [CPU]
        FakeSession.made.append(self)

    def get_providers(self) -> list[str]:
        return self.active

    def get_inputs(self) -> list[NodeArg]:
        return [NodeArg("input", ["batch", 112, 112, 3], "tensor(float)")]

    def get_outputs(self) -> list[NodeArg]:
        return [NodeArg("embedding", ["batch", 192], "tensor(float)")]

    def run(self, output_names: list[str], input_feed: dict[str, np.ndarray]) -> list[np.ndarray]:
        x = input_feed["input"]
        return [np.repeat(x.reshape(len(x), -1).sum(axis=1, keepdims=True), 192, axis=1)]


class FakeOrt:
    available: set[str] = {TRT, CUDA, CPU}  # noqa: RUF012
    loadable: set[str] = {TRT, CUDA}  # noqa: RUF012


@pytest.fixture
def fake_ort(monkeypatch: pytest.MonkeyPatch) -> type[FakeOrt]:
    module = types.ModuleType("onnxruntime")
    vars(module).update(
        __version__="1.20.0",
        get_available_providers=lambda: sorted(FakeOrt.available),
        SessionOptions=types.SimpleNamespace,
        InferenceSession=FakeSession,
    )
    monkeypatch.setitem(sys.modules, "onnxruntime", module)
    monkeypatch.setattr(FakeOrt, "available", {TRT, CUDA, CPU})
    monkeypatch.setattr(FakeOrt, "loadable", {TRT, CUDA})
    FakeSession.made = []
    return FakeOrt


def model_file(tmp_path: Path, body: bytes = b"onnx model v1", name: str = "mobilefacenet.onnx") -> Path:
    path = tmp_path / name
    path.write_bytes(body)
    return path


def config(tmp_path: Path, **fields: Any) -> InferenceConfig:
    return InferenceConfig(backend="onnx-tensorrt", engine_cache_dir=tmp_path / "engines", **fields)


def test_tensorrt_session_gets_precision_and_a_cache_keyed_by_board_and_model_hash(
    fake_ort: type[FakeOrt], tmp_path: Path
) -> None:
    backend = create_backend(config(tmp_path, tensorrt_precision="fp16"))
    assert isinstance(backend, OnnxTensorRTBackend)
    path = model_file(tmp_path)
    model = backend.load(path)
    (name, options), *rest = FakeSession.made[0].requested
    assert name == TRT and rest == []  # no CUDA unless configured, never the CPU
    engine_dir = tmp_path / "engines" / board_id() / f"{sha256_file(path)[:16]}-ort1.20.0"
    assert options["trt_engine_cache_enable"] is True and options["trt_engine_cache_path"] == str(engine_dir)
    assert options["trt_fp16_enable"] is True and options["trt_int8_enable"] is False
    assert engine_dir.is_dir()
    assert model.inputs[0].shape == (-1, 112, 112, 3) and model.outputs[0].shape == (-1, 192)
    out = model.run(np.ones((2, 112, 112, 3), np.float32))
    assert out[0].shape == (2, 192) and out[0][0, 0] == 112 * 112 * 3


def test_a_changed_model_gets_a_new_engine_directory(fake_ort: type[FakeOrt], tmp_path: Path) -> None:
    backend = OnnxTensorRTBackend(tmp_path / "engines", "int8", board="jetson-orin-nano")
    backend.load(model_file(tmp_path, b"model v1", "a.onnx"))
    backend.load(model_file(tmp_path, b"model v1", "b.onnx"))
    backend.load(model_file(tmp_path, b"model v2", "c.onnx"))
    dirs = [s.requested[0][1]["trt_engine_cache_path"] for s in FakeSession.made]
    assert dirs[0] == dirs[1] != dirs[2]
    assert all(Path(d).parent == tmp_path / "engines" / "jetson-orin-nano" for d in dirs)
    assert Path(dirs[2]).name.startswith(sha256_file(tmp_path / "c.onnx")[:16])
    assert FakeSession.made[0].requested[0][1]["trt_int8_enable"] is True


def test_tensorrt_that_fails_to_load_is_refused_not_run_on_the_cpu(fake_ort: type[FakeOrt], tmp_path: Path) -> None:
    fake_ort.loadable = set()
    backend = create_backend(config(tmp_path))
    with pytest.raises(BackendUnavailable, match=r"would run it on CPUExecutionProvider.*refusing to fall back"):
        backend.load(model_file(tmp_path))


def test_cuda_is_used_only_when_configured_as_the_fallback(
    fake_ort: type[FakeOrt], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    fake_ort.loadable = {CUDA}
    with pytest.raises(BackendUnavailable):
        create_backend(config(tmp_path)).load(model_file(tmp_path))
    backend = create_backend(config(tmp_path, tensorrt_fallback="cuda"))
    with caplog.at_level(logging.WARNING):
        model = backend.load(model_file(tmp_path))
    assert [name for name, _ in FakeSession.made[-1].requested] == [TRT, CUDA]
    assert isinstance(model, OnnxModel) and model.provider == CUDA
    assert "TensorRT is not active" in caplog.text


def test_onnxruntime_without_tensorrt_is_refused_at_start(fake_ort: type[FakeOrt], tmp_path: Path) -> None:
    fake_ort.available = {CPU}
    with pytest.raises(BackendUnavailable, match=r"has none of TensorrtExecutionProvider.*onnxruntime-gpu"):
        create_backend(config(tmp_path))


def test_unwritable_engine_cache_names_the_config_key(fake_ort: type[FakeOrt], tmp_path: Path) -> None:
    blocker = tmp_path / "engines"
    blocker.write_text("a file where the cache directory should be")
    with pytest.raises(BackendUnavailable, match=r"inference\.engine_cache_dir: cannot create"):
        create_backend(config(tmp_path)).load(model_file(tmp_path))


def test_missing_onnxruntime_names_the_jetson_wheel(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    with pytest.raises(BackendUnavailable, match="onnxruntime-gpu wheel built for this JetPack"):
        create_backend(config(tmp_path))


def test_bad_precision_in_config_is_refused() -> None:
    with pytest.raises(ValueError, match=r"inference\.tensorrt_precision"):
        parse_config({"inference": {"backend": "onnx-tensorrt", "tensorrt_precision": "int4"}})


def tiny_onnx_model(path: Path) -> Path:
    onnx = pytest.importorskip("onnx")
    helper = onnx.helper
    x = helper.make_tensor_value_info("faces", onnx.TensorProto.FLOAT, ["n", 4])
    y = helper.make_tensor_value_info("scores", onnx.TensorProto.FLOAT, ["n", 4])
    two = helper.make_tensor("two", onnx.TensorProto.FLOAT, [1], [2.0])
    graph = helper.make_graph([helper.make_node("Mul", ["faces", "two"], ["scores"])], "g", [x], [y], [two])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


def test_real_onnxruntime_runs_a_model_with_an_explicit_cpu_provider(tmp_path: Path) -> None:
    pytest.importorskip("onnxruntime")
    path = tiny_onnx_model(tmp_path / "tiny.onnx")
    backend = OnnxTensorRTBackend(tmp_path / "engines", explicit_providers=[(CPU, {})], board="ci")
    model = backend.load(path)
    assert model.inputs[0].name == "faces" and model.inputs[0].shape == (-1, 4)
    out = model.run(np.arange(8, dtype=np.float32).reshape(2, 4))
    assert np.array_equal(out[0], np.arange(8, dtype=np.float32).reshape(2, 4) * 2)
    with pytest.raises(ValueError, match=r"wants shape \(-1, 4\)"):
        model.run(np.zeros((2, 5), np.float32))


def test_real_cpu_onnxruntime_is_not_accepted_as_tensorrt(tmp_path: Path) -> None:
    ort = pytest.importorskip("onnxruntime")
    if TRT in ort.get_available_providers():
        pytest.skip("this onnxruntime has TensorRT")
    with pytest.raises(BackendUnavailable, match="has none of TensorrtExecutionProvider"):
        create_backend(config(tmp_path))
