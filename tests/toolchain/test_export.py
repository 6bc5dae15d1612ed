"""Whole export on tiny random teachers: distill, quantize, ONNX + OpenVINO, parity, bundle, checksums."""
import dataclasses
import json
import subprocess
import sys

import numpy as np
import pytest
import soundfile as sf

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from edge_ser.bundle import load_bundle  # noqa: E402
from edge_ser.errors import BundleError, DatasetError, EdgeSerError  # noqa: E402
from edge_ser.manifest import MANIFEST  # noqa: E402

LABELS = ["anger", "neutral", "sadness"]


def tiny_corpus(root):
    """3 speakers x 3 labels x 4 clips; each label has its own pitch so a head can learn it."""
    rng = np.random.default_rng(0)
    rows = ["path,label,speaker"]
    for s in ("s1", "s2", "s3"):
        for k, label in enumerate(LABELS):
            for i in range(4):
                n = int(16000 * rng.uniform(0.8, 1.6))
                t = np.arange(n) / 16000
                x = 0.3 * np.sin(2 * np.pi * (150 + 250 * k) * t) + 0.02 * rng.standard_normal(n)
                f = root / f"{s}_{label}_{i}.wav"
                sf.write(f, x.astype(np.float32), 16000)
                rows.append(f"{f.name},{label},{s}")
    (root / "corpus.csv").write_text("\n".join(rows) + "\n")
    return root / "corpus.csv"


def tiny_whisper(root):
    cfg = transformers.WhisperConfig(d_model=32, encoder_layers=2, encoder_attention_heads=2, decoder_layers=1,
                                     decoder_attention_heads=2, encoder_ffn_dim=128, decoder_ffn_dim=128,
                                     num_mel_bins=80, max_source_positions=1500, vocab_size=100,
                                     pad_token_id=0, bos_token_id=1, eos_token_id=2, decoder_start_token_id=1)
    transformers.WhisperModel(cfg).save_pretrained(root)
    return root


def tiny_wav2vec2(root):
    cfg = transformers.Wav2Vec2Config(hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                                      intermediate_size=64, conv_dim=(16, 16), conv_stride=(5, 4),
                                      conv_kernel=(10, 8), num_conv_pos_embeddings=16,
                                      num_conv_pos_embedding_groups=2, vocab_size=10)
    transformers.Wav2Vec2Model(cfg).save_pretrained(root)
    return root


def config(data, out, teacher, **kw):
    from edge_ser_export.pipeline import ExportConfig
    return ExportConfig(**{**dict(data=data, out=out, teacher=str(teacher), test_speakers=1, val_speakers=0,
                                  student_blocks=1, distill_epochs=1, augment=1, calibration_clips=4, parity_clips=4,
                                  head="all"), **kw})


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return tiny_corpus(tmp_path_factory.mktemp("corpus"))


VARIANTS = {f"{part}-{kind}" for part in ("student", "fast") for kind in ("fp32", "int8-u8u8", "int8-u8s8", "ov-fp32",
                                                                        "ov-int8")} | \
    {"teacher-fp32", "teacher-int8-u8u8", "teacher-int8-u8s8"}


