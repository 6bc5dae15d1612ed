"""Raspberry Pi latency projected two ways, each calibrated on published measurements. Nothing here ran on a Pi.

- **ratio**: the latency measured here (1 thread) x the slowdown published for the same model and engine on a
  Pi against a desktop x86 CPU. The range spans the sources; it assumes this machine's core is about as fast
  as those desktops' cores (a server core is somewhat slower than a 5 GHz desktop core, so the low end is the
  likelier one).
- **MACs**: the variant's multiply-accumulates per window / the sustained MAC rate of one Pi core measured on
  a published model whose MACs are known (the Whisper tiny encoder, S2): it ignores this machine entirely, so
  the two projections check each other.

Sources (quoted in README, "Raspberry Pi"):

- S1 rhasspy/piper issue 33 (2023): Piper VITS in ONNX Runtime, real-time factor Pi 4 vs AMD Ryzen 9 5950X:
  0.494 vs 0.019 (low), 0.803 vs 0.030 (medium): about 26x.
- S2 ggml-org/whisper.cpp issue 89 (Dec 2022): Whisper tiny encoder on 30 s (about 18.4 GMAC: 4 blocks of
  384 over 1500 frames, attention included), 4 threads: Pi 4 9486 ms, Intel i7-8700 731 ms (13x), i.e. 0.49
  vs 6.3 GMAC/s per core; "Raspberry Pi 5 ... 4.5 to 6.2 times faster than the Raspberry Pi 4".
- S3 Ultralytics Raspberry Pi guide and YOLO11 table: YOLO11n in ONNX Runtime, Pi 5 168 ms vs a cloud
  server CPU 56 ms: 3x.
- S4 geerlingguy/top500-benchmark (HPL, all cores): Pi 4 11.9, Pi 5 30.2, Ryzen 5 5600X 229 GFLOP/s:
  19x and 7.6x.

int8: the Pi 4's Cortex-A72 has no dot-product instructions (ONNX Runtime uses widening NEON kernels), the
Pi 5's Cortex-A76 has them (UDOT/SDOT kernels); the MAC rates below are fp32 rates, so int8 rows are projected
as if int8 gave nothing on the Pi (pessimistic on a Pi 5).
"""
from __future__ import annotations

PI_4 = "Raspberry Pi 4 (Cortex-A72)"
PI_5 = "Raspberry Pi 5 (Cortex-A76)"
# slowdown of one Pi core against one desktop core, (low, high)
PI_SLOWDOWN = {PI_4: (13.0, 26.0),    # S2 .. S1
               PI_5: (3.0, 7.6)}      # S3 .. S4
# sustained MAC rate of one Pi core on a transformer encoder, GMAC/s, (low, high)
PI_GMACS_PER_CORE = {PI_4: (0.49, 0.49),                # S2
                     PI_5: (0.49 * 4.5, 0.49 * 6.2)}    # S2 x S2's Pi 5 / Pi 4 factor
SOURCES = ("S1 rhasspy/piper#33 (ONNX Runtime, Pi 4 vs Ryzen 9 5950X, 26x); S2 ggml-org/whisper.cpp#89 (Whisper "
           "tiny encoder: Pi 4 0.49 GMAC/s per core, 13x slower than an i7-8700; Pi 5 4.5-6.2x the Pi 4); S3 "
           "Ultralytics Raspberry Pi guide (YOLO11n in ONNX Runtime, Pi 5 3x slower than a server CPU); S4 "
           "geerlingguy/top500-benchmark (HPL: Pi 4 19x, Pi 5 7.6x slower than a Ryzen 5 5600X)")


def projection(rows: list[dict], window_s: float) -> list[dict]:
    """Projected 1-core latency ranges per Pi for every 1-thread row with a latency (and MACs, if known)."""
    result = []
    for r in rows:
        if r["threads"] != 1 or not r["latency_ms_p50"]:
            continue
        here = r["latency_ms_p50"]
        out = {"variant": r["variant"], "backend": r["backend"], "precision": r["precision"], "latency_ms_here": here}
        gmac = r["macs_per_s"] * window_s / 1e9 if r.get("macs_per_s") else None
        if gmac:
            out["gmac_per_window"] = round(gmac, 4)
        for board in PI_SLOWDOWN:
            lo, hi = PI_SLOWDOWN[board]
            row = {"ratio_ms": [round(here * lo, 1), round(here * hi, 1)]}
            if gmac:
                fast, slow = PI_GMACS_PER_CORE[board][1], PI_GMACS_PER_CORE[board][0]
                row["macs_ms"] = [round(gmac / fast * 1e3, 1), round(gmac / slow * 1e3, 1)]
            out[board] = row
        result.append(out)
    return result
