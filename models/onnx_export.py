"""Export a float .tflite variant to ONNX, for ONNX Runtime with TensorRT or CUDA (the Jetson backend).

A small converter for exactly the ops the three float graphs contain (`CONVERTERS`); any other op stops
the export with its name. The general converters either need TensorFlow (tf2onnx) or fail on
MobileFaceNet (tflite2onnx 0.4.1: a layout-transform IndexError).

Layout: the ONNX model keeps the tflite contract, so `lfr_edge.vision` runs it unchanged: the same input
and output names, shapes (batch fixed as in the source) and NHWC float32 layout. Inside, the graph runs
NCHW, the layout of ONNX Conv and of TensorRT: one Transpose after the input, and one wherever an op needs
the tflite layout back (RESHAPE, the outputs). Weights are transposed once, at export time.

Deterministic: names come from the tflite tensor names and op positions, nothing records a time or a
path, and the protobuf is serialised deterministically, so the recorded sha256 reproduces.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np
import numpy.typing as npt
import onnx
from ai_edge_litert import schema_py_generated as schema
from onnx import TensorProto, helper, numpy_helper

from fetch import BuildError
from graph_fixes import Model, read_model

# Opset 17 / IR 8: what the onnxruntime-gpu and TensorRT of JetPack 6 read (ORT 1.16+, TensorRT 8.6+);
# a newer IR version is refused by an older runtime even when no newer op is used.
OPSET = 17
IR_VERSION = 8
PRODUCER = "lfr-edge models/onnx_export.py"

OP = schema.BuiltinOperator
OP_NAMES: dict[int, str] = {int(v): k for k, v in vars(OP).items() if not k.startswith("_")}
ACT = schema.ActivationFunctionType
ACT_NAMES: dict[int, str] = {int(v): k for k, v in vars(ACT).items() if not k.startswith("_")}
PADDING_SAME = schema.Padding.SAME
TO_NCHW = (0, 3, 1, 2)
TO_NHWC = (0, 2, 3, 1)
NHWC_AXIS_IN_NCHW = {0: 0, 1: 2, 2: 3, 3: 1}
DTYPES = {schema.TensorType.FLOAT32: np.float32, schema.TensorType.INT32: np.int32}

Array = npt.NDArray[Any]


class UnsupportedOp(BuildError):
    """The graph has an op (or an op option) this converter does not translate."""


class _Export:
    """One tflite subgraph being written as ONNX nodes. Each tflite tensor may exist in ONNX in its
    tflite layout (named as in tflite) and, for 4-d activations, in NCHW (named `<name>:nchw`)."""

    def __init__(self, model: Model, label: str) -> None:
        self.model = model
        self.graph = model.subgraphs[0]
        self.label = label
        self.nodes: list[onnx.NodeProto] = []
        self.initializers: list[onnx.TensorProto] = []
        self.as_is: dict[int, str] = {}  # tensor index -> ONNX name, tflite layout
        self.nchw: dict[int, str] = {}  # tensor index -> ONNX name, NCHW layout
        names = [t.name.decode() for t in self.graph.tensors]
        if len(set(names)) != len(names):
            raise UnsupportedOp(f"{label}: tensor names are not unique; the export names ONNX tensors after them")
        self.names = names

    # ---- tensors -------------------------------------------------------------------------------------

    def shape(self, t: int) -> tuple[int, ...]:
        shape = self.graph.tensors[t].shape
        return tuple(int(s) for s in shape) if shape is not None else ()

    def constant(self, t: int) -> Array | None:
        tensor = self.graph.tensors[t]
        data = self.model.buffers[tensor.buffer].data
        if data is None or len(data) == 0:
            return None
        dtype = DTYPES.get(tensor.type)
        if dtype is None:
            raise UnsupportedOp(f"{self.label}: constant {self.names[t]!r} has tflite type {tensor.type}")
        return np.frombuffer(bytes(bytearray(data)), dtype=dtype).reshape(self.shape(t))

    def weights(self, t: int) -> Array:
        value = self.constant(t)
        if value is None or value.dtype != np.float32:
            raise UnsupportedOp(f"{self.label}: {self.names[t]!r} must be a float32 constant (weights)")
        return value

    def add_constant(self, name: str, value: Array) -> str:
        self.initializers.append(numpy_helper.from_array(np.ascontiguousarray(value), name))
        return name

    def node(self, op_type: str, inputs: list[str], output: str, **attrs: Any) -> str:
        self.nodes.append(helper.make_node(op_type, inputs, [output], name=f"{output}/{op_type}", **attrs))
        return output

    def in_tflite_layout(self, t: int) -> str:
        if t not in self.as_is:
            if t in self.nchw:
                self.node("Transpose", [self.nchw[t]], self.names[t], perm=list(TO_NHWC))
                self.as_is[t] = self.names[t]
            else:
                value = self.constant(t)
                if value is None:
                    raise UnsupportedOp(f"{self.label}: tensor {self.names[t]!r} is read before it is written")
                self.as_is[t] = self.add_constant(self.names[t], value)
        return self.as_is[t]

    def in_nchw(self, t: int) -> str:
        if t not in self.nchw:
            if len(self.shape(t)) != 4:
                raise UnsupportedOp(f"{self.label}: {self.names[t]!r} is not 4-d, cannot run it as NCHW")
            value = self.constant(t)
            name = f"{self.names[t]}:nchw"
            if value is not None:
                self.nchw[t] = self.add_constant(name, value.transpose(TO_NCHW))
            else:
                self.nchw[t] = self.node("Transpose", [self.in_tflite_layout(t)], name, perm=list(TO_NCHW))
        return self.nchw[t]

    # ---- ops -----------------------------------------------------------------------------------------

    def output(self, op: Any, result_op: str, inputs: list[str], nchw: bool, **attrs: Any) -> None:
        """Write `result_op` and the op's fused activation; record the result's ONNX name."""
        t = int(op.outputs[0])
        final = f"{self.names[t]}:nchw" if nchw else self.names[t]
        activation = getattr(op.builtinOptions, "fusedActivationFunction", ACT.NONE)
        if activation == ACT.NONE:
            self.node(result_op, inputs, final, **attrs)
        elif activation == ACT.RELU:  # the only fused activation the three graphs use
            self.node("Relu", [self.node(result_op, inputs, f"{final}:pre_activation", **attrs)], final)
        else:
            raise UnsupportedOp(
                f"{self.label}: {self.names[t]!r} has fused activation {ACT_NAMES.get(activation, activation)}; "
                "models/onnx_export.py converts NONE and RELU"
            )
        (self.nchw if nchw else self.as_is)[t] = final

    def same_pads(self, op: Any, kernel: tuple[int, int]) -> list[int]:
        """ONNX pads [top, left, bottom, right] for tflite's padding (SAME puts the odd pixel at the end)."""
        o = op.builtinOptions
        strides = (int(o.strideH), int(o.strideW))
        dilations = (int(getattr(o, "dilationHFactor", 1)), int(getattr(o, "dilationWFactor", 1)))
        in_hw = self.shape(int(op.inputs[0]))[1:3]
        out_hw = self.shape(int(op.outputs[0]))[1:3]
        begin, end = [], []
        for size, k, s, d, out in zip(in_hw, kernel, strides, dilations, out_hw, strict=True):
            span = (k - 1) * d + 1
            same = o.padding == PADDING_SAME
            total = max((math.ceil(size / s) - 1) * s + span - size, 0) if same else 0
            if (size + total - span) // s + 1 != out:
                raise UnsupportedOp(
                    f"{self.label}: {self.names[int(op.outputs[0])]!r}: padding does not give its shape"
                )
            begin.append(total // 2)
            end.append(total - total // 2)
        return begin + end

    def conv(self, op: Any, depthwise: bool) -> None:
        x, w_index, *rest = (int(t) for t in op.inputs)
        w = self.weights(w_index)
        channels = self.shape(x)[3]
        if depthwise:  # [1, kh, kw, C*M] -> [C*M, 1, kh, kw], one group per input channel
            kernel, onnx_w, group = w.shape[1:3], w.transpose(3, 0, 1, 2), channels
        else:  # [O, kh, kw, C] -> [O, C, kh, kw]
            if w.shape[3] != channels:
                raise UnsupportedOp(f"{self.label}: grouped CONV_2D {self.names[int(op.outputs[0])]!r}")
            kernel, onnx_w, group = w.shape[1:3], w.transpose(0, 3, 1, 2), 1
        inputs = [self.in_nchw(x), self.add_constant(f"{self.names[w_index]}:oihw", onnx_w)]
        if rest and rest[0] >= 0:
            inputs.append(self.add_constant(self.names[rest[0]], self.weights(rest[0])))
        o = op.builtinOptions
        self.output(
            op,
            "Conv",
            inputs,
            nchw=True,
            kernel_shape=list(kernel),
            strides=[int(o.strideH), int(o.strideW)],
            dilations=[int(o.dilationHFactor), int(o.dilationWFactor)],
            pads=self.same_pads(op, (int(kernel[0]), int(kernel[1]))),
            group=int(group),
        )

    def elementwise(self, op: Any, onnx_op: str) -> None:
        """ADD, PRELU: NCHW when every non-constant input is 4-d (constants reshaped to broadcast the
        same way: a [C] vector becomes [1, C, 1, 1]), else in the tflite layout."""
        indices = [int(t) for t in op.inputs]
        values = [self.constant(t) for t in indices]
        nchw = all(len(self.shape(t)) == 4 for t, v in zip(indices, values, strict=True) if v is None)
        inputs = []
        for t, value in zip(indices, values, strict=True):
            if value is None:
                inputs.append(self.in_nchw(t) if nchw else self.in_tflite_layout(t))
            elif nchw:
                four_d = value.reshape((1,) * (4 - value.ndim) + value.shape)
                inputs.append(self.add_constant(f"{self.names[t]}:nchw", four_d.transpose(TO_NCHW)))
            else:
                inputs.append(self.in_tflite_layout(t))
        self.output(op, onnx_op, inputs, nchw=nchw)

    def max_pool(self, op: Any) -> None:
        o = op.builtinOptions
        kernel = (int(o.filterHeight), int(o.filterWidth))
        self.output(
            op,
            "MaxPool",
            [self.in_nchw(int(op.inputs[0]))],
            nchw=True,
            kernel_shape=list(kernel),
            strides=[int(o.strideH), int(o.strideW)],
            pads=self.same_pads(op, kernel),
        )

    def pad(self, op: Any) -> None:
        x, p = (int(t) for t in op.inputs)
        paddings = self.constant(p)
        if paddings is None or paddings.shape != (4, 2):
            raise UnsupportedOp(f"{self.label}: PAD {self.names[int(op.outputs[0])]!r} needs constant 4-d paddings")
        nchw = paddings[list(TO_NCHW)].astype(np.int64)
        pads = self.add_constant(f"{self.names[p]}:onnx", np.concatenate([nchw[:, 0], nchw[:, 1]]))
        self.output(op, "Pad", [self.in_nchw(x), pads], nchw=True, mode="constant")

    def resize_bilinear(self, op: Any) -> None:
        o = op.builtinOptions
        x = int(op.inputs[0])
        n, h, w, c = self.shape(int(op.outputs[0]))
        sizes = self.add_constant(f"{self.names[int(op.inputs[1])]}:nchw", np.array([n, c, h, w], dtype=np.int64))
        mode = "align_corners" if o.alignCorners else "half_pixel" if o.halfPixelCenters else "asymmetric"
        self.output(
            op,
            "Resize",
            [self.in_nchw(x), "", "", sizes],
            nchw=True,
            mode="linear",
            coordinate_transformation_mode=mode,
        )

    def reshape(self, op: Any) -> None:
        t = int(op.outputs[0])
        shape = self.add_constant(f"{self.names[t]}:shape", np.array(self.shape(t), dtype=np.int64))
        self.output(op, "Reshape", [self.in_tflite_layout(int(op.inputs[0])), shape], nchw=False)

    def concatenation(self, op: Any) -> None:
        indices = [int(t) for t in op.inputs]
        rank = len(self.shape(indices[0]))
        axis = int(op.builtinOptions.axis) % rank
        if rank == 4:
            self.output(op, "Concat", [self.in_nchw(t) for t in indices], nchw=True, axis=NHWC_AXIS_IN_NCHW[axis])
        else:
            self.output(op, "Concat", [self.in_tflite_layout(t) for t in indices], nchw=False, axis=axis)


CONVERTERS: dict[int, Callable[[_Export, Any], None]] = {
    OP.CONV_2D: lambda e, op: e.conv(op, depthwise=False),
    OP.DEPTHWISE_CONV_2D: lambda e, op: e.conv(op, depthwise=True),
    OP.ADD: lambda e, op: e.elementwise(op, "Add"),
    OP.PRELU: lambda e, op: e.elementwise(op, "PRelu"),
    OP.MAX_POOL_2D: _Export.max_pool,
    OP.PAD: _Export.pad,
    OP.RESIZE_BILINEAR: _Export.resize_bilinear,
    OP.RESHAPE: _Export.reshape,
    OP.CONCATENATION: _Export.concatenation,
}
SUPPORTED_OPS = tuple(sorted(OP_NAMES[code] for code in CONVERTERS))


def builtin_code(model: Model, op: Any) -> int:
    code = model.operatorCodes[op.opcodeIndex]
    return max(int(code.builtinCode), int(code.deprecatedBuiltinCode))  # old files: deprecated field only


def op_name(model: Model, op: Any) -> str:
    builtin = builtin_code(model, op)
    if builtin == OP.CUSTOM:
        custom: bytes = model.operatorCodes[op.opcodeIndex].customCode or b""
        return f"CUSTOM ({custom.decode()})"
    return OP_NAMES.get(builtin, f"builtin op code {builtin}")


def check_ops(model: Model, label: str) -> None:
    """Refuse the whole graph, naming each op it cannot convert, before writing anything."""
    graph = model.subgraphs[0]
    unknown = sorted({op_name(model, op) for op in graph.operators} - {OP_NAMES[c] for c in CONVERTERS})
    if unknown:
        raise UnsupportedOp(
            f"{label}: cannot export to ONNX: the graph uses {', '.join(unknown)}, which "
            f"models/onnx_export.py does not convert (it converts {', '.join(SUPPORTED_OPS)}); "
            "add a converter for it there"
        )
    if len(model.subgraphs) != 1:
        raise UnsupportedOp(f"{label}: cannot export to ONNX: {len(model.subgraphs)} subgraphs (control flow)")


def tflite_to_onnx(float_model: bytes, label: str) -> bytes:
    """The ONNX bytes of a float32 .tflite model (one subgraph, ops in `CONVERTERS`)."""
    model = read_model(float_model)
    check_ops(model, label)
    export = _Export(model, label)
    graph = export.graph
    inputs, outputs = [], []
    for t in graph.inputs:
        if graph.tensors[t].type != schema.TensorType.FLOAT32:
            raise UnsupportedOp(f"{label}: input {export.names[t]!r} is not float32")
        export.as_is[int(t)] = export.names[t]
        inputs.append(helper.make_tensor_value_info(export.names[t], TensorProto.FLOAT, list(export.shape(t))))
    for op in graph.operators:
        CONVERTERS[builtin_code(model, op)](export, op)
    for t in graph.outputs:
        if graph.tensors[t].type != schema.TensorType.FLOAT32:
            raise UnsupportedOp(f"{label}: output {export.names[t]!r} is not float32")
        name = export.in_tflite_layout(int(t))
        outputs.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, list(export.shape(t))))
    onnx_graph = helper.make_graph(export.nodes, label, inputs, outputs, export.initializers)
    onnx_model = helper.make_model(
        onnx_graph,
        opset_imports=[helper.make_opsetid("", OPSET)],
        ir_version=IR_VERSION,
        producer_name=PRODUCER,
        doc_string=f"{label}: exported from its float .tflite variant; NHWC float32 in and out, NCHW inside",
    )
    onnx.checker.check_model(onnx_model, full_check=True)
    return bytes(onnx_model.SerializeToString(deterministic=True))