@pytest.mark.parametrize("make_teacher", [tiny_whisper, tiny_wav2vec2])
def test_export_end_to_end(tmp_path, corpus, make_teacher):
    from edge_ser_export.distill import PRUNE_REFIT
    from edge_ser_export.pipeline import RECIPE, made_with, run_export

    out = tmp_path / "bundle"
    cfg = config(corpus, out, make_teacher(tmp_path / "teacher"), student_layers="teacher", student_time_stride=2,
                 student_ffn=16, val_speakers=1, head="auto")
    manifest = run_export(cfg)
    # a benchmark reuses it only with the same options and recipe: its student's FFNs were cut (student_ffn), so
    # a bundle from before the cut's refit changed is not reused; one that cut nothing is; one from before the
    # int8 graphs' smoothing (or any recipe recorded) is not, cut or not
    assert made_with(manifest, cfg) and not made_with(manifest, dataclasses.replace(cfg, seed=cfg.seed + 1))
    recorded = manifest.export.config
    for older, uncut_reused in (({"prune_refit": str(PRUNE_REFIT - 1)}, True), ({"int8_smoothing": "none"}, False),
                                ({k: None for k in RECIPE}, False)):
        then = dataclasses.replace(manifest, export=dataclasses.replace(
            manifest.export, config={k: v for k, v in (recorded | older).items() if v is not None}))
        assert not made_with(then, cfg)
        uncut = dataclasses.replace(then, student=dataclasses.replace(then.student, ffn=None))
        assert made_with(uncut, cfg) == uncut_reused
    assert (manifest.student.time_stride, manifest.student.ffn) == (2, 16)
    bundle = load_bundle(out)     # checksums verified
    assert bundle.manifest == manifest and bundle.labels == LABELS
    assert set(bundle.variants) == VARIANTS
    for v in bundle.variants.values():
        assert v.metrics.n == 12 and 0 <= v.metrics.ua <= 1
        assert v.parity.n == 4 and v.latency_ms and min(v.latency_ms.values()) > 0
        if v.precision == "fp32":
            assert v.parity.max_abs_diff < 1e-3 and v.parity.top1_agreement == 1.0
    assert bundle.variants["student-int8-u8u8"].targets == ["x86-avx2"]
    assert "arm64" in bundle.variants["student-int8-u8s8"].targets
    assert manifest.student.macs_per_s < manifest.teacher.macs_per_s
    assert len(manifest.data.test_speakers) == 1
    # one validation speaker cannot rank epochs (edge_ser.head.MIN_SPEAKERS): none is set aside, the last is kept
    assert manifest.student.validation_speakers == []
    assert [e.kept for e in manifest.student.distillation] == [False, True]
    assert set(manifest.heads) == {"teacher", "student", "fast"}
    assert all(h.kind == "linear" and h.inputs and "UA" in h.fit and h.temperature > 0 for h in manifest.heads.values())
    assert {v.head for v in manifest.variants.values()} == {"teacher", "student", "fast"}
    assert manifest.fast.time_stride == 2 and "first 2 blocks, on 1/2 of the frames" in manifest.fast.summary
    assert all(v.macs_per_s for v in manifest.variants.values())
    assert "refit on all 3 speakers" in manifest.evaluation.shipped
    card = (out / "MODEL_CARD.md").read_text()
    assert card.count("student-int8-u8s8") == 1 and "refit on all 3 speakers" in card
    text = (out / MANIFEST).read_text()
    assert str(tmp_path) not in text and str(corpus) not in text   # no paths of the exporting machine
    assert not list(tmp_path.glob(".bundle.*"))
    assert not list(out.glob(".*")), "the OpenVINO variants' source graphs are left in the bundle"
    # the runtime on a variable-length clip gives a distribution over the bundle's labels
    from edge_ser.recognizer import Recognizer
    for variant in ("auto", "student-int8-u8u8", "student-ov-int8"):
        for length in (4000, 37000):
            p = Recognizer(out, variant=variant).predict(np.zeros(length, np.float32) + 0.1, 16000).probs
            assert set(p) == set(LABELS) and abs(sum(p.values()) - 1) < 1e-4


def test_own_layer_students_are_the_teachers_first_blocks(tmp_path, corpus):
    """The default students read the teacher's own hidden states: their embeddings are the teacher's layers 0..k
    (nothing fit to the data), so their heads see exactly the teacher's features of those layers."""
    from edge_ser.engine import open_engine
    from edge_ser_export.pipeline import run_export

    out = tmp_path / "bundle"
    m = run_export(config(corpus, out, tiny_whisper(tmp_path / "teacher"), student_blocks=2, fast_blocks=1,
                          fast_time_stride=1, head="all", unlabeled=[corpus.parent]))
    assert m.student.distillation == [] and "no distillation" in m.student.summary
    assert (m.heads["teacher"].inputs, m.heads["student"].inputs, m.heads["fast"].inputs) == \
        ("layers 0, 1, 2 (mean+std pooled, concatenated)",) * 2 + ("layers 0, 1 (mean+std pooled, concatenated)",)
    assert m.variants["fast-fp32"].macs_per_s < m.variants["student-fp32"].macs_per_s <= \
        m.variants["teacher-fp32"].macs_per_s
    bundle = load_bundle(out)
    clip = (0.1 * np.random.default_rng(1).standard_normal(24000)).astype(np.float32)
    emb = {part: open_engine(bundle, f"{part}-fp32").embed(clip[None])[0] for part in ("teacher", "student", "fast")}
    np.testing.assert_allclose(emb["student"], emb["teacher"], rtol=1e-4, atol=1e-4)   # 2 of 2 blocks
    np.testing.assert_allclose(emb["fast"], emb["teacher"][:len(emb["fast"])], rtol=1e-4, atol=1e-4)


