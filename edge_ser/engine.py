"""Inference engines: one bundle variant on ONNX Runtime or OpenVINO, ``audio[B, N] -> embedding[B, D]``, and its
head (:mod:`edge_ser.head`) to ``probs[B, C]``.

An engine runs only bytes the bundle's checksums cover (:meth:`Bundle.read`): the ONNX file is given to ONNX
Runtime as bytes with an empty private folder for external data, the OpenVINO IR as bytes and a weights
tensor. Engines are safe to call from several threads (OpenVINO gets one infer request per thread), keep
memory bounded whatever the input lengths, and refuse embeddings of the wrong size or not finite.
"""
from __future__ import annotations

import functools
import hashlib
import logging
import os
import re
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from .bundle import Bundle, load_bundle
from .errors import BundleError, EdgeSerError
from .head import LinearHead
from .interrupt import temporary_folder
from .manifest import INPUT_NAME, OUTPUT_NAME, Variant

log = logging.getLogger(__name__)

BACKENDS = ("onnxruntime", "openvino")
# OpenVINO's CPU plugin gives each compiled model an alternate signal stack and, when the model is freed, puts
# back the one it replaced, even if that one has been freed meanwhile (models freed in another order than they
# were made). Python runs every signal handler on the alternate stack, so the next Ctrl-C or SIGTERM then
# crashed the process (SIGSEGV) instead of cleaning up. Compiled models are therefore never freed: they live
# as long as the process, one per distinct graph bytes and thread count (engines opened again on the same
# variant share it), so memory grows only with the number of different models a process loads.
_OPENVINO_KEEP: dict[tuple[str, int | None], Callable[[np.ndarray], np.ndarray]] = {}
_OPENVINO_LOCK = threading.Lock()


def max_threads() -> int:
    """The most inference threads a user may ask for: four per core (more only oversubscribes the CPU)."""
    return 4 * (os.cpu_count() or 1)


def check_threads(threads: int | None) -> None:
    if threads is not None and not 1 <= threads <= max_threads():
        raise EdgeSerError(f"threads must be between 1 and {max_threads()} (4 per core on this machine), "
                           f"not {threads}")


def check_backend(backend: str | None) -> None:
    if backend is not None and backend not in BACKENDS:
        raise EdgeSerError(f"unknown backend {backend!r}; choose one of: {', '.join(BACKENDS)}")


def backend_for(variant: Variant, backend: str | None = None) -> str:
    """The backend a variant runs on: OpenVINO IR needs openvino; ONNX runs on ``backend`` (onnxruntime default)."""
    check_backend(backend)
    if variant.format == "openvino":
        if backend == "onnxruntime":
            raise EdgeSerError("this variant is an OpenVINO IR: run it with --backend openvino "
                               "(pip install edge-ser[openvino]) or choose an ONNX variant")
        return "openvino"
    return backend or "onnxruntime"


@dataclass
class Engine:
    """A loaded variant and its head: ``embed`` maps 16 kHz float32 audio ``[B, N]`` to the pooled embedding
    ``[B, dim]`` the head reads, ``run`` to probabilities ``[B, C]``."""

    bundle: Bundle
    name: str
    variant: Variant
    backend: str
    threads: int | None
    _infer: Callable[[np.ndarray], np.ndarray]
    head: LinearHead

    @property
    def labels(self) -> list[str]:
        return self.bundle.labels

    def embed(self, audio: np.ndarray) -> np.ndarray:
        x = np.ascontiguousarray(audio, dtype=np.float32)
        if x.ndim != 2 or x.shape[1] == 0:
            raise ValueError(f"audio must be [batch, samples] with samples > 0, not shape {x.shape}")
        try:
            e = np.asarray(self._infer(x), dtype=np.float32)
        except Exception as err:   # the engines' own error types: a graph that does not take audio[batch, samples]
            raise BundleError(f"variant {self.name!r} cannot run on audio{list(x.shape)}: "
                              f"{str(err).splitlines()[0][:200]}; re-export the bundle") from None
        if e.shape != (len(x), self.head.dim):
            raise BundleError(f"variant {self.name!r} returned shape {e.shape} for {len(x)} clip(s), but its head "
                              f"reads {self.head.dim} numbers per clip; re-export the bundle")
        if not np.isfinite(e).all():
            raise BundleError(f"variant {self.name!r} returned values that are not numbers (NaN or Inf); the model "
                              "is broken: re-export the bundle")
        return e

    def run(self, audio: np.ndarray) -> np.ndarray:
        return self.head.probs(self.embed(audio))


