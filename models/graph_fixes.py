"""Graph edits that make the published .tflite files quantisable and fast (see notes: the six pitfalls).

Each edit takes and mutates a flatbuffer object model (`ModelT`) and is deterministic: same input bytes,
same output bytes. Without the first three edits ai-edge-quantizer silently returns the model unchanged.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from ai_edge_litert import schema_py_generated as schema
from ai_edge_litert.tools import flatbuffer_utils

Model = Any  # schema.ModelT (the generated object API carries no type hints)

OP = schema.BuiltinOperator
ACT_NONE = schema.ActivationFunctionType.NONE
ACT_RELU = schema.ActivationFunctionType.RELU
SIGNATURE_KEY = "serving_default"


def read_model(data: bytes) -> Model:
    return flatbuffer_utils.convert_bytearray_to_object(bytearray(data))


def write_model(model: Model) -> bytes:
    return bytes(flatbuffer_utils.convert_object_to_bytearray(model))


def op_code(model: Model, op: Any) -> int:
    return int(model.operatorCodes[op.opcodeIndex].builtinCode)


def fix_builtin_codes(model: Model) -> None:
    """Old converters wrote the op code only in `deprecated_builtin_code`; without a copy every op reads
    as ADD (code 0) to newer tools."""
    for code in model.operatorCodes:
        code.builtinCode = max(int(code.builtinCode), int(code.deprecatedBuiltinCode))


def _producers(graph: Any) -> dict[int, Any]:
    return {t: op for op in graph.operators for t in op.outputs}


def _consumers(graph: Any) -> dict[int, list[Any]]:
    users: dict[int, list[Any]] = {}
    for op in graph.operators:
        for t in op.inputs:
            if t >= 0:
                users.setdefault(int(t), []).append(op)
    return users


def _constant(model: Model, graph: Any, tensor_index: int) -> np.ndarray[Any, Any] | None:
    tensor = graph.tensors[tensor_index]
    data = model.buffers[tensor.buffer].data
    if data is None or len(data) == 0:
        return None
    dtype = {schema.TensorType.FLOAT32: np.float32, schema.TensorType.FLOAT16: np.float16}.get(tensor.type)
    if dtype is None:
        return None
    shape = [int(s) for s in tensor.shape] if tensor.shape is not None else []
    return np.frombuffer(bytes(bytearray(data)), dtype=dtype).reshape(shape)


def _new_buffer(model: Model, array: np.ndarray[Any, Any]) -> int:
    buf = schema.BufferT()
    buf.data = np.frombuffer(np.ascontiguousarray(array, dtype="<f4").tobytes(), dtype=np.uint8)
    model.buffers.append(buf)
    return len(model.buffers) - 1


def _opcode_index(model: Model, builtin: int) -> int:
    for i, code in enumerate(model.operatorCodes):
        if int(code.builtinCode) == builtin:
            return i
    code = schema.OperatorCodeT()
    code.builtinCode = builtin
    code.deprecatedBuiltinCode = min(builtin, 127)
    code.version = 1
    model.operatorCodes.append(code)
    return len(model.operatorCodes) - 1


def fold_fp16_dequantize(model: Model) -> int:
    """Replace DEQUANTIZE(fp16 constant) by an fp32 constant: the quantiser needs float weights it can
    see, not a runtime op that makes them."""
    folded = 0
    for graph in model.subgraphs:
        kept = []
        for op in graph.operators:
            if op_code(model, op) == OP.DEQUANTIZE:
                weights = _constant(model, graph, op.inputs[0])
                if weights is not None and weights.dtype == np.float16:
                    out = graph.tensors[op.outputs[0]]
                    out.buffer = _new_buffer(model, weights.astype(np.float32))
                    out.type = schema.TensorType.FLOAT32
                    folded += 1
                    continue
            kept.append(op)
        graph.operators = kept
    prune(model)
    return folded


def rewrite_prelu(model: Model) -> int:
    """TOCO spelled PReLU(x) as RELU(x) + c * (x - ABS(x)); one PRELU op with alpha = 2c is the same
    function, and it keeps int8 XNNPACK in one piece (int8 ABS and lone RELU split the graph)."""
    rewritten = 0
    for graph in model.subgraphs:
        producer = _producers(graph)
        users = _consumers(graph)
        outputs = {int(t) for t in graph.outputs}
        removed: set[int] = set()

        def only_used_by(
            tensor: int, op: Any, users: dict[int, list[Any]] = users, outputs: set[int] = outputs
        ) -> bool:
            return tensor not in outputs and [id(u) for u in users.get(tensor, [])] == [id(op)]

        for add in graph.operators:
            if op_code(model, add) != OP.ADD or add.builtinOptions.fusedActivationFunction != ACT_NONE:
                continue
            found = _match_prelu(model, graph, add, producer, only_used_by)
            if found is None:
                continue
            x, alpha_tensor, ops = found
            alpha = _constant(model, graph, alpha_tensor)
            assert alpha is not None
            tensor = graph.tensors[alpha_tensor]
            tensor.buffer = _new_buffer(model, 2.0 * alpha.astype(np.float32))
            tensor.name = graph.tensors[add.outputs[0]].name + b"/prelu_alpha"
            add.opcodeIndex = _opcode_index(model, OP.PRELU)
            add.inputs = [x, alpha_tensor]
            add.builtinOptionsType = schema.BuiltinOptions.NONE
            add.builtinOptions = None
            removed.update(id(op) for op in ops)
            rewritten += 1
        graph.operators = [op for op in graph.operators if id(op) not in removed]
    prune(model)
    return rewritten


def _match_prelu(model: Model, graph: Any, add: Any, producer: dict[int, Any], only_used_by: Any) -> Any:
    """(x, mul constant tensor, [RELU, ABS, SUB, MUL]) if `add` ends a spelled-out PReLU, else None."""
    a, b = (int(t) for t in add.inputs)
    for relu_out, mul_out in ((a, b), (b, a)):
        relu, mul = producer.get(relu_out), producer.get(mul_out)
        if relu is None or mul is None or op_code(model, relu) != OP.RELU or op_code(model, mul) != OP.MUL:
            continue
        if mul.builtinOptions.fusedActivationFunction != ACT_NONE:
            continue
        x = int(relu.inputs[0])
        m0, m1 = (int(t) for t in mul.inputs)
        const, sub_out = (m0, m1) if _constant(model, graph, m0) is not None else (m1, m0)
        sub = producer.get(sub_out)
        if _constant(model, graph, const) is None or sub is None or op_code(model, sub) != OP.SUB:
            continue
        if sub.builtinOptions.fusedActivationFunction != ACT_NONE or int(sub.inputs[0]) != x:
            continue
        abs_op = producer.get(int(sub.inputs[1]))
        if abs_op is None or op_code(model, abs_op) != OP.ABS or int(abs_op.inputs[0]) != x:
            continue
        if not (
            only_used_by(relu_out, add)
            and only_used_by(mul_out, add)
            and only_used_by(sub_out, mul)
            and only_used_by(int(sub.inputs[1]), sub)
            and only_used_by(const, mul)
        ):
            continue
        return x, const, [relu, abs_op, sub, mul]
    return None


def fold_relu(model: Model) -> int:
    """Fuse a RELU into the CONV_2D / DEPTHWISE_CONV_2D / ADD before it when nothing else reads the
    pre-activation tensor: one op less, and no standalone RELU to split an int8 XNNPACK graph."""
    fusable = {OP.CONV_2D, OP.DEPTHWISE_CONV_2D, OP.ADD}
    folded = 0
    for graph in model.subgraphs:
        producer = _producers(graph)
        users = _consumers(graph)
        outputs = {int(t) for t in graph.outputs}
        removed: set[int] = set()
        for relu in graph.operators:
            if op_code(model, relu) != OP.RELU:
                continue
            t = int(relu.inputs[0])
            prev = producer.get(t)
            if prev is None or op_code(model, prev) not in fusable or t in outputs or len(users[t]) != 1:
                continue
            if prev.builtinOptions.fusedActivationFunction != ACT_NONE:
                continue
            prev.builtinOptions.fusedActivationFunction = ACT_RELU
            prev.outputs = [int(relu.outputs[0])]
            removed.add(id(relu))
            folded += 1
        graph.operators = [op for op in graph.operators if id(op) not in removed]
    prune(model)
    return folded


def prune(model: Model) -> None:
    """Drop tensors, buffers and op codes nothing refers to, renumbering what is left (order kept)."""
    for graph in model.subgraphs:
        used = sorted(
            {int(t) for op in graph.operators for t in [*op.inputs, *op.outputs] if t >= 0}
            | {int(t) for t in graph.inputs}
            | {int(t) for t in graph.outputs}
        )
        remap = {old: new for new, old in enumerate(used)}
        graph.tensors = [graph.tensors[i] for i in used]
        for op in graph.operators:
            op.inputs = [remap[int(t)] if t >= 0 else -1 for t in op.inputs]
            op.outputs = [remap[int(t)] for t in op.outputs]
        graph.inputs = [remap[int(t)] for t in graph.inputs]
        graph.outputs = [remap[int(t)] for t in graph.outputs]
        for sig in model.signatureDefs or []:
            if sig.subgraphIndex == model.subgraphs.index(graph):
                for tm in [*sig.inputs, *sig.outputs]:
                    tm.tensorIndex = remap[int(tm.tensorIndex)]
    used_buffers = sorted({0} | {int(t.buffer) for g in model.subgraphs for t in g.tensors})
    buffer_remap = {old: new for new, old in enumerate(used_buffers)}
    model.buffers = [model.buffers[i] for i in used_buffers]
    for graph in model.subgraphs:
        for tensor in graph.tensors:
            tensor.buffer = buffer_remap[int(tensor.buffer)]
    used_codes = sorted({int(op.opcodeIndex) for g in model.subgraphs for op in g.operators})
    code_remap = {old: new for new, old in enumerate(used_codes)}
    model.operatorCodes = [model.operatorCodes[i] for i in used_codes]
    for graph in model.subgraphs:
        for op in graph.operators:
            op.opcodeIndex = code_remap[int(op.opcodeIndex)]


def add_signature(model: Model) -> None:
    """Add the `serving_default` signature over subgraph 0 (calibration looks inputs up by it)."""
    graph = model.subgraphs[0]

    def tensor_map(index: int) -> Any:
        tm = schema.TensorMapT()
        tm.name = graph.tensors[index].name.decode()
        tm.tensorIndex = int(index)
        return tm

    sig = schema.SignatureDefT()
    sig.signatureKey = SIGNATURE_KEY
    sig.subgraphIndex = 0
    sig.inputs = [tensor_map(i) for i in graph.inputs]
    sig.outputs = [tensor_map(i) for i in graph.outputs]
    model.signatureDefs = [sig]


def float_model(source: bytes, spelled_prelu: bool) -> bytes:
    """The float variant: the source with every fix applied (same function, numerically equal)."""
    model = read_model(source)
    fix_builtin_codes(model)
    fold_fp16_dequantize(model)
    if spelled_prelu:
        rewrite_prelu(model)
    fold_relu(model)
    add_signature(model)
    return write_model(model)


def input_names(model_bytes: bytes) -> list[str]:
    model = read_model(model_bytes)
    graph = model.subgraphs[0]
    return [graph.tensors[i].name.decode() for i in graph.inputs]
