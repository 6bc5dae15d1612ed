"""`edge-ser export`: head on the teacher, distilled student, int8 variants, parity, evaluation, bundle.

Two passes over the same recipe:

1. **Evaluate.** Held-out speakers are set aside; the head (its inputs chosen by inner cross-validation), the
   student's distillation and least-squares fits, normalisation and int8 calibration use the other speakers
   only. Every variant is exported and scored on the held-out speakers: these are the bundle's metrics.
2. **Ship.** The head, the student's least-squares fits, normalisation and calibration are refit on every
   labelled speaker (the student trunk distilled in pass 1 is kept), exported again and checked for parity.
   The manifest and model card say that the metrics describe pass 1 and the files are pass 2.
"""
from __future__ import annotations

import copy
import logging
import shutil
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from edge_ser import __version__, manifest as mf
from edge_ser.audio import AUDIO_SUFFIXES, SAMPLE_RATE, load_audio
from edge_ser.bundle import atomic_directory, load_bundle, write_bundle
from edge_ser.data import Fold, heldout_split, load_corpus, load_waveforms
from edge_ser.engine import load_graph, read_graph
from edge_ser.errors import AudioError, DatasetError, EdgeSerError
from edge_ser.interrupt import on_termination
from edge_ser.evaluate import evaluate_waves
from edge_ser.metrics import scores
from edge_ser.progress import progress
from edge_ser.targets import detect_target

from . import graph, parallel
from .distill import DistillConfig, distill, fit_predictions_on, keep_used_layers
from .features import corpus_key, embed, teacher_features
from .heads import EmotionModel, LinearHead, fit_head, head_inputs, predict
from .macs import count_macs
from .presets import OPENVINO_INT8_TARGETS, ORT_PRESETS
from .teachers import load_teacher, make_student

log = logging.getLogger(__name__)
PARITY_TOLERANCE = 1e-3   # fp32 graph vs torch, on probabilities
HEAD_FILES = {"teacher": "head-teacher.npz", "student": "head-student.npz"}
LATENCY_REPS = 10         # timed calls per variant for --variant auto's choice on this CPU


@dataclass
class ExportConfig:
    data: Path
    out: Path
    label_map: str | None = None   # FROM=TO[,FROM=TO...] (edge_ser.data.parse_label_map)
    teacher: str = "whisper-base"
    unlabeled: list[Path] = field(default_factory=list)
    cache: Path | None = None     # keeps the teacher's pooled features of the labelled clips across runs
    test_speakers: int | list[str] = 3
    val_speakers: int | list[str] = 3   # training speakers whose audio distillation skips, to score its epochs
    student_blocks: int = 1
    student_width: int | None = None
    student_init: str = "teacher"
    student_time_stride: int = 1
    student_ffn: int | None = None
    distill_epochs: int = 3
    augment: int = 1
    head: str = "all"             # the head's layers: all | auto | best
    window_s: float = 4.0
    hop_s: float = 2.0
    calibration_clips: int = 48
    parity_clips: int = 24
    device: str = "cpu"
    seed: int = 0
    overwrite: bool = False


@dataclass
class Models:
    """What one pass produces: the two torch models and the head choice."""

    teacher: EmotionModel
    student: EmotionModel
    history: list[dict]


def torch_scores(model: EmotionModel, waves, y, n_classes) -> dict:
    with torch.inference_mode():
        pred = [int(model(torch.from_numpy(w)[None]).argmax()) for w in waves]
    return scores(y, pred, n_classes)


def unlabeled_waves(folders: list[Path], held_out: set[Path]) -> list[np.ndarray]:
    """Every readable clip under ``folders``, except ``held_out`` files (held-out and validation speakers)."""
    files = sorted({p.resolve() for folder in folders for p in Path(folder).rglob("*")
                    if p.suffix.lower() in AUDIO_SUFFIXES and not p.name.startswith(".")})
    kept = [f for f in files if f not in held_out]
    if len(kept) < len(files):
        log.info("--unlabeled: left out %d files of held-out or validation speakers", len(files) - len(kept))
    waves, bad = [], 0
    for f in progress(kept, description="unlabeled audio"):
        try:
            waves.append(load_audio(f))
        except AudioError:
            bad += 1
    if bad:
        log.info("--unlabeled: skipped %d unreadable files", bad)
    if folders and not waves:
        raise EdgeSerError(f"--unlabeled {', '.join(map(str, folders))} holds no usable audio")
    return waves


