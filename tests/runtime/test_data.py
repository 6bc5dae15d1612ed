from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from edge_ser.data import (Item, heldout_split, load_corpus, load_waveforms, loso_folds, speaker_folds)
from edge_ser.errors import DatasetError, LabelError

from conftest import SHARED_DATA  # noqa: E402


def tone(path, seconds=0.2, sr=16000, silent=False):
    path.parent.mkdir(parents=True, exist_ok=True)
    t = np.arange(int(sr * seconds)) / sr
    sf.write(path, np.zeros_like(t) if silent else 0.3 * np.sin(2 * np.pi * 300 * t), sr)
    return path


def items(speakers_per_item):
    return [Item(Path(f"{i}.wav"), "anger" if i % 2 else "neutral", s) for i, s in enumerate(speakers_per_item)]


# ---- file-name schemes -------------------------------------------------------------------------

def test_emodb_names(tmp_path):
    for name in ["03a01Wa", "03a02Nc", "08b10Lb", "16a05Ea", "10a07Aa", "11b03Fb", "12a04Td"]:
        tone(tmp_path / "emodb" / "wav" / f"{name}.wav")
    (tmp_path / "emodb" / "README.txt").write_text("not audio, ignored")
    c = load_corpus(tmp_path / "emodb")
    assert c.scheme == "emodb" and c.name == "emodb"
    assert c.labels == ["anger", "boredom", "disgust", "fear", "happiness", "neutral", "sadness"]
    got = {it.path.stem: (it.label, it.speaker) for it in c.items}
    assert got["03a01Wa"] == ("anger", "03") and got["08b10Lb"] == ("boredom", "08")
    assert got["12a04Td"] == ("sadness", "12") and got["11b03Fb"] == ("happiness", "11")
    assert c.speakers == ["03", "08", "10", "11", "12", "16"]
    assert c.skip_summary() == "skipped 0 of 7"


def test_banglaser_names(tmp_path):
    names = ["03-01-01-01-01-01-01", "03-01-02-02-03-01-01", "03-01-03-01-02-03-25",
             "01-01-04-02-03-01-15", "03-01-05-01-01-02-34"]
    for n in names:
        tone(tmp_path / "bangla" / f"{n}.flac")
    c = load_corpus(tmp_path / "bangla")
    assert c.scheme == "banglaser"
    got = {it.path.stem: (it.label, it.speaker) for it in c.items}
    assert got["03-01-01-01-01-01-01"] == ("happiness", "01")
    assert got["03-01-02-02-03-01-01"] == ("sadness", "01")
    assert got["03-01-03-01-02-03-25"] == ("anger", "25")
    assert got["01-01-04-02-03-01-15"] == ("surprise", "15")
    assert got["03-01-05-01-01-02-34"] == ("neutral", "34")


def test_ravdess_names_and_ambiguity(tmp_path):
    for n in ["03-01-01-01-01-01-01", "03-01-02-02-01-01-02", "03-01-05-01-02-02-03", "03-01-08-02-02-01-24"]:
        tone(tmp_path / "ravdess" / f"{n}.wav")
    c = load_corpus(tmp_path / "ravdess")
    assert c.scheme == "ravdess"
    assert {it.path.stem: it.label for it in c.items}["03-01-05-01-02-02-03"] == "anger"
    assert c.labels == ["anger", "calm", "neutral", "surprise"]

    tone(tmp_path / "small" / "03-01-01-01-01-01-01.wav")
    tone(tmp_path / "small" / "03-01-05-01-02-02-03.wav")
    with pytest.raises(DatasetError, match="scheme='ravdess' or scheme='banglaser'"):
        load_corpus(tmp_path / "small")
    assert load_corpus(tmp_path / "small", scheme="banglaser").labels == ["happiness", "neutral"]
    assert load_corpus(tmp_path / "small", scheme="ravdess").labels == ["anger", "neutral"]


def test_forced_scheme_counts_unrecognised_names(tmp_path):
    tone(tmp_path / "c" / "03a01Wa.wav")
    tone(tmp_path / "c" / "hello.wav")
    c = load_corpus(tmp_path / "c", scheme="emodb")
    assert len(c.items) == 1 and c.skipped["unrecognised file name"] == 1


# ---- folders ------------------------------------------------------------------------------------

