"""LiteRT with the Coral EdgeTPU delegate (libedgetpu), for models compiled by `edgetpu_compiler`.

Only a model compiled for the EdgeTPU (the manifest's `*_edgetpu.tflite` variant, which holds an
`edgetpu-custom-op`) is accepted: a plain int8 model would run on the CPU, silently slower.
`inference.device` picks the Coral ("usb", "usb:0", "pci:0"; empty = the first one found).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from lfr_edge.config import InferenceConfig
from lfr_edge.inference.base import BackendUnavailable
from lfr_edge.inference.litert import LiteRTModel, import_interpreter, load_model

EDGETPU_LIBRARY = "libedgetpu.so.1"
EDGETPU_OP = b"edgetpu-custom-op"
INSTALL_HINT = (
    "install the EdgeTPU runtime: add the Coral apt repository (coral-edgetpu-stable, as in Coral's "
    "'Get started' guide) and run `sudo apt install libedgetpu1-std`; M.2/PCIe modules also need the "
    "apex driver (gasket-dkms). Check the Coral is seen: `lsusb` lists 'Global Unichip' or 'Google', "
    "or /dev/apex_0 exists"
)


def require_edgetpu_model(model_path: Path) -> None:
    """Refuse a model that edgetpu_compiler has not compiled (it would run entirely on the CPU)."""
    try:
        data = model_path.read_bytes()
    except OSError as exc:
        raise ValueError(f"{model_path}: cannot read the model ({exc.strerror})") from exc
    if EDGETPU_OP not in data:
        raise ValueError(
            f"{model_path}: not compiled for the EdgeTPU (no {EDGETPU_OP.decode()}): run edgetpu_compiler "
            "on the int8 model and use the manifest's *_edgetpu.tflite variant"
        )


class EdgeTpuBackend:
    name = "litert-edgetpu"

    def __init__(self, threads: int, device: str) -> None:
        _, self._load_delegate, self._runtime = import_interpreter()
        self.threads = threads
        self.device = device
        self._spare: Any = self._delegate()  # fail now, with the fix, if the library or the Coral is missing

    def _delegate(self) -> Any:
        options = {"device": self.device} if self.device else {}
        try:
            return self._load_delegate(EDGETPU_LIBRARY, options)
        except (ValueError, OSError) as exc:
            raise BackendUnavailable(
                f"cannot load the EdgeTPU delegate {EDGETPU_LIBRARY} for device {self.device or 'any'!r} "
                f"({exc}): {INSTALL_HINT}"
            ) from None

    def load(self, model_path: Path) -> LiteRTModel:
        require_edgetpu_model(model_path)
        delegate, self._spare = (self._spare, None) if self._spare is not None else (self._delegate(), None)
        return load_model(model_path, self.threads, [delegate])

    def describe(self) -> str:
        return f"litert-edgetpu ({self._runtime}, {EDGETPU_LIBRARY}, device {self.device or 'first found'})"


def create(cfg: InferenceConfig) -> EdgeTpuBackend:
    return EdgeTpuBackend(cfg.threads, cfg.device)
