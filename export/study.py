"""The few-data feature study: pretrained teacher layers vs hand-crafted features, speaker-independent.

For every feature set x head, out-of-fold predictions over speaker folds (leave-one-speaker-out up to
``loso_max_speakers`` speakers, else ``k`` speaker groups); scores are computed on the pooled out-of-fold
predictions (the UA mean and std over folds are reported too). The data-efficiency curve refits the best
pretrained system and every hand-crafted system on ``shots`` examples per emotion drawn from the training
speakers of each fold (``draws`` random draws; a class with fewer training examples keeps all of them) and
reports the pooled UA, mean and std over draws. Test speakers' audio never enters training, standardisation,
or hyperparameter choice (inner cross-validation is over training speakers only).

Writes ``feature_study_<corpus>.{md,csv,json}``, ``data_efficiency_<corpus>.{csv,png}`` and
``confusion_<corpus>.png`` under ``out``; features are cached under ``out/cache``.
"""
from __future__ import annotations

import json
import logging
import multiprocessing as mp
import os
import platform
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from edge_ser.data import Fold, load_corpus, load_waveforms, loso_folds, speaker_folds
from edge_ser.errors import DatasetError
from edge_ser.metrics import confusion, scores
from edge_ser.progress import progress

from .features import BASELINES, baseline_features, corpus_key, teacher_features
from .heads import KINDS, fit_head, predict

log = logging.getLogger(__name__)


@dataclass
class StudyConfig:
    data: Path
    out: Path = Path("benchmarks/results")
    teachers: tuple[str, ...] = ("whisper-tiny.en",)
    heads: tuple[str, ...] = KINDS
    baselines: tuple[str, ...] = BASELINES
    shots: tuple[int, ...] = (4, 8, 16, 32, 64)
    draws: int = 5
    loso_max_speakers: int = 12     # more speakers than this: k speaker groups instead of LOSO
    k: int = 5
    seed: int = 0
    jobs: int = field(default_factory=lambda: os.cpu_count() or 1)


def quick(cfg: StudyConfig) -> StudyConfig:
    """A smoke-test version: two shot sizes, two draws."""
    cfg.shots, cfg.draws = (8, 64), 2
    return cfg


def make_folds(items, cfg: StudyConfig) -> tuple[list[Fold], str]:
    """Speaker-independent folds and a description of the protocol."""
    n = len({it.speaker for it in items})
    if n <= cfg.loso_max_speakers:
        return loso_folds(items), f"leave-one-speaker-out ({n} folds)"
    return speaker_folds(items, cfg.k, cfg.seed), f"{cfg.k} speaker-independent folds ({n} speakers)"


def check_folds(folds: list[Fold], speakers: np.ndarray) -> None:
    """Raise unless every clip is tested exactly once and no speaker is in both train and test of a fold."""
    tested = np.concatenate([f.test for f in folds])
    if len(tested) != len(speakers) or len(np.unique(tested)) != len(speakers):
        raise DatasetError("the folds do not test every clip exactly once")
    for f in folds:
        shared = set(speakers[f.train]) & set(speakers[f.test])
        if shared or np.intersect1d(f.train, f.test).size:
            raise DatasetError(f"speaker(s) {sorted(shared)} in both train and test of a fold")


def subsample(train: np.ndarray, y: np.ndarray, shots: int, rng: np.random.Generator) -> np.ndarray:
    """Up to ``shots`` random training indices per class (all of a class that has fewer)."""
    picked = []
    for c in np.unique(y[train]):
        idx = train[y[train] == c]
        picked.append(rng.choice(idx, size=min(shots, len(idx)), replace=False))
    return np.sort(np.concatenate(picked))


# ---------------------------------------------------------------------------------- worker processes
_SHARED: dict = {}


def _init_worker(features: dict, y: np.ndarray, speakers: np.ndarray, n_classes: int) -> None:
    _SHARED.update(features=features, y=y, speakers=speakers, n_classes=n_classes)


def _fit_predict(task: tuple) -> tuple:
    """Fit one head on ``train`` and predict ``test``; returns (key, test, predictions, selected options)."""
    key, feature, kind, train, test, seed = task
    x, y = _SHARED["features"][feature], _SHARED["y"]
    head = fit_head(kind, x[train], y[train], _SHARED["n_classes"], seed=seed, groups=_SHARED["speakers"][train])
    return key, test, predict(head, x[test]).argmax(1), getattr(head, "selected", None)


