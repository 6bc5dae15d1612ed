"""`edge-ser export`: head on the teacher, distilled student, int8 variants, parity, evaluation, bundle.

Two passes over the same recipe:

1. **Evaluate.** Held-out speakers are set aside; the head (its inputs chosen by inner cross-validation), the
   student's distillation and least-squares fits, normalisation and int8 calibration use the other speakers
   only. Every variant is exported and scored on the held-out speakers: these are the bundle's metrics.
2. **Ship.** The head, the student's least-squares fits, normalisation and calibration are refit on every
   labelled speaker (the student trunk distilled in pass 1 is kept), exported again and checked for parity.
   The manifest and model card say that the metrics describe pass 1 and the files are pass 2. With ``refit=False``
   (leave-one-corpus-out studies) the files are pass 1's models, calibrated on the training speakers only.

When the clips have text (a manifest's ``text`` column), the text path's alignment head (:mod:`.align`) goes through
the same two passes on the student's encoder.
"""
from __future__ import annotations

import copy
import logging
import shutil
import tempfile
import time
from dataclasses import asdict, dataclass, field, replace
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
from edge_ser.head import MIN_SPEAKERS
from edge_ser.metrics import scores
from edge_ser.progress import progress
from edge_ser.targets import FAST_HEAD, detect_target

from . import align, graph, parallel
from .distill import (PRUNE_CLIPS, PRUNE_REFIT, DistillConfig, distill, ffn_units, fit_predictions_on, keep_used_layers,
                      prune_ffn, refit_clips)
from .features import cached, corpus_key, embed, teacher_features, waves_key
from .heads import EmotionModel, LinearHead, fit_head, head_inputs, predict
from .macs import count_macs
from .presets import OPENVINO_INT8_TARGETS, ORT_PRESETS
from .teachers import MatMulConv1d, load_teacher, make_student, teacher_prefix

log = logging.getLogger(__name__)
PARITY_TOLERANCE = 1e-3   # fp32 graph vs torch, on probabilities
HEAD_FILES = {"teacher": "head-teacher.npz", "student": "head-student.npz", FAST_HEAD: "head-fast.npz"}
STUDENT_LAYERS = ("own", "teacher")
LATENCY_REPS = 10         # timed calls per variant for --variant auto's choice on this CPU
# the fast student's FFNs are cut only when the training speakers bring this much audio to refit them on: refit on
# 376 clips of 7 EmoDB speakers the cut cost 2.4 points on 3 new EmoDB speakers, refit on as many BAVED clips none
FFN_CUT_MIN_SPEAKERS, FFN_CUT_MIN_CLIPS = 10, 1000


@dataclass
class ExportConfig:
    data: Path
    out: Path
    label_map: str | None = None   # FROM=TO[,FROM=TO...] (edge_ser.data.parse_label_map)
    teacher: str = "whisper-base"
    unlabeled: list[Path] = field(default_factory=list)
    cache: Path | None = None     # keeps the teacher's (and strided students') pooled features across runs
    test_speakers: int | list[str] = 3
    # training speakers whose audio distillation skips, to score its epochs (0, or fewer than 4: no epoch is chosen
    # by them, the last one is kept: edge_ser.head.MIN_SPEAKERS)
    val_speakers: int | list[str] = 4
    student_blocks: int = 4
    # "own": the student is the teacher's first blocks and its head reads their hidden states (nothing is fit to
    # the data, so it generalizes as those teacher layers do); "teacher": it predicts every teacher layer the head
    # reads, distilled on the training audio (narrower, pruned or strided students)
    student_layers: str = "own"
    student_width: int | None = None
    student_init: str = "teacher"
    student_time_stride: int = 1
    student_ffn: int | None = None
    fast_blocks: int = 2               # the fast student: the teacher's first blocks, own layers (0: none) ...
    fast_time_stride: int = 2          # ... on 1/fast_time_stride of the frames ...
    fast_ffn: tuple[int, ...] = (768, 512)   # ... its blocks' FFNs cut to these many units, in order (0: all)
    distill_epochs: int = 3
    augment: int = 1
    head: str = "all"             # the head's layers: all | auto | best
    speaker_directions: int = 5   # every head is blind to this many directions telling training speakers apart
    window_s: float = 4.0
    hop_s: float = 2.0
    refit: bool = True            # False: ship the models that were scored (no refit on the held-out speakers)
    calibration_clips: int = 48
    parity_clips: int = 24
    device: str = "cpu"
    seed: int = 0
    overwrite: bool = False
    text_model: Path | None = None   # the text emotion part the alignment head reads (None: the shipped one)


