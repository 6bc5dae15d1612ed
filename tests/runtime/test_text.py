"""The optional text path (edge-ser[text]): fusion rule, gating, event keys, the error without the extra, and (with
the extra and its weights) a real transcription. No torch."""
from __future__ import annotations

import importlib.util
import json
import os
import shutil
import sys

import numpy as np
import pytest
import soundfile as sf

from edge_ser import BundleError, EdgeSerError
from edge_ser.fusion import TextOptions, TextPath, fuse, label_map, text_options
from edge_ser.recognizer import Event, Prediction, Recognizer
from edge_ser.transcribe import TranscribeOptions, Transcript, compression_ratio, repeats

from conftest import FIXTURES, SHARED_DATA, make_tiny_bundle, speechlike  # noqa: E402

EMODB = SHARED_DATA / "emodb"
LABELS = ["anger", "happiness", "neutral", "sadness"]
TEXT_LABELS = ["anger", "disgust", "fear", "happiness", "neutral", "sadness", "surprise"]
HAS_ENGINE = all(importlib.util.find_spec(m) for m in ("ctranslate2", "faster_whisper", "tokenizers"))


# ------------------------------------------------------------------------------------------------ fusion rule
def test_fusion_moves_only_mapped_labels_and_keeps_their_mass():
    audio = np.array([0.5, 0.2, 0.1, 0.2])            # the last label has no text counterpart
    mapped = np.array([0, 1, 2])
    text = np.array([0.0, 1.0, 0.0])
    fused = fuse(audio, text, mapped, 0.25)
    assert fused.sum() == pytest.approx(1.0)
    assert fused[3] == audio[3]                         # unmapped: the audio's probability
    assert fused[mapped].sum() == pytest.approx(audio[mapped].sum())
    assert np.abs(fused - audio).max() <= 0.25 + 1e-12   # no probability moves by more than the weight
    assert fused[1] == pytest.approx(0.75 * 0.2 + 0.25 * 0.8)
    assert np.allclose(fuse(audio, text, mapped, 0.0), audio)


def test_fusion_weight_bounds_the_change_for_any_text():
    rng = np.random.default_rng(0)
    for _ in range(200):
        audio = rng.dirichlet(np.ones(5))
        mapped = np.sort(rng.choice(5, size=rng.integers(2, 6), replace=False))
        text = rng.dirichlet(np.ones(len(mapped)))
        w = rng.uniform(0, 1)
        fused = fuse(audio, text, mapped, w)
        assert fused.sum() == pytest.approx(1.0) and (fused >= 0).all()
        assert np.abs(fused - audio).max() <= w + 1e-9


def test_labels_map_by_name_and_synonym_and_adapted_labels_stay_unmapped():
    assert label_map(LABELS, TEXT_LABELS) == {0: 0, 1: 3, 2: 4, 3: 5}
    assert label_map(["Happy", "sad", "angry", "boredom", "calm"], TEXT_LABELS) == {0: 3, 1: 5, 2: 0}
    assert label_map(["frustrated", "excited"], TEXT_LABELS) == {}
    assert label_map(["happy", "joy"], TEXT_LABELS) == {0: 3}   # two labels never share one text label


def test_text_options_are_checked():
    assert text_options(False) is None and text_options(None) is None
    assert text_options(True) == TextOptions()
    with pytest.raises(EdgeSerError, match="weight"):
        TextOptions(weight=1.5)
    with pytest.raises(EdgeSerError, match="text must be"):
        text_options("yes")
    with pytest.raises(EdgeSerError, match="language"):
        TranscribeOptions(language="English")
    with pytest.raises(EdgeSerError, match="pad_s"):
        TranscribeOptions(pad_s=0)
    assert TranscribeOptions(language="en").model_name == "whisper-tiny.en"
    assert TranscribeOptions().model_name == "whisper-base"


def test_loops_are_recognised():
    assert repeats("you you you you")
    assert repeats("I know. I know. I know. I know.")
    assert not repeats("I know, I know, I know what you did")
    assert compression_ratio("thank you " * 30) > 2.4 > compression_ratio("Der Lappen liegt auf dem Eisschrank.")


