"""Which CPU this is, and which bundle variant suits it best (``--variant auto``).

An exporter writes one int8 variant per CPU family (see the quantization presets of the toolchain) and records
in each variant the targets it was made for. :func:`choose_variant` keeps the variants of the model the
preference asks for (the student, the teacher, or any student for speed) that run here (target and installed
engines), drops those more than the bundle's ``evaluation.tolerance_ua`` below the most accurate of them (int8
damage), and takes the fastest measured at export on this CPU family (``latency_ms``), else the one made for this
CPU, int8 before fp16 before fp32. Which *model* runs is the recipe's choice, not the held-out speakers' (a few
speakers cannot rank models). An int8 variant's UA measured on another CPU family does not count against it:
int8 kernels differ (x86 without VNNI saturates where VNNI and ARM do not).
"""
from __future__ import annotations

import importlib.util
import platform
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from .bundle import Bundle
from .errors import BundleError, EdgeSerError

# x86: VNNI (AVX512-VNNI or AVX-VNNI) multiplies u8 x s8 in one instruction; without it AVX2 does u8 x s8 with a
# saturating 16-bit intermediate (vpmaddubsw). ARM64: SDOT/UDOT (FEAT_DotProd, Armv8.2: Cortex-A76 in the Pi 5)
# or plain NEON (Armv8.0: Cortex-A72 in the Pi 4).
TARGETS = {
    "x86-vnni": "x86-64 with VNNI (AVX512-VNNI or AVX-VNNI)",
    "x86-avx2": "x86-64 with AVX2, no VNNI",
    "arm64-dotprod": "ARM64 with dot-product instructions (e.g. Raspberry Pi 5)",
    "arm64": "ARM64 without dot-product instructions (e.g. Raspberry Pi 4)",
    "generic": "another CPU",
}
PRECISION_ORDER = ("int8", "fp16", "fp32")
PREFERENCES = ("balanced", "accuracy", "speed")   # what --variant auto optimises (--prefer)
FAST_HEAD = "fast"          # the fast student of an export: the name of its head and of its variants (fast-*)


@lru_cache(maxsize=1)
def cpu_flags() -> frozenset[str]:
    """Lower-case CPU feature flags (/proc/cpuinfo on Linux, else numpy's runtime CPU dispatch table)."""
    flags: set[str] = set()
    try:
        for line in Path("/proc/cpuinfo").read_text(errors="replace").splitlines():
            key, _, value = line.partition(":")
            if key.strip().lower() in ("flags", "features"):
                flags.update(value.lower().split())
    except OSError:
        pass
    if not flags:
        try:
            from numpy._core._multiarray_umath import __cpu_features__ as features
        except ImportError:   # numpy < 2
            from numpy.core._multiarray_umath import __cpu_features__ as features
        names = {"AVX2": "avx2", "AVX512VNNI": "avx512_vnni", "ASIMDDP": "asimddp", "ASIMD": "asimd"}
        flags = {names[k] for k, on in features.items() if on and k in names}
    return frozenset(flags)


def detect_target(machine: str | None = None, flags: frozenset[str] | None = None) -> str:
    """One of ``TARGETS`` for this CPU (or for the given ``platform.machine()`` string and flags)."""
    machine = (machine or platform.machine()).lower()
    flags = cpu_flags() if flags is None else flags
    if machine in ("x86_64", "amd64"):
        if {"avx512_vnni", "avx_vnni"} & flags:
            return "x86-vnni"
        return "x86-avx2" if "avx2" in flags else "generic"
    if machine in ("aarch64", "arm64"):
        return "arm64-dotprod" if "asimddp" in flags else "arm64"
    return "generic"


def installed_backends() -> list[str]:
    return [b for b in ("onnxruntime", "openvino") if importlib.util.find_spec(b) is not None]


@dataclass
class Choice:
    name: str
    target: str
    reason: str