@dataclass
class Models:
    """What one pass produces: the torch models (teacher, student and the fast student if any) and the
    student's distillation record."""

    parts: dict[str, EmotionModel]
    history: list[dict]

    @property
    def teacher(self) -> EmotionModel:
        return self.parts["teacher"]

    @property
    def student(self) -> EmotionModel:
        return self.parts["student"]


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


def student_summary(cfg: ExportConfig, teacher_dim: int, mac_ratio: float, history: list[dict],
                    fast: bool = False, ffn: list[int] | None = None) -> str:
    """One line for the export summary and model card: architecture, cost, and which epoch was kept (``ffn``: the
    units a teacher prefix's FFNs kept, if cut)."""
    blocks, stride = (cfg.fast_blocks, cfg.fast_time_stride) if fast else (cfg.student_blocks, cfg.student_time_stride)
    if fast or cfg.student_layers == "own":
        strided = f", on 1/{stride} of the frames" if stride > 1 else ""
        fit = (f", FFNs cut to {'/'.join(map(str, ffn))} units refit on the training and --unlabeled audio" if ffn
               else " (no distillation: nothing fit to the training audio)")
        return (f"the teacher's first {blocks} block{'s' if blocks > 1 else ''}{strided}, its own hidden states "
                f"pooled{fit}, {mac_ratio:.1f}x fewer MACs/s than the teacher")
    shape = [f"{blocks} block{'s' if blocks > 1 else ''} x {cfg.student_width or teacher_dim}"]
    shape += [f"FFN {cfg.student_ffn}"] if cfg.student_ffn else []
    shape += [f"1/{stride} of the frames"] if stride > 1 else []
    kept = next(h for h in history if h["kept"])
    if kept["score"] is None:
        distilled = f"distilled {kept['epoch']} epochs (no validation speakers)"
    else:
        scores_ = ", ".join(f"{h['score']:.3f}" for h in history)
        distilled = f"kept epoch {kept['epoch']} of {len(history) - 1} by validation UA (epochs 0..: {scores_})" \
            if len(history) > 1 else f"no distillation epochs (the least-squares start; validation UA {scores_})"
    return (f"{', '.join(shape)} ({cfg.student_init} init), {mac_ratio:.1f}x fewer MACs/s than the teacher; "
            f"{distilled}")


def write_variants(parts: dict[str, EmotionModel], out: Path, calib: list[np.ndarray]) -> dict[str, mf.Variant]:
    """Every graph of the bundle into ``out``: each part (teacher, student, fast student) in fp32 and int8 (see
    :mod:`.presets`; layer norms smoothed on ``calib`` first, :func:`.graph.smooth_layer_norms`), the students also
    as OpenVINO IR; and their heads. A variant is named PART-PRECISION and reads the head named PART."""
    variants: dict[str, mf.Variant] = {}

    def add(name, fmt, precision, part, macs, quantization=None, targets=()):
        files = [f"{name}.onnx"] if fmt == "onnx" else [f"{name}.xml", f"{name}.bin"]
        variants[name] = mf.Variant(files=files, format=fmt, precision=precision, head=part, macs_per_s=macs,
                                    model="teacher" if part == "teacher" else "student",
                                    quantization=quantization, targets=list(targets))
        return out / files[0]

    for part, m in parts.items():
        (out / HEAD_FILES[part]).write_bytes(m.head.numbers.to_bytes())
        fp32 = out / f"{part}-fp32.onnx"
        graph.export_onnx(m.embedder, fp32)
        macs = count_macs(fp32)
        add(f"{part}-fp32", "onnx", "fp32", part, macs)
        for p in ORT_PRESETS:
            graph.quantize_dynamic_onnx(fp32, add(f"{part}-{p.name}", "onnx", "int8", part, macs,
                                                  f"{p.description}; layer norms smoothed", p.targets),
                                        p.signed_weights, calib=calib)
        if part != "teacher":
            source = fp32
            if any(isinstance(x, MatMulConv1d) for x in m.embedder.modules()):   # Whisper's: OpenVINO runs Conv faster
                source = graph.export_onnx(m.embedder, out / f".{part}-openvino.onnx", convs_as_matmul=False)
            try:
                graph.export_openvino(source, add(f"{part}-ov-fp32", "openvino", "fp32", part, macs))
                graph.quantize_openvino(source, add(f"{part}-ov-int8", "openvino", "int8", part, macs,
                                                    "NNCF post-training, transformer scheme", OPENVINO_INT8_TARGETS),
                                        calib)
            finally:
                if source != fp32:
                    source.unlink(missing_ok=True)
    return variants


