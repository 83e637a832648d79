"""Embedding with MobileFaceNet: 112x112 aligned RGB faces in, L2-normalised 192-d vectors out.

The model's batch is fixed at two. With flip-averaging (on by default) each invoke holds a face and its
mirror and the two embeddings are averaged: free here, and more accurate. Without it, two faces share
an invoke (an odd one out is padded with a copy).
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from lfr_edge.inference.base import LoadedModel

FloatArray = npt.NDArray[np.float32]


def normalise_rows(x: FloatArray) -> FloatArray:
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    out: FloatArray = (x / np.maximum(norms, 1e-12)).astype(np.float32)
    return out


class Embedder:
    def __init__(self, model: LoadedModel, flip_average: bool = True) -> None:
        shape = tuple(model.inputs[0].shape)
        if shape[1:] != (112, 112, 3) or shape[0] != 2:
            raise ValueError(f"embedding model input is {shape}, expected (2, 112, 112, 3)")
        self.model = model
        self.flip_average = flip_average
        self.dim = int(model.outputs[0].shape[-1])

    def embed(self, faces: npt.NDArray[np.uint8]) -> FloatArray:
        """faces: (N, 112, 112, 3) uint8 RGB aligned crops -> (N, dim) float32, unit length."""
        if faces.ndim != 4 or faces.shape[1:] != (112, 112, 3):
            raise ValueError(f"expected aligned faces of shape (N, 112, 112, 3), got {faces.shape}")
        n = len(faces)
        if n == 0:
            return np.zeros((0, self.dim), dtype=np.float32)
        tensor = (faces.astype(np.float32) - 127.5) * (1.0 / 128.0)
        out = np.empty((n, self.dim), dtype=np.float32)
        if self.flip_average:
            for i in range(n):
                pair = np.stack([tensor[i], tensor[i, :, ::-1]])
                emb = self.model.run(pair)[0]
                out[i] = emb[0] / max(np.linalg.norm(emb[0]), 1e-12) + emb[1] / max(np.linalg.norm(emb[1]), 1e-12)
        else:
            for i in range(0, n, 2):
                pair = tensor[i : i + 2] if i + 1 < n else np.stack([tensor[i], tensor[i]])
                emb = self.model.run(pair)[0]
                out[i : i + 2] = emb[: min(2, n - i)]
        return normalise_rows(out)