def check_classes(labels: list[str], y_train: np.ndarray, where: str) -> None:
    """Refuse a split in which a class has no training clip: its recall would be 0 and nobody would know."""
    missing = [labels[c] for c in range(len(labels)) if not (y_train == c).any()]
    if missing:
        raise DatasetError(f"{where}: no training clip of {', '.join(missing)} once the held-out speakers are set "
                           "aside; choose other --test-speakers or drop that class from the data")


def student_summary(cfg: ExportConfig, teacher_dim: int, mac_ratio: float, history: list[dict]) -> str:
    """One line for the export summary and model card: architecture, cost, and which epoch was kept."""
    shape = [f"{cfg.student_blocks} block{'s' if cfg.student_blocks > 1 else ''} x {cfg.student_width or teacher_dim}"]
    shape += [f"FFN {cfg.student_ffn}"] if cfg.student_ffn else []
    shape += [f"1/{cfg.student_time_stride} of the frames"] if cfg.student_time_stride > 1 else []
    kept = next(h for h in history if h["kept"])
    if kept["score"] is None:
        distilled = f"distilled {kept['epoch']} epochs (no validation speakers)"
    else:
        scores_ = ", ".join(f"{h['score']:.3f}" for h in history)
        distilled = f"kept epoch {kept['epoch']} of {len(history) - 1} by validation UA (epochs 0..: {scores_})" \
            if len(history) > 1 else f"no distillation epochs (the least-squares start; validation UA {scores_})"
    return (f"{', '.join(shape)} ({cfg.student_init} init), {mac_ratio:.1f}x fewer MACs/s than the teacher; "
            f"{distilled}")


def write_variants(teacher_model, student_model, out: Path, calib: list[np.ndarray]) -> dict[str, mf.Variant]:
    """Every graph of the bundle into ``out``: teacher and student in fp32 and int8 (see :mod:`.presets`), the
    student also as OpenVINO IR; and the two heads."""
    variants: dict[str, mf.Variant] = {}

    def add(name, fmt, precision, model, quantization=None, targets=()):
        files = [f"{name}.onnx"] if fmt == "onnx" else [f"{name}.xml", f"{name}.bin"]
        variants[name] = mf.Variant(files=files, format=fmt, precision=precision, model=model, head=model,
                                    quantization=quantization, targets=list(targets))
        return out / files[0]

    for model, m in (("teacher", teacher_model), ("student", student_model)):
        (out / HEAD_FILES[model]).write_bytes(m.head.numbers.to_bytes())
    for model, m in (("teacher", teacher_model), ("student", student_model)):
        fp32 = add(f"{model}-fp32", "onnx", "fp32", model)
        graph.export_onnx(m.embedder, fp32)
        for p in ORT_PRESETS:
            graph.quantize_dynamic_onnx(fp32, add(f"{model}-{p.name}", "onnx", "int8", model, p.description,
                                                  p.targets), p.signed_weights)
    student = out / variants["student-fp32"].files[0]
    graph.export_openvino(student, add("student-ov-fp32", "openvino", "fp32", "student"))
    graph.quantize_openvino(student, add("student-ov-int8", "openvino", "int8", "student",
                                         "NNCF post-training, transformer scheme", OPENVINO_INT8_TARGETS), calib)
    return variants


def check_parity(variants: dict[str, mf.Variant], models: Models, directory: Path, clips: list[np.ndarray]) -> None:
    """Record each graph's agreement with its torch model; an fp32 graph that disagrees stops the export."""
    for name, v in variants.items():
        model = models.teacher if v.model == "teacher" else models.student
        v.parity = mf.Parity(**graph.parity(model, directory / v.files[0], clips, model.head.numbers))
        if v.precision == "fp32" and (v.parity.max_abs_diff > PARITY_TOLERANCE or v.parity.top1_agreement < 1.0):
            raise EdgeSerError(f"exported {name} disagrees with its torch model ({v.parity}); "
                               "the bundle was not written")


