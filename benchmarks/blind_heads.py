"""Heads blind to the speakers' directions: leave-one-corpus-out UA of the shipped head with and without them.

For the corpora of a combined manifest (``benchmarks/ready_model.py`` writes it), each corpus is held out in turn
and the head edge-ser ships (:func:`edge_ser.head.fit_linear`: calibrated class-balanced logistic regression, its
L2 chosen by speaker-grouped folds of the training corpora) is fit on the others, once as before and once blind to
``--directions`` directions that tell the training speakers apart (``speaker_directions``; what ``edge-ser
export`` now does, ``--speaker-directions``). Features of whole clips:

- the teacher: all its hidden states (input + every block), mean+std pooled, from the export cache (``--cache``);
- the student: the teacher's first ``--student-blocks`` blocks (a prefix of those features);
- each ``--graph``: an ONNX graph of a bundle or of ``benchmarks/student_ladder.py`` (e.g. the fast student's int8
  candidates under build/student_ladder), its own embeddings of the whole clips.
- with ``--fast-cut 768,512``: the fast student (the teacher's first 2 blocks at 25 frames/s, int8 U8S8) with its
  FFNs cut to those units and refit for each held-out corpus as ``edge-ser export`` refits it, on the other
  corpora's clips (``refit_clips``: 1500 of them and ``--augment`` augmented copies of each; ``prune_ffn``).

Every (features, directions) score is written to the results as it comes and a rerun skips those already there
(delete benchmarks/results/blind_heads.json to start over); each takes 5-25 minutes on a 2-core CPU (the penalty's
folds). Graph embeddings are cached under ``--build`` (the cut's by its refit clips and ``prune_ffn``'s version,
``PRUNE_REFIT``, which also names its rows).

Usage: python benchmarks/blind_heads.py MANIFEST [--cache build/general5/cache] [--graph G.onnx ...]
       [--fast-cut 768,512 [--augment 1]] [--directions 5] [--build build/blind_heads]
Writes benchmarks/results/blind_heads.{md,json}.
"""
from __future__ import annotations

import argparse
import functools
import json
from pathlib import Path

import numpy as np
from student_ladder import clip_embeddings, fast_graph

from edge_ser.bench.report import machine
from edge_ser.data import load_corpus, load_waveforms
from edge_ser.head import fit_linear
from edge_ser.metrics import ece, scores
from edge_ser_export.distill import PRUNE_REFIT, refit_clips
from edge_ser_export.features import corpus_key, teacher_features, waves_key
from edge_ser_export.teachers import load_teacher


def graph_embeddings(graph: Path, waves: list[np.ndarray], out: Path) -> np.ndarray:
    """``graph``'s embedding of every whole clip (one thread), cached in ``out``."""
    import onnxruntime as ort

    if not out.exists():
        options = ort.SessionOptions()
        options.intra_op_num_threads = options.inter_op_num_threads = 1
        session = ort.InferenceSession(str(graph), options, providers=["CPUExecutionProvider"])
        np.save(out.with_suffix(".tmp.npy"), clip_embeddings(session, waves))
        out.with_suffix(".tmp.npy").replace(out)
    return np.load(out)


def loco(features, y: np.ndarray, corpus: np.ndarray, speakers: np.ndarray, n_classes: int,
         directions: int) -> dict:
    """UA and ECE of each held-out corpus, and the penalty each fold's head chose; ``features(held)`` are the
    clips' features for that fold."""
    out = {}
    for held in dict.fromkeys(corpus):
        x = features(held)
        x = x.reshape(len(x), -1)
        train, test = corpus != held, corpus == held
        head, report = fit_linear(x[train], y[train], n_classes, speakers[train], speaker_directions=directions)
        p = head.probs(x[test])
        out[held] = {"ua": scores(y[test], p.argmax(1), n_classes)["ua"], "ece": ece(p, y[test]), "l2": report.l2}
    return out


