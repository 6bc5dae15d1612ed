"""Shared fixtures: a tiny bundle built with onnx.helper (no torch)."""
from __future__ import annotations

import numpy as np
import pytest

TINY_LABELS = ["anger", "neutral", "sadness"]


def tiny_graph():
    """audio[B, N] -> mean framewise log-power -> linear -> softmax probs[B, 3].

    Loud audio (mean log-power above -4, RMS above ~0.14) is ``anger``, quiet audio (below -8,
    RMS under ~0.02) is ``sadness``, in between ``neutral``. Needs at least 400 samples.
    """
    from onnx import TensorProto, helper, numpy_helper

    frame, stride = 400, 160
    inits = [
        numpy_helper.from_array(np.array([1], np.int64), "axis1"),
        numpy_helper.from_array(np.full((1, 1, frame), 1.0 / frame, np.float32), "kernel"),
        numpy_helper.from_array(np.array(1e-6, np.float32), "eps"),
        numpy_helper.from_array(np.array([[1.0, 0.0, -1.0]], np.float32), "weight"),
        numpy_helper.from_array(np.array([4.0, 0.0, -8.0], np.float32), "bias"),
    ]
    nodes = [
        helper.make_node("Unsqueeze", ["audio", "axis1"], ["x3"]),
        helper.make_node("Mul", ["x3", "x3"], ["power"]),
        helper.make_node("Conv", ["power", "kernel"], ["frame_power"], strides=[stride]),
        helper.make_node("Add", ["frame_power", "eps"], ["frame_power_eps"]),
        helper.make_node("Log", ["frame_power_eps"], ["log_power"]),
        helper.make_node("ReduceMean", ["log_power"], ["feature"], axes=[2], keepdims=0),  # [B, 1]
        helper.make_node("MatMul", ["feature", "weight"], ["scores"]),
        helper.make_node("Add", ["scores", "bias"], ["logits"]),
        helper.make_node("Softmax", ["logits"], ["probs"], axis=-1),
    ]
    graph = helper.make_graph(
        nodes, "tiny-ser",
        [helper.make_tensor_value_info("audio", TensorProto.FLOAT, ["batch", "samples"])],
        [helper.make_tensor_value_info("probs", TensorProto.FLOAT, ["batch", 3])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="edge-ser-tests")
    model.ir_version = 8
    return model


@pytest.fixture(scope="session")
def tiny_bundle(tmp_path_factory):
    """A bundle dir: variant ``fp32`` (ONNX, default) and ``ov-fp32`` (OpenVINO IR, if openvino imports)."""
    onnx = pytest.importorskip("onnx")
    from edge_ser.bundle import write_manifest

    out = tmp_path_factory.mktemp("tiny-bundle")
    model = tiny_graph()
    onnx.checker.check_model(model)
    onnx.save(model, out / "model.onnx")
    variants = {"fp32": {"files": ["model.onnx"], "format": "onnx", "precision": "fp32", "model": "student"}}
    try:
        import openvino as ov
    except ImportError:
        ov = None
    if ov is not None:
        ov.save_model(ov.convert_model(out / "model.onnx"), out / "model.xml", compress_to_fp16=False)
        variants["ov-fp32"] = {"files": ["model.xml", "model.bin"], "format": "openvino", "precision": "fp32",
                               "model": "student"}
    write_manifest(out, {
        "labels": TINY_LABELS, "sample_rate": 16000, "window_s": 2.0, "hop_s": 1.0, "min_input_s": 0.25,
        "max_input_s": 30.0, "variants": variants, "default_variant": "fp32",
        "teacher": {"name": "none (test graph)"}, "student": {"summary": "log-power + linear"},
    })
    return out
