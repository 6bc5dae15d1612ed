"""Labelled corpora as (path, label, speaker) items, and speaker-independent folds.

`load_corpus` reads four layouts (`scheme="auto"` picks one):

- ``emodb``: EmoDB file names ``SSTTTEV.wav`` (SS speaker, E German emotion letter).
- ``ravdess`` / ``banglaser``: file names ``MM-VV-EE-II-SS-RR-AA`` (EE emotion, AA actor = speaker).
  The two share the pattern but not the emotion codes. Auto picks RAVDESS when an emotion
  code above 05 occurs, BanglaSER when a statement/repetition code 03 or an actor above 24
  occurs, and otherwise asks for an explicit `scheme`.
- ``manifest``: a CSV (comma) or TSV (tab) file with a header naming ``path`` and ``label``
  and optionally ``speaker`` and ``text`` (what is said: ``edge-ser export`` trains the text path's alignment
  head on it); relative paths are relative to the manifest.
- ``folders``: one sub-folder per label (``ROOT/LABEL/...``). The speaker is the next folder
  (``ROOT/LABEL/SPEAKER/file``) when there is one, else parsed from an EmoDB or RAVDESS-style
  file name, else ``"unknown"``.

A folder holding ``manifest.csv`` (or ``.tsv``) is read through it: a manifest wins over the layout. When
files whose names carry labels (EmoDB, RAVDESS) sit in a folder named like an emotion (``LABEL_WORDS``), the
two must agree; a disagreement is an error naming both (other folders, such as speakers or sessions, are not
labels). Hidden files and folders (``.name``) are ignored. A manifest that is not UTF-8 is read as Latin-1.

Labels are lower-case English nouns (folder and manifest labels are lower-cased). A label map
(:func:`parse_label_map`, ``--label-map FROM=TO,FROM=``) renames labels or drops them. Items that cannot be
used are skipped and counted by reason in `Corpus.skipped`.
"""
from __future__ import annotations

import csv
import re
from collections import Counter
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import logging

from .audio import AUDIO_SUFFIXES, is_silent, load_audio, trim_silence
from .errors import AudioError, DatasetError, LabelError
from .progress import progress

log = logging.getLogger(__name__)

EMODB_LABELS = {"W": "anger", "L": "boredom", "E": "disgust", "A": "fear",
                "F": "happiness", "T": "sadness", "N": "neutral"}
RAVDESS_LABELS = {"01": "neutral", "02": "calm", "03": "happiness", "04": "sadness",
                  "05": "anger", "06": "fear", "07": "disgust", "08": "surprise"}
BANGLASER_LABELS = {"01": "happiness", "02": "sadness", "03": "anger", "04": "surprise", "05": "neutral"}
SCHEMES = ("auto", "emodb", "ravdess", "banglaser", "manifest", "folders")
# the labels file names can carry: a folder named one of these is a label folder, other folders are not
LABEL_WORDS = frozenset(EMODB_LABELS.values()) | frozenset(RAVDESS_LABELS.values()) | \
    frozenset(BANGLASER_LABELS.values())
UNKNOWN_SPEAKER = "unknown"

_EMODB = re.compile(r"^(\d{2})([a-z]\d{2})([WLEAFTN])([a-z])$")
_RAVDESS = re.compile(r"^(\d{2})-(\d{2})-(\d{2})-(\d{2})-(\d{2})-(\d{2})-(\d{2})$")
_MAX_EXAMPLES = 3


@dataclass
class Item:
    path: Path
    label: str
    speaker: str
    text: str | None = None   # what is said (a manifest's text column): trains a bundle's alignment head


@dataclass
class Corpus:
    """Items sorted by path; `labels` are the sorted distinct labels of the items."""
    items: list[Item]
    labels: list[str]
    name: str
    scheme: str = ""
    skipped: Counter = field(default_factory=Counter)
    examples: dict[str, list[str]] = field(default_factory=dict)  # reason -> a few skipped paths

    @property
    def speakers(self) -> list[str]:
        return sorted({it.speaker for it in self.items})

    def targets(self) -> np.ndarray:
        """Label index (into `labels`) of every item."""
        index = {lab: i for i, lab in enumerate(self.labels)}
        return np.array([index[it.label] for it in self.items], dtype=np.int64)

    def skip(self, reason: str, path: Path | str) -> None:
        self.skipped[reason] += 1
        examples = self.examples.setdefault(reason, [])
        if len(examples) < _MAX_EXAMPLES:
            examples.append(str(path))

    def skip_summary(self) -> str:
        """One line, e.g. "skipped 3 of 540: 2 missing file, 1 silent"."""
        n = sum(self.skipped.values())
        line = f"skipped {n} of {len(self.items) + n}"
        if n:
            line += ": " + ", ".join(f"{c} {r}" for r, c in self.skipped.most_common())
        return line


