"""Graph export: torch -> ONNX / OpenVINO IR, int8 quantization, parity checks and MAC counting.

Every graph maps ``audio[batch, samples]`` (float32, 16 kHz) to ``probs[batch, classes]`` with
dynamic batch and samples (see ``edge_ser.bundle``).  The front end (log-mel or conv feature
extractor) lives inside the graph; :func:`front_end_nodes` finds it so quantizers can leave it in
float (int8 raw audio or power spectra lose most of their dynamic range).
"""
from __future__ import annotations

import contextlib
import logging
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import onnx
import torch

from edge_ser.bundle import INPUT_NAME, OUTPUT_NAME
from edge_ser.errors import EdgeSerError

OPSET = 17
# MAC counting, float and int8 forms.  Matrix products reduce over A's last dimension (A is input 0);
# convolutions over their weight's dimensions after the first (op type -> index of the weight input).
_MATMUL_OPS = {"MatMul", "MatMulInteger", "QLinearMatMul", "DynamicQuantizeMatMul", "MatMulIntegerToFloat"}
_GEMM_OPS = {"Gemm", "QGemm"}
_CONV_OPS = {"Conv": 1, "ConvInteger": 1, "QLinearConv": 3, "ConvTranspose": 1}


@contextlib.contextmanager
def _quiet():
    """Hide the quantizers' advice and progress logs (ONNX Runtime logs to the root logger, NNCF to its own)."""
    loggers = [logging.getLogger(), logging.getLogger("nncf")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        yield
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)