def write(done: dict, source: np.ndarray, n_classes: int, args) -> None:
    held = list(dict.fromkeys(source))
    lines = [f"Leave-one-corpus-out UA (mean ECE), {n_classes} classes, {len(source)} clips of "
             f"{args.manifest.name}, whole clips; the shipped head (fit_linear) blind to 0 or {args.directions} "
             f"speaker directions; {machine()['cpu']}", "",
             "| features | blind to | " + " | ".join(held) + " | mean UA | ECE |",
             "|---|---|" + "---|" * (len(held) + 2)]
    for key, r in done.items():
        name, k = key.rsplit(" | ", 1)
        lines.append(f"| {name} | {k} | " + " | ".join(f"{r[h]['ua']:.3f}" for h in held)
                     + f" | {np.mean([r[h]['ua'] for h in held]):.3f} | {np.mean([r[h]['ece'] for h in held]):.3f} |")
    args.results.mkdir(parents=True, exist_ok=True)
    (args.results / "blind_heads.md").write_text("\n".join(lines) + "\n")
    (args.results / "blind_heads.json").write_text(json.dumps({"machine": machine(), "rows": done}, indent=2))
    print("\n".join(lines), flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("manifest", type=Path)
    ap.add_argument("--cache", type=Path, default=Path("build/general5/cache"))
    ap.add_argument("--teacher", default="whisper-base")
    ap.add_argument("--student-blocks", type=int, default=4)
    ap.add_argument("--graph", type=Path, action="append", default=[])
    ap.add_argument("--fast-cut", type=lambda text: tuple(int(u) for u in text.split(",")), default=())
    ap.add_argument("--augment", type=int, default=1, help="augmented copies of each refit clip (export --augment)")
    ap.add_argument("--directions", type=int, default=5)
    ap.add_argument("--build", type=Path, default=Path("build/blind_heads"))
    ap.add_argument("--results", type=Path, default=Path("benchmarks/results"))
    args = ap.parse_args()
    waves, corpus = load_waveforms(load_corpus(args.manifest))
    y = np.array([corpus.labels.index(it.label) for it in corpus.items])
    speakers = np.array([it.speaker for it in corpus.items])
    source = np.array([s.split("-")[0] for s in speakers])   # speakers are CORPUS-SPEAKER
    teacher = load_teacher(args.teacher).eval()
    feats = functools.cache(lambda: teacher_features(teacher, waves, args.cache, corpus_key(corpus.items)))
    args.build.mkdir(parents=True, exist_ok=True)

    @functools.cache   # asked once with and once without directions
    def cut(held: str) -> np.ndarray:   # the fast student cut and refit on the other corpora, as an export does
        clips = refit_clips([w for w, c in zip(waves, source) if c != held], args.augment, 0)
        emb = args.build / f"fast-cut-{'-'.join(map(str, args.fast_cut))}-r{PRUNE_REFIT}-{held}-{waves_key(clips)}.npy"
        if not emb.exists():
            directory = emb.with_suffix("")
            directory.mkdir(exist_ok=True)
            graph_embeddings(fast_graph(teacher, (2, 2, args.fast_cut), clips, directory), waves, emb)
        return np.load(emb)

    rows = {g.stem: (lambda held, g=g: graph_embeddings(g, waves, args.build / f"{g.stem}.npy")) for g in args.graph}
    if args.fast_cut:
        rows[f"fast student, FFNs {'/'.join(map(str, args.fast_cut))} refit per fold as exported (r{PRUNE_REFIT}), "
             f"augment {args.augment}"] = cut
    rows |= {f"teacher ({args.teacher}, all layers)": lambda held: feats(),
             f"student (first {args.student_blocks} blocks)": lambda held: feats()[:, :args.student_blocks + 1]}
    previous = args.results / "blind_heads.json"
    done = json.loads(previous.read_text())["rows"] if previous.exists() else {}
    for name, features in rows.items():
        for k in (args.directions, 0):
            key = f"{name} | {k}"
            if key not in done:
                done[key] = loco(features, y, source, speakers, len(corpus.labels), k)
                write(done, source, len(corpus.labels), args)
    write(done, source, len(corpus.labels), args)


if __name__ == "__main__":
    main()
