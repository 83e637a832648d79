"""Hailo-8 / Hailo-8L (Raspberry Pi AI Kit, AI HAT+) through HailoRT's Python API, running `.hef` models.

`hailo_platform` comes with Raspberry Pi OS's `hailo-all` package. One VDevice is shared by every model
of the unit, with HailoRT's round-robin scheduler switching between them (detector and embedder), so no
network group is activated by hand. Inputs and outputs are float32 on the host; HailoRT (de)quantises.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from lfr_edge.config import InferenceConfig
from lfr_edge.inference.base import BackendUnavailable, ModelTensors, TensorSpec

INSTALL_HINT = (
    "HailoRT's Python API (hailo_platform) is missing: on Raspberry Pi OS run `sudo apt install hailo-all` "
    "and reboot (driver, firmware and python3-hailort); `hailortcli fw-control identify` must see the chip"
)


def import_hailo() -> Any:
    try:
        import hailo_platform
    except ImportError:
        raise BackendUnavailable(INSTALL_HINT) from None
    return hailo_platform


class HailoModel(ModelTensors):
    """One HEF configured on the shared VDevice, with its input/output virtual streams kept open."""

    free_batch = True  # HailoRT takes any batch N in the first dimension; specs show a batch of 1

    def __init__(self, hp: Any, vdevice: Any, hef_path: Path) -> None:
        try:
            self._hef = hp.HEF(str(hef_path))
        except Exception as exc:  # HailoRT raises its own HailoRTException subclasses
            raise ValueError(f"{hef_path}: HailoRT cannot read this HEF ({exc})") from exc
        params = hp.ConfigureParams.create_from_hef(hef=self._hef, interface=hp.HailoStreamInterface.PCIe)
        self._group = vdevice.configure(self._hef, params)[0]
        input_params = hp.InputVStreamParams.make(self._group, format_type=hp.FormatType.FLOAT32)
        output_params = hp.OutputVStreamParams.make(self._group, format_type=hp.FormatType.FLOAT32)
        self._in_infos = list(self._hef.get_input_vstream_infos())
        self._out_infos = list(self._hef.get_output_vstream_infos())
        f32 = np.dtype(np.float32)
        self._inputs = tuple(TensorSpec(i.name, (1, *(int(d) for d in i.shape)), f32) for i in self._in_infos)
        self._outputs = tuple(TensorSpec(o.name, (1, *(int(d) for d in o.shape)), f32) for o in self._out_infos)
        self._pipeline = hp.InferVStreams(self._group, input_params, output_params)
        self._pipeline.__enter__()

    def run(self, *inputs: npt.NDArray[np.float32]) -> list[npt.NDArray[np.float32]]:
        checked = self.checked(inputs)
        feed = {spec.name: np.ascontiguousarray(array, dtype=np.float32) for spec, array in checked}
        try:
            results = self._pipeline.infer(feed)
        finally:
            for spec, array in checked:
                if feed[spec.name] is not array:
                    feed[spec.name].fill(0)  # a converted copy of a frame or a face
        # HailoRT hands over fresh float32 arrays: returned as they are (no second copy).
        return [np.asarray(results[spec.name], dtype=np.float32) for spec in self._outputs]

    def close(self) -> None:
        self._pipeline.__exit__(None, None, None)


class HailoBackend:
    name = "hailo"

    def __init__(self) -> None:
        self._hp = hp = import_hailo()
        params = hp.VDevice.create_params()
        params.scheduling_algorithm = hp.HailoSchedulingAlgorithm.ROUND_ROBIN
        try:
            self._vdevice = hp.VDevice(params)
        except Exception as exc:
            raise BackendUnavailable(
                f"no Hailo device could be opened ({exc}): check the AI Kit/HAT+ is seated, "
                "`hailortcli scan` lists it, and the hailo_pci driver is loaded (lsmod | grep hailo)"
            ) from exc
        self._devices = [str(d) for d in self._vdevice.get_physical_devices_ids()]

    def load(self, model_path: Path) -> HailoModel:
        if model_path.suffix != ".hef":
            raise ValueError(
                f"{model_path}: the hailo backend runs .hef models compiled by Hailo's Dataflow Compiler; "
                "use the manifest's HEF variant"
            )
        return HailoModel(self._hp, self._vdevice, model_path)

    def close(self) -> None:
        self._vdevice.release()

    def describe(self) -> str:
        version = getattr(self._hp, "__version__", "unknown version")
        return f"hailo (HailoRT {version}, device {', '.join(self._devices) or 'unknown'}, round-robin)"


def create(cfg: InferenceConfig) -> HailoBackend:
    return HailoBackend()