def test_the_fast_students_ffns_are_cut_on_training_speakers_audio_only(tmp_path, corpus, monkeypatch):
    """``fast_ffn`` cuts the fast student's first block to 16 units (the next stays whole), refit on clips of the
    training speakers only; the manifest and card say so and the graph is narrower. (The tiny corpus has too few
    speakers for a cut: the floor is lowered here; at the default floor its FFNs stay whole.)"""
    import edge_ser_export.pipeline as pipeline
    from edge_ser.data import load_corpus, load_waveforms

    whole = pipeline.run_export(config(corpus, tmp_path / "whole", tiny_whisper(tmp_path / "teacher"), fast_blocks=2,
                                       fast_time_stride=1, fast_ffn=(16,), refit=False))
    assert whole.fast.ffn_blocks == [] and "no distillation" in whole.fast.summary
    monkeypatch.setattr(pipeline, "FFN_CUT_MIN_SPEAKERS", 2)
    monkeypatch.setattr(pipeline, "FFN_CUT_MIN_CLIPS", 10)
    seen, real = [], pipeline.prune_ffn

    def spy(model, clips, keep):
        seen.extend(c[0].numpy() for c in clips)
        return real(model, clips, keep)
    monkeypatch.setattr(pipeline, "prune_ffn", spy)
    out = tmp_path / "bundle"
    m = pipeline.run_export(config(corpus, out, tiny_whisper(tmp_path / "teacher"), fast_blocks=2,
                                   fast_time_stride=1, fast_ffn=(16,), unlabeled=[corpus.parent]))
    assert m.fast.ffn_blocks == [16, 128] and "FFNs cut to 16/128 units" in m.fast.summary
    waves, items = load_waveforms(load_corpus(corpus))
    held = [w for w, it in zip(waves, items.items) if it.speaker in m.data.test_speakers]
    # refit on the training speakers' clips and --unlabeled (here the corpus folder), never a held-out speaker's,
    # and one augmented copy of each (augment=1)
    assert seen and not any(np.array_equal(s, w) for s in seen for w in held)
    originals = sum(any(np.array_equal(s, w) for w in waves) for s in seen)
    assert originals == 2 * (len(waves) - len(held)) and len(seen) == 2 * originals
    # the teacher's 2 blocks but block 0's two FFN MatMuls 112 units narrower (50 frames/s, width 32)
    assert m.variants["fast-fp32"].macs_per_s == m.variants["teacher-fp32"].macs_per_s - 2 * 50 * 32 * 112
    assert "FFNs cut to 16/128" in (out / "MODEL_CARD.md").read_text()


def test_strided_student_features_are_cached(tmp_path, corpus, monkeypatch):
    """With a cache, a strided student's pooled features are computed once: a second export reads them."""
    import edge_ser_export.pipeline as pipeline

    opts = dict(cache=tmp_path / "cache", refit=False, student_blocks=1, fast_blocks=1, fast_time_stride=2)
    teacher = tiny_whisper(tmp_path / "teacher")
    first = pipeline.run_export(config(corpus, tmp_path / "a", teacher, **opts))
    assert len(list((tmp_path / "cache").glob("*-1b-stride2__*.npz"))) == 1

    def no_embedding(*args, **kw):
        raise AssertionError("features recomputed")
    monkeypatch.setattr(pipeline, "embed", no_embedding)
    second = pipeline.run_export(config(corpus, tmp_path / "b", teacher, **opts))
    assert second.variants["fast-fp32"].metrics.ua == first.variants["fast-fp32"].metrics.ua


