"""Data efficiency of `edge-ser adapt`: UA against labelled clips per class, on corpora the base bundle never saw.

Two bases, the student (what `auto` runs) and the teacher int8 variant (`--prefer accuracy`) of a bundle made by
the default recipe (``--base``; default: a default EmoDB export of ``benchmarks/few_speakers.py``): the student is
the teacher's first blocks read directly, so neither encoder ever heard any corpus (adapt replaces the head; a
base whose student was distilled on some corpus is refused). The corpus's own label set is used (EmoDB 7
emotions, BanglaSER 5, BAVED 3 arousal levels, TurEV-DB 4). Speakers are split in two
halves (repeated with other splits); 4, 8, 16, 32 clips per class are drawn from the training half only and the
test half is scored, so no test speaker is ever used.

- adapt: the base's variant embeds the clips; the head is `edge-ser adapt`'s (:func:`edge_ser.head.fit_linear`:
  the same function on the same embeddings).
- eGeMAPS: openSMILE's eGeMAPSv02 functionals (88) with the same head, also at 64 clips per class (the seed's
  claim: 8 clips per class with pretrained features beat hand-crafted features with 64).
- export: a full `edge-ser export` with its defaults (one of the drawn speakers held out for its own metrics, the
  shipped files refit on all) on the same drawn clips, scored through what `auto` runs; at ``EXPORT_SIZES`` clips
  per class on the first split only (each export takes minutes).

Then one timed `edge-ser adapt` of 4 labels x 8 clips on one core (wall time and peak RSS, torch never imported).

Usage: python benchmarks/adapt_curves.py [--data ../shared/data] [--base build/few_speakers/bundle] [--repeats 3]
Writes benchmarks/results/adapt_curves.{md,json,png}.
"""
from __future__ import annotations

import argparse
import csv
import json
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

from edge_ser import Recognizer
from edge_ser.adapt import embed_clips
from edge_ser.bench.pi import PI_SLOWDOWN
from edge_ser.bench.report import machine
from edge_ser.bundle import load_bundle, ready_model_path
from edge_ser.data import load_corpus, load_waveforms
from edge_ser.errors import DatasetError
from edge_ser.evaluate import evaluate_waves
from edge_ser.head import fit_linear
from edge_ser.metrics import scores
from edge_ser.targets import choose_variant
from edge_ser_export.features import baseline_features, corpus_key

CORPORA = {"emodb": "emodb", "banglaser": "banglaser", "baved": "baved/manifest.csv", "turev": "turev/manifest.csv"}
SIZES = (4, 8, 16, 32)
HANDCRAFTED_SIZES = (*SIZES, 64)
EXPORT_SIZES = (8,)
EXPORT = "edge-ser export, auto"
CACHE = Path("benchmarks/results/cache")


def pretrained_bases(path: Path) -> dict[str, Recognizer]:
    """The student and the teacher of a bundle whose encoders learned from no corpus (own-layer students)."""
    m = load_bundle(path).manifest
    if m.student is None or m.student.distillation or (m.export and m.export.config.get("student_layers") != "own"):
        raise SystemExit(f"{path}: its student was distilled on a corpus; use a bundle of the default recipe")
    return {"student": Recognizer(path, threads=1), "teacher": Recognizer(path, threads=1, prefer="accuracy")}


def embeddings(name: str, waves: list[np.ndarray], rec: Recognizer) -> np.ndarray:
    key = re.sub(r"[^A-Za-z0-9]+", "_", f"{name}_{rec.bundle.id}_{rec.variant}")
    path = CACHE / f"embeddings_{key}.npy"
    if path.is_file():
        return np.load(path)
    emb = embed_clips(rec, waves)
    CACHE.mkdir(parents=True, exist_ok=True)
    np.save(path, emb)
    return emb


def ua_of(x: np.ndarray, y: np.ndarray, spk: np.ndarray, train: np.ndarray, test: np.ndarray, n_classes: int) -> float:
    head, _ = fit_linear(x[train], y[train], n_classes, groups=spk[train])
    return scores(y[test], head.probs(x[test]).argmax(1), n_classes)["ua"]


def draw(y: np.ndarray, pool: np.ndarray, n: int, rng) -> np.ndarray:
    return np.concatenate([rng.permutation(pool[y[pool] == c])[:n] for c in np.unique(y)])