@dataclass
class Fold:
    """Indices into the item list; no speaker is in both `train` and `test`."""
    train: np.ndarray
    test: np.ndarray
    test_speakers: list[str]


MANIFEST_NAMES = ("manifest.csv", "manifest.tsv")


def _audio_files(root: Path) -> list[Path]:
    """Audio files under ``root``, hidden files and folders excepted, sorted."""
    return sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in AUDIO_SUFFIXES
                  and not any(part.startswith(".") for part in p.relative_to(root).parts))


def _pick_ravdess_scheme(files: list[Path]) -> str:
    fields = [_RAVDESS.match(p.stem).groups() for p in files]
    if any(int(f[2]) > 5 for f in fields):
        return "ravdess"
    if any(f[4] == "03" or f[5] == "03" or int(f[6]) > 24 for f in fields):
        return "banglaser"
    raise DatasetError("the RAVDESS-style file names fit both RAVDESS and BanglaSER emotion codes; "
                       "pass scheme='ravdess' or scheme='banglaser'")


def _detect(path: Path, files: list[Path]) -> str:
    if path.is_file():
        return "manifest"
    if all(_EMODB.match(p.stem) for p in files):
        return "emodb"
    if all(_RAVDESS.match(p.stem) for p in files):
        return _pick_ravdess_scheme(files)
    if all(p.parent != path for p in files):
        return "folders"
    raise DatasetError(f"{path}: cannot tell how the audio files are labelled (names are neither EmoDB nor "
                       "RAVDESS-style); put them in one folder per label or list them in a CSV manifest "
                       "with columns path,label,speaker")


def _parse_name(stem: str, scheme: str) -> tuple[str, str] | None:
    """(label, speaker) from a file name, or None when it does not fit `scheme`."""
    if scheme == "emodb":
        m = _EMODB.match(stem)
        return (EMODB_LABELS[m.group(3)], m.group(1)) if m else None
    m = _RAVDESS.match(stem)
    codes = RAVDESS_LABELS if scheme == "ravdess" else BANGLASER_LABELS
    if not m or m.group(3) not in codes:
        return None
    return codes[m.group(3)], m.group(7)


def _speaker_from_name(stem: str) -> str:
    if m := _EMODB.match(stem):
        return m.group(1)
    if m := _RAVDESS.match(stem):
        return m.group(7)
    return UNKNOWN_SPEAKER


def _manifest_text(path: Path) -> str:
    data = path.read_bytes()
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError:
        log.warning("%s is not UTF-8; reading it as Latin-1", path)
        return data.decode("latin-1")


def _read_manifest(path: Path, corpus: Corpus) -> None:
    try:
        _read_rows(path, corpus)
    except csv.Error as e:
        raise DatasetError(f"{path}: not a readable CSV/TSV manifest ({e}); check the file") from None


def _read_rows(path: Path, corpus: Corpus) -> None:
    import io

    delimiter = "\t" if path.suffix.lower() == ".tsv" else ","
    with io.StringIO(_manifest_text(path), newline="") as fh:
        reader = csv.DictReader(fh, delimiter=delimiter)
        columns = [c.strip().lower() for c in reader.fieldnames or []]
        if "path" not in columns or "label" not in columns:
            raise DatasetError(f"{path}: the first line must be a header naming the columns "
                               f"path,label[,speaker][,text] (separated by "
                               f"{'tabs' if delimiter == chr(9) else 'commas'}); found {columns}")
        reader.fieldnames = columns
        for row in reader:
            rel, label = (row.get("path") or "").strip(), (row.get("label") or "").strip().lower()
            if not rel:
                corpus.skip("no path", f"{path}:{reader.line_num}")
                continue
            file = Path(rel) if Path(rel).is_absolute() else path.parent / rel
            if not label:
                corpus.skip("no label", file)
            elif not file.is_file():
                corpus.skip("missing file", file)
            else:
                speaker = (row.get("speaker") or "").strip() or UNKNOWN_SPEAKER
                corpus.items.append(Item(file, label, speaker, (row.get("text") or "").strip() or None))


def _check_folder_labels(root: Path, items: list[Item], label_map: dict[str, str]) -> None:
    """A file in a folder named like an emotion (``LABEL_WORDS``) must have that label in its name too (or the
    label its name maps to): a disagreement means the user meant the folders. Files at the root or in other
    folders are not checked."""
    for it in items:
        parts = it.path.relative_to(root).parts
        folder = parts[0].strip().lower() if len(parts) > 1 else None
        if folder in LABEL_WORDS and folder not in (it.label, label_map.get(it.label)):
            raise DatasetError(f"{it.path}: its folder says {folder!r} but its file name says {it.label!r}; "
                               "the two label sources disagree: rename the folders, or list the files in a CSV "
                               "manifest (path,label,speaker)")


