"""Layer pooling, baseline features, the feature cache, heads and the study's fold integrity (fast, synthetic)."""
from __future__ import annotations

import contextlib
from pathlib import Path

import numpy as np
import pytest
import torch

from edge_ser.data import Item, loso_folds, speaker_folds
from edge_ser.errors import DatasetError
from edge_ser.head import inner_folds
from edge_ser_export import features
from edge_ser_export.features import baseline_features, corpus_key, embed, pool_layers, teacher_features
from edge_ser_export.heads import fit_head, predict
from edge_ser_export.study import check_folds, subsample

from conftest import SHARED_DATA as DATA  # noqa: E402


def test_pool_layers_shape_and_values():
    hidden = torch.randn(3, 2, 17, 8)
    pooled = pool_layers(hidden)
    assert pooled.shape == (2, 3, 16)
    torch.testing.assert_close(pooled[..., :8], hidden.mean(2).transpose(0, 1))
    torch.testing.assert_close(pooled[..., 8:], hidden.std(2, unbiased=False).transpose(0, 1), atol=1e-4, rtol=1e-4)
    assert torch.isfinite(pool_layers(torch.zeros(2, 1, 1, 4))).all()   # one frame: std 0, finite


class Toy(torch.nn.Module):
    """A stand-in teacher: audio[B, N] -> [2, B, N // 160, 3], counting its calls."""
    name, n_layers, dim = "toy/teacher", 2, 3

    def __init__(self):
        super().__init__()
        self.calls = 0

    def forward(self, audio):
        self.calls += 1
        frames = audio[:, : audio.shape[1] // 160 * 160].reshape(audio.shape[0], -1, 160)
        h = torch.stack([frames.mean(-1), frames.abs().amax(-1), frames.std(-1)], -1)
        return torch.stack([h, 2 * h])


def _waves(n=3, seed=0):
    rng = np.random.default_rng(seed)
    return [(0.1 * rng.standard_normal(16000 + 800 * i)).astype(np.float32) for i in range(n)]


def test_embed_and_cache_hit(tmp_path):
    toy, waves = Toy(), _waves()
    first = teacher_features(toy, waves, tmp_path, "corpus1", show_progress=False)
    assert first.shape == (3, 2, 6) and first.dtype == np.float32
    assert toy.calls == 3
    again = teacher_features(toy, waves, tmp_path, "corpus1", show_progress=False)
    assert toy.calls == 3                      # served from the cache
    np.testing.assert_array_equal(first, again)
    teacher_features(toy, waves, tmp_path, "corpus2", show_progress=False)
    assert toy.calls == 6                      # another corpus key: recomputed


def test_a_cache_write_that_fails_leaves_nothing(tmp_path, monkeypatch):
    """A write stopped half way (here: numpy raising) leaves neither a cache file nor a partial one behind, and
    the next call computes and stores the features."""
    toy, waves = Toy(), _waves()

    def broken(file, **arrays):   # writes part of an archive, to a path or an open file, then fails
        with open(file, "wb") if isinstance(file, (str, Path)) else contextlib.nullcontext(file) as f:
            f.write(b"PK half an archive")
        raise OSError("disk full")
    monkeypatch.setattr(features.np, "savez", broken)
    with pytest.raises(OSError, match="disk full"):
        teacher_features(toy, waves, tmp_path, "corpus1", show_progress=False)
    assert list(tmp_path.iterdir()) == []
    monkeypatch.undo()
    first = teacher_features(toy, waves, tmp_path, "corpus1", show_progress=False)
    assert [p.suffix for p in tmp_path.rglob("*") if p.is_file()] == [".npz"]
    np.testing.assert_array_equal(first, teacher_features(toy, waves, tmp_path, "corpus1", show_progress=False))


def test_long_clip_is_embedded_in_pieces(monkeypatch):
    monkeypatch.setattr(features, "MAX_CHUNK_S", 1.0)
    toy, wave = Toy(), np.tile(_waves(1)[0], 3)[:16000 * 2 + 3200]
    out = embed(toy, [wave], show_progress=False)
    assert toy.calls == 3 and out.shape == (1, 2, 6)


def test_corpus_key_changes_with_the_file_list(tmp_path):
    a = [Item(tmp_path / "a.wav", "anger", "s1"), Item(tmp_path / "b.wav", "sadness", "s2")]
    assert corpus_key(a) == corpus_key(list(a))
    assert corpus_key(a) != corpus_key(a[:1])
    assert corpus_key(a) != corpus_key([a[0], Item(tmp_path / "b.wav", "anger", "s2")])


@pytest.mark.parametrize("name,dim", [("mfcc", 234), ("logmel", 384), ("egemaps", 88)])
def test_baseline_shapes_on_synthetic_audio(name, dim, tmp_path):
    if name == "egemaps":
        pytest.importorskip("opensmile")
    t = np.arange(24000) / 16000
    waves = [(0.3 * np.sin(2 * np.pi * f0 * t * (1 + 0.1 * t))).astype(np.float32) for f0 in (140, 220)]
    waves.append(np.zeros(100, np.float32) + 0.01)          # shorter than one frame
    x = baseline_features(name, waves, tmp_path, "synthetic", show_progress=False)
    assert x.shape == (3, dim) and np.isfinite(x).all()
    assert not np.allclose(x[0], x[1])
    np.testing.assert_array_equal(x, baseline_features(name, waves, tmp_path, "synthetic", show_progress=False))


def test_unknown_baseline():
    with pytest.raises(ValueError, match="mfcc"):
        baseline_features("nope", _waves(1))


def _toy_problem(n_per_class=24, n_classes=3, layers=3, dim=10, seed=0, informative=(1,)):
    """Classes separable in the ``informative`` layers; the other layers are noise. 6 speakers."""
    rng = np.random.default_rng(seed)
    y = np.repeat(np.arange(n_classes), n_per_class)
    x = rng.standard_normal((len(y), layers, dim)).astype(np.float32)
    for layer in informative:
        x[:, layer, :n_classes] += 4.0 * np.eye(n_classes)[y]
    groups = np.array([f"s{i % 6}" for i in range(len(y))])
    return x, y, groups


@pytest.mark.parametrize("kind,informative", [("linear", (1,)), ("mlp", (0, 1, 2))])
def test_heads_learn_a_separable_problem(kind, informative):
    x, y, groups = _toy_problem(informative=informative)
    xt, yt, _ = _toy_problem(seed=1, informative=informative)
    head = fit_head(kind, x, y, 3, seed=0, groups=groups, **({"layers": "best"} if kind == "linear" else {}))
    logits = head(torch.from_numpy(xt))
    assert logits.shape == (len(yt), 3)
    assert (predict(head, xt).argmax(1) == yt).mean() > 0.9
    if kind == "linear":
        assert head.selected["layers"] == [1]        # the informative layer, chosen by speaker folds


def test_layers_are_not_chosen_on_fewer_than_four_speakers():
    x, y, groups = _toy_problem()
    three = np.array([f"s{int(g[1:]) % 3}" for g in groups])
    assert fit_head("linear", x, y, 3, groups=groups, layers="best").selected["layers"] == [1]
    assert fit_head("linear", x, y, 3, groups=three, layers="best").selected["layers"] == [0, 1, 2]


@pytest.mark.parametrize("kind", ["linear", "mlp"])
def test_fit_head_is_deterministic_and_leaves_global_state(kind):
    x, y, groups = _toy_problem()
    torch.manual_seed(123)
    state = torch.random.get_rng_state()
    a = predict(fit_head(kind, x, y, 3, seed=7, groups=groups), x)
    assert torch.equal(torch.random.get_rng_state(), state)
    assert not torch.are_deterministic_algorithms_enabled()
    b = predict(fit_head(kind, x, y, 3, seed=7, groups=groups), x)
    np.testing.assert_array_equal(a, b)


def test_standardisation_comes_from_training_data_only():
    x, y, groups = _toy_problem()
    head = fit_head("linear", x, y, 3, layers="all", l2=0.1)
    np.testing.assert_allclose(head.mean.numpy(), x.reshape(len(x), -1).mean(0), atol=1e-5)
    np.testing.assert_allclose(head.scale.numpy(), x.reshape(len(x), -1).std(0), rtol=1e-4)
    before = {k: v.clone() for k, v in head.state_dict().items()}
    predict(head, 100 + 10 * x)                   # test data shifts nothing
    assert all(torch.equal(before[k], v) for k, v in head.state_dict().items())


def test_baseline_rows_go_through_the_same_heads():
    x, y, _ = _toy_problem(layers=1, informative=(0,))
    head = fit_head("mlp", x[:, 0], y, 3)
    assert predict(head, x[:, 0]).shape == (len(y), 3)


def test_unknown_head_and_bad_shapes():
    x, y, _ = _toy_problem()
    with pytest.raises(ValueError, match="linear"):
        fit_head("svm", x, y, 3)
    with pytest.raises(ValueError, match="one label per row"):
        fit_head("linear", x, y[:-1], 3)


def test_inner_folds_split_speakers():
    x, y, groups = _toy_problem()
    for tr, va in inner_folds(y, groups, 3, seed=0):
        assert not set(groups[tr]) & set(groups[va])


def _items():
    return [Item(Path(f"{s}_{i}.wav"), ["anger", "sadness"][i % 2], s) for s in ("a", "b", "c", "d") for i in range(5)]


def test_study_folds_are_speaker_independent():
    items = _items()
    speakers = np.array([it.speaker for it in items])
    for folds in (loso_folds(items), speaker_folds(items, 2, seed=0)):
        check_folds(folds, speakers)
        for f in folds:
            assert not set(speakers[f.train]) & set(speakers[f.test])
    leaky = loso_folds(items)
    leaky[0].train = np.append(leaky[0].train, leaky[0].test[0])
    with pytest.raises(DatasetError, match="both train and test"):
        check_folds(leaky, speakers)


def test_subsample_draws_only_training_clips():
    items = _items()
    y = np.array([i % 2 for i in range(len(items))])
    fold = loso_folds(items)[0]
    picked = subsample(fold.train, y, 3, np.random.default_rng(0))
    assert set(picked) <= set(fold.train)
    assert np.bincount(y[picked]).tolist() == [3, 3]
    assert len(subsample(fold.train, y, 100, np.random.default_rng(0))) == len(fold.train)


@pytest.mark.data
@pytest.mark.skipif(not (DATA / "emodb").is_dir(), reason="needs ../shared/data/emodb")
def test_emodb_loso_folds_are_speaker_independent():
    from edge_ser.data import load_corpus
    from edge_ser_export.study import StudyConfig, make_folds
    corpus = load_corpus(DATA / "emodb")
    folds, protocol = make_folds(corpus.items, StudyConfig(data=DATA / "emodb"))
    assert len(folds) == 10 and "leave-one-speaker-out" in protocol
    check_folds(folds, np.array([it.speaker for it in corpus.items]))