def _run(tasks: list[tuple], pool: ProcessPoolExecutor | None, description: str) -> list[tuple]:
    results = pool.map(_fit_predict, tasks) if pool else map(_fit_predict, tasks)
    return list(progress(results, total=len(tasks), description=description))


def _pooled(results: list[tuple], n: int) -> dict[tuple, np.ndarray]:
    """Out-of-fold predictions per key."""
    out = {}
    for key, test, pred, _ in results:
        out.setdefault(key, np.full(n, -1))[test] = pred
    return out


# ----------------------------------------------------------------------------------------- the study
def run_study(cfg: StudyConfig) -> dict:
    """Run the study on cfg.data and write its tables and plots; returns the results (also the JSON)."""
    start = time.perf_counter()
    timing = {}
    waves, corpus = load_waveforms(load_corpus(cfg.data))
    y, labels = corpus.targets(), corpus.labels
    speakers = np.array([it.speaker for it in corpus.items])
    folds, protocol = make_folds(corpus.items, cfg)
    check_folds(folds, speakers)
    log.info(f"{corpus.name}: {len(y)} clips, {len(labels)} emotions, {len(set(speakers))} speakers; "
                  f"{corpus.skip_summary()}; {protocol}")

    key, cache = f"{corpus.name}_{corpus_key(corpus.items)}", cfg.out / "cache"
    t = time.perf_counter()
    from .teachers import load_teacher
    features, provenance = {}, {}
    for spec in cfg.teachers:
        teacher = load_teacher(spec)
        features[teacher.name] = teacher_features(teacher, waves, cache, key)
        provenance[teacher.name] = teacher.provenance
        timing[f"{teacher.name}_features_s"] = time.perf_counter() - t
        t = time.perf_counter()
        del teacher
    pretrained = list(features)
    for name in cfg.baselines:
        features[name] = baseline_features(name, waves, cache, key)[:, None]
    timing["baseline_features_s"] = time.perf_counter() - t
    del waves

    n, n_classes = len(y), len(labels)
    systems = [(f, h) for f in features for h in cfg.heads]
    ctx = mp.get_context("spawn")
    pool = ProcessPoolExecutor(cfg.jobs, ctx, initializer=_init_worker,
                               initargs=(features, y, speakers, n_classes)) if cfg.jobs > 1 else None
    if pool is None:
        _init_worker(features, y, speakers, n_classes)
    try:
        t = time.perf_counter()
        tasks = [((f, h), f, h, fold.train, fold.test, cfg.seed + i)
                 for f, h in systems for i, fold in enumerate(folds)]
        results = _run(tasks, pool, "feature sets x heads")
        oof = _pooled(results, n)
        table = {}
        for f, h in systems:
            per_fold = [scores(y[fold.test], oof[f, h][fold.test], n_classes)["ua"] for fold in folds]
            table[f"{f}+{h}"] = {"features": f, "head": h, "pretrained": f in pretrained,
                                 **scores(y, oof[f, h], n_classes),
                                 "ua_fold_mean": float(np.mean(per_fold)), "ua_fold_std": float(np.std(per_fold)),
                                 "selected": [r[3] for r in results if r[0] == (f, h)] if h == "linear" else None}
        timing["table_s"] = time.perf_counter() - t

        best_of = {f: max((s for s in table if table[s]["features"] == f), key=lambda s: table[s]["ua"])
                   for f in pretrained}
        best = max(best_of.values(), key=lambda s: table[s]["ua"])
        curve_systems = list(best_of.values()) + [s for s in table if not table[s]["pretrained"]]
        t = time.perf_counter()
        tasks = []
        for s in curve_systems:
            for shots in cfg.shots:
                for d in range(cfg.draws):
                    for i, fold in enumerate(folds):
                        rng = np.random.default_rng([cfg.seed, i, shots, d])
                        train = subsample(fold.train, y, shots, rng)
                        tasks.append(((s, shots, d), table[s]["features"], table[s]["head"], train, fold.test,
                                      cfg.seed + i))
        curve_oof = _pooled(_run(tasks, pool, "data-efficiency curve"), n)
        timing["curve_s"] = time.perf_counter() - t
    finally:
        if pool is not None:
            pool.shutdown()
    curve = {}
    for s in curve_systems:
        curve[s] = {}
        for shots in cfg.shots:
            uas = [scores(y, curve_oof[s, shots, d], n_classes)["ua"] for d in range(cfg.draws)]
            curve[s][str(shots)] = {"ua": uas, "mean": float(np.mean(uas)), "std": float(np.std(uas))}
        curve[s]["all"] = {"ua": [table[s]["ua"]], "mean": table[s]["ua"], "std": 0.0}

    timing["total_s"] = time.perf_counter() - start
    result = {
        "corpus": corpus.name, "data": str(cfg.data), "clips": n, "labels": labels,
        "speakers": sorted(set(speakers)), "skipped": dict(corpus.skipped), "protocol": protocol,
        "scoring": "UA/WA/F1 on the pooled out-of-fold predictions; ua_fold_mean/std over folds",
        "teachers": provenance, "best_pretrained": best, "systems": table,
        "data_efficiency": {"shots": list(cfg.shots), "draws": cfg.draws, "systems": curve,
                            "scoring": "pooled out-of-fold UA per draw; mean and std over draws"},
        "claims": [c for f in pretrained
                   if (c := claim(curve, best_of[f], [s for s in curve if not table[s]["pretrained"]], cfg.shots))],
        "confusion": {"system": best, "matrix": confusion(y, oof[tuple(best.rsplit("+", 1))], n_classes).tolist()},
        "timing": {k: round(v, 1) for k, v in timing.items()},
        "host": {"platform": platform.platform(), "cpus": os.cpu_count(), "jobs": cfg.jobs,
                 "load_average": [round(v, 2) for v in os.getloadavg()]},
        "config": {k: str(v) if isinstance(v, Path) else v for k, v in asdict(cfg).items()},
    }
    write_outputs(result, cfg.out)
    return result


