"""`edge-ser adapt` and Recognizer.adapt: a new head on a bundle's encoder from a few labelled clips, no torch."""
from __future__ import annotations

import io
import json
import shutil
import subprocess
import sys
import zipfile
from dataclasses import replace

import numpy as np
import pytest
import soundfile as sf
from conftest import speechlike

from edge_ser import EdgeSerError, Recognizer
from edge_ser.adapt import adapt
from edge_ser.bundle import load_bundle, write_bundle
from edge_ser.errors import BundleError, DatasetError
from edge_ser.head import BLIND_MIN_SPEAKERS, MAX_FOLDS, MIN_SPEAKERS, LinearHead, fit_linear
from edge_ser.metrics import scores

SR = 16000


def clips(amp: float, n: int, seed: int = 0) -> list[np.ndarray]:
    return [speechlike(1.0 + 0.1 * i, amp * (1 + 0.1 * i), seed=seed + i) for i in range(n)]


def cli(*args):
    return subprocess.run([sys.executable, "-m", "edge_ser", *map(str, args)], capture_output=True, text=True,
                          timeout=300)


def test_api_adapt_learns_new_labels_and_saves_a_bundle(tiny_bundle, tmp_path):
    base = Recognizer(tiny_bundle)
    new = base.adapt(clips(0.5, 6) + clips(0.003, 6), ["shout"] * 6 + ["murmur"] * 6, sample_rate=SR)
    assert new.labels == ["murmur", "shout"] and base.labels == ["anger", "neutral", "sadness"]
    assert new.predict(speechlike(1.5, 0.6, seed=9), SR).label == "shout"
    assert new.predict(speechlike(1.5, 0.002, seed=9), SR).label == "murmur"
    m = new.save(tmp_path / "mine")
    saved = load_bundle(tmp_path / "mine")   # every checksum verified
    assert (tmp_path / "mine" / "model.onnx").read_bytes() == (tiny_bundle / "model.onnx").read_bytes()
    assert m.adapted.base == load_bundle(tiny_bundle).id and m.adapted.base_labels == ["anger", "neutral", "sadness"]
    assert m.data.label_counts == {"murmur": 6, "shout": 6} and not m.adapted.speaker_independent
    assert "NOT speaker-independent" in m.adapted.protocol
    assert str(tmp_path) not in (tmp_path / "mine" / "edge-ser.json").read_text()
    again = Recognizer(saved)
    assert again.predict(speechlike(1.5, 0.6, seed=9), SR).label == "shout"
    assert "Adapted" in (tmp_path / "mine" / "MODEL_CARD.md").read_text()


def test_clip_paths_are_accepted(tiny_bundle, tmp_path):
    paths = []
    for i, x in enumerate(clips(0.5, 3) + clips(0.003, 3)):
        paths.append(tmp_path / f"{i}.wav")
        sf.write(paths[-1], x, SR)
    new = Recognizer(tiny_bundle).adapt(paths, ["loud"] * 3 + ["soft"] * 3, sample_rate=SR)
    assert new.predict(speechlike(1.0, 0.5, seed=5), SR).label == "loud"


def test_a_label_with_too_few_clips_is_refused(tiny_bundle):
    with pytest.raises(EdgeSerError, match="at least 2 clips"):
        Recognizer(tiny_bundle).adapt(clips(0.5, 4) + clips(0.003, 1), ["a"] * 4 + ["b"], sample_rate=SR)
    with pytest.raises(EdgeSerError, match="one label"):
        Recognizer(tiny_bundle).adapt(clips(0.5, 4), ["a", "b"], sample_rate=SR)


@pytest.mark.parametrize("labels, speakers, fragment", [
    (["a"] * 3 + ["x" * 201] * 3, None, "at most 200 characters"),   # wrote a bundle that could not be loaded
    ([1, 1, 1, 2, 2, 2], None, "label of clip 0, 1,"),                # AttributeError
    (["a", "a", "a", 2, 2, 2], None, "label of clip 3, 2,"),          # TypeError
    (["", "", "", "b", "b", "b"], None, "label of clip 0, ''"),       # an error about edge-ser.json
    (["a"] * 3 + ["b"] * 3, [1, 2, 3, 1, 2, 3], "speaker of clip 0, 1,"),   # wrote a bundle that could not be loaded
    (["a"] * 3 + ["b"] * 3, ["s" * 201] * 6, "speaker of clip 0"),
])
def test_labels_and_speakers_a_manifest_cannot_hold_are_refused(tiny_bundle, labels, speakers, fragment):
    with pytest.raises(DatasetError, match=fragment):
        Recognizer(tiny_bundle).adapt(clips(0.5, 3) + clips(0.003, 3), labels, sample_rate=SR, speakers=speakers)


