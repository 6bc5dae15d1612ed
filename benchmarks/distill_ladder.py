"""Does distillation improve a cheaper student? The ladder: each student with and without gradient epochs.

For every student shape in ``STUDENTS`` (a strided student with a narrower FFN), two exports on the same
split: ``--distill-epochs 0`` (the truncated teacher with its least-squares start: no gradient distillation) and
``--distill-epochs N`` with unlabeled speech (the other corpora of ../shared/data; held-out and validation
speakers' files are left out by the export itself). Held-out UA of the torch student and of its int8 variant,
MACs and latency per 2 s window as measured at export (1 thread, this CPU).

Usage: python benchmarks/distill_ladder.py [--data ../shared/data/emodb] [--teacher whisper-tiny.en]
       [--unlabeled ../shared/data/banglaser ../shared/data/turev] [--epochs 3] [--augment 0]
Writes benchmarks/results/distill_ladder.{md,json}.
"""
from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path

from edge_ser.progress import set_enabled
from edge_ser.targets import detect_target
from edge_ser_export.pipeline import ExportConfig, run_export

STUDENTS = {   # name -> ExportConfig fields
    "stride 2, FFN 768": {"student_time_stride": 2, "student_ffn": 768},
}


def run(args, name: str, options: dict, epochs: int) -> dict:
    out = args.build / f"{name.replace(' ', '').replace(',', '-').replace('(', '').replace(')', '')}-{epochs}"
    cfg = ExportConfig(data=args.data, out=out, teacher=args.teacher, distill_epochs=epochs, augment=args.augment,
                       unlabeled=args.unlabeled if epochs else [], overwrite=True, **options)
    start = time.time()
    m = run_export(cfg)
    target = detect_target()
    return {"student": name, "epochs": epochs, "seconds": round(time.time() - start),
            "macs_per_s": m.student.macs_per_s, "mac_ratio": round(m.teacher.macs_per_s / m.student.macs_per_s, 2),
            "torch_student_ua": m.evaluation.torch_student.ua, "torch_teacher_ua": m.evaluation.torch_teacher.ua,
            "fp32_ua": m.variants["student-fp32"].metrics.ua, "int8_ua": m.variants["student-int8-u8u8"].metrics.ua,
            "int8_ms": m.variants["student-int8-u8u8"].latency_ms.get(target),
            "teacher_ms": m.variants["teacher-fp32"].latency_ms.get(target),
            "kept_epoch": next((e.epoch for e in m.student.distillation if e.kept), 0),
            "validation": [e.score for e in m.student.distillation]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=Path("../shared/data/emodb"))
    ap.add_argument("--teacher", default="whisper-tiny.en")
    ap.add_argument("--unlabeled", type=Path, nargs="*",
                    default=[Path("../shared/data/banglaser"), Path("../shared/data/turev")])
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--augment", type=int, default=0)
    ap.add_argument("--build", type=Path, default=Path("build/ladder"))
    ap.add_argument("--results", type=Path, default=Path("benchmarks/results"))
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    set_enabled(True)
    rows = [run(args, name, options, epochs) for name, options in STUDENTS.items() for epochs in (0, args.epochs)]
    args.results.mkdir(parents=True, exist_ok=True)
    (args.results / "distill_ladder.json").write_text(json.dumps({"teacher": args.teacher, "data": str(args.data),
                                                                  "unlabeled": [str(u) for u in args.unlabeled],
                                                                  "rows": rows}, indent=2) + "\n")
    lines = ["| student | distillation | MACs/s | fewer MACs | held-out UA torch | int8 u8u8 | int8 ms | kept epoch "
             "(validation UA by epoch) |", "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['student']} | {r['epochs']} epochs | {r['macs_per_s'] / 1e6:.0f} M | {r['mac_ratio']}x | "
                     f"{r['torch_student_ua']:.3f} | {r['int8_ua']:.3f} | {r['int8_ms']} | {r['kept_epoch']} ("
                     + ", ".join(f"{s:.3f}" for s in r["validation"] if s is not None) + ") |")
    text = (f"Teacher {args.teacher} (torch held-out UA {rows[0]['torch_teacher_ua']:.3f}, "
            f"{rows[0]['teacher_ms']} ms per 2 s window in ONNX Runtime fp32)\n\n" + "\n".join(lines) + "\n")
    (args.results / "distill_ladder.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