def claim(curve: dict, best: str, handcrafted: list[str], shots: tuple[int, ...]) -> dict | None:
    """A pretrained system with 8 per emotion vs every hand-crafted system with 64 per emotion, on UA."""
    if "8" not in curve[best] or not handcrafted or 64 not in shots:
        return None
    rival = max(handcrafted, key=lambda s: curve[s]["64"]["mean"])
    ours, theirs = curve[best]["8"]["mean"], curve[rival]["64"]["mean"]
    return {"system": best, "pretrained_8": ours, "best_handcrafted_64": theirs, "handcrafted_system": rival,
            "holds": ours > theirs}


# ------------------------------------------------------------------------------------------- outputs
def write_outputs(r: dict, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    stem = r["corpus"]
    (out / f"feature_study_{stem}.json").write_text(json.dumps(r, indent=1))
    rows = r["systems"]
    with open(out / f"feature_study_{stem}.csv", "w") as f:
        f.write("system,features,head,pretrained,ua,wa,f1,ua_fold_mean,ua_fold_std,n\n")
        for s, v in rows.items():
            f.write(f"{s},{v['features']},{v['head']},{int(v['pretrained'])},{v['ua']:.4f},{v['wa']:.4f},"
                    f"{v['f1']:.4f},{v['ua_fold_mean']:.4f},{v['ua_fold_std']:.4f},{v['n']}\n")
    curve = r["data_efficiency"]["systems"]
    columns = [str(s) for s in r["data_efficiency"]["shots"]] + ["all"]
    with open(out / f"data_efficiency_{stem}.csv", "w") as f:
        f.write("system,shots,ua_mean,ua_std,draws\n")
        for s, c in curve.items():
            for k in columns:
                f.write(f"{s},{k},{c[k]['mean']:.4f},{c[k]['std']:.4f},{len(c[k]['ua'])}\n")
    (out / f"feature_study_{stem}.md").write_text(markdown(r))
    plot_curve(r, out / f"data_efficiency_{stem}.png")
    plot_confusion(r, out / f"confusion_{stem}.png")


def markdown(r: dict) -> str:
    lines = [f"# Feature study: {r['corpus']}",
             "",
             f"{r['clips']} clips, {len(r['labels'])} emotions ({', '.join(r['labels'])}), "
             f"{len(r['speakers'])} speakers; {r['protocol']}. {r['scoring']}. Teachers: {', '.join(r['teachers'])}. "
             "Linear = logistic regression on the pooled (mean+std) layer chosen, with its L2 penalty, by inner "
             "cross-validation over training speakers; MLP = learned softmax layer weights + MLP.",
             "",
             "| system | features | head | UA | WA | macro-F1 | UA per fold (mean ± std) |",
             "|---|---|---|---|---|---|---|"]
    for s, v in sorted(r["systems"].items(), key=lambda kv: -kv[1]["ua"]):
        name = f"**{s}**" if s == r["best_pretrained"] else s
        lines.append(f"| {name} | {v['features']}{' (pretrained)' if v['pretrained'] else ''} | {v['head']} | "
                     f"{v['ua']:.3f} | {v['wa']:.3f} | {v['f1']:.3f} | "
                     f"{v['ua_fold_mean']:.3f} ± {v['ua_fold_std']:.3f} |")
    de = r["data_efficiency"]
    cols = [str(s) for s in de["shots"]] + ["all"]
    lines += ["", f"## Data efficiency (UA, mean ± std over {de['draws']} draws; examples per emotion from the "
                  "training speakers of each fold)", "",
              "| system | " + " | ".join(cols) + " |", "|---" * (len(cols) + 1) + "|"]
    for s, c in de["systems"].items():
        lines.append(f"| {s} | " + " | ".join(f"{c[k]['mean']:.3f} ± {c[k]['std']:.3f}" if k != "all"
                                              else f"{c[k]['mean']:.3f}" for k in cols) + " |")
    for c in r["claims"]:
        lines += ["", f"Few-data claim: {c['system']} with 8 per emotion UA {c['pretrained_8']:.3f} vs the "
                      f"best hand-crafted system with 64 per emotion ({c['handcrafted_system']}) UA "
                      f"{c['best_handcrafted_64']:.3f}: **{'holds' if c['holds'] else 'does not hold'}**."]
    t = r["timing"]
    teacher_s = ", ".join(f"{k[:-len('_features_s')]} features {v:.0f} s" for k, v in t.items()
                          if k.endswith("_features_s") and k != "baseline_features_s")
    lines += ["", f"Time: {t['total_s']:.0f} s in all ({teacher_s}, "
                  f"baseline features {t['baseline_features_s']:.0f} s, table {t['table_s']:.0f} s, curve "
                  f"{t['curve_s']:.0f} s) on {r['host']['cpus']} CPUs, {r['host']['jobs']} worker(s).", ""]
    return "\n".join(lines)


def plot_curve(r: dict, path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    de = r["data_efficiency"]
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for s, c in de["systems"].items():
        xs = list(de["shots"])
        ax.errorbar(xs, [c[str(k)]["mean"] for k in xs], yerr=[c[str(k)]["std"] for k in xs], capsize=3,
                    marker="o", lw=2.5 if s == r["best_pretrained"] else 1.2, label=s)
        ax.axhline(c["all"]["mean"], color=ax.lines[-1].get_color(), ls=":", lw=0.8)
    ax.set_xscale("log", base=2)
    ax.set_xticks(list(de["shots"]), [str(s) for s in de["shots"]])
    ax.set_xlabel("labelled examples per emotion (dotted: all)")
    ax.set_ylabel("UA")
    ax.set_title(f"{r['corpus']}: data efficiency ({r['protocol']})", fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_confusion(r: dict, path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    m = np.array(r["confusion"]["matrix"])
    rates = m / np.maximum(m.sum(1, keepdims=True), 1)
    labels = r["labels"]
    fig, ax = plt.subplots(figsize=(6, 5))
    ax.imshow(rates, cmap="Blues", vmin=0, vmax=1)
    for i in range(len(labels)):
        for j in range(len(labels)):
            ax.text(j, i, str(m[i, j]), ha="center", va="center", fontsize=8,
                    color="white" if rates[i, j] > 0.5 else "black")
    ax.set_xticks(range(len(labels)), labels, rotation=45, ha="right")
    ax.set_yticks(range(len(labels)), labels)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(f"{r['corpus']}: {r['confusion']['system']} (UA {r['systems'][r['confusion']['system']]['ua']:.3f})",
                 fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
