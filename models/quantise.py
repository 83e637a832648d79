"""int8 variants with ai-edge-quantizer, from a float model that graph_fixes has already repaired.

Calibration is deterministic: the caller passes a fixed, sorted list of samples, the interpreter runs
single-threaded, and each calibrated range is widened to a coarse binary grid so that float noise in the
last bits (another CPU's kernels) does not change the bytes of the artifact.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

import numpy as np
from ai_edge_quantizer import calibrator, qtyping, quantizer, recipe_manager
from ai_edge_quantizer.algorithm_manager import AlgorithmName
from ai_edge_quantizer.utils import qsv_utils

from graph_fixes import SIGNATURE_KEY

Sample = dict[str, np.ndarray[Any, Any]]  # signature input name -> batch
RangeUpdate = Literal["moving-average", "min-max"]

# Calibrated ranges are rounded outward to this many mantissa bits (widening a range by under 1/64).
RANGE_MANTISSA_BITS = 6


def weight_only_int8(float_model: bytes) -> bytes:
    """int8 weights (per channel), float compute: a third of the size, the float model's accuracy."""
    q = quantizer.Quantizer(bytearray(float_model))
    q.add_weight_only_config(".*", qtyping.TFLOperationName.ALL_SUPPORTED, num_bits=8)
    return bytes(q.quantize(enable_progress_report=False).quantized_model)


def static_int8(
    float_model: bytes,
    samples: Sequence[Sample],
    update: RangeUpdate,
    keep_float: Sequence[str] = (),
    ranges: dict[str, Any] | None = None,
) -> tuple[bytes, dict[str, Any]]:
    """int8 weights and activations; ops whose output tensor name matches a `keep_float` regex stay float.

    Returns the model and the calibrated ranges (pass them back as `ranges` to quantise another recipe of
    the same model without calibrating again).
    """
    q = quantizer.Quantizer(bytearray(float_model))
    q.add_static_config(
        ".*", qtyping.TFLOperationName.ALL_SUPPORTED, activation_num_bits=8, weight_num_bits=8
    )
    # float in and out (the backend contract): the model quantises its input and dequantises its output
    for io_op in (qtyping.TFLOperationName.INPUT, qtyping.TFLOperationName.OUTPUT):
        q.update_quantization_recipe(".*", io_op, algorithm_key=AlgorithmName.NO_QUANTIZE)
    for regex in keep_float:
        q.update_quantization_recipe(
            regex, qtyping.TFLOperationName.ALL_SUPPORTED, algorithm_key=AlgorithmName.NO_QUANTIZE
        )
    if ranges is None:
        ranges = calibrate(float_model, q.get_quantization_recipe(), samples, update)
    model = q.quantize(ranges, enable_progress_report=False).quantized_model
    return bytes(model), ranges


def calibrate(
    float_model: bytes, recipe: Any, samples: Sequence[Sample], update: RangeUpdate
) -> dict[str, Any]:
    """Activation ranges over `samples`, in their given order (moving average depends on it)."""
    manager = recipe_manager.RecipeManager()
    manager.load_quantization_recipe(recipe)
    if update == "min-max":
        calib = calibrator.Calibrator(
            bytes(float_model), num_threads=1, qsv_update_func=qsv_utils.min_max_update
        )
    else:
        calib = calibrator.Calibrator(bytes(float_model), num_threads=1)
    calib.calibrate({SIGNATURE_KEY: list(samples)}, manager)
    return {name: _widen(qsv) for name, qsv in sorted(calib.get_model_qsvs().items())}


def _widen(qsv: dict[str, Any]) -> dict[str, Any]:
    out = dict(qsv)
    if "min" in qsv and "max" in qsv:
        out["min"] = -_round_up(-np.asarray(qsv["min"], dtype=np.float64)).astype(np.float32)
        out["max"] = _round_up(np.asarray(qsv["max"], dtype=np.float64)).astype(np.float32)
    return out


def _round_up(x: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
    """The smallest value >= x with RANGE_MANTISSA_BITS significant bits (exact for 0)."""
    mantissa, exponent = np.frexp(x)
    scale = float(1 << RANGE_MANTISSA_BITS)
    result: np.ndarray[Any, Any] = np.ldexp(np.ceil(mantissa * scale) / scale, exponent)
    return result