def test_each_part_chooses_its_own_penalty_once(tmp_path, corpus, monkeypatch):
    """The teacher's probe and each student's first fit choose a penalty (l2=None) on their own features; every later
    fit of that part (the ship pass) is given the part's own choice, not the teacher's. Every fit is given the
    export's speaker directions."""
    import edge_ser_export.pipeline as pipeline

    calls, directions, real = [], set(), pipeline.fit_head

    def spy(*args, l2=None, **kw):
        head = real(*args, l2=l2, **kw)
        calls.append(l2)
        directions.add(kw["speaker_directions"])
        head.selected["l2"] = 1.0 + len(calls)   # a mark of this fit, were it to choose
        return head
    monkeypatch.setattr(pipeline, "fit_head", spy)
    pipeline.run_export(config(corpus, tmp_path / "b", tiny_whisper(tmp_path / "teacher"), fast_blocks=1,
                               fast_time_stride=2, speaker_directions=3))
    # probe (teacher), pass 1: teacher, student, fast; pass 2: the same three
    assert calls == [None, 2.0, None, None, 2.0, 4.0, 5.0] and directions == {3}


def test_without_refit_the_bundle_holds_what_was_scored(tmp_path, corpus):
    """refit=False (leave-one-corpus-out studies): the shipped heads are the ones fit without the held-out speaker,
    so scoring the bundle on that speaker again gives the metrics it records, and the bundle does not call that
    score optimistic (the held-out speaker is not among those it learned from)."""
    from edge_ser.evaluate import evaluate_bundle
    from edge_ser_export.pipeline import run_export

    out = tmp_path / "bundle"
    m = run_export(config(corpus, out, tiny_whisper(tmp_path / "teacher"), refit=False, fast_blocks=0,
                          test_speakers=["s3"]))
    assert "the models the metrics describe" in m.evaluation.shipped and "fast-fp32" not in m.variants
    assert "s3" not in m.data.trained_speakers and "s3" in m.data.test_speakers and m.data.trained_speakers
    rows = [r for r in corpus.read_text().splitlines() if r.startswith("path") or r.endswith(",s3")]
    (tmp_path / "s3.csv").write_text("\n".join(f"{corpus.parent}/{r}" if i else r for i, r in enumerate(rows)))
    again = evaluate_bundle(out, tmp_path / "s3.csv", variants=["teacher-fp32", "student-int8-u8u8"])["variants"]
    for name, scored in again.items():
        assert scored["ua"] == pytest.approx(m.variants[name].metrics.ua)


@pytest.mark.parametrize("options", [dict(student_width=16), dict(student_ffn=16), dict(student_init="random")])
def test_own_layer_students_refuse_what_needs_distillation(tmp_path, corpus, options):
    from edge_ser_export.pipeline import run_export
    with pytest.raises(EdgeSerError, match="--student-layers teacher"):
        run_export(config(corpus, tmp_path / "bundle", tiny_whisper(tmp_path / "teacher"), **options))
    assert not (tmp_path / "bundle").exists()


def test_a_class_without_training_clips_is_refused(tmp_path, corpus):
    from edge_ser_export.pipeline import run_export
    rows = corpus.read_text().splitlines()
    only = [rows[0]] + [r for r in rows[1:] if not (r.endswith(",s1") or r.endswith(",s2")) or ",sadness," not in r]
    (tmp_path / "c.csv").write_text("\n".join(f"{corpus.parent}/{r}" if i else r for i, r in enumerate(only)) + "\n")
    with pytest.raises(DatasetError, match="no training clip of sadness"):
        run_export(config(tmp_path / "c.csv", tmp_path / "bundle", tiny_whisper(tmp_path / "teacher"),
                          test_speakers=["s3"]))
    assert not (tmp_path / "bundle").exists()


def test_an_all_silent_corpus_says_so(tmp_path):
    from edge_ser_export.pipeline import run_export
    rows = ["path,label,speaker"]
    for i in range(4):
        sf.write(tmp_path / f"{i}.wav", np.zeros(8000, np.float32), 16000)
        rows.append(f"{i}.wav,{LABELS[i % 2]},s{i}")
    (tmp_path / "c.csv").write_text("\n".join(rows) + "\n")
    with pytest.raises(DatasetError, match="none of its 4 clips is usable.*4 silent"):
        run_export(config(tmp_path / "c.csv", tmp_path / "bundle", tiny_whisper(tmp_path / "teacher")))


def test_interrupted_export_leaves_nothing(tmp_path, corpus, monkeypatch):
    from edge_ser_export import graph
    from edge_ser_export.pipeline import run_export

    def interrupt(*a, **k):
        raise KeyboardInterrupt
    monkeypatch.setattr(graph, "export_openvino", interrupt)
    with pytest.raises(KeyboardInterrupt):
        run_export(config(corpus, tmp_path / "bundle", tiny_whisper(tmp_path / "teacher")))
    assert not (tmp_path / "bundle").exists()
    assert [p.name for p in tmp_path.iterdir()] == ["teacher"]