def check_parity(variants: dict[str, mf.Variant], models: Models, directory: Path, clips: list[np.ndarray]) -> None:
    """Record each graph's agreement with its torch model; an fp32 graph that disagrees stops the export."""
    for name, v in variants.items():
        model = models.parts[v.head]
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
        self.texts = [it.text for it in self.corpus.items]
        self.text_model = None
        if align.check_texts(self.texts, self.y, self.fold.train, self.labels):
            from edge_ser.textemotion import TextEmotion
            from edge_ser.transcribe import TextExtraError
            try:
                self.text_model = TextEmotion(cfg.text_model)
            except TextExtraError as e:
                raise TextExtraError(f"{e} (the text column of --data trains the text path's alignment head; "
                                     "empty it to export without one)") from None
        elif cfg.text_model is not None:
            log.warning("--text-model serves the alignment head, which needs a text column in --data: not used")
        self.validation_speakers: list[str] = []
        log.info("%s: %d clips, %d labels; %s; held-out speakers %s (%d clips)", self.corpus.name, len(self.waves),
                 len(self.labels), self.corpus.skip_summary(), ", ".join(self.fold.test_speakers), len(self.fold.test))
        self.teacher = load_teacher(cfg.teacher).eval()
        if max(cfg.student_blocks, cfg.fast_blocks) > self.teacher.blocks:
            log.info("the teacher has %d blocks: the students take at most that many", self.teacher.blocks)
            self.cfg = cfg = replace(cfg, student_blocks=min(cfg.student_blocks, self.teacher.blocks),
                                     fast_blocks=min(cfg.fast_blocks, self.teacher.blocks))
        check_students(cfg, self.teacher)
        self.teacher.to(parallel.device())
        self.features = teacher_features(self.teacher, self.waves, cfg.cache, corpus_key(self.corpus.items))
        self.teacher.cpu()
        # the head's layers are chosen once, on the training speakers' teacher features; each part's penalty once,
        # on its own features of the training speakers (a student's features are not the teacher's)
        self.layers, self.penalty = cfg.head, {}
        probe = self.fit_head(self.features, self.fold.train, "teacher")
        self.layers = probe.selected["layers"]
        log.info("head inputs: %s; %s", head_inputs(self.layers), probe.report.summary())
        self.prefixes = self.prefix_students()

    def fit_head(self, features: np.ndarray, idx: np.ndarray, part: str) -> LinearHead:
        """The linear head of ``part`` on ``features`` of clips ``idx``: the layers chosen on the teacher (those a
        prefix of the teacher has, else all of its own) and the part's penalty, chosen by its first fit."""
        layers = self.layers
        if isinstance(layers, list) and features.shape[1] < self.teacher.n_layers:
            layers = [i for i in layers if i < features.shape[1]] or "all"
        head = fit_head("linear", features[idx], self.y[idx], len(self.labels), seed=self.cfg.seed,
                        groups=[self.speakers[i] for i in idx], layers=layers, l2=self.penalty.get(part),
                        speaker_directions=self.cfg.speaker_directions)
        if part not in self.penalty:
            self.penalty[part] = head.selected["l2"]
            if part != "teacher":
                log.info("%s head: %s", part, head.report.summary())
        return head

    def prefix_students(self) -> dict[str, tuple[torch.nn.Module, np.ndarray]]:
        """The students made of the teacher's first blocks ("student" with student_layers "own", "fast") and
        their features of every clip (the teacher's own, unless strided): nothing in them is fit to the data, so
        both passes share them."""
        cfg, out = self.cfg, {}
        for part, blocks, stride in (("student", cfg.student_blocks, cfg.student_time_stride),
                                     (FAST_HEAD, cfg.fast_blocks, cfg.fast_time_stride)):
            if blocks and (part == FAST_HEAD or cfg.student_layers == "own"):
                model = teacher_prefix(self.teacher, blocks, stride)
                name = f"{self.teacher.name}-{blocks}b-stride{stride}"
                refit = self.cut_fast_ffn(model) if part == FAST_HEAD else None
                if refit:
                    name += f"-ffn{'-'.join(map(str, model.provenance['ffn']))}-r{PRUNE_REFIT}-{refit}"
                out[part] = (model, self.features[:, :blocks + 1] if stride == 1 and not refit else cached(
                    cfg.cache, name, corpus_key(self.corpus.items), len(self.waves),
                    lambda m=model, p=part: embed(m, self.waves, f"{p} student features")))
        return out

    def cut_fast_ffn(self, model: torch.nn.Module) -> str | None:
        """Cut the fast student's FFNs to ``cfg.fast_ffn`` units (:func:`prune_ffn`), refit on up to PRUNE_CLIPS
        clips of the training speakers and ``--unlabeled`` (never a held-out speaker's: both passes share it, as they
        share the prefixes) and ``cfg.augment`` augmented copies of each (:func:`.augment.augmented`); the key of
        that audio, or None when no FFN is wider than its cut or the training speakers are too few
        (FFN_CUT_MIN_SPEAKERS, FFN_CUT_MIN_CLIPS) to refit it on."""
        if ffn_units(model, self.cfg.fast_ffn) == ffn_units(model, 0):
            return None
        train, speakers = self.fold.train, len({self.speakers[i] for i in self.fold.train})
        if speakers < FFN_CUT_MIN_SPEAKERS or len(train) < FFN_CUT_MIN_CLIPS:
            log.info("fast student: FFNs kept whole (%d training speakers, %d clips: a cut is refit on %d or more "
                     "speakers' %d or more clips)", speakers, len(train), FFN_CUT_MIN_SPEAKERS, FFN_CUT_MIN_CLIPS)
            return None
        held = {Path(self.corpus.items[i].path).resolve() for i in self.fold.test}
        pool = [self.waves[i] for i in train] + unlabeled_waves(self.cfg.unlabeled, held)   # any speech but theirs
        picked = refit_clips(pool, self.cfg.augment, self.cfg.seed)
        kept = prune_ffn(model, [torch.from_numpy(w[None]) for w in parallel.shard(picked)], self.cfg.fast_ffn)
        n = min(len(pool), PRUNE_CLIPS)
        log.info("fast student: FFNs cut to %s units, refit on %d clips (training speakers' and --unlabeled) and %d "
                 "augmented copies", "/".join(map(str, kept)), n, len(picked) - n)
        return waves_key(picked)

    def evaluate_pass(self) -> tuple[Models, list[np.ndarray]]:
        """Pass 1: everything fit without the held-out speakers; returns the models and the unlabeled clips."""
        train = self.fold.train
        parts = {"teacher": EmotionModel(self.teacher, self.fit_head(self.features, train, "teacher")).eval()}
        history, unlabeled = [], []
        if self.cfg.student_layers == "teacher":
            parts["student"], history, unlabeled = self.distilled(parts["teacher"].head)
        elif self.cfg.unlabeled and not any(model.provenance.get("ffn") for model, _ in self.prefixes.values()):
            log.info("--unlabeled serves distillation (--student-layers teacher) and the fast student's cut: not used")
        for part, (model, features) in self.prefixes.items():
            parts[part] = EmotionModel(model, self.fit_head(features, train, part)).eval()
        return Models(parts, history), unlabeled

    def distilled(self, teacher_head: LinearHead) -> tuple[EmotionModel, list[dict], list[np.ndarray]]:
        """The student distilled without the held-out speakers (nor the validation speakers that score its
        epochs), its head, its record and the unlabeled clips."""
        cfg, train = self.cfg, self.fold.train
        train_items = [self.corpus.items[i] for i in train]
        inner, validate = Fold(np.arange(len(train)), np.array([], dtype=int), []), None
        n_val = len(cfg.val_speakers) if isinstance(cfg.val_speakers, list) else cfg.val_speakers
        if 0 < n_val < MIN_SPEAKERS:
            log.info("%d validation speakers cannot rank distillation epochs (%d or more can): the last epoch is kept",
                     n_val, MIN_SPEAKERS)
        elif n_val and len(set(it.speaker for it in train_items)) > n_val:
            inner = heldout_split(train_items, cfg.val_speakers, seed=cfg.seed)
            self.validation_speakers = list(inner.test_speakers)
            validate = self._validation(train[inner.train], train[inner.test])
            log.info("distillation validation speakers: %s", ", ".join(inner.test_speakers))
        # the head whose distribution the student learns must not know the validation speakers' labels either
        kd_head = self.fit_head(self.features, train[inner.train], "teacher") if validate else teacher_head
        skip = {Path(self.corpus.items[i].path).resolve() for i in [*self.fold.test, *train[inner.test]]}
        unlabeled = unlabeled_waves(cfg.unlabeled, skip)
        clips = [self.waves[i] for i in train[inner.train]] + unlabeled
        dcfg = DistillConfig(blocks=cfg.student_blocks, width=cfg.student_width, init=cfg.student_init,
                             time_stride=cfg.student_time_stride, ffn=cfg.student_ffn, epochs=cfg.distill_epochs,
                             augment=cfg.augment, seed=cfg.seed)
        student, history = distill(self.teacher, clips, dcfg, head=kd_head, validate=validate)
        student_head = self.fit_head(embed(student, self.waves, "student features"), train, "student")
        keep_used_layers(student, student_head)
        return EmotionModel(student, student_head).eval(), history, unlabeled

    def fusion(self, evaluated: Models, shipped: Models) -> tuple[align.FusionGraph, mf.Fusion] | None:
        """The alignment head on the student's encoder, when the clips have text: trained on the training speakers'
        clips with text and scored on the held-out speakers' (beside the student alone), then refit on every
        clip with text when the export refits."""
        if self.text_model is None:
            return None
        tokens = [None] * len(self.texts)
        for i, t in enumerate(progress(self.texts, description="alignment: words")):
            if t:
                h, mask = self.text_model.states([t])
                tokens[i] = h[0][mask[0] > 0] if mask.any() else None
        have = np.array([i for i, t in enumerate(tokens) if t is not None])
        train, test = np.intersect1d(self.fold.train, have), np.intersect1d(self.fold.test, have)
        n, frames = len(self.labels), [None] * len(self.waves)

        def encode(encoder):
            for i, f in zip(have, align.frames_of(encoder, [self.waves[i] for i in have])):
                frames[i] = f
        encode(evaluated.student.encoder)
        head = align.fit_alignment(frames, tokens, self.y, train, n, self.cfg.seed)
        metrics = audio = None
        if len(test):
            metrics = mf.Metrics(**align.score(head, frames, tokens, self.y, test, n))
            audio = mf.Metrics(**torch_scores(evaluated.student, [self.waves[i] for i in test], self.y[test], n))
            log.info("alignment head: UA %.3f on the held-out speakers' %d clips with text (the student alone: %.3f)",
                     metrics.ua, len(test), audio.ua)
        if self.cfg.refit:
            if shipped.student.encoder is not evaluated.student.encoder:
                encode(shipped.student.encoder)
            head = align.fit_alignment(frames, tokens, self.y, have, n, self.cfg.seed)
        fit = (f"{align.EPOCHS} epochs (at least {align.MIN_STEPS} updates), AdamW, class-balanced, on the "
               f"{len(have if self.cfg.refit else train)} clips with text of "
               f"{'every' if self.cfg.refit else 'the training'} speaker; scored on the held-out speakers' "
               f"{len(test)} clips with text")
        spec = mf.Fusion(file=align.FILE, text_encoder=self.text_model.encoder_sha256,
                         text_dim=int(tokens[have[0]].shape[-1]),
                         audio="the student's last hidden state (int8 weights; scored in fp32 torch)",
                         fit=fit, metrics=metrics, audio_metrics=audio)
        return align.FusionGraph(shipped.student.encoder, head), spec

    def _validation(self, fit_idx: np.ndarray, val_idx: np.ndarray):
        """UA on the ``val_idx`` clips of a head fitted on the student's features of ``fit_idx``."""
        def validate(student: torch.nn.Module) -> float:
            feats = embed(student, [self.waves[i] for i in [*fit_idx, *val_idx]], show_progress=False, shard=False)
            head = fit_head("linear", feats[:len(fit_idx)], self.y[fit_idx], len(self.labels), seed=self.cfg.seed,
                            groups=[self.speakers[i] for i in fit_idx], layers=self.layers, l2=self.penalty["teacher"],
                            speaker_directions=self.cfg.speaker_directions)
            return scores(self.y[val_idx], predict(head, feats[len(fit_idx):]).argmax(1), len(self.labels))["ua"]
        return validate

    def ship_pass(self, evaluated: Models, unlabeled: list[np.ndarray]) -> Models:
        """Pass 2: the same recipe refit on every labelled speaker (a distilled trunk is kept; its least-squares
        fits see every labelled clip and as many unlabeled ones)."""
        everyone = np.arange(len(self.waves))
        parts = {"teacher": EmotionModel(self.teacher, self.fit_head(self.features, everyone, "teacher")).eval()}
        if self.cfg.student_layers == "teacher":
            student = copy.deepcopy(evaluated.student.encoder)
            fit_predictions_on(student, self.teacher, list(self.waves) + unlabeled[:len(self.waves)])
            student_head = self.fit_head(embed(student, self.waves, "student features (all speakers)"), everyone,
                                         "student")
            keep_used_layers(student, student_head)
            parts["student"] = EmotionModel(student, student_head).eval()
        for part, (model, features) in self.prefixes.items():
            parts[part] = EmotionModel(model, self.fit_head(features, everyone, part)).eval()
        return Models(parts, evaluated.history)