def export_ua(corpus, waves: list[np.ndarray], y: np.ndarray, train: np.ndarray, test: np.ndarray) -> float:
    """UA on ``test`` of a default `edge-ser export` of the ``train`` clips (what `auto` runs)."""
    from edge_ser_export.pipeline import ExportConfig, run_export

    with tempfile.TemporaryDirectory() as tmp:
        manifest = Path(tmp) / "train.csv"
        with open(manifest, "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["path", "label", "speaker"])
            w.writerows((str(Path(corpus.items[i].path).resolve()), corpus.items[i].label, corpus.items[i].speaker)
                        for i in train)
        out = Path(tmp) / "bundle"
        run_export(ExportConfig(data=manifest, out=out, test_speakers=1))
        bundle = load_bundle(out)
        auto = choose_variant(bundle).name
        scored = evaluate_waves(bundle, [waves[i] for i in test], [corpus.labels[c] for c in y[test]], [auto],
                                show_progress=False)
        return scored["variants"][auto]["ua"]


def corpus_curves(name: str, folder: Path, bases: dict[str, Recognizer], repeats: int) -> dict:
    """UA per method ("adapt with BASE VARIANT" for each base, and eGeMAPS) and clips per class."""
    corpus = load_corpus(folder)
    waves, corpus = load_waveforms(corpus)
    y = np.array([corpus.labels.index(it.label) for it in corpus.items])
    spk = np.array([it.speaker for it in corpus.items])
    features = {f"adapt: {rec.bundle.path.name} {rec.variant}": embeddings(name, waves, rec) for rec in bases.values()}
    features["eGeMAPS + same head"] = baseline_features("egemaps", waves, CACHE, corpus_key(corpus.items))
    speakers = np.array(sorted(set(spk)))
    out = {"labels": corpus.labels, "clips": len(y), "speakers": len(speakers),
           "methods": {m: {} for m in [*features, EXPORT]}}
    for r in range(repeats):
        order = np.random.default_rng(r).permutation(speakers)
        test_spk = order[:len(order) // 2]
        train_pool = np.flatnonzero(~np.isin(spk, test_spk))
        test = np.flatnonzero(np.isin(spk, test_spk))
        for n in HANDCRAFTED_SIZES:
            train = draw(y, train_pool, n, np.random.default_rng(1000 + r))
            for method, x in features.items():
                if n in SIZES or method.startswith("eGeMAPS"):
                    out["methods"][method].setdefault(n, []).append(ua_of(x, y, spk, train, test, len(corpus.labels)))
            if n in EXPORT_SIZES and r == 0:
                try:
                    out["methods"][EXPORT].setdefault(n, []).append(export_ua(corpus, waves, y, train, test))
                except DatasetError as e:   # e.g. the held-out speaker took a class's every clip
                    print(f"{name}: export of {n} clips per class refused: {e}", file=sys.stderr)
    return out


def timed_adapt(data: Path, base: Path) -> dict:
    """`edge-ser adapt` of 4 TurEV-DB labels x 8 clips (3 speakers) on one core: wall seconds, peak RSS."""
    rows = list(csv.DictReader(open(data / "turev" / "manifest.csv")))
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as tmp:
        with open(Path(tmp) / "clips.csv", "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["path", "label", "speaker"])
            for label in sorted({r["label"] for r in rows}):
                pool = [r for r in rows if r["label"] == label and r["speaker"] in ("1358", "1984", "6783")]
                for i in rng.permutation(len(pool))[:8]:
                    w.writerow([str((data / "turev" / pool[i]["path"]).resolve()), label, pool[i]["speaker"]])
        code = ("import sys; from edge_ser.cli import main\n"
                "try:\n    main(sys.argv[1:])\nexcept SystemExit as e:\n    assert not e.code\n"
                "print('torch' in sys.modules)")
        # /usr/bin/time reports the peak RSS of a process it started (Linux keeps ru_maxrss across exec, so the
        # child must not be forked from this big process directly)
        done = subprocess.run(["taskset", "-c", "0", "/usr/bin/time", "-f", "%e %M", sys.executable, "-c", code,
                               "adapt", str(base), "--data", str(Path(tmp) / "clips.csv"), "--out",
                               str(Path(tmp) / "out"), "--threads", "1"], capture_output=True, text=True, check=True)
    torch = done.stdout.split()[-1]
    wall, rss_kb = done.stderr.strip().splitlines()[-1].split()
    pi = {board: [round(float(wall) * lo, 1), round(float(wall) * hi, 1)] for board, (lo, hi) in PI_SLOWDOWN.items()}
    return {"clips": 32, "labels": 4, "wall_s": round(float(wall), 2), "peak_rss_mb": round(int(rss_kb) / 1024, 1),
            "pi_projection_s": pi,
            "torch_imported": torch == "True", "summary": done.stderr.strip().splitlines()[-2]}


def plot(results: dict, path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(results), figsize=(3.4 * len(results), 3.4), sharey=True)
    for ax, (name, r) in zip(np.atleast_1d(axes), results.items()):
        for (method, curve), style in zip(r["methods"].items(), ("o-", "^-", "s--", "D")):
            sizes = sorted(curve, key=int)
            ax.errorbar([int(s) for s in sizes], [np.mean(curve[s]) for s in sizes],
                        yerr=[np.std(curve[s]) for s in sizes], fmt=style,
                        capsize=3, label=method)
        ax.axhline(1 / len(r["labels"]), color="grey", lw=0.8, ls=":")
        ax.set_xscale("log", base=2)
        ax.set_title(f"{name} ({len(r['labels'])} classes)", fontsize=9)
        ax.set_xlabel("labelled clips per class")
        ax.legend(fontsize=6)
    np.atleast_1d(axes)[0].set_ylabel("UA, unseen speakers")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=Path("../shared/data"))
    ap.add_argument("--base", type=Path, default=Path("build/few_speakers/bundle"))
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--results", type=Path, default=Path("benchmarks/results"))
    args = ap.parse_args()
    bases = pretrained_bases(args.base)
    results = {name: corpus_curves(name, args.data / rel, bases, args.repeats) for name, rel in CORPORA.items()}
    report = {"machine": machine(), "base": str(args.base), "results": results,
              "timed_adapt": timed_adapt(args.data, ready_model_path())}
    lines = ["| corpus (classes) | method | " + " | ".join(map(str, HANDCRAFTED_SIZES)) + " |",
             "|---|---|" + "---|" * len(HANDCRAFTED_SIZES)]
    claim = []
    for name, r in results.items():
        for method, curve in r["methods"].items():
            cells = ["-" if n not in curve else f"{curve[n][0]:.3f} (1 split)" if len(curve[n]) == 1 else
                     f"{np.mean(curve[n]):.3f} ± {np.std(curve[n]):.3f}" for n in HANDCRAFTED_SIZES]
            lines.append(f"| {name} ({len(r['labels'])}) | {method} | " + " | ".join(cells) + " |")
        many = np.mean(r["methods"]["eGeMAPS + same head"][64])
        for method, curve in r["methods"].items():
            if not method.startswith("eGeMAPS"):
                few = np.mean(curve[8])
                claim.append(f"{name}, {method}: 8 per class {few:.3f} vs eGeMAPS at 64 per class {many:.3f}: "
                             + ("holds" if few > many else "does NOT hold"))
    t = report["timed_adapt"]
    text = (f"UA on the unseen half of the speakers (mean ± sd over {args.repeats} speaker splits); "
            f"{report['machine']['cpu']} ({', '.join(report['machine']['features'])})\n\n" + "\n".join(lines)
            + "\n\nThe seed's claim, per corpus:\n\n" + "\n".join(f"- {c}" for c in claim)
            + f"\n\nTimed `edge-ser adapt`, 4 labels x 8 clips, one core: {t['wall_s']} s wall, "
              f"{t['peak_rss_mb']} MB peak RSS, torch imported: {t['torch_imported']}; projected on one Pi core "
              "(the wall time x the published Pi slowdowns of `edge-ser bench`): "
              + ", ".join(f"{board} {lo}-{hi} s" for board, (lo, hi) in t["pi_projection_s"].items()) + "\n")
    args.results.mkdir(parents=True, exist_ok=True)
    (args.results / "adapt_curves.md").write_text(text)
    (args.results / "adapt_curves.json").write_text(json.dumps(report, indent=2, default=str) + "\n")
    plot(results, args.results / "adapt_curves.png")
    print(text)


if __name__ == "__main__":
    main()
