"""Build the ready general-purpose model shipped in edge_ser/models/general, with its cross-corpus numbers.

Label set: anger, happiness, neutral, sadness: the categories EmoDB (German), BanglaSER (Bengali), TurEV-DB
(Turkish) and, with ``--nemo``, nEMO (Polish; a clone of github.com/amu-cai/nEMO) share. TurEV's "calm" (its
calm, non-emotional reading) is mapped to neutral; EmoDB's boredom, disgust and fear, BanglaSER's and nEMO's
surprise and nEMO's fear are left out; BAVED's labels are left out (arousal levels, not categories). Speakers are
prefixed by their corpus.

1. ``build/general/EmoDB+BanglaSER+TurEV-DB[+nEMO].csv``: the combined manifest.
2. Leave-one-corpus-out (LOCO): one export per corpus with every speaker of that corpus held out; its held-out
   scores are the cross-corpus scores (trained on the two other corpora). Every variant is in the table: the
   frozen teacher with its calibrated linear head on every pooled layer (teacher-fp32: the frozen-teacher +
   standardised logistic regression baseline), the teacher in int8, the student and the fast student.
3. The shipped model: an export holding out 2 speakers of each corpus for its metrics, refit on every speaker.
   All of them use the default recipe of ``edge-ser export`` but for a 3-block student (the export's 4 are no
   better on unseen corpora): the students are the teacher's first blocks read
   directly (nothing fit to the training audio, see ``ExportConfig.student_layers``); a finished export is
   reused, and the teacher's features are cached (``build/general/cache``).
4. Its U8U8 int8 variants (correct on every CPU; no saturation on x86 without VNNI) of the student and the fast
   student are packed into ``edge_ser/models/general`` (package data), with the corpora's licences,
   the label mapping and the cross-corpus numbers in its manifest and model card.

Usage: python benchmarks/ready_model.py [--data ../shared/data] [--nemo build/nEMO] [--teacher whisper-base]
       [--stage loco|ship|all] [--folds emodb,nemo]
Writes benchmarks/results/ready_model.{md,json} (the LOCO table, per variant: UA, ECE, and per-class recall); the
LOCO folds not asked for with --folds are read back from their finished exports (made with the same recipe), so
the folds can be exported in separate runs, sessions or processes; the ship stage alone exports none of them
(it reads them back once the shipped export is done).
"""
from __future__ import annotations

import argparse
import csv
import io
import json
import logging
import time

import numpy as np
from dataclasses import replace
from pathlib import Path

from edge_ser.bench.report import machine
from edge_ser.bundle import load_bundle, pack, write_bundle
from edge_ser.data import load_corpus
from edge_ser.progress import set_enabled
from edge_ser.run import atomic_file
from edge_ser_export.pipeline import ExportConfig, made_with, run_export

LABELS = {"anger": "anger", "happiness": "happiness", "neutral": "neutral", "sadness": "sadness", "calm": "neutral"}
CORPORA = {  # folder, licence as its README states it
    "emodb": ("emodb", "EmoDB (Burkhardt et al., Interspeech 2005): freely available for research"),
    "banglaser": ("banglaser", "BanglaSER (Das et al., 2022): CC BY 4.0"),
    "turev": ("turev", "TurEV-DB (Canpolat et al., SLTU-CCURL 2020): CC BY-NC-ND 4.0, non-commercial"),
}
NEMO = "nEMO (Christop, LREC-COLING 2024; github.com/amu-cai/nEMO): CC BY-NC-SA 4.0, non-commercial"
# the teacher in int8 is left out: across the four held-out corpora it was no better than the student (mean UA
# 0.622 vs 0.635) and it would add 24 MB to the package (20 MB now)
SHIPPED_VARIANTS = ("student-int8-u8u8", "fast-int8-u8u8")
OUT = Path(__file__).resolve().parents[1] / "edge_ser" / "models" / "general"


def corpus_rows(name: str, source: Path) -> list[tuple[str, str, str]]:
    """(path, label, speaker) of every clip of a corpus folder; nEMO's from its data.tsv (file_id, emotion,
    speaker_id)."""
    if name == "nemo":
        with open(source / "data.tsv", newline="", encoding="utf-8") as f:
            return [(str((source / "samples" / r["file_id"]).resolve()), r["emotion"], r["speaker_id"].strip())
                    for r in csv.DictReader(f, delimiter="\t")]
    return [(str(Path(it.path).resolve()), it.label, it.speaker) for it in load_corpus(source).items]