def test_a_folders_manifest_wins_over_its_layout(tmp_path):
    # BAVED-like: word folders that are not labels, and a manifest that gives labels and speakers
    for word in ("w0", "w1"):
        for i in range(2):
            tone(tmp_path / "c" / word / f"{word}_{i}.wav")
    rows = [f"{w}/{w}_{i}.wav,{'high' if i else 'low'},spk{i}" for w in ("w0", "w1") for i in range(2)]
    (tmp_path / "c" / "manifest.csv").write_text("path,label,speaker\n" + "\n".join(rows) + "\n")
    c = load_corpus(tmp_path / "c")
    assert c.scheme == "manifest" and c.labels == ["high", "low"] and c.speakers == ["spk0", "spk1"]
    assert c.name == "c"


def test_hidden_folders_are_not_labels(tmp_path):
    tone(tmp_path / "c" / "anger" / "a.wav")
    tone(tmp_path / "c" / "sadness" / "b.wav")
    tone(tmp_path / "c" / ".cache" / "x.wav")
    tone(tmp_path / "c" / "anger" / ".trash" / "y.wav")
    c = load_corpus(tmp_path / "c")
    assert c.labels == ["anger", "sadness"] and len(c.items) == 2


def test_label_folders_and_emodb_names_must_agree(tmp_path):
    tone(tmp_path / "ok" / "anger" / "03a01Wa.wav")
    tone(tmp_path / "ok" / "sadness" / "03a01Ta.wav")
    assert load_corpus(tmp_path / "ok").labels == ["anger", "sadness"]
    tone(tmp_path / "bad" / "happiness" / "03a01Wa.wav")   # the folder says happiness, the name says anger
    tone(tmp_path / "bad" / "sadness" / "03a01Ta.wav")
    with pytest.raises(DatasetError, match="folder says 'happiness' but its file name says 'anger'"):
        load_corpus(tmp_path / "bad")


def test_a_label_folder_beside_loose_files_is_checked_and_other_folders_are_not_labels(tmp_path):
    # red-team N13: a file at the root no longer switches the check off ...
    tone(tmp_path / "mixed" / "03a01Fa.wav")
    tone(tmp_path / "mixed" / "sadness" / "03a01Wa.wav")
    with pytest.raises(DatasetError, match="folder says 'sadness' but its file name says 'anger'"):
        load_corpus(tmp_path / "mixed")
    # ... and a folder that is not an emotion (a session, a speaker) beside a label folder is no conflict
    tone(tmp_path / "sessions" / "anger" / "03a01Wa.wav")
    tone(tmp_path / "sessions" / "session2" / "03a01Fa.wav")
    assert load_corpus(tmp_path / "sessions").labels == ["anger", "happiness"]


def test_label_map_renames_and_drops_labels(tmp_path):
    for name in ("03a01Wa", "03a02Wa", "03a01La", "03a01Na", "03a02Ta"):
        tone(tmp_path / "c" / f"{name}.wav")
    c = load_corpus(tmp_path / "c", label_map="boredom=, sadness=Neutral")
    assert c.labels == ["anger", "neutral"] and len(c.items) == 4
    assert c.skipped == {"label 'boredom' dropped": 1} and "1 label 'boredom' dropped" in c.skip_summary()
    assert load_corpus(tmp_path / "c", label_map={"anger": "high"}).labels == ["boredom", "high", "neutral",
                                                                               "sadness"]
    with pytest.raises(LabelError, match="happiness"):   # known labels are checked after the map
        load_corpus(tmp_path / "c", known_labels=["anger", "neutral"], label_map="boredom=,sadness=happiness")
    # a folder that names the label the map gives is no conflict
    tone(tmp_path / "f" / "neutral" / "03a01Ta.wav")
    assert load_corpus(tmp_path / "f", label_map="sadness=neutral").labels == ["neutral"]


@pytest.mark.parametrize("text", ["calm", "=neutral", "calm=neutral,calm=sadness", "a=b=c", "calm=neutral,"])
def test_a_malformed_label_map_is_a_clear_error(text):
    from edge_ser.data import parse_label_map
    with pytest.raises(DatasetError, match="label map"):
        parse_label_map(text)


def test_label_map_syntax():
    from edge_ser.data import parse_label_map
    assert parse_label_map(None) == {} and parse_label_map(" ") == {}
    assert parse_label_map(" Calm = neutral ,fear=") == {"calm": "neutral", "fear": ""}


def test_latin1_manifest_is_read(tmp_path):
    tone(tmp_path / "a.wav")
    tone(tmp_path / "b.wav")
    (tmp_path / "list.csv").write_bytes("path,label,speaker\na.wav,col\xe8re,Ren\xe9\nb.wav,calme,Zo\xe9\n"
                                        .encode("latin-1"))
    c = load_corpus(tmp_path / "list.csv")
    assert c.labels == ["calme", "colère"] and c.speakers == ["René", "Zoé"]

