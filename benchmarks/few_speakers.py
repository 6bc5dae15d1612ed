"""A default export from few speakers, against the frozen-teacher baseline trained on the same clips.

EmoDB: `edge-ser export` (defaults) on the clips of 7 speakers (03, 08, 10, 12, 14, 15, 16; its own held-out and
validation speakers come out of those 7), then `edge-ser eval` of every variant, `auto` marked for each
preference, on the 3 others (09, 11, 13), which no step saw. The baseline: the frozen teacher's hidden states (all
layers, mean+std pooled over the whole clip, concatenated), standardised, logistic regression (C=0.1,
class-balanced; scikit-learn) trained on all 7 speakers' clips, scored on the same 3 speakers.

Usage: python benchmarks/few_speakers.py [--data ../shared/data/emodb] [--build build/few_speakers]
Writes benchmarks/results/few_speakers.{md,json}.
"""
from __future__ import annotations

import argparse
import csv
import json
import logging
from pathlib import Path

import numpy as np
from sklearn.linear_model import LogisticRegression

from edge_ser.bench.report import machine
from edge_ser.bundle import load_bundle
from edge_ser.data import load_corpus, load_waveforms
from edge_ser.evaluate import evaluate_waves
from edge_ser.metrics import scores
from edge_ser.progress import set_enabled
from edge_ser.targets import PREFERENCES, choose_variant
from edge_ser_export.features import corpus_key, teacher_features
from edge_ser_export.pipeline import ExportConfig, made_with, run_export
from edge_ser_export.teachers import load_teacher

TRAIN = ("03", "08", "10", "12", "14", "15", "16")
TEST = ("09", "11", "13")


def split_manifest(data: Path, speakers: tuple[str, ...], out: Path) -> Path:
    """A CSV of the corpus's clips of ``speakers``."""
    out.parent.mkdir(parents=True, exist_ok=True)
    with open(out, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["path", "label", "speaker"])
        writer.writerows((str(Path(it.path).resolve()), it.label, it.speaker)
                         for it in load_corpus(data).items if it.speaker in speakers)
    return out


def baseline(train: Path, test: Path, teacher: str, cache: Path) -> dict:
    """UA of the frozen teacher + standardised logistic regression, trained on ``train``, scored on ``test``."""
    model = load_teacher(teacher).eval()
    feats, ys = [], []
    for manifest in (train, test):
        waves, corpus = load_waveforms(load_corpus(manifest))
        feats.append(teacher_features(model, waves, cache, corpus_key(corpus.items)).reshape(len(waves), -1))
        ys.append(np.array([corpus.labels.index(it.label) for it in corpus.items]))
    labels = load_corpus(train).labels
    mean, std = feats[0].mean(0), feats[0].std(0) + 1e-6
    clf = LogisticRegression(C=0.1, class_weight="balanced", max_iter=3000).fit((feats[0] - mean) / std, ys[0])
    return scores(ys[1], clf.predict((feats[1] - mean) / std), len(labels))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=Path("../shared/data/emodb"))
    ap.add_argument("--teacher", default="whisper-base")
    ap.add_argument("--build", type=Path, default=Path("build/few_speakers"))
    ap.add_argument("--results", type=Path, default=Path("benchmarks/results"))
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    set_enabled(True)
    train = split_manifest(args.data, TRAIN, args.build / "train.csv")
    test = split_manifest(args.data, TEST, args.build / "test.csv")
    out, cache = args.build / "bundle", args.build / "cache"
    cfg = ExportConfig(data=train, out=out, teacher=args.teacher, cache=cache, overwrite=True)
    if not made_with(load_bundle(out).manifest if (out / "edge-ser.json").is_file() else None, cfg):
        run_export(cfg)
    bundle = load_bundle(out)
    waves, corpus = load_waveforms(load_corpus(test))
    result = evaluate_waves(bundle, waves, [it.label for it in corpus.items])["variants"]
    picks = {prefer: choose_variant(bundle, prefer=prefer) for prefer in PREFERENCES}
    base = baseline(train, test, args.teacher, cache)
    m = bundle.manifest
    lines = [f"EmoDB, export on speakers {', '.join(TRAIN)} (held out inside: {', '.join(m.data.test_speakers)}), "
             f"scored on {', '.join(TEST)} ({len(waves)} clips); {machine()['cpu']} ({picks['balanced'].target})", "",
             f"Head: {m.heads['teacher'].fit}", "",
             "| model | UA | ECE | auto picks it for |", "|---|---|---|---|",
             f"| frozen teacher + standardised logistic regression (baseline) | {base['ua']:.3f} | - | |"]
    lines += [f"| {name} | {r['ua']:.3f} | {r['ece']:.3f} | "
              f"{', '.join(p for p, c in picks.items() if c.name == name)} |" for name, r in result.items()]
    auto = result[picks["balanced"].name]["ua"]
    lines += ["", f"`auto` (balanced) {auto:.3f} vs baseline {base['ua']:.3f}: "
                  f"{'meets' if auto >= base['ua'] - 0.01 else 'misses'} the bar (baseline - 1 point)", ""]
    args.results.mkdir(parents=True, exist_ok=True)
    (args.results / "few_speakers.md").write_text("\n".join(lines))
    (args.results / "few_speakers.json").write_text(json.dumps(
        {"machine": machine(), "baseline": base, "variants": result,
         "auto": {p: c.name for p, c in picks.items()}}, indent=2) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
