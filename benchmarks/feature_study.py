"""Issue 3: pretrained teacher features vs hand-crafted features, speaker-independent, with a few-data curve.

Usage: python benchmarks/feature_study.py [--data ../shared/data/emodb] [--teachers whisper-tiny.en,whisper-base]
       [--out benchmarks/results] [--quick] [--jobs N]
Writes feature_study_<corpus>.{md,csv,json}, data_efficiency_<corpus>.{csv,png} and confusion_<corpus>.png
under --out; features are cached in --out/cache, so a rerun skips the teacher.
See export/study.py for the protocol.
"""
from __future__ import annotations

import argparse
import logging
import os
from pathlib import Path

from edge_ser.progress import set_enabled

from edge_ser_export.study import StudyConfig, quick, run_study


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=Path(os.environ.get("EDGE_SER_DATA", "../shared/data/emodb")))
    ap.add_argument("--teachers", default=",".join(StudyConfig.teachers),
                    help="comma-separated teachers, e.g. whisper-tiny.en,whisper-base")
    ap.add_argument("--out", type=Path, default=StudyConfig.out)
    ap.add_argument("--draws", type=int, default=StudyConfig.draws)
    ap.add_argument("--jobs", type=int, default=os.cpu_count() or 1, help="worker processes for fitting heads")
    ap.add_argument("--quick", action="store_true", help="smoke test: shots 8 and 64, two draws")
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    set_enabled(True)
    cfg = StudyConfig(data=args.data, out=args.out, teachers=tuple(args.teachers.split(",")), draws=args.draws,
                      jobs=args.jobs)
    result = run_study(quick(cfg) if args.quick else cfg)
    show(result)


def show(r: dict) -> None:
    """The table and the few-data claims on the terminal."""
    from rich.console import Console
    from rich.table import Table

    console = Console()
    table = Table(title=f"{r['corpus']}: {r['protocol']}")
    for col in ("system", "UA", "WA", "F1", "UA/fold"):
        table.add_column(col)
    for s, v in sorted(r["systems"].items(), key=lambda kv: -kv[1]["ua"]):
        table.add_row(s, f"{v['ua']:.3f}", f"{v['wa']:.3f}", f"{v['f1']:.3f}",
                      f"{v['ua_fold_mean']:.3f}±{v['ua_fold_std']:.3f}")
    console.print(table)
    for c in r["claims"]:
        console.print(f"8/emotion {c['system']} UA {c['pretrained_8']:.3f} vs 64/emotion "
                      f"{c['handcrafted_system']} UA {c['best_handcrafted_64']:.3f}: "
                      f"{'holds' if c['holds'] else 'does not hold'}")
    console.print(f"total {r['timing']['total_s']:.0f} s")


if __name__ == "__main__":
    main()