def parse_label_map(text: str | None) -> dict[str, str]:
    """``FROM=TO[,FROM=TO...]`` -> {FROM: TO}, lower-cased; an empty TO (``FROM=``) drops the label FROM.
    None or an empty string is no map. Raises DatasetError for a malformed map."""
    mapping: dict[str, str] = {}
    if not (text or "").strip():
        return mapping
    for part in text.split(","):
        source, sep, target = part.partition("=")
        source, target = source.strip().lower(), target.strip().lower()
        if not sep or not source or "=" in target:
            raise DatasetError(f"label map {text!r}: {part.strip()!r} is not FROM=TO (or FROM= to drop FROM); "
                               "write e.g. calm=neutral,boredom=")
        if source in mapping:
            raise DatasetError(f"label map {text!r} maps {source!r} twice; give each label once")
        mapping[source] = target
    return mapping


def apply_label_map(corpus: Corpus, label_map: dict[str, str]) -> None:
    """Rename the items' labels by ``label_map`` (FROM -> TO), and drop those mapped to "" (counted skips,
    reason "label 'FROM' dropped"). Not transitive: each label is mapped once."""
    kept = []
    seen = {it.label for it in corpus.items}
    for it in corpus.items:
        target = label_map.get(it.label, it.label)
        if target:
            kept.append(replace(it, label=target))
        else:
            corpus.skip(f"label {it.label!r} dropped", it.path)
    corpus.items = kept
    for source in sorted(set(label_map) - seen):
        log.warning("%s: the label map names %r, but no item has that label (its labels: %s)", corpus.name, source,
                    ", ".join(sorted(seen)))


def drop_other_labels(corpus: Corpus, labels: list[str], reason: str = "not a label of the model") -> None:
    """Move the items whose label is not in ``labels`` to the skipped counts (reason "label 'X' REASON")."""
    known = set(labels)
    for it in corpus.items:
        if it.label not in known:
            corpus.skip(f"label {it.label!r} {reason}", it.path)
    corpus.items = [it for it in corpus.items if it.label in known]
    corpus.labels = sorted({it.label for it in corpus.items})


def load_corpus(path: str | Path, known_labels: list[str] | None = None, scheme: str = "auto",
                label_map: dict[str, str] | str | None = None) -> Corpus:
    """Load a labelled corpus from a folder or a CSV/TSV manifest (see the module docstring).

    ``label_map`` ({FROM: TO}, or its text form for :func:`parse_label_map`) renames labels first; a label mapped
    to "" is dropped (counted skips). Raises DatasetError when nothing usable is found, LabelError when an item's
    label (after the map) is not in `known_labels`.
    """
    path = Path(path)
    if label_map is None or isinstance(label_map, str):
        label_map = parse_label_map(label_map)
    if scheme not in SCHEMES:
        raise DatasetError(f"unknown scheme {scheme!r}; use one of {', '.join(SCHEMES)}")
    if not path.exists():
        raise DatasetError(f"{path}: no such corpus folder or manifest; check the path")
    if path.is_file() and path.suffix.lower() not in (".csv", ".tsv"):
        raise DatasetError(f"{path}: a corpus is a folder of audio or a .csv/.tsv manifest, not a "
                           f"{path.suffix or 'suffix-less'} file")
    if path.is_dir() and scheme in ("auto", "manifest"):
        inner = next((path / n for n in MANIFEST_NAMES if (path / n).is_file()), None)
        if inner is not None:
            log.info("%s: reading the corpus through %s", path, inner.name)
            return load_corpus(inner, known_labels, "manifest", label_map)
    files = [] if path.is_file() else _audio_files(path)
    if path.is_dir() and not files:
        raise DatasetError(f"{path}: no audio files ({', '.join(AUDIO_SUFFIXES)}) in this folder or below; "
                           "point at the folder that holds the recordings")
    if scheme == "auto":
        scheme = _detect(path, files)
    if path.is_file():
        name = path.parent.name if path.stem == "manifest" else path.stem
    else:
        name = path.name
    corpus = Corpus(items=[], labels=[], name=name, scheme=scheme)

    if scheme == "manifest":
        if not path.is_file():
            raise DatasetError(f"{path}: scheme 'manifest' needs a CSV/TSV file, not a folder")
        _read_manifest(path, corpus)
    elif scheme == "folders":
        for f in files:
            parts = f.relative_to(path).parts
            if len(parts) < 2:
                corpus.skip("not in a label folder", f)
                continue
            speaker = parts[1] if len(parts) > 2 else _speaker_from_name(f.stem)
            corpus.items.append(Item(f, parts[0].strip().lower(), speaker))
    else:
        for f in files:
            parsed = _parse_name(f.stem, scheme)
            if parsed is None:
                corpus.skip("unrecognised file name", f)
            else:
                corpus.items.append(Item(f, *parsed))
        _check_folder_labels(path, corpus.items, label_map)
    if label_map:
        apply_label_map(corpus, label_map)

    if not corpus.items:
        raise DatasetError(f"{path}: no usable items ({corpus.skip_summary()}); "
                           "check the paths and labels")
    corpus.items.sort(key=lambda it: str(it.path))
    corpus.labels = sorted({it.label for it in corpus.items})
    if known_labels is not None:
        unknown = sorted(set(corpus.labels) - set(known_labels))
        if unknown:
            raise LabelError(f"{path}: unknown label(s) {', '.join(unknown)}; the known labels are "
                             f"{', '.join(known_labels)}. Fix or drop those items")
    return corpus


