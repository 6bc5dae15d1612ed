"""Which student generalizes: leave-one-corpus-out UA of the features each student shape gives, on whole clips.

For the corpora of a combined manifest (``benchmarks/ready_model.py`` writes it, e.g.
``build/general/EmoDB+BanglaSER+TurEV-DB.csv``), each corpus is held out in turn and a classifier trained on
the others scores it. The classifier is the frozen-teacher baseline's (features standardised on the training
corpora, logistic regression C=0.1, class-balanced; scikit-learn); only the features change:

- the teacher: all its hidden states (input + every block), mean+std pooled over the whole clip, concatenated;
- a prefix of the teacher (its first k blocks read directly: what ``edge-ser export`` ships as students), whose
  hidden states are the teacher's layers 0..k: computed from the teacher's cached features;
- a strided prefix (its blocks on half the frames): embedded here.

The teacher's features come from the export cache (``--cache``, as ``ready_model.py`` fills it).

Usage: python benchmarks/student_ladder.py MANIFEST [--cache build/general/cache] [--teacher whisper-base]
Writes benchmarks/results/student_ladder.{md,json}.
"""
from __future__ import annotations

import argparse
import json
import warnings

import numpy as np
from pathlib import Path
from sklearn.linear_model import LogisticRegression

from edge_ser.bench.report import machine
from edge_ser.data import load_corpus, load_waveforms
from edge_ser.metrics import scores
from edge_ser_export.features import corpus_key, embed, teacher_features
from edge_ser_export.teachers import load_teacher, teacher_prefix

STRIDED = ((2, 2), (3, 2), (1, 2))   # (blocks, time stride)


def loco(features: np.ndarray, y: np.ndarray, corpus: np.ndarray, n_classes: int) -> dict[str, float]:
    out = {}
    for held in dict.fromkeys(corpus):
        train, test = corpus != held, corpus == held
        x = features.reshape(len(features), -1)
        mean, std = x[train].mean(0), x[train].std(0) + 1e-6
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            clf = LogisticRegression(C=0.1, class_weight="balanced", max_iter=3000).fit((x[train] - mean) / std,
                                                                                         y[train])
        out[held] = scores(y[test], clf.predict((x[test] - mean) / std), n_classes)["ua"]
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("manifest", type=Path)
    ap.add_argument("--cache", type=Path, default=Path("build/general/cache"))
    ap.add_argument("--teacher", default="whisper-base")
    ap.add_argument("--results", type=Path, default=Path("benchmarks/results"))
    args = ap.parse_args()
    waves, corpus = load_waveforms(load_corpus(args.manifest))
    y = np.array([corpus.labels.index(it.label) for it in corpus.items])
    source = np.array([it.speaker.split("-")[0] for it in corpus.items])   # speakers are CORPUS-SPEAKER
    teacher = load_teacher(args.teacher).eval()
    feats = teacher_features(teacher, waves, args.cache, corpus_key(corpus.items))
    rows = {f"teacher ({teacher.blocks} blocks, all layers)": (teacher.blocks, 1, feats)}
    rows |= {f"prefix {k} block{'s' if k > 1 else ''}": (k, 1, feats[:, :k + 1]) for k in range(1, teacher.blocks)}
    for k, stride in STRIDED:
        rows[f"prefix {k} block{'s' if k > 1 else ''}, stride {stride}"] = (
            k, stride, embed(teacher_prefix(teacher, k, stride), waves, f"prefix {k}, stride {stride}"))
    result = {name: {"blocks": k, "stride": s, "ua": loco(f, y, source, len(corpus.labels))}
              for name, (k, s, f) in rows.items()}
    held = list(dict.fromkeys(source))
    lines = [f"Leave-one-corpus-out UA, {len(corpus.labels)} classes, {len(waves)} clips of {args.manifest.name}; "
             f"features of whole clips; logistic regression C=0.1 on standardised features; {machine()['cpu']}", "",
             "| features | " + " | ".join(held) + " | mean |", "|---|" + "---|" * (len(held) + 1)]
    lines += [f"| {name} | " + " | ".join(f"{r['ua'][h]:.3f}" for h in held)
              + f" | {np.mean(list(r['ua'].values())):.3f} |" for name, r in result.items()]
    args.results.mkdir(parents=True, exist_ok=True)
    (args.results / "student_ladder.md").write_text("\n".join(lines) + "\n")
    (args.results / "student_ladder.json").write_text(json.dumps({"machine": machine(), "rows": result}, indent=2))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
