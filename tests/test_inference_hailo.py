"""Hailo backend against a fake `hailo_platform` with HailoRT's names, arguments and return shapes."""

from __future__ import annotations

import sys
import types
from enum import Enum
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from lfr_edge.config import InferenceConfig
from lfr_edge.inference import BackendUnavailable, LoadedModel, create_backend
from lfr_edge.inference.hailo import HailoBackend, HailoModel


class FormatType(Enum):
    AUTO = 0
    UINT8 = 1
    FLOAT32 = 3


class HailoStreamInterface(Enum):
    PCIe = 0
    ETH = 1


class HailoSchedulingAlgorithm(Enum):
    NONE = 0
    ROUND_ROBIN = 1


class VStreamInfo:
    def __init__(self, name: str, shape: tuple[int, ...]) -> None:
        self.name, self.shape = name, shape
        self.format = types.SimpleNamespace(type=FormatType.UINT8)


class HEF:
    def __init__(self, hef_source: str) -> None:
        if not Path(hef_source).read_bytes().startswith(b"HEF"):
            raise RuntimeError("HEF file is corrupted")  # HailoRTInvalidHEFException in HailoRT
        self.path = hef_source

    def get_input_vstream_infos(self) -> list[VStreamInfo]:
        return [VStreamInfo("mobilefacenet/input_layer1", (112, 112, 3))]

    def get_output_vstream_infos(self) -> list[VStreamInfo]:
        return [VStreamInfo("mobilefacenet/fc1", (192,)), VStreamInfo("mobilefacenet/norm", (1,))]


class ConfigureParams:
    @staticmethod
    def create_from_hef(hef: HEF, interface: HailoStreamInterface) -> dict[str, Any]:
        return {"hef": hef.path, "interface": interface}


class NetworkGroup:
    def __init__(self, hef: HEF, params: dict[str, Any]) -> None:
        self.hef, self.params = hef, params


class VStreamParams:
    @staticmethod
    def make(network_group: NetworkGroup, quantized: bool | None = None, format_type: Any = None) -> dict[str, Any]:
        return {"group": network_group, "format_type": format_type}