def open_engine(bundle: Bundle | str | os.PathLike, variant: str | None = None, backend: str | None = None,
                threads: int | None = None, prefer: str = "balanced") -> Engine:
    """Load a bundle variant (``None``: the bundle's default; ``"auto"``: the best for this CPU by ``prefer``,
    see :func:`edge_ser.targets.choose_variant`) on a backend."""
    if not isinstance(bundle, Bundle):
        bundle = load_bundle(bundle, verify=False)   # the engine checks the bytes it runs
    check_threads(threads)
    if variant == "auto":
        from .targets import choose_variant
        variant = choose_variant(bundle, backend, prefer=prefer).name
    name, v = bundle.variant(variant)
    backend = backend_for(v, backend)
    blobs = [bundle.read(f) for f in v.files]
    infer = load_graph(blobs, backend, threads, f"{bundle.path / v.files[0]}")
    engine = Engine(bundle, name, v, backend, threads, infer, bundle.head(name))
    engine.run(np.zeros((1, max(1, round(bundle.manifest.input.min_input_s * bundle.manifest.input.sample_rate))),
                        np.float32))
    return engine


def load_graph(blobs: list[bytes], backend: str = "onnxruntime", threads: int | None = None,
               name: str = "model") -> Callable[[np.ndarray], np.ndarray]:
    """A function ``audio[B, N] -> embedding[B, D]`` running one graph (ONNX bytes, or IR xml + bin bytes)."""
    check_threads(threads)
    return _onnxruntime(blobs, threads, name) if backend == "onnxruntime" else _openvino(blobs, threads, name)


def read_graph(path: str | os.PathLike) -> list[bytes]:
    """The bytes of a graph file for :func:`load_graph` (an ``.xml`` with its ``.bin``); for the toolchain's files."""
    path = str(path)
    files = [path, path[:-4] + ".bin"] if path.endswith(".xml") else [path]
    out = []
    for f in files:
        with open(f, "rb") as fh:
            out.append(fh.read())
    return out


def _reason(e: Exception) -> str:
    """The meaningful lines of an engine's exception (OpenVINO starts with lines naming its own source files)."""
    lines = [line.strip() for line in str(e).splitlines() if line.strip()]
    kept = [line for line in lines if not re.match(r"(Exception from|Check .* failed at) \S+:\d+:?$", line)]
    return ": ".join(kept or lines or [type(e).__name__])[:300]


@functools.lru_cache(maxsize=1)
def _warn_ort_telemetry() -> None:
    """Once per process: say so when onnxruntime was imported before edge_ser without ORT_DISABLE_TELEMETRY=1
    (ORT reads the variable on import only; see edge_ser/__init__.py), unless the user set it to another value."""
    from . import _ORT_IMPORTED_FIRST
    if _ORT_IMPORTED_FIRST and os.environ.get("ORT_DISABLE_TELEMETRY") == "1":
        log.warning("onnxruntime was imported before edge_ser, so its usage telemetry is on in this process; "
                    "set ORT_DISABLE_TELEMETRY=1 before importing onnxruntime to turn it off")


def _onnxruntime(blobs: list[bytes], threads: int | None, name: str):
    if len(blobs) != 1:
        raise BundleError(f"{name}: an ONNX variant is one file")
    session = ort_session(blobs[0], threads, name, [INPUT_NAME])
    outputs = [o.name for o in session.get_outputs()]
    output = OUTPUT_NAME if OUTPUT_NAME in outputs else outputs[0]
    return lambda x: session.run([output], {INPUT_NAME: x})[0]   # InferenceSession.run is thread-safe


