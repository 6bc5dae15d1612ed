"""`edge-ser export`: head on the teacher, distilled student, int8 variants, parity, evaluation, bundle."""
from __future__ import annotations

import platform
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from rich.console import Console

from edge_ser.audio import AUDIO_SUFFIXES, load_audio
from edge_ser.bundle import atomic_directory, load_bundle, write_manifest
from edge_ser.data import Fold, heldout_split, load_corpus, load_waveforms
from edge_ser.errors import AudioError, EdgeSerError
from edge_ser.evaluate import evaluate_waves
from edge_ser.metrics import scores

from . import graph
from .distill import DistillConfig, distill, keep_used_layers
from .features import embed
from .heads import EmotionModel, fit_head, predict
from .teachers import load_teacher

console = Console(stderr=True)
PARITY_TOLERANCE = 1e-3   # fp32 graph vs torch, on probabilities


@dataclass
class ExportConfig:
    data: Path
    out: Path
    teacher: str = "whisper-tiny.en"
    unlabeled: Path | None = None
    test_speakers: list[str] | None = None
    n_test_speakers: int = 3
    val_speakers: int = 2          # training speakers whose audio distillation skips, to score its epochs
    student_depth: int = 1
    student_width: int | None = None
    student_init: str = "teacher"
    student_time_stride: int = 1
    student_ffn: int | None = None
    distill_epochs: int = 3
    head: str = "linear"
    window_s: float = 4.0
    hop_s: float = 2.0
    calibration_clips: int = 48
    parity_clips: int = 24
    seed: int = 0
    overwrite: bool = False


def torch_scores(model: EmotionModel, waves, y, n_classes) -> dict:
    with torch.inference_mode():
        pred = [int(model(torch.from_numpy(w)[None]).argmax()) for w in waves]
    return scores(y, pred, n_classes)


def unlabeled_waves(folder: Path | None, held_out: set[Path]) -> list[np.ndarray]:
    """Every readable clip under ``folder``, except ``held_out`` files (held-out and validation speakers)."""
    if folder is None:
        return []
    files = sorted(p for p in Path(folder).rglob("*") if p.suffix.lower() in AUDIO_SUFFIXES)
    kept = [f for f in files if f.resolve() not in held_out]
    if len(kept) < len(files):
        console.print(f"--unlabeled: left out {len(files) - len(kept)} files of held-out or validation speakers")
    waves = []
    for f in kept:
        try:
            waves.append(load_audio(f))
        except AudioError as e:
            console.print(f"skipping unlabeled {f}: {e}")
    if not waves:
        raise EdgeSerError(f"--unlabeled {folder} holds no usable audio ({', '.join(AUDIO_SUFFIXES)})")
    return waves


def head_validation(cfg: ExportConfig, waves: list[np.ndarray], y: np.ndarray, groups: list[str], inner: Fold,
                    n_classes: int) -> Callable[[torch.nn.Module], float]:
    """Score a student: UA on the ``inner.test`` clips of a ``cfg.head`` head fitted on its features of ``inner.train``."""
    fit_w, val_w = [waves[i] for i in inner.train], [waves[i] for i in inner.test]

    def validate(student: torch.nn.Module) -> float:
        head = fit_head(cfg.head, embed(student, fit_w, progress=False), y[inner.train], n_classes,
                        seed=cfg.seed, groups=[groups[i] for i in inner.train])
        return scores(y[inner.test], predict(head, embed(student, val_w, progress=False)).argmax(1), n_classes)["ua"]
    return validate


def student_summary(cfg: ExportConfig, teacher_dim: int, mac_ratio: float, history: list[dict]) -> str:
    """One line for the export summary and model card: architecture, cost, and which epoch was kept."""
    shape = [f"{cfg.student_depth} layer{'s' if cfg.student_depth > 1 else ''} x {cfg.student_width or teacher_dim}"]
    shape += [f"FFN {cfg.student_ffn}"] if cfg.student_ffn else []
    shape += [f"1/{cfg.student_time_stride} of the frames"] if cfg.student_time_stride > 1 else []
    kept = next(h for h in history if h["kept"])
    if kept["score"] is None:
        distilled = f"distilled {kept['epoch']} epochs (no validation speakers)"
    else:
        scores_ = ", ".join(f"{h['score']:.3f}" for h in history)
        distilled = f"kept epoch {kept['epoch']} of {len(history) - 1} by validation UA (epochs 0..: {scores_})"
    return (f"{', '.join(shape)} ({cfg.student_init} init), {mac_ratio:.1f}x fewer MACs/s than the teacher; "
            f"{distilled}")


