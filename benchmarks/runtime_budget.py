"""Issue 5 budgets: a 1-hour file streamed through `edge-ser run` (peak RSS, real-time factor, 1 thread).

The file is built block by block from EmoDB clips separated by known silences, so it never sits in memory.
Usage: python benchmarks/runtime_budget.py [--bundle bundles/emodb] [--variants auto,student-int8-u8u8] [--hours 1]
Writes benchmarks/results/runtime_budget.json and .md.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import soundfile as sf

SR = 16000


def build_long_file(path: Path, clips_dir: Path, seconds: float, seed: int = 0) -> dict:
    """Clips with 0.5-2 s silences between them, written incrementally; returns speech/silence totals."""
    rng = np.random.default_rng(seed)
    clips = sorted(clips_dir.glob("*.wav"))
    written = speech = 0
    with sf.SoundFile(path, "w", SR, 1, "PCM_16") as f:
        while written < seconds * SR:
            x, sr = sf.read(clips[rng.integers(len(clips))], dtype="float32")
            gap = np.zeros(int(rng.uniform(0.5, 2.0) * SR), np.float32)
            f.write(x)
            f.write(gap)
            written += len(x) + len(gap)
            speech += len(x)
    return {"audio_s": written / SR, "speech_s": speech / SR}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bundle", type=Path, default=Path("bundles/emodb"))
    ap.add_argument("--variants", default="auto,student-int8-u8u8", help="comma-separated, one run each")
    ap.add_argument("--hours", type=float, default=1.0)
    ap.add_argument("--data", type=Path, default=Path(os.environ.get("EDGE_SER_DATA", "../shared/data/emodb")))
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    ap.add_argument("--workdir", type=Path, default=Path("/tmp"))
    args = ap.parse_args()
    long_file = args.workdir / f"edge_ser_{args.hours:g}h.wav"
    facts = build_long_file(long_file, args.data, args.hours * 3600)
    events = args.workdir / "edge_ser_events.jsonl"
    results = []
    md = ("| variant | audio | speech | events | wall | RTF (budget 0.05) | peak RSS MB (budget 200) |\n"
          "|---|---|---|---|---|---|---|\n")
    for variant in args.variants.split(","):
        events.unlink(missing_ok=True)
        cmd = [sys.executable, "-m", "edge_ser", "run", str(args.bundle), "--input", str(long_file),
               "--variant", variant, "--threads", "1", "--output", str(events)]
        t0 = time.perf_counter()
        child = subprocess.Popen(cmd)
        _, status, usage = os.wait4(child.pid, 0)   # this child's own peak RSS
        child.returncode = os.waitstatus_to_exitcode(status)
        if child.returncode != 0:
            sys.exit(f"error: {' '.join(cmd)} failed")
        wall = time.perf_counter() - t0
        peak_mb = usage.ru_maxrss / 1024
        n_events = sum(1 for _ in open(events))
        results.append({**facts, "bundle": str(args.bundle), "variant": variant, "threads": 1,
                        "wall_s": round(wall, 1), "rtf": wall / facts["audio_s"], "peak_rss_mb": round(peak_mb, 1),
                        "events": n_events, "budget": {"peak_rss_mb": 200, "rtf": 0.05}})
        md += (f"| {variant} | {facts['audio_s'] / 3600:.2f} h | {facts['speech_s'] / 3600:.2f} h | {n_events} | "
               f"{wall:.0f} s | {wall / facts['audio_s']:.4f} | {peak_mb:.0f} |\n")
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "runtime_budget.json").write_text(json.dumps(results, indent=2) + "\n")
    (args.out / "runtime_budget.md").write_text(md)
    print(md)
    long_file.unlink()


if __name__ == "__main__":
    main()