def test_the_model_card_holds_no_escape_sequence_of_the_labels(tiny_bundle, tmp_path):
    red = "\x1b[31mred\x1b[0m"
    Recognizer(tiny_bundle).adapt(clips(0.5, 3) + clips(0.003, 3), [red] * 3 + ["two\nlines"] * 3,
                                  sample_rate=SR).save(tmp_path / "new")
    assert load_bundle(tmp_path / "new").labels == [red, "two\nlines"]
    card = (tmp_path / "new" / "MODEL_CARD.md").read_text()
    assert "\x1b" not in card and "\\x1b[31mred" in card and "two\\nlines" in card
    adapted = next(line for line in card.splitlines() if line.startswith("- Adapted"))
    assert adapted.count("NOT speaker-independent") == 1   # was said twice


def test_more_labels_than_a_manifest_holds_are_refused_before_embedding(tiny_bundle):
    rec = Recognizer(tiny_bundle)
    rec.embed = None   # embedding would fail: the check comes first
    labels = [f"l{i}" for i in range(1001) for _ in range(2)]
    with pytest.raises(DatasetError, match="at most 1000 labels, not 1001"):
        adapt(rec, [np.zeros(400, np.float32)] * len(labels), labels)


def test_no_bundle_is_written_that_cannot_be_loaded(tiny_bundle, tmp_path):
    m = load_bundle(tiny_bundle).manifest
    shutil.copytree(tiny_bundle, tmp_path / "b")
    with pytest.raises(BundleError, match="longer than 200"):
        write_bundle(tmp_path / "b", replace(m, labels=["x" * 201, "b", "c"]))
    assert load_bundle(tmp_path / "b").manifest.labels == m.labels   # the manifest was not replaced


def test_a_long_data_folder_name_still_makes_a_loadable_bundle(tiny_bundle, tmp_path):
    data = label_folders(tmp_path / ("d" * 230), 2, a=0.5, b=0.003)
    r = cli("adapt", tiny_bundle, "--data", data, "--out", tmp_path / "new")
    assert r.returncode == 0, r.stderr
    assert load_bundle(tmp_path / "new").manifest.data.corpus == "d" * 200


@pytest.mark.parametrize("x, y, kwargs, fragment", [
    (np.full((4, 2), 1e300) * [[1], [-1], [1], [-1]], [0, 1, 0, 1], {}, "beyond float32"),   # an Inf scale before
    (np.eye(4), [0, 0, -1, -1], {}, "numbered 0..1"),                                      # ValueError
    (np.eye(4), [0, 0, 1, 1], {"groups": ["a", "b"]}, "2 speakers"),                        # folds of garbage
    (np.eye(4), [0, 0, 1, 1], {"l2": float("nan")}, "l2 must be"),                          # NaN weights
])
def test_fit_linear_refuses_what_it_cannot_fit(x, y, kwargs, fragment):
    with pytest.raises(EdgeSerError, match=fragment):
        fit_linear(np.asarray(x), np.asarray(y), 2, **kwargs)


@pytest.mark.parametrize("x, y, groups", [
    (np.ones((4, 5)), [0, 0, 1, 1], None),                                      # every embedding the same
    (np.array([[0.0], [0.1], [1.0], [1.1]]), [0, 0, 1, 1], None),               # one feature, separable
    (np.random.default_rng(0).normal(size=(6, 3000)), [0, 0, 1, 1, 2, 2], None),   # 2 clips per class, dim >> N
    (np.random.default_rng(1).normal(size=(12, 4)), [0, 0, 1, 1, 2, 2, 0, 0, 1, 1, 0, 0], list("aabbccddeeff")),
    (np.random.default_rng(2).uniform(-3e38, 3e38, (8, 3)).astype(np.float32), [0, 1] * 4, None),   # float32 extremes
])
def test_fit_linear_on_degenerate_data_gives_a_finite_head_a_bundle_can_hold(x, y, groups):
    head, report = fit_linear(x, np.asarray(y), max(y) + 1, groups=groups)
    again = LinearHead.from_bytes(head.to_bytes(), head.dim, head.classes, "h.npz")   # finite float32, scales > 0
    assert np.isfinite(again.probs(x)).all() and 0.05 <= report.temperature <= 20


