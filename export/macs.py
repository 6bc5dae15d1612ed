"""Multiply-accumulates of an ONNX graph, counted from its nodes and the shapes of one run (onnx + onnxruntime)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx

from edge_ser.audio import SAMPLE_RATE
from edge_ser.manifest import INPUT_NAME

# float and int8 forms.  Matrix products reduce over A's last dimension (A is input 0);
# convolutions over their weight's dimensions after the first (op type -> index of the weight input).
_MATMUL_OPS = {"MatMul", "MatMulInteger", "QLinearMatMul", "DynamicQuantizeMatMul", "MatMulIntegerToFloat"}
_GEMM_OPS = {"Gemm", "QGemm"}
_CONV_OPS = {"Conv": 1, "ConvInteger": 1, "QLinearConv": 3, "ConvTranspose": 1}


def _tensor_shapes(model: onnx.ModelProto, n_samples: int) -> dict[str, tuple[int, ...]]:
    """Concrete shape of every tensor for input [1, n_samples]: run ORT once with all of them as outputs."""
    import onnxruntime as ort

    graph = model.graph
    shapes = {t.name: tuple(t.dims) for t in graph.initializer}
    present = {o.name for o in graph.output}
    graph.output.extend(onnx.ValueInfoProto(name=out) for n in graph.node for out in n.output
                        if out and out not in present and out not in shapes)
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    sess = ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    x = np.zeros((1, n_samples), np.float32)
    names = [o.name for o in sess.get_outputs()]
    shapes.update({name: np.shape(v) for name, v in zip(names, sess.run(names, {INPUT_NAME: x}))})
    shapes[INPUT_NAME] = x.shape
    return shapes


def count_macs(onnx_path: str | Path, seconds: float = 1.0, sample_rate: int = SAMPLE_RATE) -> int:
    """Multiply-accumulates for ``seconds`` of audio, counted from the graph.

    Counts MatMul, Gemm, Conv (grouped, strided) and ConvTranspose and their int8 forms
    (MatMulInteger, QLinearMatMul, DynamicQuantizeMatMul, MatMulIntegerToFloat, QGemm,
    ConvInteger, QLinearConv); QDQ graphs count through their float MatMul / Conv nodes.
    Element-wise ops, norms and softmax are not counted.
    """
    model = onnx.load(str(onnx_path))
    shapes = _tensor_shapes(model, int(round(seconds * sample_rate)))
    macs = 0
    for node in model.graph.node:
        op = node.op_type
        if op in _MATMUL_OPS:
            macs += int(np.prod(shapes[node.output[0]])) * shapes[node.input[0]][-1]
        elif op in _GEMM_OPS:
            a = shapes[node.input[0]]
            trans_a = next((at.i for at in node.attribute if at.name == "transA"), 0)
            macs += int(np.prod(shapes[node.output[0]])) * a[0 if trans_a else 1]
        elif op in _CONV_OPS:
            w = shapes[node.input[_CONV_OPS[op]]]
            per_out = int(np.prod(w[1:]))
            if op == "ConvTranspose":  # every input element feeds (out_channels / groups) * kernel outputs
                macs += int(np.prod(shapes[node.input[0]])) * per_out
            else:  # every output element sums (in_channels / groups) * kernel products
                macs += int(np.prod(shapes[node.output[0]])) * per_out
    return int(macs)