def export_onnx(model: torch.nn.Module, path: str | Path, example_len: int = 32000) -> Path:
    """Export ``model`` (audio[B, N] -> probs[B, C]) to ONNX, opset 17, dynamic batch and samples."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    model = model.eval()
    example = torch.randn(1, example_len, generator=torch.Generator().manual_seed(0)) * 0.1
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation / tracer notes
        torch.onnx.export(model, (example,), str(path), input_names=[INPUT_NAME],
                          output_names=[OUTPUT_NAME], opset_version=OPSET, dynamo=False,
                          dynamic_axes={INPUT_NAME: {0: "batch", 1: "samples"},
                                        OUTPUT_NAME: {0: "batch"}})
    onnx.checker.check_model(str(path))
    return path


def front_end_nodes(onnx_path: str | Path, scopes: Sequence[str] = ()) -> list[str]:
    """Names of the front-end nodes of an exported graph, to keep out of int8 quantization.

    With ``scopes`` (torch module paths such as ``"frontend"`` or ``"encoder.feature_extractor"``),
    the nodes the exporter placed under those modules.  Without, every node up to and including the
    last ``Log`` (a log-mel front end and what computes its input); an empty list when there is none.
    """
    graph = onnx.load(str(onnx_path), load_external_data=False).graph
    if scopes:
        prefixes = tuple("/" + s.strip("/").replace(".", "/") + "/" for s in scopes)
        return [n.name for n in graph.node if n.name.startswith(prefixes)]
    logs = [n for n in graph.node if n.op_type == "Log"]
    if not logs:
        return []
    producer = {out: n for n in graph.node for out in n.output}
    keep, stack = set(), [logs[-1]]
    while stack:
        node = stack.pop()
        if node.name in keep:
            continue
        keep.add(node.name)
        stack += [producer[i] for i in node.input if i in producer]
    return [n.name for n in graph.node if n.name in keep]


def _exclusions(src: Path, nodes_to_exclude: Sequence[str] | None) -> list[str]:
    return front_end_nodes(src) if nodes_to_exclude is None else list(nodes_to_exclude)


def quantize_dynamic_onnx(src: str | Path, dst: str | Path, nodes_to_exclude: Sequence[str] | None = None,
                          op_types: Sequence[str] = ("MatMul", "Gemm")) -> Path:
    """Dynamic 8-bit quantization: weights quantized offline per output channel, activations at run
    time (per tensor).  Per-channel weights halved the probability error of a distilled Whisper
    student against per-tensor ones, at the same speed.

    Weights are uint8 (U8U8 kernels): on x86 CPUs without VNNI the U8S8 kernels saturate
    (``vpmaddubsw``), which moved probabilities by up to 0.27 on a Whisper-like encoder, against
    0.01 for U8U8 at the same speed.  ``nodes_to_exclude=None`` keeps the front end
    (:func:`front_end_nodes`) in float; pass ``()`` to quantize everything.  Conv is left out by
    default: ORT's ConvInteger is no faster than float Conv.
    """
    from onnxruntime.quantization import QuantType, quantize_dynamic

    src, dst = Path(src), Path(dst)
    with _quiet():
        quantize_dynamic(src, dst, op_types_to_quantize=list(op_types), weight_type=QuantType.QUInt8,
                         per_channel=True, nodes_to_exclude=_exclusions(src, nodes_to_exclude))
    onnx.checker.check_model(str(dst))
    return dst


class _ClipReader:
    """ORT calibration reader: one clip per batch (clips differ in length)."""

    def __init__(self, clips: Sequence[np.ndarray]):
        self._it = iter(clips)

    def get_next(self):
        clip = next(self._it, None)
        return None if clip is None else {INPUT_NAME: _batch(clip)}


def _batch(clip: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(clip, dtype=np.float32).reshape(1, -1)


def quantize_static_onnx(src: str | Path, dst: str | Path, calib: Sequence[np.ndarray],
                         nodes_to_exclude: Sequence[str] | None = None,
                         op_types: Sequence[str] = ("MatMul", "Gemm", "Conv"),
                         per_channel: bool = True) -> Path:
    """Static int8 quantization in QDQ format, activation ranges calibrated on ``calib`` clips.

    Activations and weights uint8 (MinMax ranges; weights per channel by default): U8U8 avoids the
    U8S8 saturation of x86 CPUs without VNNI (see :func:`quantize_dynamic_onnx`).
    ``nodes_to_exclude=None`` keeps the front end in float; pass ``()`` to quantize everything.
    """
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_static

    src, dst = Path(src), Path(dst)
    if not calib:
        raise EdgeSerError("static quantization needs calibration clips; pass at least one")
    with _quiet():
        quantize_static(src, dst, _ClipReader(calib), quant_format=QuantFormat.QDQ,
                        op_types_to_quantize=list(op_types), per_channel=per_channel,
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QUInt8,
                        nodes_to_exclude=_exclusions(src, nodes_to_exclude))
    onnx.checker.check_model(str(dst))
    return dst


def export_openvino(onnx_path: str | Path, xml_path: str | Path) -> Path:
    """Convert an ONNX graph to OpenVINO IR (``.xml`` + ``.bin``), weights kept in fp32."""
    import openvino as ov

    xml_path = Path(xml_path)
    xml_path.parent.mkdir(parents=True, exist_ok=True)
    ov.save_model(ov.convert_model(str(onnx_path)), str(xml_path), compress_to_fp16=False)
    return xml_path


def _ov_names(model, onnx_nodes: Sequence[str]) -> list[str]:
    """The OpenVINO ops converted from the given ONNX nodes (OpenVINO keeps ONNX node names)."""
    wanted = set(onnx_nodes)
    return [op.get_friendly_name() for op in model.get_ops() if op.get_friendly_name() in wanted]


def quantize_openvino(src: str | Path, xml_dst: str | Path, calib: Sequence[np.ndarray],
                      nodes_to_exclude: Sequence[str] | None = None, transformer: bool = True) -> Path:
    """Int8 OpenVINO IR by NNCF post-training quantization, calibrated on ``calib`` clips.

    ``src`` is an ONNX file or an IR ``.xml``.  ``nodes_to_exclude`` are ONNX node names (``None``:
    the front end of the ONNX file, see :func:`front_end_nodes`; ``()``: nothing); with an ``.xml``
    source they are taken as OpenVINO op names.  ``transformer`` selects NNCF's transformer
    model type (keeps attention softmax / layer norms in float).
    """
    import nncf
    import openvino as ov

    src, xml_dst = Path(src), Path(xml_dst)
    if not calib:
        raise EdgeSerError("OpenVINO quantization needs calibration clips; pass at least one")
    model = ov.Core().read_model(str(src))
    if src.suffix == ".onnx":
        names = _ov_names(model, _exclusions(src, nodes_to_exclude))
    else:
        names = list(nodes_to_exclude or ())
    with _quiet():
        quantized = nncf.quantize(
            model, nncf.Dataset(list(calib), _batch), subset_size=len(calib),
            preset=nncf.QuantizationPreset.MIXED if transformer else nncf.QuantizationPreset.PERFORMANCE,
            model_type=nncf.ModelType.TRANSFORMER if transformer else None,
            ignored_scope=nncf.IgnoredScope(names=names, validate=False) if names else None)
    xml_dst.parent.mkdir(parents=True, exist_ok=True)
    ov.save_model(quantized, str(xml_dst), compress_to_fp16=False)
    return xml_dst


def parity(model: torch.nn.Module, path: str | Path, clips: Sequence[np.ndarray],
           backend: str | None = None) -> dict:
    """Compare torch probabilities with an exported graph's on ``clips``, one clip at a time.

    ``backend`` defaults to OpenVINO for ``.xml`` and ONNX Runtime otherwise.  Returns
    ``{"max_abs_diff", "top1_agreement", "n"}``.
    """
    from edge_ser.engine import load_graph

    path = Path(path)
    backend = backend or ("openvino" if path.suffix == ".xml" else "onnxruntime")
    if backend not in ("onnxruntime", "openvino"):
        raise EdgeSerError(f"unknown backend {backend!r}; use 'onnxruntime' or 'openvino'")
    run = load_graph(path, backend, 1)
    model = model.eval()
    diff, agree = 0.0, 0
    for clip in clips:
        x = _batch(clip)
        with torch.no_grad():
            ref = model(torch.from_numpy(x)).numpy()
        out = run(x)
        diff = max(diff, float(np.abs(out - ref).max()))
        agree += int(out.argmax(-1)[0] == ref.argmax(-1)[0])
    n = len(clips)
    return {"max_abs_diff": diff, "top1_agreement": agree / n if n else float("nan"), "n": n}


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


def count_macs(onnx_path: str | Path, seconds: float = 1.0, sample_rate: int = 16000) -> int:
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