def combined_manifest(sources: dict[str, Path], out: Path) -> tuple[Path, dict[str, list[str]]]:
    """One CSV of every clip with a shared label; returns it and each corpus's (prefixed) speakers."""
    rows, speakers = [], {}
    for name, source in sources.items():
        rows += [(path, LABELS[label], f"{name}-{speaker}") for path, label, speaker in corpus_rows(name, source)
                 if label in LABELS]
        speakers[name] = sorted({r[2] for r in rows if r[2].startswith(name + "-")})
    text = io.StringIO(newline="")
    csv.writer(text).writerows([("path", "label", "speaker"), *rows])
    data = text.getvalue().encode()
    if not out.is_file() or out.read_bytes() != data:   # another fold's process may be reading it
        out.parent.mkdir(parents=True, exist_ok=True)
        with atomic_file(out, "the combined manifest", binary=True, keep_partial=False) as f:
            f.write(data)
    return out, speakers


def export(manifest: Path, out: Path, teacher: str, test_speakers: list[str], run: bool = True,
           **options) -> dict | None:
    """One export, or the numbers of a finished one at ``out`` made with the same held-out speakers and options
    (each run takes half an hour or more on 2 cores, so the script resumes where it stopped); None when there is
    no such finished export and ``run`` is false."""
    cfg = ExportConfig(data=manifest, out=out, teacher=teacher, test_speakers=test_speakers, overwrite=True, **options)
    done = load_bundle(out).manifest if (out / "edge-ser.json").is_file() else None
    if made_with(done, cfg):
        m, seconds = done, done.export.seconds
        logging.info("%s: reusing the finished export", out)
    elif not run:
        return None
    else:
        start = time.time()
        m = run_export(cfg)
        seconds = time.time() - start
    best = max(m.variants, key=lambda n: m.variants[n].metrics.ua)
    return {"seconds": round(seconds), "test_speakers": len(test_speakers), "clips": m.variants[best].metrics.n,
            "target": m.variants[best].metrics.target, **{n: vars(v.metrics) for n, v in m.variants.items()}}


def loco_table(loco: dict[str, dict]) -> list[str]:
    """Markdown: UA (ECE) of every variant on each held-out corpus, and the mean over corpora."""
    names = [n for n in next(iter(loco.values())) if isinstance(loco[next(iter(loco))][n], dict)]
    lines = ["| variant | " + " | ".join(loco) + " | mean UA | mean ECE |", "|---|" + "---|" * (len(loco) + 2)]
    for n in names:
        cells = [f"{r[n]['ua']:.3f} ({r[n]['ece']:.3f})" for r in loco.values()]
        lines.append(f"| {n}{' (frozen-teacher baseline)' if n == 'teacher-fp32' else ''} | " + " | ".join(cells)
                     + f" | {np.mean([r[n]['ua'] for r in loco.values()]):.3f}"
                     + f" | {np.mean([r[n]['ece'] for r in loco.values()]):.3f} |")
    return lines