def ort_session(blob: bytes, threads: int | None, name: str, inputs: list[str]):
    """An ONNX Runtime CPU session of a checksummed graph ``blob`` whose inputs must be ``inputs``."""
    import onnxruntime as ort

    _warn_ort_telemetry()
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads or 0
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.log_severity_level = 4   # fatal only: ORT's own (coloured) error lines would come before ours
    # no busy-waiting worker threads between calls: a Pi classifying every hop has better uses for the CPU
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    with temporary_folder("edge-ser-no-external-data-") as empty:
        # a graph given as bytes would read external data relative to the working directory: point it at an
        # empty folder, so the engine runs nothing but the checksummed bytes
        options.add_session_config_entry("session.model_external_initializers_file_folder_path", empty)
        try:
            session = ort.InferenceSession(blob, options, providers=["CPUExecutionProvider"])
        except Exception as e:  # onnxruntime raises its own exception types
            raise BundleError(f"ONNX Runtime cannot load {name}: {_reason(e)}; re-export the bundle") from None
    found = [i.name for i in session.get_inputs()]
    if found != inputs:
        raise BundleError(f"{name} has inputs {found}, not {inputs}; re-export the bundle")
    return session


def quiet_openvino_telemetry() -> None:
    """Decline OpenVINO's usage telemetry for this process (importing openvino otherwise contacts Google
    Analytics and writes ``~/intel``): every consent check of ``openvino_telemetry`` answers "declined"."""
    try:
        from openvino_telemetry.utils import opt_in_checker
    except ImportError:
        return
    opt_in_checker.OptInChecker.check = lambda self, *a, **k: opt_in_checker.ConsentCheckResult.DECLINED


def import_openvino():
    """``openvino`` with its telemetry off; a clear error naming the extra when it is missing."""
    quiet_openvino_telemetry()
    try:
        import openvino
    except ImportError:
        raise EdgeSerError("the openvino backend needs OpenVINO: pip install edge-ser[openvino] "
                           "(or use --backend onnxruntime)") from None
    return openvino


def _openvino(blobs: list[bytes], threads: int | None, name: str):
    """The infer function of the compiled model for these bytes and threads: compiled once per process and kept
    (see ``_OPENVINO_KEEP``), so opening the same variant again costs no memory."""
    import_openvino()   # a clear error when it is missing, whatever is kept
    key = (hashlib.sha256(b"".join(hashlib.sha256(b).digest() for b in blobs)).hexdigest(), threads)
    with _OPENVINO_LOCK:
        if key not in _OPENVINO_KEEP:
            _OPENVINO_KEEP[key] = _compile_openvino(blobs, threads, name)
        return _OPENVINO_KEEP[key]


def _compile_openvino(blobs: list[bytes], threads: int | None, name: str):
    ov = import_openvino()
    # f32 hint: CPUs with bf16 units would otherwise run fp32 graphs in bf16 and lose parity with torch.
    # No runtime cache: it keeps compiled kernels for every input shape seen (+0.5 GB per 1000 lengths).
    config = {"PERFORMANCE_HINT": "LATENCY", "NUM_STREAMS": "1", "INFERENCE_PRECISION_HINT": "f32",
              "CPU_RUNTIME_CACHE_CAPACITY": "0"}
    if threads:
        config["INFERENCE_NUM_THREADS"] = str(threads)
    if len(blobs) == 2 and not blobs[0].lstrip()[:1] == b"<":
        raise BundleError(f"{name} is not OpenVINO IR XML; re-export the bundle")
    try:
        core = ov.Core()
        if len(blobs) == 2:   # IR: xml text and its weights
            model = core.read_model(model=blobs[0], weights=ov.Tensor(np.frombuffer(blobs[1], np.uint8).copy()))
        else:   # an ONNX graph, from a private empty folder: external data it names cannot be found anywhere
            with temporary_folder("edge-ser-onnx-") as folder:
                path = Path(folder) / "model.onnx"
                path.write_bytes(blobs[0])
                model = core.read_model(str(path))
        compiled = core.compile_model(model, "CPU", config)
    except Exception as e:  # OpenVINO raises RuntimeError subclasses of its own
        raise BundleError(f"OpenVINO cannot load {name}: {_reason(e)}; re-export the bundle") from None
    if len(compiled.inputs) != 1:
        raise BundleError(f"{name} has {len(compiled.inputs)} inputs, not one ({INPUT_NAME!r}); re-export the bundle")
    output = next((p for p in compiled.outputs if OUTPUT_NAME in p.get_names()), compiled.outputs[0])
    local = threading.local()   # an infer request holds its tensors: one per thread

    def infer(x: np.ndarray) -> np.ndarray:
        request = getattr(local, "request", None)
        if request is None:
            request = local.request = compiled.create_infer_request()
        request.infer({0: x})
        return request.get_tensor(output).data.copy()
    return infer
