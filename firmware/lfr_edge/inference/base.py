"""The one small interface every inference backend implements.

A backend loads a verified model file and runs it on numpy arrays. Backends are chosen by the config key
`inference.backend`; each lives in its own file and imports its runtime only when selected. A backend that
cannot load says which library or device is missing and how to fix it: it never falls back to another.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np
import numpy.typing as npt


class BackendUnavailable(RuntimeError):
    """The selected backend's library or device is missing; the message says how to fix it."""


@dataclass(frozen=True)
class TensorSpec:
    name: str
    shape: tuple[int, ...]
    dtype: np.dtype[np.generic]


class ModelTensors:
    """The tensor specs of a loaded model and the check of run()'s arguments, shared by every backend's
    model class. A -1 in a spec is a dynamic dimension; with `free_batch` the first one is too."""

    _inputs: tuple[TensorSpec, ...]
    _outputs: tuple[TensorSpec, ...]
    free_batch = False

    @property
    def inputs(self) -> Sequence[TensorSpec]:
        return self._inputs

    @property
    def outputs(self) -> Sequence[TensorSpec]:
        return self._outputs

    def checked(self, inputs: Sequence[npt.NDArray[np.float32]]) -> list[tuple[TensorSpec, npt.NDArray[np.float32]]]:
        """Pairs of (spec, array), or a ValueError naming the input whose count or shape is wrong."""
        if len(inputs) != len(self._inputs):
            raise ValueError(f"model takes {len(self._inputs)} inputs, got {len(inputs)}")
        for spec, array in zip(self._inputs, inputs, strict=True):
            wanted = (-1, *spec.shape[1:]) if self.free_batch else spec.shape
            fits = array.ndim == len(wanted) and all(w in (-1, g) for w, g in zip(wanted, array.shape, strict=True))
            if not fits:
                raise ValueError(f"input {spec.name!r} wants shape {wanted}, got {tuple(array.shape)}")
        return list(zip(self._inputs, inputs, strict=True))


class LoadedModel(Protocol):
    """A model ready to run. Inputs and outputs are float32 (quantisation is internal to the model)."""

    @property
    def inputs(self) -> Sequence[TensorSpec]: ...

    @property
    def outputs(self) -> Sequence[TensorSpec]: ...

    def run(self, *inputs: npt.NDArray[np.float32]) -> list[npt.NDArray[np.float32]]:
        """Run once; returns the outputs in the order of `outputs` (copies, safe to keep). They are the only
        copies the backend leaves where it can: it zeroes its own buffers and conversions of the inputs."""
        ...


class Backend(Protocol):
    name: str

    def load(self, model_path: Path) -> LoadedModel:
        """Load a model file that the caller has already verified against the manifest."""
        ...

    def describe(self) -> str:
        """One line for logs and the self-test: runtime, version, device, threads."""
        ...