def measure_latency(variants: dict[str, mf.Variant], directory: Path, seconds: float = 2.0) -> None:
    """Median ms per window of every variant on this CPU (1 thread), recorded under its target for `auto`."""
    target = detect_target()
    x = (0.1 * np.sin(np.arange(int(seconds * SAMPLE_RATE)) / 7.0)).astype(np.float32)[None]
    runs = {name: load_graph(read_graph(directory / v.files[0]), "openvino" if v.format == "openvino"
                             else "onnxruntime", 1, name) for name, v in variants.items()}
    times = {name: [] for name in runs}
    for rep in range(LATENCY_REPS + 2):
        for name, run in runs.items():
            start = time.perf_counter()
            run(x)
            if rep >= 2:   # two warm-up rounds
                times[name].append((time.perf_counter() - start) * 1e3)
    for name, v in variants.items():
        v.latency_ms = {target: round(float(np.median(times[name])), 3)}


class Export:
    """The state of one export: data, split, teacher and its features."""

    def __init__(self, cfg: ExportConfig):
        self.cfg = cfg
        parallel.init(cfg.device)
        torch.manual_seed(cfg.seed)
        corpus = load_corpus(cfg.data, label_map=cfg.label_map)
        self.waves, self.corpus = load_waveforms(corpus)
        if not self.waves:
            raise DatasetError(f"{cfg.data}: none of its {len(corpus.items)} clips is usable "
                               f"({self.corpus.skip_summary()})")
        self.labels = self.corpus.labels
        self.y = np.array([self.labels.index(it.label) for it in self.corpus.items])
        self.speakers = [it.speaker for it in self.corpus.items]
        self.fold = heldout_split(self.corpus.items, cfg.test_speakers, seed=cfg.seed)
        check_classes(self.labels, self.y[self.fold.train], "the training speakers")
        self.validation_speakers: list[str] = []
        log.info("%s: %d clips, %d labels; %s; held-out speakers %s (%d clips)", self.corpus.name, len(self.waves),
                 len(self.labels), self.corpus.skip_summary(), ", ".join(self.fold.test_speakers), len(self.fold.test))
        self.teacher = load_teacher(cfg.teacher).eval()
        make_student(self.teacher, cfg.student_blocks, cfg.student_width, cfg.student_init, cfg.student_time_stride)
        self.teacher.to(parallel.device())
        self.features = teacher_features(self.teacher, self.waves, cfg.cache, corpus_key(self.corpus.items))
        self.teacher.cpu()
        # the head's layers and penalty are chosen once, on the training speakers' teacher features
        self.layers, self.l2 = cfg.head, None
        probe = self.fit_head(self.features, self.fold.train)
        self.layers, self.l2 = probe.selected["layers"], probe.selected["l2"]
        log.info("head inputs: %s; %s", head_inputs(self.layers), probe.report.summary())

    def fit_head(self, features: np.ndarray, idx: np.ndarray) -> LinearHead:
        return fit_head("linear", features[idx], self.y[idx], len(self.labels), seed=self.cfg.seed,
                        groups=[self.speakers[i] for i in idx], layers=self.layers, l2=self.l2)

    def evaluate_pass(self) -> tuple[Models, list[np.ndarray]]:
        """Pass 1: everything fit without the held-out speakers; returns the models and the unlabeled clips."""
        cfg, train = self.cfg, self.fold.train
        teacher_head = self.fit_head(self.features, train)
        train_items = [self.corpus.items[i] for i in train]
        inner, validate = Fold(np.arange(len(train)), np.array([], dtype=int), []), None
        n_val = len(cfg.val_speakers) if isinstance(cfg.val_speakers, list) else cfg.val_speakers
        if n_val and len(set(it.speaker for it in train_items)) > n_val:
            inner = heldout_split(train_items, cfg.val_speakers, seed=cfg.seed)
            self.validation_speakers = list(inner.test_speakers)
            validate = self._validation(train[inner.train], train[inner.test])
            log.info("distillation validation speakers: %s", ", ".join(inner.test_speakers))
        # the head whose distribution the student learns must not know the validation speakers' labels either
        kd_head = self.fit_head(self.features, train[inner.train]) if validate else teacher_head
        skip = {Path(self.corpus.items[i].path).resolve() for i in [*self.fold.test, *train[inner.test]]}
        unlabeled = unlabeled_waves(cfg.unlabeled, skip)
        clips = [self.waves[i] for i in train[inner.train]] + unlabeled
        dcfg = DistillConfig(blocks=cfg.student_blocks, width=cfg.student_width, init=cfg.student_init,
                             time_stride=cfg.student_time_stride, ffn=cfg.student_ffn, epochs=cfg.distill_epochs,
                             augment=cfg.augment, seed=cfg.seed)
        student, history = distill(self.teacher, clips, dcfg, head=kd_head, validate=validate)
        student_head = self.fit_head(embed(student, self.waves, "student features"), train)
        keep_used_layers(student, student_head)
        return Models(EmotionModel(self.teacher, teacher_head).eval(), EmotionModel(student, student_head).eval(),
                      history), unlabeled

    def _validation(self, fit_idx: np.ndarray, val_idx: np.ndarray):
        """UA on the ``val_idx`` clips of a head fitted on the student's features of ``fit_idx``."""
        def validate(student: torch.nn.Module) -> float:
            feats = embed(student, [self.waves[i] for i in [*fit_idx, *val_idx]], show_progress=False, shard=False)
            head = fit_head("linear", feats[:len(fit_idx)], self.y[fit_idx], len(self.labels), seed=self.cfg.seed,
                            groups=[self.speakers[i] for i in fit_idx], layers=self.layers, l2=self.l2)
            return scores(self.y[val_idx], predict(head, feats[len(fit_idx):]).argmax(1), len(self.labels))["ua"]
        return validate

    def ship_pass(self, evaluated: Models, unlabeled: list[np.ndarray]) -> Models:
        """Pass 2: the same recipe refit on every labelled speaker (the distilled trunk is kept); the
        least-squares fits see every labelled clip and as many unlabeled ones."""
        everyone = np.arange(len(self.waves))
        student = copy.deepcopy(evaluated.student.encoder)
        fit_predictions_on(student, self.teacher, list(self.waves) + unlabeled[:len(self.waves)])
        student_head = self.fit_head(embed(student, self.waves, "student features (all speakers)"), everyone)
        keep_used_layers(student, student_head)
        return Models(EmotionModel(self.teacher, self.fit_head(self.features, everyone)).eval(),
                      EmotionModel(student, student_head).eval(), evaluated.history)