def choose_variant(bundle: Bundle, backend: str | None = None, target: str | None = None,
                   backends: list[str] | None = None, prefer: str = "balanced") -> Choice:
    """The variant ``--variant auto`` runs: made for this CPU, runnable here, then by ``prefer``:

    - ``balanced``: the student (not the fast student): its fastest variant within the UA tolerance of its most
      accurate one;
    - ``accuracy``: the teacher (the accurate model; the fastest of its variants within the tolerance), or the
      students where the bundle has no teacher;
    - ``speed``: the fastest student (the fast student in a default export), whatever its accuracy.

    With ``backend``, variants made for that engine come first (an OpenVINO IR for openvino: the latency an ONNX
    variant was measured with at export is ONNX Runtime's)."""
    from .engine import check_backend

    check_backend(backend)
    if prefer not in PREFERENCES:
        raise EdgeSerError(f"unknown preference {prefer!r}; choose one of: {', '.join(PREFERENCES)}")
    target = target or detect_target()
    installed = installed_backends() if backends is None else backends
    backends = [b for b in installed if backend in (None, b)]
    tolerance = bundle.manifest.evaluation.tolerance_ua if bundle.manifest.evaluation else 0.01
    engines = {n: v for n, v in bundle.variants.items()
               if ("openvino" in backends if v.format == "openvino" else backends)}
    if not engines and backend in installed:   # onnxruntime asked for, and every variant is an OpenVINO IR
        raise BundleError(f"no variant of {bundle.path} runs on {backend}: they are OpenVINO IR; run them with "
                          "--backend openvino (or without --backend)")
    if not engines:
        raise BundleError(f"no variant of {bundle.path} runs with {', '.join(backends) or 'no engine'} installed; "
                          "pip install edge-ser[openvino] or pick one with --variant")
    # students made for this CPU (or for any); a slimmed bundle may hold none, and any ONNX graph still runs here
    model = "teacher" if prefer == "accuracy" else "student"
    pool = {n: v for n, v in engines.items() if v.model == model} or engines
    if prefer == "balanced":
        pool = {n: v for n, v in pool.items() if v.head != FAST_HEAD} or pool
    runnable = {n: v for n, v in pool.items() if not v.targets or target in v.targets} or pool
    def ua(v):   # None where unknown for this CPU
        if v.metrics is None or (v.precision == "int8" and v.metrics.target not in ("", target)):
            return None
        return v.metrics.ua
    best = max((ua(v) for v in runnable.values() if ua(v) is not None), default=None)
    accurate = {n: v for n, v in runnable.items()
                if prefer == "speed" or best is None or ua(v) is None or ua(v) >= best - tolerance}

    def measured(v):   # the export measured each variant on its own engine (IR on openvino, ONNX on onnxruntime)
        return backend in (None, "openvino" if v.format == "openvino" else "onnxruntime")

    def rank(item):   # made for the engine asked for, measured fastest on this CPU family, else made for it, int8 first
        name, v = item
        return (not measured(v), v.latency_ms.get(target, float("inf")) if measured(v) else float("inf"),
                target not in v.targets, PRECISION_ORDER.index(v.precision), name != bundle.manifest.default_variant)
    name, v = min(accurate.items(), key=rank)
    made = "made for this CPU" if target in v.targets else "runs on any CPU" if not v.targets else \
        f"made for {', '.join(v.targets)}, the only kind this bundle has"
    if target in v.latency_ms and measured(v):
        made += f", fastest measured at export ({v.latency_ms[target]:.1f} ms per window)"
    score = f", UA {ua(v):.3f}" if ua(v) is not None else ", UA not measured on this CPU family"
    within = "" if best is None or prefer == "speed" else \
        f" within {tolerance:.3f} UA of the most accurate runnable {v.model}"
    return Choice(name, target, f"{TARGETS[target]}, {prefer}: {v.precision} {v.format} {v.model} variant {made}"
                                f"{within}{score}")