# ------------------------------------------------------------------------------------------------ gating and keys
class FakeTextModel:
    labels, languages = TEXT_LABELS, ("en",)

    def probs(self, text):
        return np.eye(len(TEXT_LABELS))[TEXT_LABELS.index("sadness")] * 0.93 + 0.01


def fake_path(transcript: Transcript, weight=0.25) -> TextPath:
    """A TextPath with a fixed transcript and a text model that always says sadness (no engine needed)."""
    path = TextPath.__new__(TextPath)
    path.options, path.model, path._maps = TextOptions(weight=weight), FakeTextModel(), {}
    path.transcriber = lambda x: transcript
    return path


def annotate(path: TextPath, probs: dict) -> Event:
    event = Event(0.0, 2.0, max(probs, key=probs.get), dict(probs), 1.0)
    path.annotate(event, np.zeros(32000, np.float32),
                  lambda p: Prediction.of(list(probs), np.asarray(p), unsure_below=0.5))
    return event


AUDIO = {"anger": 0.1, "happiness": 0.2, "neutral": 0.45, "sadness": 0.25}
SPOKEN = Transcript("I just lost my job.", "en", 0.98, -0.3, 0.01, confident=True)


def test_confident_english_text_is_fused_and_every_key_is_there():
    e = annotate(fake_path(SPOKEN), AUDIO)
    d = e.to_dict()
    assert d["text"] == "I just lost my job." and d["language"] == "en"
    assert d["audio_probs"] == AUDIO
    assert set(d["text_probs"]) == set(LABELS) and sum(d["text_probs"].values()) == pytest.approx(1.0, abs=1e-3)
    assert sum(e.probs.values()) == pytest.approx(1.0)
    assert e.probs["sadness"] > AUDIO["sadness"] and e.label == "sadness"   # 0.75 * 0.25 + 0.25 * 0.97 > 0.45 * 0.75
    assert e.unsure is True                                                 # fused top below the head's 0.5


@pytest.mark.parametrize("transcript, has_text", [
    (Transcript(None, "en", 0.9, -2.0, 0.9, rejected="no speech"), False),
    (Transcript(None, "en", 0.9, -0.2, 0.0, rejected="loop"), False),
    (Transcript("Der Lappen liegt auf dem Eisschrank", "de", 0.99, -0.1, 0.0, confident=True), True),
    (Transcript("the luck leak of the ice skunk", "en", None, -1.3, 0.1, confident=False), True),
])
def test_rejected_or_gated_text_leaves_the_audio_result(transcript, has_text):
    e = annotate(fake_path(transcript), AUDIO)
    d = e.to_dict()
    assert d["probs"] == AUDIO and d["label"] == "neutral" and d["audio_probs"] == AUDIO
    assert "text_probs" not in d
    assert ("text" in d) == ("language" in d) == has_text


def test_labels_without_a_text_counterpart_keep_the_audio_probability():
    """One text path serves any label set (a recognizer that `adapt` made shares its base's text path)."""
    path = fake_path(SPOKEN)
    assert annotate(path, AUDIO).text_probs.keys() == AUDIO.keys()
    e = annotate(path, {"anger": 0.3, "boredom": 0.5, "sadness": 0.2})
    assert e.probs["boredom"] == pytest.approx(0.5) and set(e.text_probs) == {"anger", "sadness"}
    e = annotate(path, {"frustrated": 0.7, "calm": 0.3})
    assert e.text == SPOKEN.text and e.text_probs is None and e.probs == {"frustrated": 0.7, "calm": 0.3}


def test_events_without_the_text_path_have_no_text_keys(tiny_bundle):
    rec = Recognizer(tiny_bundle, vad="energy")
    assert rec.text is None
    events = rec.process(speechlike(1.5, 0.3), 16000)
    assert events and all(not {"text", "language", "text_probs", "audio_probs"} & set(e.to_dict()) for e in events)
    assert rec.predict(speechlike(1.0, 0.3), 16000).text is None