def run_export(cfg: ExportConfig) -> mf.Manifest | None:
    """Write the bundle at cfg.out atomically and return its manifest (None on the helper processes of torchrun)."""
    start = time.time()
    ex = Export(cfg)
    labels, test = ex.labels, ex.fold.test
    test_w, y_test = [ex.waves[i] for i in test], ex.y[test]
    evaluated, unlabeled = ex.evaluate_pass()
    shipped = ex.ship_pass(evaluated, unlabeled)
    if not parallel.is_main():   # under torchrun, the other processes helped with features and distillation
        return None
    rng = np.random.default_rng(cfg.seed)
    with tempfile.TemporaryDirectory(prefix="edge-ser-eval-") as tmp, \
            on_termination(lambda: shutil.rmtree(tmp, ignore_errors=True)):   # pass 1 graphs: scored, not shipped
        tmp = Path(tmp)
        calib = [ex.waves[i] for i in rng.permutation(ex.fold.train)[:cfg.calibration_clips]]
        variants = write_variants(evaluated.teacher, evaluated.student, tmp, calib)
        write_bundle(tmp, _manifest(cfg, ex, evaluated, variants, tmp, None, start))
        metrics = evaluate_waves(load_bundle(tmp), test_w, [labels[i] for i in y_test])["variants"]
    torch_metrics = {"torch_teacher": torch_scores(evaluated.teacher, test_w, y_test, len(labels)),
                     "torch_student": torch_scores(evaluated.student, test_w, y_test, len(labels))}
    with atomic_directory(cfg.out, overwrite=cfg.overwrite) as tmp:
        calib = [ex.waves[i] for i in rng.permutation(len(ex.waves))[:cfg.calibration_clips]]
        variants = write_variants(shipped.teacher, shipped.student, tmp, calib)
        check_parity(variants, shipped, tmp, [ex.waves[i] for i in rng.permutation(len(ex.waves))[:cfg.parity_clips]])
        measure_latency(variants, tmp)
        target = detect_target()
        for name, v in variants.items():
            v.metrics = mf.Metrics(**metrics[name], target=target)
        manifest = _manifest(cfg, ex, shipped, variants, tmp, torch_metrics, start)
        manifest = write_bundle(tmp, manifest)
    log.info("student: %s; export took %s s", manifest.student.summary, manifest.export.seconds)
    return manifest


