"""Issue 3: pretrained teacher features vs hand-crafted features, speaker-independent, with a few-data curve.

Usage: python benchmarks/feature_study.py [--data ../shared/data/emodb] [--teacher whisper-tiny.en]
       [--out benchmarks/results] [--quick] [--jobs N]
Writes feature_study_<corpus>.{md,csv,json}, data_efficiency_<corpus>.{csv,png} and confusion_<corpus>.png
under --out; features are cached in --out/cache, so a rerun skips the teacher.
See export/study.py for the protocol.
"""
from __future__ import annotations

import argparse
import os
from pathlib import Path

from export.study import StudyConfig, quick, run_study


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=Path(os.environ.get("EDGE_SER_DATA", "../shared/data/emodb")))
    ap.add_argument("--teacher", default=StudyConfig.teacher)
    ap.add_argument("--out", type=Path, default=StudyConfig.out)
    ap.add_argument("--draws", type=int, default=StudyConfig.draws)
    ap.add_argument("--jobs", type=int, default=os.cpu_count() or 1, help="worker processes for fitting heads")
    ap.add_argument("--quick", action="store_true", help="smoke test: shots 8 and 64, two draws")
    args = ap.parse_args()
    cfg = StudyConfig(data=args.data, out=args.out, teacher=args.teacher, draws=args.draws, jobs=args.jobs)
    run_study(quick(cfg) if args.quick else cfg)


if __name__ == "__main__":
    main()
