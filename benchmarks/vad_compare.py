"""The three streaming VADs (energy, webrtc, silero) on a long synthetic stream with known speech regions.

Usage: python benchmarks/vad_compare.py [--minutes 10] [--seed 0] [--data ../shared/data] [--out benchmarks/results]
Writes OUT/vad_compare.md and .json and prints the tables; relative paths resolve from the current directory.

The stream (16 kHz, the same for the same seed) alternates gaps and speech, starting and ending with a gap.
Speech: clips from EmoDB (*.wav), BanglaSER, BAVED and TurEV (*.flac) in turn, each corpus in a seeded order, read
with load_audio, less leading and trailing near-silence (10 ms frames 50 dB or more below the clip's loudest: EmoDB's
zero padding here, and BanglaSER's ~1 s at -85 dBFS around the words, which |x| < SILENCE_PEAK would keep), scaled
to -23 dBFS RMS (peak at most 0.9); a random quarter lie over pink noise at -50 dBFS. The truth is the trimmed clip
spans, so louder room tone still counts as speech. Gaps: 0.5-4 s, the kinds in shuffled rounds: near-silence
(white dither at -80 dBFS), white and pink noise at -50/-40/-30 dBFS, mains hum at 50 and 60 Hz (harmonics 1-5 at
amplitude 1/h, -30 dBFS in all), DC offset 0.1 (over the dither), and three unsteady sounds that are not speech at
-30 dBFS: music (harmonic notes of 0.2-0.6 s, decaying), clatter (decaying noise bursts, four a second) and throb
(pink noise whose level swings by 20 dB four times a second); 20 ms fades, so no clicks. Levels: RMS re 1.0.

Each VAD (default VadOptions) gets the stream in 0.1 s chunks. Segments include pad_s of padding on each side, so
the truth is expanded by pad_s for frame scores and boundaries. found: true regions that one segment overlaps by
half or more; false: segments overlapping no true region; prec/rec/F1: 10 ms frames against the expanded truth;
start/end: median |boundary error| in ms over found regions whose first (last) overlapping segment overlaps no
earlier (later) region, so merged neighbours do not count (signed medians, negative = early, in the JSON); CPU:
time.process_time per second of audio (ONNX Runtime on 1 thread). Per gap kind: false segments (by the gap holding
their middle) per minute of that kind, and the share of those gaps (less pad_s at each end) inside segments.
"""
from __future__ import annotations

import argparse
import json
import logging
import textwrap
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np

from edge_ser.audio import SAMPLE_RATE, load_audio
from edge_ser.errors import EdgeSerError
from edge_ser.vad import VADS, Vad, VadOptions

log = logging.getLogger("vad_compare")
CORPORA = (("emodb", "*.wav"), ("banglaser", "*.flac"), ("baved", "*.flac"), ("turev", "*.flac"))
GAPS = ("near-silence", "white -50", "white -40", "white -30", "pink -50", "pink -40", "pink -30",
        "hum 50", "hum 60", "DC 0.1", "music -30", "clatter -30", "throb -30")
SPEECH_DB, BED_DB, HUM_DB, DITHER_DB, TRIM_DB = -23.0, -50.0, -30.0, -80.0, -50.0
NOISY_SHARE, CHUNK_S, FRAME_S, FADE_S = 0.25, 0.1, 0.01, 0.02


def at_level(x: np.ndarray, level_db: float) -> np.ndarray:
    return x * 10 ** (level_db / 20) / np.sqrt(np.mean(x ** 2))


