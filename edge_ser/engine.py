"""Inference engines: one bundle variant on ONNX Runtime or OpenVINO, ``audio[B, N] -> probs[B, C]``."""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Callable

import numpy as np

from .bundle import INPUT_NAME, OUTPUT_NAME, Bundle, Variant, load_bundle
from .errors import BundleError, EdgeSerError

BACKENDS = ("onnxruntime", "openvino")


@dataclass
class Engine:
    """A loaded model; ``run`` maps 16 kHz float32 audio ``[B, N]`` to probabilities ``[B, C]``."""

    bundle: Bundle
    variant: Variant
    backend: str
    threads: int | None
    _infer: Callable[[np.ndarray], np.ndarray]

    @property
    def labels(self) -> list[str]:
        return self.bundle.labels

    def run(self, audio: np.ndarray) -> np.ndarray:
        x = np.ascontiguousarray(audio, dtype=np.float32)
        if x.ndim == 1:
            x = x[None]
        if x.ndim != 2:
            raise ValueError(f"audio must be [batch, samples], not shape {x.shape}")
        return np.asarray(self._infer(x), dtype=np.float32)


def open_engine(bundle: Bundle | str | os.PathLike, variant: str | None = None,
                backend: str = "onnxruntime", threads: int | None = None) -> Engine:
    """Load a bundle variant (the bundle's default if None) on a backend, checksums verified."""
    if not isinstance(bundle, Bundle):
        bundle = load_bundle(bundle)
    if backend not in BACKENDS:
        raise EdgeSerError(f"unknown backend {backend!r}; choose one of: {', '.join(BACKENDS)}")
    if threads is not None and threads < 1:
        raise EdgeSerError(f"threads must be at least 1, not {threads}")
    v = bundle.variant(variant)
    if v.format not in ("onnx", "openvino"):
        raise BundleError(f"variant {v.name!r} has unknown format {v.format!r}; re-export the bundle")
    if v.format == "openvino" and backend != "openvino":
        onnx = [name for name, spec in bundle.variants.items() if spec.format == "onnx"]
        raise BundleError(f"variant {v.name!r} is an OpenVINO IR: run it with --backend openvino "
                          f"(pip install edge-ser[openvino])"
                          + (f" or choose an ONNX variant: {', '.join(onnx)}" if onnx else ""))
    path = bundle.model_path(v)
    infer = load_graph(path, backend, threads)
    engine = Engine(bundle, v, backend, threads, infer)
    probe = engine.run(np.zeros((1, max(1, round(bundle.min_input_s * bundle.sample_rate))), np.float32))
    if probe.shape != (1, len(bundle.labels)):
        raise BundleError(f"{path} outputs shape {probe.shape} for one clip, but the manifest lists "
                          f"{len(bundle.labels)} labels; re-export the bundle")
    return engine


def load_graph(path, backend: str = "onnxruntime", threads: int | None = None):
    """A function ``audio[B, N] -> probs[B, C]`` running one graph file on ``backend``."""
    return _onnxruntime(path, threads) if backend == "onnxruntime" else _openvino(path, threads)


def _onnxruntime(path, threads: int | None):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads or 0
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.log_severity_level = 3
    # no busy-waiting worker threads between calls: a Pi classifying every hop has better uses for the CPU
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    try:
        session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    except Exception as e:  # onnxruntime raises its own exception types
        raise BundleError(f"ONNX Runtime cannot load {path}: {e}; re-export the bundle") from None
    inputs = [i.name for i in session.get_inputs()]
    outputs = [o.name for o in session.get_outputs()]
    if INPUT_NAME not in inputs:
        raise BundleError(f"{path} has inputs {inputs}, not {INPUT_NAME!r}; re-export the bundle")
    output = OUTPUT_NAME if OUTPUT_NAME in outputs else outputs[0]
    return lambda x: session.run([output], {INPUT_NAME: x})[0]


def _openvino(path, threads: int | None):
    try:
        import openvino as ov
    except ImportError:
        raise EdgeSerError("the openvino backend needs OpenVINO: pip install edge-ser[openvino] "
                           "(or use --backend onnxruntime)") from None
    # f32 hint: CPUs with bf16 units would otherwise run fp32 graphs in bf16 and lose parity with torch
    config = {"PERFORMANCE_HINT": "LATENCY", "NUM_STREAMS": "1", "INFERENCE_PRECISION_HINT": "f32"}
    if threads:
        config["INFERENCE_NUM_THREADS"] = str(threads)
    try:
        compiled = ov.Core().compile_model(str(path), "CPU", config)
    except Exception as e:  # OpenVINO raises RuntimeError subclasses of its own
        raise BundleError(f"OpenVINO cannot load {path}: {e}; re-export the bundle") from None
    audio = _port(compiled.inputs, INPUT_NAME, path)
    probs = _port(compiled.outputs, OUTPUT_NAME, path)
    request = compiled.create_infer_request()

    def infer(x: np.ndarray) -> np.ndarray:
        request.infer({audio: x})
        return request.get_tensor(probs).data.copy()
    return infer


def _port(ports, name: str, path):
    for port in ports:
        if name in port.get_names():
            return port
    if len(ports) == 1 or (ports and name == OUTPUT_NAME):
        return ports[0]
    raise BundleError(f"{path} has no tensor named {name!r}; re-export the bundle")