class InferVStreams:
    opened: list[InferVStreams] = []  # noqa: RUF012

    def __init__(self, network_group: NetworkGroup, input_params: Any, output_params: Any) -> None:
        self.group, self.input_params, self.output_params = network_group, input_params, output_params
        self.entered = self.exited = False
        InferVStreams.opened.append(self)

    def __enter__(self) -> InferVStreams:
        self.entered = True
        return self

    def __exit__(self, *exc: Any) -> None:
        self.exited = True

    def infer(self, input_data: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        assert self.entered
        batch = input_data["mobilefacenet/input_layer1"]
        assert batch.dtype == np.float32 and batch.shape[1:] == (112, 112, 3)
        means = batch.reshape(len(batch), -1).mean(axis=1)
        return {
            "mobilefacenet/fc1": np.repeat(means[:, None], 192, axis=1),
            "mobilefacenet/norm": means[:, None] * 10,
        }


class VDevice:
    fail: str | None = None

    def __init__(self, params: Any = None) -> None:
        if VDevice.fail:
            raise RuntimeError(VDevice.fail)
        self.params = params
        self.released = False

    @staticmethod
    def create_params() -> types.SimpleNamespace:
        return types.SimpleNamespace(scheduling_algorithm=HailoSchedulingAlgorithm.NONE, device_count=1)

    def configure(self, hef: HEF, configure_params: dict[str, Any]) -> list[NetworkGroup]:
        return [NetworkGroup(hef, configure_params)]

    def get_physical_devices_ids(self) -> list[str]:
        return ["0000:01:00.0"]

    def release(self) -> None:
        self.released = True


@pytest.fixture
def fake_hailo(monkeypatch: pytest.MonkeyPatch) -> types.ModuleType:
    module = types.ModuleType("hailo_platform")
    for item in (HEF, VDevice, ConfigureParams, InferVStreams, FormatType, HailoStreamInterface):
        setattr(module, item.__name__, item)
    vars(module).update(
        HailoSchedulingAlgorithm=HailoSchedulingAlgorithm,
        InputVStreamParams=VStreamParams,
        OutputVStreamParams=VStreamParams,
        __version__="4.20.0",
    )
    monkeypatch.setitem(sys.modules, "hailo_platform", module)
    monkeypatch.setattr(VDevice, "fail", None)
    InferVStreams.opened = []
    return module


def hef_file(tmp_path: Path, body: bytes = b"HEF\x00model") -> Path:
    path = tmp_path / "mobilefacenet.hef"
    path.write_bytes(body)
    return path


def test_hef_runs_through_float32_vstreams_on_a_scheduled_vdevice(fake_hailo: types.ModuleType, tmp_path: Path) -> None:
    backend = create_backend(InferenceConfig(backend="hailo"))
    assert isinstance(backend, HailoBackend)
    assert backend._vdevice.params.scheduling_algorithm is HailoSchedulingAlgorithm.ROUND_ROBIN
    model: LoadedModel = backend.load(hef_file(tmp_path))
    pipeline = InferVStreams.opened[0]
    assert pipeline.input_params["format_type"] is FormatType.FLOAT32
    assert pipeline.output_params["format_type"] is FormatType.FLOAT32
    assert pipeline.group.params["interface"] is HailoStreamInterface.PCIe
    assert [(s.name, s.shape) for s in model.inputs] == [("mobilefacenet/input_layer1", (1, 112, 112, 3))]
    assert [s.shape for s in model.outputs] == [(1, 192), (1, 1)]
    faces = np.stack([np.full((112, 112, 3), 0.25, np.float32), np.full((112, 112, 3), -0.5, np.float32)])
    embedding, norm = model.run(faces)
    assert embedding.shape == (2, 192) and embedding.dtype == np.float32
    assert np.allclose(embedding[:, 0], [0.25, -0.5]) and np.allclose(norm[:, 0], [2.5, -5.0])
    assert "HailoRT 4.20.0" in backend.describe() and "0000:01:00.0" in backend.describe()
    assert isinstance(model, HailoModel)
    model.close()
    backend.close()
    assert pipeline.exited and backend._vdevice.released


def test_wrong_input_shape_is_refused_before_the_device(fake_hailo: types.ModuleType, tmp_path: Path) -> None:
    model = create_backend(InferenceConfig(backend="hailo")).load(hef_file(tmp_path))
    with pytest.raises(ValueError, match=r"wants shape \(-1, 112, 112, 3\)"):
        model.run(np.zeros((1, 128, 128, 3), np.float32))
    with pytest.raises(ValueError, match="takes 1 inputs, got 2"):
        model.run(np.zeros((1, 112, 112, 3), np.float32), np.zeros((1, 112, 112, 3), np.float32))


def test_non_hef_and_corrupt_hef_models_are_refused(fake_hailo: types.ModuleType, tmp_path: Path) -> None:
    backend = create_backend(InferenceConfig(backend="hailo"))
    with pytest.raises(ValueError, match=r"runs \.hef models"):
        backend.load(tmp_path / "mobilefacenet.tflite")
    with pytest.raises(ValueError, match="HailoRT cannot read this HEF"):
        backend.load(hef_file(tmp_path, b"garbage"))


def test_missing_device_says_how_to_check_it(fake_hailo: types.ModuleType, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(VDevice, "fail", "HAILO_OUT_OF_PHYSICAL_DEVICES")
    with pytest.raises(BackendUnavailable, match=r"HAILO_OUT_OF_PHYSICAL_DEVICES.*hailortcli scan"):
        create_backend(InferenceConfig(backend="hailo"))


def test_missing_hailort_names_hailo_all(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "hailo_platform", None)
    with pytest.raises(BackendUnavailable, match="sudo apt install hailo-all"):
        create_backend(InferenceConfig(backend="hailo"))
