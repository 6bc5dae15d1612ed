"""Which student generalizes: leave-one-corpus-out UA of the features each student shape gives, on whole clips.

For the corpora of a combined manifest (``benchmarks/ready_model.py`` writes it, e.g.
``build/general/EmoDB+BanglaSER+TurEV-DB.csv``), each corpus is held out in turn and a classifier trained on
the others scores it. The classifier is the frozen-teacher baseline's (features standardised on the training
corpora, logistic regression C=0.1, class-balanced; scikit-learn); only the features change:

- the teacher: all its hidden states (input + every block), mean+std pooled over the whole clip, concatenated;
- a prefix of the teacher (its first k blocks read directly: what ``edge-ser export`` ships as students), whose
  hidden states are the teacher's layers 0..k: computed from the teacher's cached features.

Then the fast student's candidates (strided prefixes: the blocks on fewer frames; of the teacher and of the smaller
whisper-tiny.en), as a bundle would ship them:
each as an int8 graph (U8S8, the front end in float as ``edge-ser export`` writes it), timed side by side with
openSMILE eGeMAPS on one thread (the bench's test window and interleaved loop),
and its LOCO UA from the graph's own embeddings of the whole clips (same classifier).

The teacher's features come from the export cache (``--cache``, as ``ready_model.py`` fills it).

Some candidates cut each block's FFN to its most used neurons, refit to give the whole FFN's output (ridge least
squares on up to 1500 clips of ``--unlabeled``: BAVED, which no fold holds out; the fast student of ``edge-ser
export`` is cut this way, refit on its training clips).

Usage: python benchmarks/student_ladder.py MANIFEST [--cache build/general/cache] [--teacher whisper-base]
       [--timing-s 60] [--unlabeled ../shared/data/baved/manifest.csv]
Writes benchmarks/results/student_ladder.{md,json} (and the candidates' graphs under build/student_ladder).
"""
from __future__ import annotations

import argparse
import json
import warnings

import numpy as np
import torch
from pathlib import Path
from sklearn.linear_model import LogisticRegression

from edge_ser.bench.report import machine
from edge_ser.data import load_corpus, load_waveforms
from edge_ser.metrics import scores
from edge_ser_export.distill import PRUNE_CLIPS, prune_ffn
from edge_ser_export.features import corpus_key, teacher_features
from edge_ser_export.teachers import load_teacher, teacher_prefix

# fast student candidates: teacher (None: --teacher), blocks, stride (25 frames/s at 2), FFN units kept by each block
# (None: all)
FAST = ((None, 2, 2, None), (None, 2, 4, None), (None, 2, 2, (1024, 1024)), (None, 2, 2, (768, 512)),
        (None, 2, 2, (512, 512)), (None, 2, 2, (256, 256)), ("whisper-tiny.en", 2, 2, None),
        ("whisper-tiny.en", 3, 2, None))


def baseline(x: np.ndarray, y: np.ndarray):
    """The frozen-teacher baseline's classifier fit on ``x`` (features standardised, logistic regression C=0.1,
    class-balanced): returns its ``predict``."""
    x = x.reshape(len(x), -1)
    mean, std = x.mean(0), x.std(0) + 1e-6
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        clf = LogisticRegression(C=0.1, class_weight="balanced", max_iter=3000).fit((x - mean) / std, y)
    return lambda z: clf.predict((z.reshape(len(z), -1) - mean) / std)


def loco(features: np.ndarray, y: np.ndarray, corpus: np.ndarray, n_classes: int) -> dict[str, float]:
    out = {}
    for held in dict.fromkeys(corpus):
        train, test = corpus != held, corpus == held
        out[held] = scores(y[test], baseline(features[train], y[train])(features[test]), n_classes)["ua"]
    return out


def clip_embeddings(session, waves: list[np.ndarray]) -> np.ndarray:
    """An ONNX Runtime ``session``'s embedding of every whole clip."""
    return np.stack([session.run(None, {"audio": w[None].astype(np.float32)})[0][0] for w in waves])


def fast_graph(teacher, candidate: tuple, unlabeled: list[np.ndarray], out: Path) -> Path:
    """The int8 (U8S8) graph of a prefix of Whisper ``teacher`` (``candidate``: blocks, stride, ffn as in ``FAST``),
    its front end in float, its FFNs cut to ``ffn`` units per block (``prune_ffn``, what ``edge-ser export`` does to
    the fast student) unless None."""
    from edge_ser_export import graph
    from edge_ser_export.heads import Embedder

    blocks, stride, ffn = candidate
    name = f"{teacher.name}-{blocks}x{stride}-ffn{'-'.join(map(str, ffn)) if ffn else 'all'}"
    prefix = teacher_prefix(teacher, blocks, stride)
    if ffn:
        prune_ffn(prefix, [torch.from_numpy(w[None].astype(np.float32)) for w in unlabeled], ffn)
    fp32 = graph.export_onnx(Embedder(prefix), out / f"{name}.onnx")
    return graph.quantize_dynamic_onnx(fp32, out / f"{name}-int8.onnx", True)