def load_waveforms(corpus: Corpus, show_progress: bool = True) -> tuple[list[np.ndarray], Corpus]:
    """Decode every item to float32 mono 16 kHz without its leading and trailing silence (``trim_silence``, as
    ``Recognizer.predict`` does); bad or silent files become counted skips.

    Returns the waveforms and a new Corpus holding only the decoded items (in the same order).
    """
    kept = Corpus(items=[], labels=[], name=corpus.name, scheme=corpus.scheme,
                  skipped=Counter(corpus.skipped), examples={k: list(v) for k, v in corpus.examples.items()})
    waves = []
    for it in progress(corpus.items, description=f"decoding {corpus.name}", enabled=show_progress):
        try:
            x = load_audio(it.path)
        except AudioError as e:
            kept.skip(getattr(e, "reason", "unreadable audio"), it.path)
            continue
        if is_silent(x):
            kept.skip("silent", it.path)
            continue
        waves.append(trim_silence(x))
        kept.items.append(it)
    kept.labels = sorted({it.label for it in kept.items})
    return waves, kept


def _speakers(items: list[Item]) -> np.ndarray:
    speakers = np.array([it.speaker for it in items])
    if len(set(speakers)) < 2:
        raise DatasetError(f"speaker-independent folds need at least two speakers, found {sorted(set(speakers))}; "
                           "give speakers with a 'speaker' manifest column or LABEL/SPEAKER/ folders")
    return speakers


def _fold(speakers: np.ndarray, test_speakers: list[str]) -> Fold:
    is_test = np.isin(speakers, test_speakers)
    return Fold(np.flatnonzero(~is_test), np.flatnonzero(is_test), sorted(test_speakers))


def loso_folds(items: list[Item]) -> list[Fold]:
    """Leave-one-speaker-out: one fold per speaker, in sorted speaker order."""
    speakers = _speakers(items)
    return [_fold(speakers, [s]) for s in sorted(set(speakers))]


def speaker_folds(items: list[Item], k: int, seed: int = 0) -> list[Fold]:
    """k folds, each testing one of k disjoint speaker groups (seeded shuffle of the speakers)."""
    speakers = _speakers(items)
    unique = sorted(set(speakers))
    if not 2 <= k <= len(unique):
        raise DatasetError(f"k={k} speaker folds need 2 <= k <= {len(unique)} (the number of speakers)")
    order = np.random.default_rng(seed).permutation(len(unique))
    return [_fold(speakers, [unique[i] for i in group]) for group in np.array_split(order, k)]


def heldout_split(items: list[Item], test_speakers: int | list[str], seed: int = 0) -> Fold:
    """One fixed train/test split: `test_speakers` is a count (seeded pick) or explicit speaker names."""
    speakers = _speakers(items)
    unique = sorted(set(speakers))
    if isinstance(test_speakers, (int, np.integer)):
        if not 1 <= test_speakers < len(unique):
            raise DatasetError(f"cannot hold out {test_speakers} of {len(unique)} speakers; "
                               f"choose 1 to {len(unique) - 1}")
        rng = np.random.default_rng(seed)
        test_speakers = [unique[i] for i in rng.permutation(len(unique))[:test_speakers]]
    test_speakers = [str(s) for s in test_speakers]
    missing = sorted(set(test_speakers) - set(unique))
    if missing:
        raise DatasetError(f"test speaker(s) {', '.join(missing)} not in the corpus; its speakers are "
                           f"{', '.join(unique)}")
    if set(test_speakers) >= set(unique) or not test_speakers:
        raise DatasetError("a held-out split needs at least one speaker in train and one in test")
    return _fold(speakers, test_speakers)