def head_layers(model: EmotionModel) -> list[int]:
    """The teacher layers a model's head reads (a distilled student's predictions stand for them)."""
    return list(getattr(model.encoder, "targets", None) or model.head.layers.tolist())


def check_students(cfg: ExportConfig, teacher) -> None:
    """Refuse student settings that cannot be built, before any long computation."""
    if cfg.student_layers not in STUDENT_LAYERS:
        raise EdgeSerError(f"student layers {cfg.student_layers!r}: use one of {', '.join(STUDENT_LAYERS)}")
    if cfg.student_layers == "own" and (cfg.student_width not in (None, teacher.dim) or cfg.student_init != "teacher"
                                        or cfg.student_ffn):
        raise EdgeSerError("a student with its own layers is the teacher's first blocks: it takes the teacher's width, "
                           "initialisation and feed-forward size; use --student-layers teacher to distill a narrower, "
                           "pruned or randomly initialised student")
    make_student(teacher, cfg.student_blocks, cfg.student_width, cfg.student_init, cfg.student_time_stride)
    if cfg.fast_blocks:
        make_student(teacher, cfg.fast_blocks, None, "teacher", cfg.fast_time_stride)


def run_export(cfg: ExportConfig) -> mf.Manifest | None:
    """Write the bundle at cfg.out atomically and return its manifest (None on the helper processes of torchrun)."""
    start = time.time()
    ex = Export(cfg)
    cfg = ex.cfg   # the students' blocks fitted to the teacher's
    labels, test = ex.labels, ex.fold.test
    test_w, y_test = [ex.waves[i] for i in test], ex.y[test]
    evaluated, unlabeled = ex.evaluate_pass()
    shipped = ex.ship_pass(evaluated, unlabeled) if cfg.refit else evaluated
    if not parallel.is_main():   # under torchrun, the other processes helped with features and distillation
        return None
    fusion = ex.fusion(evaluated, shipped)
    rng = np.random.default_rng(cfg.seed)
    train_calib = [ex.waves[i] for i in rng.permutation(ex.fold.train)[:cfg.calibration_clips]]

    def scored(directory: Path) -> tuple[dict[str, mf.Variant], dict]:   # pass 1 graphs, scored on the test speakers
        variants = write_variants(evaluated.parts, directory, train_calib)
        write_bundle(directory, _manifest(cfg, ex, evaluated, variants, None, start))
        return variants, evaluate_waves(load_bundle(directory), test_w, [labels[i] for i in y_test])["variants"]

    with atomic_directory(cfg.out, overwrite=cfg.overwrite) as out:
        if cfg.refit:   # pass 1 graphs are scored, not shipped
            with tempfile.TemporaryDirectory(prefix="edge-ser-eval-") as tmp, \
                    on_termination(lambda: shutil.rmtree(tmp, ignore_errors=True)):
                metrics = scored(Path(tmp))[1]
            calib = [ex.waves[i] for i in rng.permutation(len(ex.waves))[:cfg.calibration_clips]]
            variants = write_variants(shipped.parts, out, calib)
        else:           # without refit the scored files are the shipped ones
            variants, metrics = scored(out)
        check_parity(variants, shipped, out, [ex.waves[i] for i in rng.permutation(len(ex.waves))[:cfg.parity_clips]])
        measure_latency(variants, out)
        target = detect_target()
        for name, v in variants.items():
            v.metrics = mf.Metrics(**metrics[name], target=target)
        torch_metrics = {"torch_teacher": torch_scores(evaluated.teacher, test_w, y_test, len(labels)),
                         "torch_student": torch_scores(evaluated.student, test_w, y_test, len(labels))}
        manifest = _manifest(cfg, ex, shipped, variants, torch_metrics, start)
        if fusion is not None:
            with_text = [i for i, t in enumerate(ex.texts) if t][:2]
            align.export_fusion_onnx(fusion[0], out / fusion[1].file, fusion[1].text_dim,
                                     [(ex.waves[i][:10 * SAMPLE_RATE], *ex.text_model.states([ex.texts[i]]))
                                      for i in with_text])
            manifest = replace(manifest, fusion=fusion[1])
        manifest = write_bundle(out, manifest)
    log.info("student: %s; export took %s s", manifest.student.summary, manifest.export.seconds)
    return manifest


