"""A model on a corpus nobody here trained on, beside the frozen-teacher baseline trained on the shared corpora.

The yardstick (issue 18's): frozen whisper-base, all its hidden states (input + 6 blocks) mean+std pooled over the
whole clip, standardised, logistic regression (C=0.1, class-balanced) trained on the clips of the training manifest
whose corpus is named in ``--baseline-corpora`` (default: the three in ../shared/data, as the issue trained it; and
again on every corpus of the manifest, which is what the ready model learned from). The bundle (default: the ready
model in the package) is scored through the runtime, as ``edge-ser eval`` scores it (each clip whole: trimmed,
windows averaged), every variant it has.

Usage: python benchmarks/unseen_corpus.py MANIFEST [--bundle DIR] [--train build/general5/EmoDB+...+nEMO.csv]
       [--cache build/general5/cache] [--label-map calm=neutral,...]
Writes benchmarks/results/unseen_<corpus>.{md,json}. The teacher's features are cached (``--cache``).
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from student_ladder import baseline

from edge_ser.bench.report import machine
from edge_ser.bundle import ready_model_path
from edge_ser.data import load_corpus, load_waveforms
from edge_ser.evaluate import evaluate_bundle
from edge_ser.metrics import scores
from edge_ser_export.features import corpus_key, teacher_features
from edge_ser_export.teachers import load_teacher


def features(teacher, manifest: Path, cache: Path, label_map: str | None = None):
    waves, corpus = load_waveforms(load_corpus(manifest, label_map=label_map))
    return teacher_features(teacher, waves, cache, corpus_key(corpus.items)), corpus


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("manifest", type=Path, help="the unseen corpus (labels among anger, happiness, neutral, sadness)")
    ap.add_argument("--bundle", type=Path, default=None, help="default: the ready model in the package")
    ap.add_argument("--train", type=Path, default=Path("build/general5/EmoDB+BanglaSER+TurEV-DB+nEMO.csv"))
    ap.add_argument("--cache", type=Path, default=Path("build/general5/cache"))
    ap.add_argument("--baseline-corpora", default="emodb,banglaser,turev")
    ap.add_argument("--label-map", default=None)
    ap.add_argument("--teacher", default="whisper-base")
    ap.add_argument("--results", type=Path, default=Path("benchmarks/results"))
    args = ap.parse_args()
    bundle = args.bundle or ready_model_path()
    runtime = evaluate_bundle(bundle, args.manifest, label_map=args.label_map, threads=1)["variants"]
    teacher = load_teacher(args.teacher).eval()
    x_train, train = features(teacher, args.train, args.cache)
    x_test, test = features(teacher, args.manifest, args.cache, args.label_map)
    labels = train.labels
    y_train = np.array([labels.index(it.label) for it in train.items])
    if unknown := {it.label for it in test.items} - set(labels):
        raise SystemExit(f"error: {args.manifest} has labels the training corpora lack ({', '.join(sorted(unknown))}); "
                         "map or drop them with --label-map")
    y_test = np.array([labels.index(it.label) for it in test.items])
    source = np.array([it.speaker.split("-")[0] for it in train.items])   # speakers are CORPUS-SPEAKER
    shared, every = np.isin(source, args.baseline_corpora.split(",")), np.ones(len(source), bool)
    rows = {f"frozen teacher + LR on {args.baseline_corpora} ({shared.sum()} clips)": shared,
            f"frozen teacher + LR on all of {args.train.name} ({len(source)} clips)": every}
    result = {name: {"ua": scores(y_test, baseline(x_train[m], y_train[m])(x_test), len(labels))["ua"]}
              for name, m in rows.items()}
    shown = "the ready model" if args.bundle is None else str(bundle)
    result |= {f"{shown}: {name}": v for name, v in runtime.items()}
    name = args.manifest.parent.name if args.manifest.suffix == ".csv" else args.manifest.name
    lines = [f"{name}: {len(y_test)} clips, {len({it.speaker for it in test.items})} speakers, "
             f"{len(labels)} classes ({', '.join(labels)}), never seen in training; UA (ECE where the runtime scored "
             f"it); {machine()['cpu']} ({machine()['target']})", "", "| model | UA | ECE |", "|---|---|---|"]
    lines += [f"| {k} | {v['ua']:.3f} | {v['ece']:.3f} |" if "ece" in v else f"| {k} | {v['ua']:.3f} | - |"
              for k, v in result.items()]
    args.results.mkdir(parents=True, exist_ok=True)
    (args.results / f"unseen_{name}.md").write_text("\n".join(lines) + "\n")
    (args.results / f"unseen_{name}.json").write_text(json.dumps({"machine": machine(), "rows": result}, indent=2))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