def test_penalty_is_chosen_by_speaker_folds_only_with_enough_speakers():
    rng = np.random.default_rng(0)
    y = np.tile([0, 1], 20)
    x = rng.normal(size=(40, 5)) + y[:, None]
    few = np.repeat(np.arange(MIN_SPEAKERS - 1), 40 // (MIN_SPEAKERS - 1) + 1)[:40]
    loso = np.repeat(np.arange(MAX_FOLDS), 40 // MAX_FOLDS)
    many = np.repeat(np.arange(8), 5)
    _, r_few = fit_linear(x, y, 2, groups=few)
    _, r_loso = fit_linear(x, y, 2, groups=loso)
    _, r_many = fit_linear(x, y, 2, groups=many)
    assert not r_few.chosen and r_loso.chosen and r_many.chosen
    assert f"leave-one-speaker-out over {MAX_FOLDS} speakers" in r_loso.protocol and r_loso.speaker_independent
    assert f"{MAX_FOLDS} speaker-grouped folds over 8 speakers" in r_many.protocol
    assert r_many.ua > 0.8 and len(r_many.fold_ua) == MAX_FOLDS


def _speaker_shortcut(rng, speakers: int, link: bool):
    """Clips of ``speakers`` new speakers, 2 labels: the label moves feature 0 a little; each speaker sits far along
    features 1-3, and where it sits also sets its label mix (``link``) or the opposite mix (not ``link``)."""
    x, y, g = [], [], []
    for s in range(speakers):
        where = rng.normal(0, 3, 3)
        labels = (rng.random(40) < (0.9 if (where[0] > 0) == link else 0.1)).astype(int)
        x.append(np.hstack([labels[:, None] + rng.normal(0, 0.7, (40, 1)), where + rng.normal(0, 0.5, (40, 3))]))
        y.append(labels)
        g += [f"{link}{s}"] * 40
    return np.vstack(x), np.concatenate(y), np.array(g)


def test_a_head_blind_to_speaker_directions_does_not_learn_who_speaks():
    rng = np.random.default_rng(0)
    x, y, groups = _speaker_shortcut(rng, BLIND_MIN_SPEAKERS, link=True)
    new_x, new_y, _ = _speaker_shortcut(rng, 10, link=False)   # new speakers: the shortcut points the wrong way
    plain, r_plain = fit_linear(x, y, 2, groups=groups, l2=0.01)
    blind, r_blind = fit_linear(x, y, 2, groups=groups, l2=0.01, speaker_directions=3)
    ua = {name: scores(new_y, head.probs(new_x).argmax(1), 2)["ua"] for name, head in (("plain", plain),
                                                                                         ("blind", blind))}
    assert ua["blind"] > 0.7 > 0.5 > ua["plain"]
    speaker_weight = np.abs(blind.weight[:, 1:]).max() / np.abs(blind.weight[:, 0]).max()
    assert speaker_weight < 0.25 < 1.0 < np.abs(plain.weight[:, 1:]).max() / np.abs(plain.weight[:, 0]).max()
    assert r_blind.speaker_directions == 3 and "blind to 3 speaker directions" in r_blind.summary()
    assert r_plain.speaker_directions == 0 and "blind" not in r_plain.summary()


def test_speaker_directions_need_enough_speakers():
    x, y, groups = _speaker_shortcut(np.random.default_rng(1), BLIND_MIN_SPEAKERS - 1, link=True)
    plain, _ = fit_linear(x, y, 2, groups=groups)
    few, report = fit_linear(x, y, 2, groups=groups, speaker_directions=3)
    assert report.speaker_directions == 0 and np.array_equal(few.weight, plain.weight)
    with pytest.raises(EdgeSerError, match="speaker_directions"):
        fit_linear(x, y, 2, groups=groups, speaker_directions=-1)


def test_temperature_scaling_calibrates_an_overconfident_head():
    rng = np.random.default_rng(1)
    y = rng.integers(0, 3, 150)
    x = rng.normal(size=(150, 100)) + 0.3 * np.eye(3)[y] @ rng.normal(size=(3, 100))   # noisy, many features
    _, report = fit_linear(x, y, 3, groups=np.arange(150) % 10, l2=0.001)
    assert report.temperature > 1.0 and report.ece < report.ece_before


def label_folders(root, per_label: int, **amps):
    """``root/LABEL/i.wav``: ``per_label`` speech-like clips of each label at its amplitude."""
    for label, amp in amps.items():
        (root / label).mkdir(parents=True)
        for i, x in enumerate(clips(amp, per_label)):
            sf.write(root / label / f"{i}.wav", x, SR)
    return root


def test_cli_adapt_on_label_folders_runtime_only(tiny_bundle, tmp_path):
    data = label_folders(tmp_path / "data", 4, shout=0.5, murmur=0.003)
    code = ("import sys, edge_ser.cli as c; sys.argv = ['edge-ser', 'adapt', sys.argv[1], '--data', sys.argv[2], "
            "'--out', sys.argv[3]]\ntry:\n    c.main()\nexcept SystemExit as e:\n    assert not e.code, e.code\n"
            "assert 'torch' not in sys.modules, 'adapt imported torch'")
    r = subprocess.run([sys.executable, "-c", code, str(tiny_bundle), str(data), str(tmp_path / "new")],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert "labels murmur, shout" in r.stderr
    loud = tmp_path / "loud.wav"
    sf.write(loud, np.concatenate([np.zeros(SR), speechlike(2.0, 0.5, seed=3), np.zeros(SR)]), SR)
    r = cli("run", tmp_path / "new", "--input", loud)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout.splitlines()[0])["label"] == "shout"
    info = cli("info", tmp_path / "new")
    assert info.returncode == 0 and "adapted" in info.stdout


def test_cli_adapt_never_replaces_a_folder_that_is_not_a_bundle(tiny_bundle, tmp_path):
    data = label_folders(tmp_path / "data", 2, a=0.5, b=0.003)
    precious = tmp_path / "notes"
    precious.mkdir()
    (precious / "keep.txt").write_text("mine")
    r = cli("adapt", tiny_bundle, "--data", data, "--out", precious, "--overwrite")
    assert r.returncode == 2 and r.stderr.startswith("error:") and len(r.stderr.strip().splitlines()) == 1
    assert (precious / "keep.txt").read_text() == "mine"
    r = cli("adapt", tiny_bundle, "--data", data / "a", "--out", tmp_path / "x")   # one label
    assert r.returncode == 2 and r.stderr.startswith("error:") and not (tmp_path / "x").exists()


def _npz(**arrays) -> bytes:
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return buf.getvalue()


GOOD = {"mean": np.zeros(2, np.float32), "scale": np.ones(2, np.float32), "weight": np.zeros((3, 2), np.float32),
        "bias": np.zeros(3, np.float32)}


def _npz_raw(**members: bytes) -> bytes:
    """An uncompressed .npz of raw .npy bytes, the good arrays where not given."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        for k, v in GOOD.items():
            a = io.BytesIO()
            np.save(a, v)
            z.writestr(f"{k}.npy", members.get(k, a.getvalue()))
    return buf.getvalue()


def _npy_header(shape) -> bytes:
    """A float32 .npy header declaring ``shape``, with no data after it."""
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, {"descr": "<f4", "fortran_order": False, "shape": shape})
    return buf.getvalue()


@pytest.mark.parametrize("data, fragment", [
    (_npz(**GOOD, extra=np.zeros(1)), "arrays"),
    (_npz(**{**GOOD, "scale": np.zeros(2, np.float32)}), "not positive"),
    (_npz(**{**GOOD, "bias": np.array([0, np.nan, 0], np.float32)}), "NaN"),
    (_npz(**{**GOOD, "weight": np.zeros((3, 2), np.float64)}), "float64"),
    (_npz(**{**GOOD, "mean": np.array([{"pickled": 1}, 2], dtype=object)}), "edge-ser head"),
    (b"PK\x03\x04 not a zip", "edge-ser head"),
    # a header declaring 40 TB: refused before numpy allocates it (a MemoryError traceback before)
    (_npz_raw(mean=_npy_header((10**13,))), r"mean is float32\[10000000000000\]"),
    (_npz_raw(weight=_npy_header((3, 2)) + b"\0" * 4), "holds 4 bytes of data, not 24"),
])
def test_hostile_head_files_are_refused(data, fragment):
    with pytest.raises(BundleError, match=fragment):
        LinearHead.from_bytes(data, 2, 3, "h.npz")


def test_compressed_head_files_are_refused():
    buf = io.BytesIO()
    np.savez_compressed(buf, **GOOD)
    with pytest.raises(BundleError, match="compressed"):
        LinearHead.from_bytes(buf.getvalue(), 2, 3, "h.npz")
    with zipfile.ZipFile(io.BytesIO(_npz(**GOOD))) as z:   # what we write is stored, not compressed
        assert all(i.compress_type == zipfile.ZIP_STORED for i in z.infolist())


def test_events_say_when_the_model_is_unsure(bundle_copy, tmp_path):
    loud = speechlike(1.5, 0.6, seed=2)
    assert not Recognizer(bundle_copy).predict(loud, SR).unsure          # anger, far above 0.5
    m = load_bundle(bundle_copy, verify=False).manifest
    m.heads["student"].unsure_below = 0.999999
    from edge_ser.bundle import write_bundle
    write_bundle(bundle_copy, m)
    rec = Recognizer(bundle_copy)
    assert rec.predict(loud, SR).unsure
    events = rec.process(np.concatenate([np.zeros(SR, np.float32), loud, np.zeros(SR, np.float32)]), SR)
    assert events and all(e.unsure and e.to_dict()["unsure"] is True for e in events)


def test_silent_clips_are_refused_by_the_api(tiny_bundle):
    with pytest.raises(EdgeSerError, match="clip.*2.*silent"):
        Recognizer(tiny_bundle).adapt(clips(0.5, 2) + [np.zeros(SR, np.float32)] + clips(0.003, 3),
                                      ["a", "a", "b", "b", "b", "b"], sample_rate=SR)


def test_few_clips_never_sharpen_the_probabilities():
    rng = np.random.default_rng(3)
    y = np.repeat([0, 1], 6)
    x = rng.normal(size=(12, 4)) + 3.0 * y[:, None]      # separable: out of fold it looks underconfident
    _, few = fit_linear(x, y, 2, l2=1.0)
    assert few.temperature >= 1.0
    y = np.repeat([0, 1], 60)
    x = rng.normal(size=(120, 4)) + 3.0 * y[:, None]
    _, many = fit_linear(x, y, 2, groups=np.arange(120) % 6, l2=1.0)
    assert many.temperature < 1.0                         # with enough clips it may sharpen


def test_guided_enrollment_records_each_label_then_adapts(tiny_bundle, tmp_path, monkeypatch):
    """`adapt --record loud,soft`: each clip is prompted and recorded (a stand-in microphone here); silence is
    asked for again; the new bundle knows the recorded labels."""
    import edge_ser.mic
    from edge_ser.cli import main

    takes = iter([speechlike(1.0, 0.5, seed=i) for i in range(3)] + [np.zeros(SR, np.float32)]
                 + [speechlike(1.0, 0.003, seed=i) for i in range(3)])

    def fake_mic(device, sample_rate, counters):
        x = next(takes)
        for i in range(0, len(x), 1600):
            yield x[i:i + 1600]
    monkeypatch.setattr(edge_ser.mic, "mic_chunks", fake_mic)
    with pytest.raises(SystemExit) as done:
        main(["adapt", str(tiny_bundle), "--record", "loud,soft", "--per-label", "3", "--seconds", "1",
              "--out", str(tmp_path / "mine")])
    assert not done.value.code
    mine = Recognizer(tmp_path / "mine")
    assert mine.labels == ["loud", "soft"] and mine.bundle.manifest.data.label_counts == {"loud": 3, "soft": 3}
    assert mine.predict(speechlike(1.5, 0.6, seed=7), SR).label == "loud"


def test_record_and_data_are_one_or_the_other(tiny_bundle, tmp_path):
    for args in ([], ["--record", "a,b", "--data", str(tmp_path)], ["--record", "a"], ["--record", "a,a"]):
        r = cli("adapt", tiny_bundle, "--out", tmp_path / "x", *args)
        assert r.returncode == 2 and r.stderr.startswith("error:") and len(r.stderr.strip().splitlines()) == 1