def fast_candidates(teacher, waves, y, source, n_classes: int, held: list[str], unlabeled: list[np.ndarray],
                    budget_s: float) -> tuple[list[dict], list[str]]:
    import onnxruntime as ort
    from edge_ser.bench.timing import TimingConfig, test_window, time_interleaved
    from edge_ser_export.peers import egemaps

    out = Path("build/student_ladder")
    out.mkdir(parents=True, exist_ok=True)
    options = ort.SessionOptions()
    options.intra_op_num_threads = options.inter_op_num_threads = 1
    teachers = {None: teacher} | {name: load_teacher(name).eval() for name, *_ in FAST if name}
    sessions = {c: ort.InferenceSession(str(fast_graph(teachers[c[0]], c[1:], unlabeled, out)), options,
                                        providers=["CPUExecutionProvider"]) for c in FAST}
    runners = {c: (lambda x, s=s: s.run(None, {"audio": x})) for c, s in sessions.items()}
    runners["egemaps"] = egemaps(None).run
    cfg = TimingConfig(budget_s=budget_s)
    times, _ = time_interleaved(runners, test_window(16000, cfg), cfg)
    ms = {k: float(np.median(v)) for k, v in times.items()}
    rows = []
    for (name, blocks, stride, ffn), s in sessions.items():
        emb = clip_embeddings(s, waves)
        t = ms[(name, blocks, stride, ffn)]
        rows.append({"teacher": teachers[name].name, "blocks": blocks, "stride": stride, "ffn": ffn, "ms": t,
                     "x_egemaps": ms["egemaps"] / t, "ua": loco(emb, y, source, n_classes)})
    lines = [f"Fast student candidates: int8 (U8S8) graphs, ms per {cfg.window_s:g} s window on 1 thread beside "
             f"openSMILE eGeMAPS ({ms['egemaps']:.1f} ms, same loop); LOCO UA of each graph's embeddings", "",
             "| teacher | blocks | frames/s | FFN | ms | x eGeMAPS | " + " | ".join(held) + " | mean |",
             "|---|---|---|---|---|---|" + "---|" * (len(held) + 1)]
    lines += [f"| {r['teacher']} | {r['blocks']} | {50 / r['stride']:.3g} | "
              f"{'/'.join(map(str, r['ffn'])) if r['ffn'] else 'all'} | {r['ms']:.2f} | {r['x_egemaps']:.1f} | "
              + " | ".join(f"{r['ua'][h]:.3f}" for h in held) + f" | {np.mean(list(r['ua'].values())):.3f} |"
              for r in rows]
    return rows, lines


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("manifest", type=Path)
    ap.add_argument("--cache", type=Path, default=Path("build/general/cache"))
    ap.add_argument("--teacher", default="whisper-base")
    ap.add_argument("--results", type=Path, default=Path("benchmarks/results"))
    ap.add_argument("--timing-s", type=float, default=60.0, help="seconds of timed calls of the fast candidates")
    ap.add_argument("--unlabeled", type=Path, default=Path("../shared/data/baved/manifest.csv"),
                    help="audio of no held-out corpus, for the cut FFNs (up to 1500 clips of it)")
    args = ap.parse_args()
    waves, corpus = load_waveforms(load_corpus(args.manifest))
    y = np.array([corpus.labels.index(it.label) for it in corpus.items])
    source = np.array([it.speaker.split("-")[0] for it in corpus.items])   # speakers are CORPUS-SPEAKER
    teacher = load_teacher(args.teacher).eval()
    if teacher.kind != "whisper":
        raise SystemExit(f"error: the fast student's candidates are Whisper prefixes; {args.teacher} is {teacher.kind}")
    feats = teacher_features(teacher, waves, args.cache, corpus_key(corpus.items))
    rows = {f"teacher ({teacher.blocks} blocks, all layers)": (teacher.blocks, 1, feats)}
    rows |= {f"prefix {k} block{'s' if k > 1 else ''}": (k, 1, feats[:, :k + 1]) for k in range(1, teacher.blocks)}
    result = {name: {"blocks": k, "stride": s, "ua": loco(f, y, source, len(corpus.labels))}
              for name, (k, s, f) in rows.items()}
    held = list(dict.fromkeys(source))
    lines = [f"Leave-one-corpus-out UA, {len(corpus.labels)} classes, {len(waves)} clips of {args.manifest.name}; "
             f"features of whole clips; logistic regression C=0.1 on standardised features; {machine()['cpu']}", "",
             "| features | " + " | ".join(held) + " | mean |", "|---|" + "---|" * (len(held) + 1)]
    lines += [f"| {name} | " + " | ".join(f"{r['ua'][h]:.3f}" for h in held)
              + f" | {np.mean(list(r['ua'].values())):.3f} |" for name, r in result.items()]
    unlabeled, _ = load_waveforms(load_corpus(args.unlabeled))
    unlabeled = [unlabeled[i] for i in np.random.RandomState(0).permutation(len(unlabeled))[:PRUNE_CLIPS]]
    fast, fast_lines = fast_candidates(teacher, waves, y, source, len(corpus.labels), held, unlabeled, args.timing_s)
    lines += ["", *fast_lines]
    args.results.mkdir(parents=True, exist_ok=True)
    (args.results / "student_ladder.md").write_text("\n".join(lines) + "\n")
    (args.results / "student_ladder.json").write_text(json.dumps({"machine": machine(), "rows": result,
                                                                  "fast": fast}, indent=2))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