# ------------------------------------------------------------------------------------------------ without the extra
@pytest.fixture
def no_engine(monkeypatch):
    """faster-whisper and CTranslate2 as if not installed (find_spec returns None for a None module)."""
    for name in ("faster_whisper", "ctranslate2"):
        monkeypatch.setitem(sys.modules, name, None)


def test_text_without_the_extra_is_one_error_line(no_engine, tmp_path, capsys):
    from edge_ser.cli import main

    wav = tmp_path / "a.wav"
    sf.write(wav, speechlike(1.0, 0.3), 16000)
    with pytest.raises(SystemExit) as e:
        main(["run", "--input", str(wav), "--text"])
    err = capsys.readouterr().err.strip().splitlines()
    assert e.value.code == 2 and len(err) == 1
    assert err[0].startswith("error: --text needs the optional text path") and "pip install edge-ser[text]" in err[0]


def test_recognizer_text_without_the_extra_is_a_clear_error(no_engine, tiny_bundle):
    from edge_ser.transcribe import TextExtraError
    with pytest.raises(TextExtraError, match=r"pip install edge-ser\[text\]"):
        Recognizer(tiny_bundle, vad="energy", text=True)


def test_without_text_nothing_of_the_text_path_is_loaded(tiny_bundle):
    """The runtime without --text is unchanged: no ASR engine, tokenizer or text model is imported."""
    import subprocess
    code = f"""
import sys, numpy as np
from edge_ser.recognizer import Recognizer
rec = Recognizer({str(tiny_bundle)!r}, vad="energy")
t = np.arange(32000) / 16000
rec.process((0.3 * np.sin(2 * np.pi * 180 * t) * (0.6 + 0.4 * np.sin(2 * np.pi * 4 * t))).astype(np.float32), 16000)
loaded = sorted({{n.split(".")[0] for n in sys.modules}} & {{"faster_whisper", "ctranslate2", "tokenizers", "av"}})
assert not loaded, loaded
"""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr


def test_language_without_text_is_refused(tmp_path, capsys):
    from edge_ser.cli import main

    wav = tmp_path / "a.wav"
    sf.write(wav, speechlike(1.0, 0.3), 16000)
    with pytest.raises(SystemExit) as e:
        main(["run", "--input", str(wav), "--language", "en"])
    assert e.value.code == 2 and "add --text" in capsys.readouterr().err


# ------------------------------------------------------------------------------------------------ alignment head
def test_a_bundles_fusion_graph_is_checked_like_every_part(tmp_path):
    """The alignment head (manifest ``fusion``, trained by `edge-ser export` on a manifest with a text column; see
    tests/toolchain/test_align.py) is a plain file name with a checksum, and a graph that does not take audio,
    tokens and token_mask is refused before it runs."""
    from edge_ser import manifest as mf
    from edge_ser.bundle import load_bundle
    from edge_ser.fusion import AlignedFusion, aligned_fusion

    out = tmp_path / "bundle"
    out.mkdir()
    shutil.copyfile(FIXTURES / "tiny.onnx", out / "fusion.onnx")   # takes audio only
    make_tiny_bundle(out, openvino=False, fusion=mf.Fusion(file="fusion.onnx", text_encoder="a" * 64, text_dim=4))
    bundle = load_bundle(out)
    assert bundle.manifest.fusion.file in bundle.manifest.files
    with pytest.raises(BundleError, match="has inputs"):
        AlignedFusion(bundle)

    class Other:
        encoder_sha256 = "b" * 64
    assert aligned_fusion(bundle, Other()) is None   # trained on another text encoder's token states
    raw = json.loads((out / "edge-ser.json").read_text())
    for bad, match in (({"file": "../fusion.onnx"}, "fusion.file"), ({"file": "head.npz"}, "fusion.file"),
                       ({"text_encoder": "xyz"}, "text_encoder")):
        (out / "edge-ser.json").write_text(json.dumps({**raw, "fusion": {**raw["fusion"], **bad}}))
        with pytest.raises(BundleError, match=match):
            load_bundle(out, verify=False)
    files = {k: v for k, v in raw["files"].items() if k != "fusion.onnx"}
    (out / "edge-ser.json").write_text(json.dumps({**raw, "files": files}))
    with pytest.raises(BundleError, match="fusion.file"):
        load_bundle(out, verify=False)


