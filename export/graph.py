"""Graph export: torch -> ONNX / OpenVINO IR, int8 quantization and parity checks (MACs: :mod:`.macs`).

Every graph maps ``audio[batch, samples]`` (float32, 16 kHz) to ``embedding[batch, dim]`` (the pooled layers its
head reads; the head ships as numbers, see ``edge_ser.head``) with dynamic batch and samples.  The front end
(log-mel or conv feature extractor) lives inside the graph; :func:`front_end_nodes` finds it so quantizers can
leave it in float (int8 raw audio or power spectra lose most of their dynamic range).
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

from edge_ser.engine import import_openvino, load_graph, read_graph
from edge_ser.errors import EdgeSerError
from edge_ser.manifest import INPUT_NAME, OUTPUT_NAME

OPSET = 17
SMOOTH_ALPHA = 0.5   # SmoothQuant's migration strength (:func:`smooth_layer_norms`), its paper's default


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


def export_onnx(model: torch.nn.Module, path: str | Path, example_len: int = 32000,
                convs_as_matmul: bool = True) -> Path:
    """Export ``model`` (audio[B, N] -> embedding[B, D]) to ONNX, opset 17, dynamic batch and samples; its
    ``MatMulConv1d`` as MatMuls (for ONNX Runtime's dynamic int8) or, with ``convs_as_matmul`` False, as Conv
    (faster in OpenVINO)."""
    from .teachers import MatMulConv1d

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    model = model.eval()
    convs = [m for m in model.modules() if isinstance(m, MatMulConv1d)]
    previous = [conv.as_matmul for conv in convs]
    example = torch.randn(1, example_len, generator=torch.Generator().manual_seed(0)) * 0.1
    try:
        for conv in convs:
            conv.as_matmul = convs_as_matmul
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation / tracer notes
            torch.onnx.export(model, (example,), str(path), input_names=[INPUT_NAME],
                              output_names=[OUTPUT_NAME], opset_version=OPSET, dynamo=False,
                              dynamic_axes={INPUT_NAME: {0: "batch", 1: "samples"},
                                            OUTPUT_NAME: {0: "batch"}})
    finally:
        for conv, value in zip(convs, previous):
            conv.as_matmul = value
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


def quantize_dynamic_onnx(src: str | Path, dst: str | Path, signed_weights: bool,
                          nodes_to_exclude: Sequence[str] | None = None,
                          op_types: Sequence[str] = ("MatMul", "Gemm"), calib: Sequence[np.ndarray] = ()) -> Path:
    """Dynamic 8-bit quantization: weights quantized offline per output channel, activations at run time (per
    tensor); weights int8 (U8S8 kernels) or uint8 (U8U8), see :mod:`.presets`. With ``calib`` clips the graph's
    layer norms are smoothed first (:func:`smooth_layer_norms`).

    ``nodes_to_exclude=None`` keeps the front end (:func:`front_end_nodes`) in float; pass ``()`` to quantize
    everything. Conv is left out by default: ORT's ConvInteger is no faster than float Conv.
    """
    from onnxruntime.quantization import QuantType, quantize_dynamic

    src, dst = Path(src), Path(dst)
    smoothed = dst.with_name(f".{dst.stem}-smoothed.onnx")
    try:
        source = src if not calib or not smooth_layer_norms(src, smoothed, calib) else smoothed
        with _quiet():
            quantize_dynamic(source, dst, op_types_to_quantize=list(op_types), per_channel=True,
                             weight_type=QuantType.QInt8 if signed_weights else QuantType.QUInt8,
                             nodes_to_exclude=_exclusions(src, nodes_to_exclude))
    finally:
        smoothed.unlink(missing_ok=True)
    onnx.checker.check_model(str(dst))
    return dst


def smooth_layer_norms(src: str | Path, dst: str | Path, clips: Sequence[np.ndarray],
                       alpha: float = SMOOTH_ALPHA) -> int:
    """SmoothQuant (Xiao et al., 2023) at no run-time cost: a per-tensor int8 activation loses its small channels
    to its few large ones, so every LayerNormalization read only by MatMuls with constant weights gets channel
    scales s = peak|x|^alpha / peak|W row|^(1 - alpha) (peaks of its output over ``clips``), its gamma and beta
    divided and the MatMuls' weight rows multiplied by them: the same function in float, an easier one to
    quantize. Writes ``dst`` if anything was smoothed; returns how many layer norms were."""
    import onnxruntime as ort
    from onnx import numpy_helper

    model = onnx.load(str(src))
    graph = model.graph
    weights = {t.name: t for t in graph.initializer}
    readers: dict[str, list] = {}
    for node in graph.node:
        for name in node.input:
            readers.setdefault(name, []).append(node)
    outputs = {o.name for o in graph.output}
    aliases = {n.output[0]: n.input[0] for n in graph.node if n.op_type == "Identity"}   # an exporter's shared ones

    def constant(name: str):
        while name in aliases and name not in weights:
            name = aliases[name]
        return weights.get(name)

    norms = {n.output[0]: n for n in graph.node if n.op_type == "LayerNormalization" and len(n.input) == 3
             and n.output[0] not in outputs and all(constant(i) for i in n.input[1:])
             and readers.get(n.output[0]) and all(r.op_type == "MatMul" and r.input[0] == n.output[0]
                                                  and len(readers.get(r.input[1], ())) == 1
                                                  and r.input[1] in weights for r in readers[n.output[0]])}
    if not norms:
        return 0
    graph.output.extend(onnx.helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, None) for name in norms)
    options = ort.SessionOptions()
    options.intra_op_num_threads = options.inter_op_num_threads = 1
    session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    del graph.output[len(graph.output) - len(norms):]
    peaks = dict.fromkeys(norms, 0.0)
    for clip in clips:
        for name, x in zip(norms, session.run(list(norms), {INPUT_NAME: _batch(clip)})):
            peaks[name] = np.maximum(peaks[name], np.abs(x).reshape(-1, x.shape[-1]).max(0))
    array = numpy_helper.to_array

    def replace(name: str, value: np.ndarray) -> None:
        weights[name].CopyFrom(numpy_helper.from_array(value.astype(np.float32), name))

    for name, norm in norms.items():
        mats = [r.input[1] for r in readers[name]]
        rows = np.max([np.abs(array(weights[m])).max(1) for m in mats], 0)
        scale = np.maximum(peaks[name], 1e-5) ** alpha / np.maximum(rows, 1e-5) ** (1 - alpha)
        for i, param in enumerate(norm.input[1:], 1):   # its own copy: an exporter shares equal gammas and betas
            norm.input[i] = f"{norm.name}/smoothed_{i}"
            graph.initializer.append(numpy_helper.from_array((array(constant(param)) / scale).astype(np.float32),
                                                             norm.input[i]))
        for m in mats:
            replace(m, array(weights[m]) * scale[:, None])
    used = {i for n in graph.node for i in n.input} | outputs
    for node in [n for n in graph.node if n.op_type == "Identity" and n.output[0] not in used]:
        graph.node.remove(node)
    used = {i for n in graph.node for i in n.input} | outputs
    for t in [t for t in graph.initializer if t.name not in used]:
        graph.initializer.remove(t)
    onnx.save(model, str(dst))
    return len(norms)


def _batch(clip: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(clip, dtype=np.float32).reshape(1, -1)


def export_openvino(onnx_path: str | Path, xml_path: str | Path) -> Path:
    """Convert an ONNX graph to OpenVINO IR (``.xml`` + ``.bin``), weights kept in fp32."""
    ov = import_openvino()
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

    ov = import_openvino()

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


def parity(model: torch.nn.Module, path: str | Path, clips: Sequence[np.ndarray], head=None,
           backend: str | None = None) -> dict:
    """Compare torch probabilities with an exported graph's on ``clips``, one clip at a time; the graph's output
    goes through ``head`` (an ``edge_ser.head.LinearHead``) first when given, as the runtime does.

    ``backend`` defaults to OpenVINO for ``.xml`` and ONNX Runtime otherwise.  Returns
    ``{"max_abs_diff", "top1_agreement", "n"}``.
    """
    path = Path(path)
    backend = backend or ("openvino" if path.suffix == ".xml" else "onnxruntime")
    if backend not in ("onnxruntime", "openvino"):
        raise EdgeSerError(f"unknown backend {backend!r}; use 'onnxruntime' or 'openvino'")
    run = load_graph(read_graph(path), backend, 1, str(path))
    model = model.eval()
    diff, agree = 0.0, 0
    for clip in clips:
        x = _batch(clip)
        with torch.no_grad():
            ref = model(torch.from_numpy(x)).numpy()
        out = run(x) if head is None else head.probs(run(x))
        diff = max(diff, float(np.abs(out - ref).max()))
        agree += int(out.argmax(-1)[0] == ref.argmax(-1)[0])
    n = len(clips)
    return {"max_abs_diff": diff, "top1_agreement": agree / n if n else float("nan"), "n": n}