@pytest.fixture(scope="module")
def exported(tmp_path_factory, corpus):
    from edge_ser_export.pipeline import run_export
    root = tmp_path_factory.mktemp("exported")
    run_export(config(corpus, root / "bundle", tiny_whisper(root / "teacher")))
    return root / "bundle"


def test_tampered_bundle_is_refused(exported, tmp_path):
    import shutil
    b = tmp_path / "b"
    shutil.copytree(exported, b)
    f = b / "student-int8-u8u8.onnx"
    data = bytearray(f.read_bytes())
    data[len(data) // 2] ^= 0xFF
    f.write_bytes(bytes(data))
    with pytest.raises(BundleError, match="student-int8-u8u8.onnx"):
        load_bundle(b)
    wav = tmp_path / "a.wav"
    sf.write(wav, np.zeros(16000, np.float32), 16000)
    r = subprocess.run([sys.executable, "-m", "edge_ser", "run", str(b), "--input", str(wav), "--variant",
                        "student-int8-u8u8"], capture_output=True, text=True)
    assert r.returncode == 2 and "SHA-256" in r.stderr and "Traceback" not in r.stderr


def test_eval_json_and_unknown_label(exported, corpus, tmp_path):
    r = subprocess.run([sys.executable, "-m", "edge_ser", "eval", str(exported), "--data", str(corpus),
                        "--json"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    result = json.loads(r.stdout)
    assert set(result["variants"]) == set(load_bundle(exported).variants)
    for m in result["variants"].values():
        assert set(m) == {"ua", "wa", "f1", "n", "ece", "recall"} and m["n"] == 36 and 0 <= m["ua"] <= 1
    header, *rows = corpus.read_text().splitlines()
    rows = [r.split(",") for r in rows]
    bad = tmp_path / "bad.csv"    # same files, absolute paths; one label the bundle does not know: left out, counted
    bad.write_text("\n".join([header] + [f"{corpus.parent / p},{'joy' if lab == 'neutral' else lab},{s}"
                                        for p, lab, s in rows]) + "\n")
    r = subprocess.run([sys.executable, "-m", "edge_ser", "eval", str(exported), "--data", str(bad)],
                       capture_output=True, text=True)
    assert r.returncode == 0 and "joy" in r.stderr and "Traceback" not in r.stderr
    r = subprocess.run([sys.executable, "-m", "edge_ser", "eval", str(exported), "--data", str(bad), "--json"],
                       capture_output=True, text=True)
    assert "neutral" not in json.loads(r.stdout)["variants"]["student-fp32"]["recall"]


def test_keep_used_layers_preserves_predictions(tmp_path):
    from edge_ser_export.distill import Student, keep_used_layers
    from edge_ser_export.heads import fit_head
    from edge_ser_export.heads import EmotionModel
    from edge_ser_export.teachers import load_teacher, make_student

    torch.manual_seed(0)
    teacher = load_teacher(str(tiny_whisper(tmp_path)))
    student = Student(make_student(teacher, 1), list(range(teacher.n_layers)), teacher.dim).eval()
    for p in student.predict:   # distinct predictions per layer
        torch.nn.init.normal_(p.weight, std=0.3)
    rng = np.random.default_rng(0)
    X = rng.standard_normal((30, teacher.n_layers, 2 * teacher.dim)).astype(np.float32)
    y = np.arange(30) % 3
    head = fit_head("linear", X, y, 3, layers=2, l2=1.0)
    audio = torch.from_numpy(rng.standard_normal((2, 16000)).astype(np.float32) * 0.1)
    with torch.inference_mode():
        before = EmotionModel(student, head)(audio)
        keep_used_layers(student, head)
        after = EmotionModel(student, head)(audio)
    assert len(student.predict) == 1 and student.n_layers == 1 and student.targets == [2]
    assert torch.allclose(before, after, atol=1e-5)


def test_unlabeled_audio_of_held_out_speakers_is_never_used(corpus):
    from edge_ser_export.pipeline import unlabeled_waves

    files = sorted(corpus.parent.glob("*.wav"))
    held_out = {f.resolve() for f in files if f.name.startswith("s3_")}
    waves = unlabeled_waves([corpus.parent], held_out)
    assert len(held_out) == 12 and len(waves) == len(files) - 12
    with pytest.raises(EdgeSerError, match="no usable audio"):
        unlabeled_waves([corpus.parent], {f.resolve() for f in files})


def _tiny_clips(n=6, seed=0):
    rng = np.random.default_rng(seed)
    return [(0.1 * rng.standard_normal(int(16000 * rng.uniform(0.6, 1.2)))).astype(np.float32) for _ in range(n)]


def test_distillation_keeps_the_best_validated_epoch(tmp_path):
    from edge_ser_export.distill import DistillConfig, distill
    from edge_ser_export.teachers import load_teacher

    teacher = load_teacher(str(tiny_whisper(tmp_path)))
    seen, planned = [], iter([0.5, 0.9, 0.2])   # epoch 1 is the best; epoch 2 must not overwrite it

    def validate(student):
        seen.append({k: v.clone() for k, v in student.state_dict().items()})
        return next(planned)

    student, history = distill(teacher, _tiny_clips(), DistillConfig(epochs=2, lr=1e-2, augment=0),
                               validate=validate)
    assert [h["epoch"] for h in history] == [0, 1, 2] and [h["kept"] for h in history] == [False, True, False]
    assert history[0]["loss"] is None and history[1]["loss"] > 0
    final = student.state_dict()
    assert all(torch.equal(final[k], seen[1][k]) for k in final)
    assert any(not torch.equal(seen[1][k], seen[2][k]) for k in final)   # epoch 2 did train, and was dropped


def test_predictions_start_as_least_squares_fit(tmp_path):
    from edge_ser_export.distill import Student, fit_predictions
    from edge_ser_export.teachers import load_teacher, make_student

    torch.manual_seed(0)
    teacher = load_teacher(str(tiny_whisper(tmp_path)))
    clips = [torch.from_numpy(c)[None] for c in _tiny_clips()]
    with torch.no_grad():
        targets = [teacher(c) for c in clips]
    student = Student(make_student(teacher, 1), list(range(teacher.n_layers)), teacher.dim).eval()

    def mse():
        with torch.no_grad():
            return sum(float(((student(c) - t) ** 2).mean()) for c, t in zip(clips, targets))
    identity = mse()
    fit_predictions(student, clips, targets)
    assert mse() < 0.5 * identity


def _export_cmd(corpus, teacher, out):
    return [sys.executable, "-m", "edge_ser", "export", "--data", str(corpus), "--teacher", str(teacher), "--out",
            str(out), "--test-speakers", "1", "--val-speakers", "0", "--distill-epochs", "1", "--head", "all"]


def test_export_makes_no_network_attempt(tmp_path, corpus):
    sys.path.insert(0, str(__import__("pathlib").Path(__file__).resolve().parents[1] / "runtime"))
    from test_hostile import guarded_env
    env, log = guarded_env(tmp_path)
    r = subprocess.run(_export_cmd(corpus, tiny_whisper(tmp_path / "teacher"), tmp_path / "bundle"),
                       capture_output=True, text=True, env={**__import__("os").environ, **env}, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    assert not log.exists() or log.read_text() == ""
    assert not (tmp_path / "home" / "intel").exists()


def test_sigterm_during_export_leaves_nothing(tmp_path, corpus):
    import signal
    import time
    p = subprocess.Popen(_export_cmd(corpus, tiny_whisper(tmp_path / "teacher"), tmp_path / "bundle"),
                         stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and not list(tmp_path.glob(".bundle.partial-*/*.onnx")):
        time.sleep(0.05)
    assert list(tmp_path.glob(".bundle.partial-*")), "the export never started writing"
    p.send_signal(signal.SIGTERM)
    _, err = p.communicate(timeout=120)
    assert p.returncode == 143, err[-2000:]
    assert sorted(x.name for x in tmp_path.iterdir()) == ["teacher"]


def test_a_cuda_device_that_is_not_there_is_a_clear_error(tmp_path, corpus):
    if torch.cuda.is_available():
        pytest.skip("a GPU is here")
    r = subprocess.run(_export_cmd(corpus, tiny_whisper(tmp_path / "teacher"), tmp_path / "bundle") + ["--device",
                       "cuda"], capture_output=True, text=True, timeout=300)
    assert r.returncode == 2 and r.stderr.strip().splitlines()[-1].startswith("error: --device cuda: no CUDA")
