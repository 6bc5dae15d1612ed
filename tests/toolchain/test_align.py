"""The text path's attention-alignment head: `edge-ser export` trains it from a manifest with a text column (here
synthetic clips whose label only the words give, with a tiny text part built in the test); the bundle runs it
without torch."""
import hashlib
import json

import numpy as np
import pytest
import soundfile as sf

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")
tokenizers = pytest.importorskip("tokenizers")
onnx = pytest.importorskip("onnx")

from edge_ser.bundle import load_bundle, pack  # noqa: E402
from edge_ser.errors import DatasetError  # noqa: E402
from edge_ser.fusion import TextOptions, TextPath, aligned_fusion  # noqa: E402
from edge_ser.head import LinearHead  # noqa: E402
from edge_ser.recognizer import Recognizer  # noqa: E402
from edge_ser.transcribe import Transcript  # noqa: E402

from test_export import LABELS, config, tiny_whisper  # noqa: E402

WORDS = {"anger": "furious", "neutral": "table", "sadness": "crying"}
FILLER = ["well", "I", "think", "it", "is", "so", "now", "really"]


def tiny_text_part(root, seed=0, dim=16):
    """A text emotion part: a word-level tokenizer, a random embedding table as its ONNX encoder (token states are
    the words' vectors), a random head, and the manifest with their checksums."""
    from tokenizers.models import WordLevel
    from tokenizers.pre_tokenizers import Whitespace

    root.mkdir(parents=True)
    vocab = {w: i for i, w in enumerate(["[UNK]", *FILLER, *WORDS.values()])}
    tok = tokenizers.Tokenizer(WordLevel(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = Whitespace()
    (root / "tokenizer.json").write_text(tok.to_str())
    rng = np.random.default_rng(seed)
    table = onnx.numpy_helper.from_array(rng.standard_normal((len(vocab), dim)).astype(np.float32), "table")
    node = onnx.helper.make_node("Gather", ["table", "input_ids"], ["last_hidden_state"], axis=0)
    graph = onnx.helper.make_graph(
        [node], "encoder", [onnx.helper.make_tensor_value_info("input_ids", onnx.TensorProto.INT64, ["b", "n"])],
        [onnx.helper.make_tensor_value_info("last_hidden_state", onnx.TensorProto.FLOAT, ["b", "n", dim])], [table])
    onnx.save(onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", 17)]), root / "encoder.onnx")
    head = LinearHead(np.zeros(dim), np.ones(dim), rng.standard_normal((len(LABELS), dim)), np.zeros(len(LABELS)))
    (root / "head.npz").write_bytes(head.to_bytes())
    sha = {n: hashlib.sha256((root / n).read_bytes()).hexdigest() for n in ("head.npz", "tokenizer.json")}
    enc = (root / "encoder.onnx").read_bytes()
    (root / "text-emotion.json").write_text(json.dumps({
        "schema_version": 1, "labels": LABELS, "languages": ["en"], "sha256": sha,
        "encoder": {"package": None, "file": "encoder.onnx", "sha256": hashlib.sha256(enc).hexdigest(),
                    "bytes": len(enc), "dim": dim, "max_tokens": 32}}))
    return root


def sentence(label, rng):
    words = list(rng.choice(FILLER, size=4))
    words.insert(int(rng.integers(0, 5)), WORDS[label])
    return " ".join(words)


def text_corpus(root, with_text=lambda speaker, i: True):
    """3 speakers x 3 labels x 6 clips: tones whose pitch has nothing to do with the label, and a sentence that
    holds the label's word somewhere among filler words."""
    rng = np.random.default_rng(1)
    rows = ["path,label,speaker,text"]
    for s in ("s1", "s2", "s3"):
        for label in LABELS:
            for i in range(6):
                n = int(16000 * rng.uniform(0.8, 1.4))
                x = 0.3 * np.sin(2 * np.pi * rng.choice([150, 400, 650]) * np.arange(n) / 16000)
                sf.write(root / f"{s}_{label}_{i}.wav", (x + 0.02 * rng.standard_normal(n)).astype(np.float32), 16000)
                rows.append(f"{s}_{label}_{i}.wav,{label},{s},{sentence(label, rng) if with_text(s, i) else ''}")
    (root / "corpus.csv").write_text("\n".join(rows) + "\n")
    return root / "corpus.csv"


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    from edge_ser_export.pipeline import run_export

    root = tmp_path_factory.mktemp("align")
    (root / "corpus").mkdir()
    part = tiny_text_part(root / "text")
    manifest = run_export(config(text_corpus(root / "corpus"), root / "bundle", tiny_whisper(root / "teacher"),
                                 fast_blocks=0, test_speakers=["s3"], text_model=part))
    return root / "bundle", manifest, part


def test_the_alignment_head_learns_what_only_the_words_say(exported):
    out, manifest, part = exported
    f = manifest.fusion
    assert f is not None and f.file == "fusion.onnx" and f.text_dim == 16
    assert f.metrics.n == 18 and f.audio_metrics.n == 18
    assert f.metrics.ua >= 0.9 > f.audio_metrics.ua + 0.2     # the voice carries no label here, the words do
    assert "18 clips with text" in f.fit and "every speaker" in f.fit
    assert load_bundle(out).manifest.files["fusion.onnx"].bytes > 0   # checksummed like every part
    assert "fusion" in (out / "MODEL_CARD.md").read_text().lower()


def fake_text_path(part, words):
    path = TextPath.__new__(TextPath)
    from edge_ser.textemotion import TextEmotion
    path.options, path.model, path._maps = TextOptions(), TextEmotion(part), {}
    path.transcriber = lambda x: Transcript(words, "en", None, -0.1, 0.0, confident=True)
    return path


def test_the_runtime_fuses_with_the_bundles_alignment_head(exported, tmp_path):
    out, _, part = exported
    rec = Recognizer(out, variant="student-int8-u8u8")
    x = (0.3 * np.sin(2 * np.pi * 400 * np.arange(20000) / 16000)).astype(np.float32)
    for label, word in WORDS.items():
        rec.text = fake_text_path(part, f"well I think {word} now")
        rec.aligned = aligned_fusion(rec.bundle, rec.text.model)
        p = rec.predict(x, 16000)
        assert p.label == label and p.text == f"well I think {word} now" and set(p.audio_probs) == set(LABELS)
        assert set(p.text_probs) == set(LABELS) and abs(sum(p.probs.values()) - 1) < 1e-5
    # a text model with another encoder: its token states are not what the head learned, the linear pool fuses
    other = fake_text_path(tiny_text_part(tmp_path / "other", seed=5), "table")
    assert aligned_fusion(rec.bundle, other.model) is None
    # a deployment bundle keeps the fusion graph; a recognizer adapted to new labels leaves it
    pack(out, "student-int8-u8u8", tmp_path / "slim")
    slim = load_bundle(tmp_path / "slim")
    assert slim.manifest.fusion == load_bundle(out).manifest.fusion and (tmp_path / "slim" / "fusion.onnx").is_file()
    clips = [x * g for g in (0.5, 0.7, 0.9)] + [np.roll(x, 3) * g for g in (0.5, 0.7, 0.9)]
    adapted = rec.adapt(clips, ["calm"] * 3 + ["tense"] * 3, 16000)
    assert adapted.bundle.manifest.fusion is None and adapted.aligned is None


def test_too_few_clips_with_text_is_refused_before_any_work(tmp_path):
    from edge_ser_export.pipeline import run_export

    (tmp_path / "corpus").mkdir()
    corpus = text_corpus(tmp_path / "corpus", with_text=lambda speaker, i: speaker == "s1" and i == 0)
    with pytest.raises(DatasetError, match="at least 2 training clips with text per label"):
        run_export(config(corpus, tmp_path / "bundle", tmp_path / "no-teacher-needed", fast_blocks=0,
                          test_speakers=["s3"], text_model=tiny_text_part(tmp_path / "text")))
    assert not (tmp_path / "bundle").exists()