def _manifest(cfg: ExportConfig, ex: Export, models: Models, variants: dict[str, mf.Variant], directory: Path,
              torch_metrics: dict | None, start: float) -> mf.Manifest:
    teacher, corpus, fold = ex.teacher, ex.corpus, ex.fold
    teacher_macs = count_macs(directory / variants["teacher-fp32"].files[0])
    student_macs = count_macs(directory / variants["student-fp32"].files[0])
    n_speakers = len(corpus.speakers)
    protocol = (f"held-out speakers {', '.join(fold.test_speakers)} ({len(fold.test)} clips) of {corpus.name}, never "
                "used for distillation, calibration, normalisation or the head; clips scored by the runtime (windows "
                f"of {cfg.window_s} s, hop {cfg.hop_s} s, probabilities averaged)")
    shipped = (f"the metrics describe models fit on the {n_speakers - len(fold.test_speakers)} training speakers; the "
               f"shipped files are the same recipe with the head, the student's least-squares fits, normalisation and "
               f"int8 calibration refit on all {n_speakers} speakers (the student trunk is the one distilled "
               "without the held-out speakers)")
    m = mf.Manifest(
        labels=ex.labels, input=mf.Input(window_s=cfg.window_s, hop_s=cfg.hop_s), variants=variants,
        default_variant="student-fp32",
        teacher=mf.Teacher(name=_public(teacher.name), family=teacher.provenance.get("model_type", teacher.kind),
                           blocks=teacher.blocks, dim=teacher.dim, macs_per_s=teacher_macs,
                           source=_public(teacher.provenance.get("location", ""))),
        student=mf.Student(blocks=cfg.student_blocks, dim=cfg.student_width or teacher.dim,
                           time_stride=cfg.student_time_stride, ffn=cfg.student_ffn, macs_per_s=student_macs,
                           summary=student_summary(cfg, teacher.dim, teacher_macs / student_macs, models.history),
                           distillation=[mf.Epoch(**h) for h in models.history],
                           validation_speakers=ex.validation_speakers),
        heads={model: mf.Head(file=HEAD_FILES[model], dim=h.numbers.dim, inputs=head_inputs(ex.layers),
                              fit=h.report.summary(), temperature=h.report.temperature, ece=h.report.ece)
               for model, h in (("teacher", models.teacher.head), ("student", models.student.head))},
        data=mf.Data(corpus=corpus.name, clips=len(ex.waves), speakers=n_speakers,
                     test_speakers=list(fold.test_speakers), trained_speakers=list(corpus.speakers),
                     label_counts={lab: int((ex.y == i).sum()) for i, lab in enumerate(ex.labels)},
                     skipped=dict(corpus.skipped),
                     unlabeled=", ".join(p.name for p in cfg.unlabeled) or None),
        evaluation=mf.Evaluation(protocol=protocol, shipped=shipped,
                                 **{k: mf.Metrics(**v) for k, v in (torch_metrics or {}).items()}),
        export=mf.Export(edge_ser=__version__, seconds=round(time.time() - start, 1),
                         config={k: _public(v) for k, v in asdict(cfg).items() if k not in ("out", "overwrite")}))
    return m


def _public(value) -> str:
    """An option as the manifest keeps it: folder and file names without the exporting machine's paths."""
    if isinstance(value, list):
        return ", ".join(_public(v) for v in value)
    if isinstance(value, Path) or (isinstance(value, str) and ("/" in value or "\\" in value) and Path(value).exists()):
        return Path(value).name
    return str(value)