def write_variants(teacher_model, student_model, out: Path, calib: list[np.ndarray]) -> dict:
    """Every graph of the bundle into ``out``; returns the manifest's ``variants`` (no metrics yet)."""
    variants = {}

    def add(name, fmt, precision, model, quantization=None):
        files = [f"{name}.onnx"] if fmt == "onnx" else [f"{name}.xml", f"{name}.bin"]
        variants[name] = {"files": files, "format": fmt, "precision": precision, "model": model,
                          "quantization": quantization}
        return out / files[0]

    graph.export_onnx(teacher_model, add("teacher-fp32", "onnx", "fp32", "teacher"))
    student = add("student-fp32", "onnx", "fp32", "student")
    graph.export_onnx(student_model, student)
    graph.quantize_dynamic_onnx(student, add("student-int8-dynamic", "onnx", "int8", "student", "dynamic"))
    graph.quantize_static_onnx(student, add("student-int8-static", "onnx", "int8", "student", "static-qdq"), calib)
    graph.export_openvino(student, add("student-ov-fp32", "openvino", "fp32", "student"))
    graph.quantize_openvino(student, add("student-ov-int8", "openvino", "int8", "student", "nncf-ptq"), calib)
    return variants


def run_export(cfg: ExportConfig) -> dict:
    """Write the bundle at cfg.out atomically and return its manifest."""
    start = time.time()
    torch.manual_seed(cfg.seed)
    waves, corpus = load_waveforms(load_corpus(cfg.data))
    fold = heldout_split(corpus.items, cfg.test_speakers or cfg.n_test_speakers, seed=cfg.seed)
    labels = corpus.labels
    y = np.array([labels.index(it.label) for it in corpus.items])
    train_w = [waves[i] for i in fold.train]
    test_w = [waves[i] for i in fold.test]
    y_train, y_test = y[fold.train], y[fold.test]
    console.print(f"{corpus.name}: {len(corpus.items)} clips, {len(labels)} labels; {corpus.skip_summary()}; "
                  f"held-out speakers {', '.join(fold.test_speakers)} ({len(test_w)} clips)")

    teacher = load_teacher(cfg.teacher).eval()
    groups = [corpus.items[i].speaker for i in fold.train]
    teacher_x = embed(teacher, train_w, "teacher features")
    teacher_head = fit_head(cfg.head, teacher_x, y_train, len(labels), seed=cfg.seed, groups=groups)
    teacher_model = EmotionModel(teacher, teacher_head).eval()

    dcfg = DistillConfig(depth=cfg.student_depth, width=cfg.student_width, init=cfg.student_init,
                         time_stride=cfg.student_time_stride, ffn=cfg.student_ffn, epochs=cfg.distill_epochs,
                         seed=cfg.seed)
    # validation speakers: distillation skips their audio, and its epochs are kept only if they score better there
    inner, validate = Fold(np.arange(len(train_w)), np.array([], dtype=int), []), None
    if cfg.val_speakers and len(set(groups)) > cfg.val_speakers:
        inner = heldout_split([corpus.items[i] for i in fold.train], cfg.val_speakers, seed=cfg.seed)
        validate = head_validation(cfg, train_w, y_train, groups, inner, len(labels))
        console.print(f"distillation validation speakers: {', '.join(inner.test_speakers)}")
    # the head whose distribution the student learns must not know the validation speakers' labels either
    kd_head = fit_head(cfg.head, teacher_x[inner.train], y_train[inner.train], len(labels), seed=cfg.seed,
                       groups=[groups[i] for i in inner.train]) if validate else teacher_head
    skip = {Path(corpus.items[i].path).resolve() for i in [*fold.test, *fold.train[inner.test]]}
    student, history = distill(teacher, [train_w[i] for i in inner.train] + unlabeled_waves(cfg.unlabeled, skip),
                               dcfg, head=kd_head, validate=validate)
    student_head = fit_head(cfg.head, embed(student, train_w, "student features"), y_train, len(labels),
                            seed=cfg.seed, groups=groups)
    keep_used_layers(student, student_head)
    student_model = EmotionModel(student, student_head).eval()

    rng = np.random.default_rng(cfg.seed)
    calib = [train_w[i] for i in rng.permutation(len(train_w))[:cfg.calibration_clips]]
    check = [test_w[i] for i in rng.permutation(len(test_w))[:cfg.parity_clips]]
    with atomic_directory(cfg.out, overwrite=cfg.overwrite) as tmp:
        variants = write_variants(teacher_model, student_model, tmp, calib)
        for name, v in variants.items():
            torch_model = teacher_model if v["model"] == "teacher" else student_model
            v["parity"] = graph.parity(torch_model, tmp / v["files"][0], check)
            if v["precision"] == "fp32" and (v["parity"]["max_abs_diff"] > PARITY_TOLERANCE
                                             or v["parity"]["top1_agreement"] < 1.0):
                raise EdgeSerError(f"exported {name} disagrees with its torch model ({v['parity']}); "
                                   "the bundle was not written")
        teacher_macs = graph.count_macs(tmp / variants["teacher-fp32"]["files"][0])
        student_macs = graph.count_macs(tmp / variants["student-fp32"]["files"][0])
        manifest = {
            "labels": labels, "sample_rate": 16000, "window_s": cfg.window_s, "hop_s": cfg.hop_s,
            "min_input_s": 0.25, "max_input_s": 30.0, "variants": variants,
            "default_variant": "student-int8-dynamic",
            "teacher": {**teacher.provenance, "name": teacher.name, "layers": teacher.n_layers,
                        "dim": teacher.dim, "macs_per_s": teacher_macs},
            "student": {"depth": cfg.student_depth, "width": cfg.student_width or teacher.dim,
                        "init": cfg.student_init, "time_stride": cfg.student_time_stride, "ffn": cfg.student_ffn,
                        "epochs": cfg.distill_epochs, "distillation": history,
                        "validation_speakers": list(inner.test_speakers),
                        "macs_per_s": student_macs, "mac_ratio": teacher_macs / student_macs,
                        "summary": student_summary(cfg, teacher.dim, teacher_macs / student_macs, history)},
            "head": cfg.head,
            "data": {"corpus": corpus.name, "path": str(cfg.data), "clips": len(corpus.items),
                     "skipped": dict(corpus.skipped), "train_speakers": sorted({corpus.items[i].speaker for i in fold.train}),
                     "test_speakers": list(fold.test_speakers), "unlabeled": str(cfg.unlabeled) if cfg.unlabeled else None,
                     "summary": f"{corpus.name}, {len(train_w)} labelled clips from "
                                f"{len(set(corpus.items[i].speaker for i in fold.train))} speakers"},
            "evaluation": {"protocol": f"held-out speakers {', '.join(fold.test_speakers)} "
                                       f"({len(test_w)} clips), never used for distillation, calibration, "
                                       "normalisation or the head; clips scored by the runtime "
                                       f"(windows of {cfg.window_s} s, hop {cfg.hop_s} s, probabilities averaged)",
                           "torch_teacher": torch_scores(teacher_model, test_w, y_test, len(labels)),
                           "torch_student": torch_scores(student_model, test_w, y_test, len(labels))},
            "export": {"config": {k: str(v) if isinstance(v, Path) else v for k, v in asdict(cfg).items()},
                       "seconds": None, "host": platform.platform()},
        }
        write_manifest(tmp, manifest)
        metrics = evaluate_waves(load_bundle(tmp), test_w, [labels[i] for i in y_test])["variants"]
        for name in variants:
            manifest["variants"][name]["metrics"] = metrics[name]
        manifest["export"]["seconds"] = round(time.time() - start, 1)
        manifest = write_manifest(tmp, manifest)
    summary(manifest, cfg.out)
    return manifest


def summary(manifest: dict, out: Path) -> None:
    from edge_ser.cli import variants_table

    Console().print(variants_table(load_bundle(out), f"bundle {out}  ({manifest['evaluation']['protocol']})"))
    s = manifest["student"]
    Console().print(f"student: {s['summary']}; export took {manifest['export']['seconds']} s")
