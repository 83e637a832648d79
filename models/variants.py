"""The recipe of every variant: which graph fixes, which quantisation, which calibration data.

Variant names here are the ones `manifest.toml` lists; a manifest variant without a recipe stops the
build. Why each recipe is what it is: ../shared/notes/models-and-runtime.md ("the six pitfalls").
"""

from __future__ import annotations

import contextlib
import io
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import corpus
import graph_fixes
import onnx_export
import onnx_fixes
import quantise
from fetch import BuildError

CALIBRATION_FACES = 200  # aligned faces (each with its mirror), spread over all identities
CALIBRATION_PHOTOS = 120  # wild photos, letterboxed to the detector input

# MobileFaceNet's head: global depthwise conv, two 1x1 convs and the reshape to the embedding.
MOBILEFACENET_TAIL = ("MobileFaceNet/Logits/.*", "embeddings")
# BlazeFace short range's output heads: raw logits reach -30000, which int8 cannot hold with the rest.
SHORT_RANGE_HEADS = ("classificator.*", "regressor.*", "reshape.*")


@dataclass(frozen=True)
class Recipe:
    description: str
    make: Callable[[bytes, Calibration], bytes]  # (float model, calibration data) -> artifact


class Calibration:
    """Calibration samples, read from the corpus once and only when a recipe asks for them."""

    def __init__(self, faces: Path) -> None:
        self.faces = faces
        self._embedder: list[dict[str, Any]] | None = None
        self._detector: dict[int, list[dict[str, Any]]] = {}
        self._ranges: dict[tuple[bytes, str], dict[str, Any]] = {}
        self._wild: corpus.Photos | None = None

    def embedder(self) -> list[dict[str, Any]]:
        if self._embedder is None:
            self._embedder = corpus.embedder_samples(corpus.aligned_photos(self.faces, CALIBRATION_FACES))
        return self._embedder

    def detector(self, size: int) -> list[dict[str, Any]]:
        if size not in self._detector:
            if self._wild is None:
                self._wild = corpus.wild_photos(self.faces, CALIBRATION_PHOTOS)
            self._detector[size] = corpus.detector_samples(self._wild, size)
        return self._detector[size]

    def static(
        self,
        float_model: bytes,
        samples: list[dict[str, Any]],
        update: quantise.RangeUpdate,
        keep_float: tuple[str, ...] = (),
    ) -> bytes:
        """Static int8; the ranges of one float model are calibrated once and shared by its recipes."""
        key = (float_model, update)
        with quiet():
            model, ranges = quantise.static_int8(float_model, samples, update, keep_float, self._ranges.get(key))
        self._ranges[key] = ranges
        return model


@contextlib.contextmanager
def quiet() -> Any:
    """The quantiser's progress bars and debug warnings are noise in a build log."""
    with warnings.catch_warnings(), contextlib.redirect_stderr(io.StringIO()):
        warnings.simplefilter("ignore")
        yield


def _weights(f: bytes, c: Calibration) -> bytes:
    with quiet():
        return quantise.weight_only_int8(f)


def _onnx(model: str) -> Recipe:
    """The float variant in ONNX, for ONNX Runtime / TensorRT (checked against LiteRT in report.py)."""
    return Recipe(
        "the float variant exported to ONNX (opset 17), NHWC in and out, NCHW inside",
        lambda f, c: onnx_export.tflite_to_onnx(f, model),
    )


RECIPES: dict[str, dict[str, Recipe]] = {
    "blazeface-short": {
        "float": Recipe("fp16 weights folded to fp32, op codes fixed, RELU fused", lambda f, c: f),
        "int8-static": Recipe(
            "static int8, output heads in float, moving-average calibration on wild photos",
            lambda f, c: c.static(f, c.detector(128), "moving-average", SHORT_RANGE_HEADS),
        ),
        "onnx": _onnx("blazeface-short"),
    },
    "blazeface-full": {
        "float": Recipe("fp16 weights folded to fp32, op codes fixed, RELU fused", lambda f, c: f),
        "int8-static": Recipe(
            "static int8, global min/max calibration on wild photos (keeps the positive logits)",
            lambda f, c: c.static(f, c.detector(192), "min-max"),
        ),
        "onnx": _onnx("blazeface-full"),
    },
    "mobilefacenet": {
        "float": Recipe("spelled-out PReLU rewritten as PRELU, op codes fixed", lambda f, c: f),
        "int8-weights": Recipe("int8 weights (per channel), float activations", _weights),
        "int8-static": Recipe(
            "static int8, moving-average calibration on aligned faces and mirrors",
            lambda f, c: c.static(f, c.embedder(), "moving-average"),
        ),
        "int8-static-float-tail": Recipe(
            "static int8 with the embedding head (global depthwise + 1x1 convs) in float",
            lambda f, c: c.static(f, c.embedder(), "moving-average", MOBILEFACENET_TAIL),
        ),
        "onnx": _onnx("mobilefacenet"),
    },
    # Published only as int8 block-quantised ONNX: the fix ONNX Runtime needs (models/onnx_fixes.py).
    "yunet": {
        "onnx": Recipe(
            "DequantizeLinear folded to float32 weights, input made symbolic",
            lambda f, c: onnx_fixes.fixed_model(f, "yunet", symbolic_input=True),
        ),
    },
    "sface": {
        "onnx": Recipe(
            "DequantizeLinear folded to float32 weights, stale graph inputs dropped",
            lambda f, c: onnx_fixes.fixed_model(f, "sface", symbolic_input=False),
        ),
    },
}
ONNX_SOURCES = ("yunet", "sface")  # their source is the ONNX file itself: no .tflite graph fixes


def float_model(name: str, source: bytes) -> bytes:
    if name in ONNX_SOURCES:
        return source
    return graph_fixes.float_model(source, spelled_prelu=name == "mobilefacenet")


def build_variant(model: str, variant: str, float_bytes: bytes, calibration: Calibration) -> bytes:
    try:
        recipe = RECIPES[model][variant]
    except KeyError:
        raise BuildError(f"the manifest lists {model}/{variant}, but models/variants.py has no recipe for it") from None
    return recipe.make(float_bytes, calibration)