def _manifest(cfg: ExportConfig, ex: Export, models: Models, variants: dict[str, mf.Variant],
              torch_metrics: dict | None, start: float) -> mf.Manifest:
    teacher, corpus, fold = ex.teacher, ex.corpus, ex.fold
    macs = {v.head: v.macs_per_s for v in variants.values()}
    fast_ffn = models.parts[FAST_HEAD].encoder.provenance.get("ffn", []) if FAST_HEAD in models.parts else []
    n_speakers = len(corpus.speakers)
    protocol = (f"held-out speakers {', '.join(fold.test_speakers)} ({len(fold.test)} clips) of {corpus.name}, never "
                "used for distillation, calibration, normalisation or the head; clips scored by the runtime (windows "
                f"of {cfg.window_s} s, hop {cfg.hop_s} s, probabilities averaged)")
    refit = ("the heads, the student's least-squares fits, normalisation and int8 calibration refit on all "
             f"{n_speakers} speakers (the student trunk is the one distilled without the held-out speakers)"
             if cfg.student_layers == "teacher" else
             f"the heads, normalisation and int8 calibration refit on all {n_speakers} speakers")
    shipped = (f"the metrics describe models fit on the {n_speakers - len(fold.test_speakers)} training speakers; the "
               f"shipped files are the same recipe with {refit}" if cfg.refit else
               f"the shipped files are the models the metrics describe (fit on the "
               f"{n_speakers - len(fold.test_speakers)} training speakers only)")
    m = mf.Manifest(
        labels=ex.labels, input=mf.Input(window_s=cfg.window_s, hop_s=cfg.hop_s), variants=variants,
        default_variant="student-fp32",
        teacher=mf.Teacher(name=_public(teacher.name), family=teacher.provenance.get("model_type", teacher.kind),
                           blocks=teacher.blocks, dim=teacher.dim, macs_per_s=macs["teacher"],
                           source=_public(teacher.provenance.get("location", ""))),
        student=mf.Student(blocks=cfg.student_blocks, dim=cfg.student_width or teacher.dim,
                           time_stride=cfg.student_time_stride, ffn=cfg.student_ffn, macs_per_s=macs["student"],
                           summary=student_summary(cfg, teacher.dim, macs["teacher"] / macs["student"], models.history),
                           distillation=[mf.Epoch(**h) for h in models.history],
                           validation_speakers=ex.validation_speakers),
        fast=mf.Student(blocks=cfg.fast_blocks, dim=teacher.dim, time_stride=cfg.fast_time_stride,
                        macs_per_s=macs[FAST_HEAD], ffn_blocks=fast_ffn,
                        summary=student_summary(cfg, teacher.dim, macs["teacher"] / macs[FAST_HEAD], [], True,
                                                fast_ffn))
        if FAST_HEAD in macs else None,
        heads={part: mf.Head(file=HEAD_FILES[part], dim=m.head.numbers.dim, inputs=head_inputs(head_layers(m)),
                             fit=m.head.report.summary(), temperature=m.head.report.temperature, ece=m.head.report.ece)
               for part, m in models.parts.items()},
        data=mf.Data(corpus=corpus.name, clips=len(ex.waves), speakers=n_speakers,
                     test_speakers=list(fold.test_speakers),   # without refit, never seen by the shipped files
                     trained_speakers=[s for s in corpus.speakers if cfg.refit or s not in fold.test_speakers],
                     label_counts={lab: int((ex.y == i).sum()) for i, lab in enumerate(ex.labels)},
                     skipped=dict(corpus.skipped),
                     unlabeled=", ".join(p.name for p in cfg.unlabeled) or None),
        evaluation=mf.Evaluation(protocol=protocol, shipped=shipped,
                                 **{k: mf.Metrics(**v) for k, v in (torch_metrics or {}).items()}),
        export=mf.Export(edge_ser=__version__, seconds=round(time.time() - start, 1),
                         config=public_config(cfg)))
    return m