def test_folder_per_label(tmp_path):
    tone(tmp_path / "c" / "Anger" / "a.wav")
    tone(tmp_path / "c" / "neutral" / "b.ogg")
    tone(tmp_path / "c" / "neutral" / "alice" / "c.wav")
    tone(tmp_path / "c" / "anger" / "03a01Wa.wav")
    c = load_corpus(tmp_path / "c")
    assert c.scheme == "folders" and c.labels == ["anger", "neutral"]
    speakers = {it.path.name: it.speaker for it in c.items}
    assert speakers == {"a.wav": "unknown", "b.ogg": "unknown", "c.wav": "alice", "03a01Wa.wav": "03"}


def test_unlabelled_loose_files_are_an_error(tmp_path):
    tone(tmp_path / "c" / "a.wav")
    with pytest.raises(DatasetError, match="one folder per label"):
        load_corpus(tmp_path / "c")


def test_folder_with_no_audio(tmp_path):
    (tmp_path / "c" / "anger").mkdir(parents=True)
    (tmp_path / "c" / "anger" / "notes.txt").write_text("hi")
    with pytest.raises(DatasetError, match="no audio files"):
        load_corpus(tmp_path / "c")


def test_missing_corpus_path(tmp_path):
    with pytest.raises(DatasetError, match="no such corpus"):
        load_corpus(tmp_path / "nowhere")
    with pytest.raises(DatasetError, match="not a .wav file"):
        load_corpus(tone(tmp_path / "a.wav"))


# ---- manifests ----------------------------------------------------------------------------------

def test_csv_with_missing_file(tmp_path):
    tone(tmp_path / "audio" / "a.wav")
    tone(tmp_path / "audio" / "b.wav")
    m = tmp_path / "list.csv"
    m.write_text("path,label,speaker\naudio/a.wav,anger,s1\naudio/b.wav,Neutral,s2\naudio/gone.wav,anger,s1\n")
    c = load_corpus(m)
    assert c.scheme == "manifest" and c.name == "list"
    assert [it.path for it in c.items] == [tmp_path / "audio" / "a.wav", tmp_path / "audio" / "b.wav"]
    assert c.labels == ["anger", "neutral"] and c.speakers == ["s1", "s2"]
    assert c.skipped == {"missing file": 1}
    assert c.examples["missing file"] == [str(tmp_path / "audio" / "gone.wav")]
    assert c.skip_summary() == "skipped 1 of 3: 1 missing file"


def test_tsv_absolute_paths_and_no_speaker_column(tmp_path):
    a = tone(tmp_path / "a.wav")
    m = tmp_path / "sub" / "list.tsv"
    m.parent.mkdir()
    m.write_text(f"label\tpath\n sadness \t{a}\n")
    c = load_corpus(m)
    assert c.items == [Item(a, "sadness", "unknown")]


def test_csv_with_unknown_label(tmp_path):
    tone(tmp_path / "a.wav")
    tone(tmp_path / "b.wav")
    m = tmp_path / "list.csv"
    m.write_text("path,label,speaker\na.wav,anger,s1\nb.wav,contempt,s2\n")
    with pytest.raises(LabelError, match="contempt.*known labels are anger, neutral"):
        load_corpus(m, known_labels=["anger", "neutral"])
    assert load_corpus(m).labels == ["anger", "contempt"]


def test_csv_without_header(tmp_path):
    tone(tmp_path / "a.wav")
    m = tmp_path / "list.csv"
    m.write_text("a.wav,anger,s1\n")
    with pytest.raises(DatasetError, match="header naming the columns path,label"):
        load_corpus(m)


def test_csv_where_every_file_is_missing(tmp_path):
    m = tmp_path / "list.csv"
    m.write_text("path,label,speaker\nx.wav,anger,s1\ny.wav,anger,s2\n")
    with pytest.raises(DatasetError, match="no usable items.*2 missing file"):
        load_corpus(m)


# ---- decoding -----------------------------------------------------------------------------------