def recall_table(loco: dict[str, dict], variant: str) -> list[str]:
    labels = sorted({lab for r in loco.values() for lab in r[variant]["recall"]})
    return ["| held out | " + " | ".join(labels) + " |", "|---|" + "---|" * len(labels)] + \
        [f"| {name} | " + " | ".join(f"{r[variant]['recall'].get(lab, float('nan')):.3f}" for lab in labels) + " |"
         for name, r in loco.items()]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=Path("../shared/data"))
    ap.add_argument("--teacher", default="whisper-base")
    ap.add_argument("--build", type=Path, default=Path("build/general"))
    ap.add_argument("--results", type=Path, default=Path("benchmarks/results"))
    ap.add_argument("--nemo", type=Path, help="a clone of github.com/amu-cai/nEMO: adds Polish to the corpora")
    ap.add_argument("--stage", choices=("loco", "ship", "all"), default="all")
    ap.add_argument("--folds", help="held-out corpora to export now, e.g. emodb,nemo (to share the work between "
                                    "processes; a later run without it reuses them) [default: all]")
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    set_enabled(True)
    sources = {name: args.data / folder for name, (folder, _) in CORPORA.items()}
    licences = {name: lic for name, (_, lic) in CORPORA.items()}
    if args.nemo:
        sources["nemo"], licences["nemo"] = args.nemo, NEMO
    names = {"emodb": "EmoDB", "banglaser": "BanglaSER", "turev": "TurEV-DB", "nemo": "nEMO"}
    corpora = "+".join(names[n] for n in sources)
    manifest, speakers = combined_manifest(sources, args.build / f"{corpora}.csv")
    # 3 blocks, not the export's 4: over the corpora nobody trained on they tie, and 3 are cheaper (docs/results.md)
    recipe = {"cache": args.build / "cache", "student_blocks": 3}
    report = {"teacher": args.teacher, "labels": sorted(set(LABELS.values())), "corpora": list(sources),
              "machine": machine(), "recipe": {k: str(v) for k, v in recipe.items()}, "loco": {}}
    args.results.mkdir(parents=True, exist_ok=True)
    folds = args.folds.split(",") if args.folds else list(sources)
    if set(folds) - set(sources):
        ap.error(f"--folds: no corpus {', '.join(sorted(set(folds) - set(sources)))} (corpora: {', '.join(sources)})")
    fold = {name: lambda run, name=name: export(manifest, args.build / f"loco-{name}", args.teacher, speakers[name],
                                                run=run, refit=False, **recipe)   # scored = shipped
            for name in sources}
    for name in folds if args.stage != "ship" else ():   # the folds asked for are exported now,
        fold[name](True)
    if args.stage != "loco":
        held = [s for name in sources for s in speakers[name][:2]]
        report["shipped"] = export(manifest, args.build / "bundle", args.teacher, held, **recipe)
    for name in sources:   # then every finished one is read back (another process may have finished its fold)
        if result := fold[name](False):
            report["loco"][name] = result
    missing = [n for n in sources if n not in report["loco"]]
    if report["loco"]:
        lines = loco_table(report["loco"])
        cpu = f"{report['machine']['cpu']} ({', '.join(report['machine']['features'])})"
        text = (f"Leave-one-corpus-out, 4 classes; UA (ECE) per held-out corpus; {cpu}; recipe {report['recipe']}"
                + (f"; not yet exported: {', '.join(missing)}" if missing else "")
                + "\n\n" + "\n".join(lines) + "".join(f"\n\nPer-class recall of {v}:\n\n"
                                                      + "\n".join(recall_table(report["loco"], v))
                                                      for v in SHIPPED_VARIANTS) + "\n")
        (args.results / "ready_model.md").write_text(text)
        (args.results / "ready_model.json").write_text(json.dumps(report, indent=2) + "\n")
        print(text)
    if args.stage == "loco":
        return
    if missing:
        raise SystemExit(f"error: not packed: the model card needs every fold; export {', '.join(missing)} with "
                         "--stage loco --folds (the shipped export is kept and reused)")
    bundle = load_bundle(args.build / "bundle")
    m = bundle.manifest
    notes = ["labels: TurEV's calm is mapped to neutral; EmoDB's boredom, disgust and fear, BanglaSER's and nEMO's "
             "surprise and nEMO's fear are left out"]
    for v in SHIPPED_VARIANTS:
        loco = ", ".join(f"{n} {r[v]['ua']:.3f}" for n, r in report["loco"].items())
        mean = np.mean([r[v]["ua"] for r in report["loco"].values()])
        notes.append(f"leave-one-corpus-out UA of {v} (each of {', '.join(report['loco'])} held out, trained on the "
                     f"others, same recipe): {loco} (mean {mean:.3f})")
    data = replace(m.data, corpus=f"{corpora.replace('+', ' + ')} (4 shared emotions)", notes=notes,
                   licences=licences)
    write_bundle(bundle.path, replace(m, data=data))
    pack(bundle.path, ",".join(SHIPPED_VARIANTS), OUT, overwrite=True)
    (args.results / "ready_model.json").write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