def fusion_bundle(out):
    """The tiny bundle with tests/fixtures/fusion.onnx as its alignment head: logits = 4 x the mean over the tokens
    of their first three features (the audio counts zero), over the labels anger, neutral, sadness."""
    from edge_ser import manifest as mf
    from edge_ser.bundle import load_bundle

    out.mkdir()
    shutil.copyfile(FIXTURES / "fusion.onnx", out / "fusion.onnx")
    make_tiny_bundle(out, openvino=False, fusion=mf.Fusion(file="fusion.onnx", text_encoder="a" * 64, text_dim=4))
    return load_bundle(out)


class StatesTextModel(FakeTextModel):
    """Says sadness by its head; its token states say neutral (feature 1), as the fixture's head reads them."""
    encoder_sha256 = "a" * 64

    def states(self, texts):
        return np.eye(4, dtype=np.float32)[None, [1, 1, 3]], np.ones((1, 3), np.float32)

    def probs_of(self, h, mask):
        return self.probs("")


def test_the_alignment_head_fuses_where_it_applies(tmp_path):
    from edge_ser.fusion import aligned_fusion

    bundle = fusion_bundle(tmp_path / "bundle")
    path = fake_path(SPOKEN)
    path.model = StatesTextModel()
    aligned = aligned_fusion(bundle, path.model)
    audio = {"anger": 0.5, "neutral": 0.2, "sadness": 0.3}

    def fused(x, labels=audio, p=path):
        event = Event(0.0, 2.0, max(labels, key=labels.get), dict(labels), 1.0)
        p.annotate(event, x, lambda q: Prediction.of(list(labels), np.asarray(q), unsure_below=0.5), aligned)
        return event

    e = fused(np.zeros(32000, np.float32))
    z = np.array([0.0, 8 / 3, 0.0])
    assert e.probs == pytest.approx(dict(zip(audio, np.exp(z) / np.exp(z).sum())), abs=1e-5)
    assert e.label == "neutral" and e.audio_probs == audio and set(e.text_probs) == set(audio)
    # the linear pool instead (its text model says sadness): past the audio the head learned on, with weight 0, or
    # for other labels
    assert fused(np.zeros(31 * 16000, np.float32)).probs == pytest.approx(
        dict(zip(audio, fuse(np.array(list(audio.values())), np.array([0.01, 0.01, 0.94]) / 0.96, np.arange(3),
                             0.25))), abs=1e-3)
    assert fused(np.zeros(32000, np.float32), p=fake_path(SPOKEN, weight=0.0)).probs == audio
    other = {"anger": 0.5, "calm": 0.2, "sadness": 0.3}
    assert set(fused(np.zeros(32000, np.float32), labels=other).probs) == set(other)
    # a text model that knows none of the labels: the head alone fuses; with weight 0 nothing does
    blind = fake_path(SPOKEN)
    blind.model = StatesTextModel()
    blind.model.labels = ["calm", "bored"]
    e = fused(np.zeros(32000, np.float32), p=blind)
    assert e.label == "neutral" and e.text_probs is None
    blind.options = TextOptions(weight=0.0)
    assert fused(np.zeros(32000, np.float32), p=blind).probs == audio


# ------------------------------------------------------------------------------------------------ with the extra
def weights(name: str):
    from edge_ser.transcribe import offline_whisper_dir
    if not HAS_ENGINE:
        pytest.skip("the text extra is not installed (pip install edge-ser[text])")
    path = offline_whisper_dir(name)
    if path is None:
        pytest.skip(f"the {name} weights are not installed")
    return path


