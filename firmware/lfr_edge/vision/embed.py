"""Embedding: 112x112 aligned RGB faces in, L2-normalised vectors out (MobileFaceNet 192-d, SFace 128-d).

The model's input shape says which contract it has. SFace: [1, 3, 112, 112] RGB 0-255 (the graph
normalises), one pass per face (its mirror adds little). MobileFaceNet: its batch is fixed at two. With
flip-averaging (on by default) each invoke holds a face and its mirror and the two embeddings are
averaged: free here, and more accurate. Without it, two faces share an invoke (an odd one out is padded).

No copy of a passer-by's face outlives its frame: the model's input buffer is zeroed after every call,
its outputs once averaged, and normalisation works in place; the caller overwrites the array returned.
The runtime's workspace holds the last face's activations until the next invoke: `scrub()` runs the
model on a blank input to overwrite them (the worker does when a track ends).
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from lfr_edge.inference.base import LoadedModel

FloatArray = npt.NDArray[np.float32]


def normalise_rows(x: FloatArray) -> FloatArray:
    """Scale each row of `x` to unit length, in place (no temporary copy of the vectors); returns `x`."""
    for row in x:
        row /= _norm(row)
    return x


def _norm(v: FloatArray) -> np.float32:
    """The length of one vector (at least 1e-12), without a temporary copy of it."""
    return np.float32(max(float(np.sqrt(np.dot(v, v))), 1e-12))


class Embedder:
    def __init__(self, model: LoadedModel, flip_average: bool = True) -> None:
        shape = tuple(model.inputs[0].shape)
        self.planar = shape[1:] == (3, 112, 112) and shape[0] in (1, -1)  # SFace's contract
        if not self.planar and (shape[1:] != (112, 112, 3) or shape[0] != 2):
            raise ValueError(f"embedding model input is {shape}, expected (2, 112, 112, 3) or (1, 3, 112, 112)")
        self.model = model
        self.flip_average = flip_average and not self.planar
        self.dim = int(model.outputs[0].shape[-1])
        # the model's input, zeroed after every call
        self._pair = np.zeros((1, 3, 112, 112) if self.planar else (2, 112, 112, 3), np.float32)
        self._dirty = False  # the runtime's workspace holds a face's activations (see scrub)

    def embed(self, faces: npt.NDArray[np.uint8]) -> FloatArray:
        """faces: (N, 112, 112, 3) uint8 RGB aligned crops -> (N, dim) float32, unit length."""
        if faces.ndim != 4 or faces.shape[1:] != (112, 112, 3):
            raise ValueError(f"expected aligned faces of shape (N, 112, 112, 3), got {faces.shape}")
        n = len(faces)
        out = np.zeros((n, self.dim), dtype=np.float32)
        self._dirty = self._dirty or n > 0
        try:
            if self.planar:
                for i in range(n):
                    for channel in range(3):
                        self._pair[0, channel] = faces[i, :, :, channel]
                    self._copy_into(out[i : i + 1])
            elif self.flip_average:
                for i in range(n):
                    self._load(0, faces[i])
                    self._pair[1] = self._pair[0, :, ::-1]
                    self._average_into(out[i])
            else:
                for i in range(0, n, 2):
                    self._load(0, faces[i])
                    self._load(1, faces[i + 1] if i + 1 < n else faces[i])
                    self._copy_into(out[i : i + 2])
        except BaseException:
            out.fill(0)
            raise
        finally:
            self._pair.fill(0)
        return normalise_rows(out)

    def scrub(self) -> None:
        """Overwrite what the last faces left in the runtime's own buffers: one run on a blank input."""
        if not self._dirty:
            return
        self._pair.fill(0)
        for output in self.model.run(self._pair):
            output.fill(0)
        self._dirty = False

    def _load(self, slot: int, face: npt.NDArray[np.uint8]) -> None:
        """One face into the input buffer, scaled as the model wants ((x - 127.5) / 128), in place."""
        target = self._pair[slot]
        np.copyto(target, face, casting="unsafe")
        target -= np.float32(127.5)
        target *= np.float32(1.0 / 128.0)

    def _average_into(self, row: FloatArray) -> None:
        """The face's and its mirror's embeddings, each normalised, summed into `row`."""
        outputs = self.model.run(self._pair)
        try:
            face, mirror = outputs[0][0], outputs[0][1]
            np.divide(face, _norm(face), out=row)
            mirror /= _norm(mirror)
            row += mirror
        finally:
            for output in outputs:
                output.fill(0)

    def _copy_into(self, rows: FloatArray) -> None:
        outputs = self.model.run(self._pair)
        try:
            rows[:] = outputs[0][: len(rows)]
        finally:
            for output in outputs:
                output.fill(0)