def fade(x: np.ndarray) -> np.ndarray:
    """Raised-cosine fade in and out over FADE_S."""
    k = min(round(FADE_S * SAMPLE_RATE), len(x) // 2)
    x[:k], x[len(x) - k:] = x[:k] * np.hanning(2 * k)[:k], x[len(x) - k:] * np.hanning(2 * k)[k:]
    return x


def noise(rng: np.random.Generator, n: int, colour: str, level_db: float) -> np.ndarray:
    """White or pink (power 1/f) Gaussian noise at an RMS level."""
    x = rng.standard_normal(n)
    if colour == "pink":
        x = np.fft.irfft(np.fft.rfft(x) / np.sqrt(np.maximum(np.arange(n // 2 + 1), 1)), n)
    return at_level(x, level_db)


def gap_sound(rng: np.random.Generator, kind: str, n: int) -> np.ndarray:
    """n samples of one gap kind (see GAPS)."""
    name, _, value = kind.partition(" ")
    if name in ("white", "pink"):
        return fade(noise(rng, n, name, float(value)))
    if name == "hum":
        t = np.arange(n) / SAMPLE_RATE
        x = sum(np.sin(2 * np.pi * h * float(value) * t + rng.uniform(0, 2 * np.pi)) / h for h in range(1, 6))
        return fade(at_level(x, HUM_DB))
    t = np.arange(n) / SAMPLE_RATE
    if name == "music":     # a melody of harmonic notes, 0.2-0.6 s each, decaying
        x, start = np.zeros(n), 0
        while start < n:
            f0, length = 220 * 2 ** (rng.integers(0, 24) / 12), round(rng.uniform(0.2, 0.6) * SAMPLE_RATE)
            u = t[:min(length, n - start)]
            x[start:start + len(u)] = sum(np.sin(2 * np.pi * f0 * h * u) / h ** 1.5 for h in range(1, 8)) * \
                np.exp(-4 * u)
            start += length
        return fade(at_level(x, float(value)))
    if name == "clatter":   # decaying noise bursts (dishes, keys), four a second on average
        x = np.zeros(n)
        for at in rng.integers(0, max(1, n - 800), size=max(1, round(4 * n / SAMPLE_RATE))):
            x[at:at + 800] += rng.standard_normal(800) * np.exp(-np.arange(800) / 100)
        return fade(at_level(x, float(value))) + noise(rng, n, "white", DITHER_DB)
    if name == "throb":     # pink noise whose level rises and falls by 20 dB four times a second (a machine)
        return fade(at_level(noise(rng, n, "pink", 0.0) * (0.55 + 0.45 * np.sin(2 * np.pi * 4 * t)), float(value)))
    dc = fade(np.full(n, float(value))) if name == "DC" else 0.0
    return noise(rng, n, "white", DITHER_DB) + dc


def speech_clip(path: Path) -> np.ndarray | None:
    """A clip less its leading and trailing near-silence, at SPEECH_DB; None if it is all zeros."""
    x, hop = load_audio(path).astype(np.float64), round(FRAME_S * SAMPLE_RATE)
    power = np.mean(x[:len(x) // hop * hop].reshape(-1, hop) ** 2, axis=1)
    loud = np.flatnonzero(power > power.max() * 10 ** (TRIM_DB / 10))
    if loud.size == 0:
        return None
    x = at_level(x[loud[0] * hop:(loud[-1] + 1) * hop], SPEECH_DB)
    return x * min(1.0, 0.9 / np.max(np.abs(x)))


def build_stream(data: Path, minutes: float, seed: int) -> tuple[np.ndarray, list[dict], list[dict]]:
    """The stream, its speech regions and its gaps (dicts with sample offsets start/end), tiling it."""
    rng = np.random.default_rng(seed)
    files = [sorted((data / name).rglob(pattern)) for name, pattern in CORPORA]
    files = [[f[i] for i in rng.permutation(len(f))] for f in files]
    parts, regions, gaps, pos, i = [], [], [], 0, 0
    while True:
        if len(gaps) % len(GAPS) == 0:
            order = rng.permutation(len(GAPS))
        kind, n = GAPS[order[len(gaps) % len(GAPS)]], round(rng.uniform(0.5, 4.0) * SAMPLE_RATE)
        parts.append(gap_sound(rng, kind, n))
        gaps.append({"start": pos, "end": pos + n, "kind": kind})
        pos += n
        if pos >= minutes * 60 * SAMPLE_RATE:
            break
        x = None
        while x is None:
            corpus = i % len(CORPORA)
            path = files[corpus][(i // len(CORPORA)) % len(files[corpus])]
            x, i = speech_clip(path), i + 1
        noisy = bool(rng.random() < NOISY_SHARE)
        parts.append(x + fade(noise(rng, len(x), "pink", BED_DB)) if noisy else x)
        regions.append({"start": pos, "end": pos + len(x), "file": str(path.relative_to(data)), "noisy": noisy})
        pos += len(x)
    log.info("stream: %.1f min, %d clips, %.1f min speech", pos / SAMPLE_RATE / 60, len(regions),
             sum(r["end"] - r["start"] for r in regions) / SAMPLE_RATE / 60)
    return np.concatenate(parts).astype(np.float32), regions, gaps


def run_vad(name: str, audio: np.ndarray) -> tuple[list[tuple[int, int]], float]:
    """Segments (start, end samples) of one VAD fed CHUNK_S chunks, and the CPU seconds that took."""
    vad, chunk = Vad(name, VadOptions(), SAMPLE_RATE), round(CHUNK_S * SAMPLE_RATE)
    t0 = time.process_time()
    segments = [s for i in range(0, len(audio), chunk) for s in vad.feed(audio[i:i + chunk])] + vad.flush()
    cpu = time.process_time() - t0
    log.info("%s: %d segments, %.1f CPU s", name, len(segments), cpu)
    return [(s.start, s.end) for s in segments], cpu


def overlap(a: tuple[int, int], b: tuple[int, int]) -> int:
    return max(0, min(a[1], b[1]) - max(a[0], b[0]))


def frames(spans: list[tuple[int, int]], total: int) -> np.ndarray:
    """A FRAME_S-resolution mask of the sample spans."""
    hop = round(FRAME_S * SAMPLE_RATE)
    mask = np.zeros(-(-total // hop), bool)
    for start, end in spans:
        mask[max(0, round(start / hop)):round(end / hop)] = True
    return mask


def evaluate(segs: list[tuple[int, int]], regions: list[dict], gaps: list[dict], total: int) -> dict:
    """The metrics of the module docstring for one VAD's segments."""
    pad = round(VadOptions().pad_s * SAMPLE_RATE)
    spans = [(r["start"], r["end"]) for r in regions]
    hits = [[j for j, s in enumerate(segs) if overlap(s, r)] for r in spans]
    found = [any(2 * overlap(segs[j], r) >= r[1] - r[0] for j in h) for h, r in zip(hits, spans)]
    false = [s for j, s in enumerate(segs) if not any(j in h for h in hits)]
    starts, ends = [], []
    for k, (r, h) in enumerate(zip(spans, hits)):
        if found[k] and (k == 0 or not overlap(segs[h[0]], spans[k - 1])):
            starts.append(segs[h[0]][0] - max(r[0] - pad, 0))
        if found[k] and (k == len(spans) - 1 or not overlap(segs[h[-1]], spans[k + 1])):
            ends.append(segs[h[-1]][1] - min(r[1] + pad, total))
    truth, det = frames([(s - pad, e + pad) for s, e in spans], total), frames(segs, total)
    tp = int(np.sum(truth & det))
    precision, recall = tp / max(int(det.sum()), 1), tp / max(int(truth.sum()), 1)
    by_kind = {}
    for kind in GAPS:
        mine = [(g["start"], g["end"]) for g in gaps if g["kind"] == kind]
        minutes = sum(e - s for s, e in mine) / SAMPLE_RATE / 60
        n_false = sum(any(s <= (a + b) // 2 < e for s, e in mine) for a, b in false)
        inner = frames([(s + pad, e - pad) for s, e in mine if e - s > 2 * pad], total)
        by_kind[kind] = {"minutes": minutes, "false": n_false, "false_per_min": n_false / max(minutes, 1e-9),
                         "marked": float(np.sum(inner & det) / max(int(inner.sum()), 1))}
    ms = 1000.0 / SAMPLE_RATE
    noisy = [r["noisy"] for r in regions]
    return {"regions": len(spans), "found": sum(found), "missed": len(spans) - sum(found), "false": len(false),
            "noisy": sum(noisy), "found_noisy": sum(f and n for f, n in zip(found, noisy)),
            "precision": precision, "recall": recall, "f1": 2 * precision * recall / max(precision + recall, 1e-9),
            "start_ms": float(np.median(np.abs(starts)) * ms), "end_ms": float(np.median(np.abs(ends)) * ms),
            "start_signed_ms": float(np.median(starts) * ms), "end_signed_ms": float(np.median(ends) * ms),
            "gaps": by_kind}


HEADER = ("| VAD    | found   | miss | false | prec | rec  | F1   | start | end   | CPU  |\n"
          "|--------|---------|------|-------|------|------|------|-------|-------|------|")
RUN_ON = 0.25   # the summary names the gap kinds with at least this share inside segments


def markdown(results: dict, audio_s: float) -> str:
    """The main table, the false-alarm table by gap kind and a summary, in 80 columns."""
    ok = {n: r for n, r in results.items() if "error" not in r}
    rows = ["start/end: median |boundary error| in ms; CPU: CPU ms per second of audio.", "", HEADER]
    rows += [f"| {n:<6} |" + " - |" * 9 if n not in ok else
             f"| {n:<6} | {r['found']:>3}/{r['regions']:<3} | {r['missed']:>4} | {r['false']:>5} | "
             f"{r['precision']:.2f} | {r['recall']:.2f} | {r['f1']:.2f} | {r['start_ms']:>5.0f} | "
             f"{r['end_ms']:>5.0f} | {r['cpu_per_s'] * 1000:4.2f} |" for n, r in results.items()]
    if ok:
        rows += ["", "False segments per minute by gap kind (share of those gaps inside segments):", "",
                 "| gap          | min  |" + "".join(f" {n:<11} |" for n in ok),
                 "|--------------|------|" + "-------------|" * len(ok)]
        for kind in GAPS:
            gap = [r["gaps"][kind] for r in ok.values()]
            rows.append(f"| {kind:<12} | {gap[0]['minutes']:4.2f} |" + "".join(
                f" {g['false_per_min']:4.1f} ({g['marked']:4.0%}) |" for g in gap))
    return "\n".join(rows + ["", textwrap.fill(summary(results, audio_s), 80, break_on_hyphens=False)]) + "\n"


def summary(results: dict, audio_s: float) -> str:
    """A paragraph of what the tables show."""
    text = [f"On {audio_s / 60:.1f} min of audio:"]
    for n, r in results.items():
        false = ", ".join(k for k, g in r.get("gaps", {}).items() if g["false"])
        run_on = ", ".join(k for k, g in r.get("gaps", {}).items() if g["marked"] >= RUN_ON) or "none"
        text.append(f"{n} could not run: {r['error']}." if "error" in r else
                    f"{n} finds {r['found']}/{r['regions']} regions ({r['found_noisy']}/{r['noisy']} over noise), "
                    f"makes {r['false']} false segments{f' (in {false})' if false else ''}, runs on through "
                    f"{RUN_ON:.0%}+ of these gaps: {run_on}; median signed boundary error "
                    f"{r['start_signed_ms']:+.0f} ms at starts, {r['end_signed_ms']:+.0f} ms at ends.")
    return " ".join(text + ["Noise marked speech next to speech lengthens segments instead of adding false ones; "
                            "room tone left in the clips counts as speech, so late starts and early ends are partly "
                            "the truth's."])


def in_seconds(span: dict) -> dict:
    return {**span, "start": span["start"] / SAMPLE_RATE, "end": span["end"] / SAMPLE_RATE}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--minutes", type=float, default=10.0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--data", type=Path, default=Path("../shared/data"))
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    audio, regions, gaps = build_stream(args.data, args.minutes, args.seed)
    results, segments = {}, {}
    for name in VADS:
        try:
            segments[name], cpu = run_vad(name, audio)
        except EdgeSerError as e:
            log.warning("%s cannot run: %s", name, e)
            results[name] = {"error": str(e)}
            continue
        cost = {"cpu_per_s": cpu * SAMPLE_RATE / len(audio)}
        results[name] = {**evaluate(segments[name], regions, gaps, len(audio)), **cost}
    report = {"minutes": args.minutes, "seed": args.seed, "chunk_s": CHUNK_S, "options": asdict(VadOptions()),
              "audio_s": len(audio) / SAMPLE_RATE, "results": results, "regions_s": [in_seconds(r) for r in regions],
              "gaps_s": [in_seconds(g) for g in gaps],
              "segments_s": {n: [[s / SAMPLE_RATE, e / SAMPLE_RATE] for s, e in v] for n, v in segments.items()}}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "vad_compare.json").write_text(json.dumps(report, indent=1) + "\n")
    md = markdown(results, len(audio) / SAMPLE_RATE)
    (args.out / "vad_compare.md").write_text(md)
    print(md)


if __name__ == "__main__":
    main()