# Versions of what an export computes beyond its options, recorded beside them: a bundle made before one changed is
# not taken for a finished one (made_with; prune_refit only where an FFN was cut).
RECIPE = {"prune_refit": str(PRUNE_REFIT), "int8_smoothing": f"layer norms, alpha {graph.SMOOTH_ALPHA}"}


def public_config(cfg: ExportConfig) -> dict[str, str]:
    """The export's options as its manifest records them (no paths of the exporting machine), and the RECIPE."""
    return {k: _public(v) for k, v in asdict(cfg).items() if k not in ("out", "overwrite")} | RECIPE


def made_with(manifest: mf.Manifest | None, cfg: ExportConfig) -> bool:
    """Whether ``manifest`` records an export with the options of ``cfg`` (where features are cached aside) and the
    current RECIPE, so a long benchmark can reuse it."""
    cut = manifest and ((manifest.fast and manifest.fast.ffn_blocks) or (manifest.student and manifest.student.ffn))
    same = {k: v for k, v in public_config(cfg).items() if k != "cache" and (cut or k != "prune_refit")}
    default = public_config(ExportConfig(data=cfg.data, out=cfg.out))   # an option added since: its default
    default |= dict.fromkeys(RECIPE)                                    # a recipe not recorded: an older one
    return bool(manifest and manifest.export and all(manifest.export.config.get(k, default[k]) == v
                                                     for k, v in same.items()))


def _public(value) -> str:
    """An option as the manifest keeps it: folder and file names without the exporting machine's paths."""
    if isinstance(value, list):
        return ", ".join(_public(v) for v in value)
    if isinstance(value, Path) or (isinstance(value, str) and ("/" in value or "\\" in value) and Path(value).exists()):
        return Path(value).name
    return str(value)