def test_load_waveforms_counts_bad_files(tmp_path):
    tone(tmp_path / "good.wav", sr=22050)
    tone(tmp_path / "silent.wav", silent=True)
    (tmp_path / "empty.wav").write_bytes(b"")
    (tmp_path / "text.wav").write_text("not audio" * 50)
    nan = np.full(1000, 0.1, np.float32)
    nan[10] = np.nan
    sf.write(tmp_path / "nan.wav", nan, 16000, subtype="FLOAT")
    sf.write(tmp_path / "long.wav", np.zeros(61_000, np.int16), 1000)   # 61 s: over MAX_CLIP_S
    m = tmp_path / "list.csv"
    rows = [f"{n}.wav,anger,s{i}" for i, n in enumerate(["good", "silent", "empty", "text", "nan", "gone", "long"])]
    m.write_text("path,label,speaker\n" + "\n".join(rows) + "\n")
    corpus = load_corpus(m)
    waves, kept = load_waveforms(corpus, show_progress=False)
    assert [it.path.name for it in kept.items] == ["good.wav"]
    assert len(waves) == 1 and waves[0].dtype == np.float32 and abs(len(waves[0]) - 3200) <= 2
    assert kept.skipped == {"missing file": 1, "silent": 1, "empty file": 1, "unreadable audio": 1,
                            "non-finite samples": 1, "too long": 1}
    assert kept.skip_summary().startswith("skipped 6 of 7: ")
    assert corpus.skipped == {"missing file": 1}  # the input corpus is not modified
    assert kept.targets().tolist() == [0]


# ---- folds --------------------------------------------------------------------------------------

SPEAKERS = ["a", "a", "b", "b", "b", "c", "d", "d", "e", "f", "f", "g"]


def assert_disjoint(fold, its):
    train = {its[i].speaker for i in fold.train}
    test = {its[i].speaker for i in fold.test}
    assert not train & test
    assert test == set(fold.test_speakers)
    assert len(fold.train) + len(fold.test) == len(its)


def test_loso_folds():
    its = items(SPEAKERS)
    folds = loso_folds(its)
    assert [f.test_speakers for f in folds] == [[s] for s in sorted(set(SPEAKERS))]
    for f in folds:
        assert_disjoint(f, its)
    tested = np.concatenate([f.test for f in folds])
    assert sorted(tested.tolist()) == list(range(len(its)))  # every item tested exactly once


def test_speaker_folds():
    its = items(SPEAKERS)
    folds = speaker_folds(its, k=3, seed=1)
    assert len(folds) == 3
    for f in folds:
        assert_disjoint(f, its)
    assert sorted(np.concatenate([f.test for f in folds]).tolist()) == list(range(len(its)))
    again = speaker_folds(its, k=3, seed=1)
    assert [f.test_speakers for f in again] == [f.test_speakers for f in folds]
    with pytest.raises(DatasetError, match="2 <= k <= 7"):
        speaker_folds(its, k=8)


def test_heldout_split():
    its = items(SPEAKERS)
    f = heldout_split(its, ["b", "e"])
    assert_disjoint(f, its)
    assert sorted(f.test.tolist()) == [2, 3, 4, 8]
    g = heldout_split(its, 2, seed=3)
    assert_disjoint(g, its) and len(g.test_speakers) == 2
    assert heldout_split(its, 2, seed=3).test_speakers == g.test_speakers
    with pytest.raises(DatasetError, match="not in the corpus"):
        heldout_split(its, ["zed"])
    with pytest.raises(DatasetError, match="cannot hold out"):
        heldout_split(its, 7)


def test_one_speaker_is_an_error():
    its = items(["unknown"] * 4)
    for make in (loso_folds, lambda x: speaker_folds(x, 2), lambda x: heldout_split(x, 1)):
        with pytest.raises(DatasetError, match="at least two speakers"):
            make(its)


# ---- the shared corpora -------------------------------------------------------------------------

@pytest.mark.data
@pytest.mark.skipif(not SHARED_DATA.is_dir(), reason="../shared/data is absent")
@pytest.mark.parametrize("name, scheme, n, speakers, labels", [
    ("emodb", "emodb", 535, 10, 7),
    ("banglaser", "banglaser", 1466, 34, 5),
    ("baved", "manifest", 1935, 60, 3),    # a folder holding manifest.csv is read through it, not as word folders
    ("turev", "manifest", 1735, 6, 4),
])
def test_shared_corpora(name, scheme, n, speakers, labels):
    c = load_corpus(SHARED_DATA / name)
    assert c.scheme == scheme
    assert (len(c.items), len(c.speakers), len(c.labels)) == (n, speakers, labels)
    assert sum(c.skipped.values()) == 0
    folds = loso_folds(c.items)
    assert len(folds) == speakers
    assert sorted(np.concatenate([f.test for f in folds]).tolist()) == list(range(n))