def text_model():
    from edge_ser.textemotion import TextEmotion
    from edge_ser.transcribe import TextExtraError
    if not HAS_ENGINE:
        pytest.skip("the text extra is not installed (pip install edge-ser[text])")
    try:
        return TextEmotion()
    except TextExtraError as e:
        pytest.skip(str(e))


def test_text_model_scores_text_and_refuses_an_altered_head(tmp_path):
    model = text_model()
    p = model.probs("Why would you do that to me? I hate you!")
    assert p.shape == (len(model.labels),) and p.sum() == pytest.approx(1.0, abs=1e-5)
    assert "happiness" in model.labels and model.languages == ("en",)
    copy = tmp_path / "text"
    shutil.copytree(model.path, copy)
    head = bytearray((copy / "head.npz").read_bytes())
    head[-200] ^= 1
    (copy / "head.npz").write_bytes(bytes(head))
    from edge_ser.textemotion import TextEmotion
    with pytest.raises(BundleError, match="SHA-256"):
        TextEmotion(copy)


def test_silence_is_no_speech():
    weights("whisper-tiny.en")
    from edge_ser.transcribe import Transcriber
    t = Transcriber(TranscribeOptions(language="en"))(np.zeros(32000, np.float32))
    assert t.text is None and t.rejected == "no speech" and not t.confident


@pytest.mark.data
@pytest.mark.skipif(not EMODB.is_dir(), reason="../shared/data/emodb is absent")
def test_german_speech_is_transcribed_and_its_language_keeps_the_audio_result():
    """EmoDB's sentence a01 is "Der Lappen liegt auf dem Eisschrank": whisper-base hears German, and the English
    text model is not used (the negative control's rule: same words in every emotion change nothing)."""
    weights("whisper-base")
    text_model()
    import soxr
    x, sr = sf.read(EMODB / "03a01Wa.wav", dtype="float32")
    rec = Recognizer(vad="energy", threads=1, text=True)
    events = rec.process(soxr.resample(x, sr, 16000), 16000)
    assert events
    d = events[0].to_dict()
    assert d["language"] == "de" and "Lappen" in d["text"] and "Eisschrank" in d["text"]
    assert "text_probs" not in d and d["probs"] == d["audio_probs"]
    json.dumps(d)


def test_language_codes_are_whispers():
    if not HAS_ENGINE:
        pytest.skip("the text extra is not installed (pip install edge-ser[text])")
    from faster_whisper.tokenizer import _LANGUAGE_CODES

    from edge_ser.transcribe import LANGUAGES
    assert LANGUAGES == tuple(_LANGUAGE_CODES)


def test_a_text_part_may_carry_its_own_encoder_file_but_only_inside_its_folder(tmp_path):
    model = text_model()
    part = tmp_path / "text"
    shutil.copytree(model.path, part)
    manifest = json.loads((part / "text-emotion.json").read_text())
    shutil.copyfile(model.encoder_file(manifest["encoder"]), part / "encoder.onnx")
    from edge_ser.textemotion import TextEmotion
    for name, ok in (("encoder.onnx", True), ("../encoder.onnx", False), (".hidden", False)):
        manifest["encoder"].update(package=None, file=name)
        (part / "text-emotion.json").write_text(json.dumps(manifest))
        if ok:
            line = "I can't believe you did this to me"
            assert np.allclose(TextEmotion(part).probs(line), model.probs(line))
        else:
            with pytest.raises(BundleError, match="plain file name"):
                TextEmotion(part)


def test_a_text_part_file_that_is_a_link_or_a_fifo_is_refused(tmp_path):
    model = text_model()
    from edge_ser.textemotion import TextEmotion
    for kind in ("symlink", "fifo"):
        part = tmp_path / kind
        shutil.copytree(model.path, part)
        (part / "head.npz").unlink()
        if kind == "symlink":
            (part / "head.npz").symlink_to(model.path / "head.npz")
        else:
            os.mkfifo(part / "head.npz")   # a read would block forever
        with pytest.raises(BundleError, match="symbolic link|not a regular file"):
            TextEmotion(part)
