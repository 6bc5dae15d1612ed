"""Int8 quantization presets: one per CPU family, with the settings its kernels run fastest and most accurately.

Every preset is dynamic quantization (weights int8 offline, activations quantized at run time per tensor) of the
transformer's MatMul/Gemm nodes, per output channel, with the front end (log-mel or CNN feature encoder) left in
float: ONNX Runtime's guidance is "to use dynamic quantization for RNNs and transformer-based models, and static
quantization for CNN models", and "per-channel quantization can improve the accuracy for models whose weight
ranges are large" (onnxruntime.ai/docs/performance/model-optimizations/quantization.html). What differs is the
signedness of the weights, which picks the kernel:

- x86 without VNNI (AVX2): "ONNX Runtime uses the VPMADDUBSW instruction for U8S8 ... This instruction might
  suffer from saturation issues ... you can either try reduce_range or the U8U8 format which doesn't have
  saturation issues" (same page). U8S8 moved a distilled Whisper student's probabilities by up to 0.27 here,
  U8U8 by 0.01 at the same speed; so unsigned weights (U8U8).
- x86 with VNNI, and ARM64: "There is no such issue on other CPU architectures (x64 with VNNI and ARM)" (same
  page); on ARM64 "U8S8 can be faster than U8U8 for low end ARM64 ... no difference for high end ARM64" (the
  page's earlier version). MLAS runs U8S8 with VNNI on x86, with UDOT on ARM64 cores that have dot-product
  instructions (Cortex-A76, Raspberry Pi 5), and with its X8S8 NEON kernel on those without (Cortex-A72, Pi 4)
  (onnxruntime/core/mlas/lib/platform.cpp); so signed weights (U8S8).
- OpenVINO int8 (NNCF post-training quantization, transformer scheme, which uses the MIXED preset "recommended
  for models with non-ReLU ... activation functions, e.g. ... GELU") runs on x86 only: "Arm platforms execute
  quantized models in simulation mode: the whole model ... is executed in floating-point precision"
  (docs.openvino.ai, CPU device).
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Preset:
    name: str                      # the variant is MODEL-NAME (teacher-int8-u8s8, student-int8-u8u8)
    targets: tuple[str, ...]
    signed_weights: bool
    description: str


ORT_PRESETS = (
    Preset("int8-u8u8", ("x86-avx2",), False, "dynamic U8U8, per channel (no VPMADDUBSW saturation)"),
    Preset("int8-u8s8", ("x86-vnni", "arm64", "arm64-dotprod", "generic"), True,
           "dynamic U8S8, per channel (VNNI on x86, UDOT or X8S8 NEON kernels on ARM64, portable kernels elsewhere)"),
)
OPENVINO_INT8_TARGETS = ("x86-vnni", "x86-avx2")
