"""``edge-ser adapt``: a new head for a bundle's encoder, fit on a few labelled clips, on the device (numpy only).

The clips are embedded with one variant of the base bundle (what ``--variant auto`` picks), a calibrated linear
head is fit on the embeddings (:func:`edge_ser.head.fit_linear`: penalty by speaker-grouped folds with enough
speakers, a robust default below; with one speaker a clip-level estimate, labelled as not speaker-independent),
and a new bundle is written: the same encoder files (byte for byte) of every variant that shares that
variant's embedding, the new head, and a manifest recording the base bundle (by id), the data (names and
counts, no paths) and the cross-validated estimate with its spread.
"""
from __future__ import annotations

import copy
import hashlib
import os
from collections import Counter
from dataclasses import replace
from pathlib import Path

import numpy as np

from . import audio, manifest as mf
from .bundle import Bundle, atomic_directory, check_out, write_bundle
from .errors import DatasetError
from .head import UNSURE_BELOW, fit_linear
from .progress import progress

HEAD_FILE = "head-adapted.npz"


def embed_clips(recognizer, clips: list[np.ndarray], show_progress: bool = True) -> np.ndarray:
    """The embedding of each 16 kHz clip (trimmed of silence, averaged over its windows) ``[clips, dim]``."""
    return np.stack([recognizer.embed(audio.trim_silence(x, sr=recognizer.sample_rate))
                     for x in progress(clips, total=len(clips), description="embedding clips", enabled=show_progress)])


def check_names(values: list, what: str) -> None:
    """Each label (or speaker) of the clips is a name a manifest can hold: a non-empty string of at most
    ``MAX_NAME`` characters."""
    bad = next((i for i, v in enumerate(values) if not isinstance(v, str) or not v.strip() or len(v) > mf.MAX_NAME),
               None)
    if bad is not None:
        raise DatasetError(f"the {what} of clip {bad}, {values[bad]!r:.60}, is not a usable name: give each clip's "
                           f"{what} as a non-empty string of at most {mf.MAX_NAME} characters")


def adapt(recognizer, clips: list[np.ndarray], labels: list[str], speakers: list[str] | None = None,
          corpus: str = "clips", skipped: dict[str, int] | None = None, show_progress: bool = False):
    """A recognizer with a new head fit on ``clips`` (16 kHz float arrays) and their ``labels`` (any label set);
    ``speakers`` (one per clip) makes the estimate speaker-independent. Returns (recognizer, fit report)."""
    if len(clips) != len(labels) or (speakers is not None and len(speakers) != len(labels)):
        raise DatasetError(f"adapt needs one label (and one speaker, if given) per clip: {len(clips)} clips, "
                           f"{len(labels)} labels" + (f", {len(speakers)} speakers" if speakers is not None else ""))
    check_names(labels, "label")
    check_names(speakers or [], "speaker")
    names = sorted(set(labels))
    if len(names) > mf.MAX_LABELS:
        raise DatasetError(f"adapt takes at most {mf.MAX_LABELS} labels, not {len(names)}")
    counts = Counter(labels)
    if len(names) < 2 or min(counts.values()) < 2:
        raise DatasetError(f"adapt needs at least 2 labels with at least 2 clips each; got "
                           f"{', '.join(f'{k} {v}' for k, v in sorted(counts.items())) or 'no clips'}")
    base = recognizer.bundle
    x = embed_clips(recognizer, clips, show_progress)
    head, report = fit_linear(x, np.array([names.index(lab) for lab in labels]), len(names), speakers)
    data = head.to_bytes()
    old = base.manifest
    spec = old.heads[recognizer.engine.variant.head]
    kept = {n: v for n, v in old.variants.items() if v.head == recognizer.engine.variant.head}
    # their held-out metrics and parity were measured through the old head
    variants = {n: replace(v, head="adapted", metrics=None, parity=None) for n, v in kept.items()}
    files = {f: old.files[f] for v in kept.values() for f in v.files}
    files[HEAD_FILE] = mf.FileEntry(hashlib.sha256(data).hexdigest(), len(data))
    n_speakers = len(set(speakers)) if speakers is not None else 1
    licences = old.data.licences if old.data else {}
    manifest = replace(
        old, labels=names, variants=variants, files=files, default_variant=recognizer.variant,
        heads={"adapted": mf.Head(file=HEAD_FILE, dim=head.dim, inputs=spec.inputs, fit=report.summary(),
                                  temperature=report.temperature, ece=report.ece, unsure_below=UNSURE_BELOW)},
        data=mf.Data(corpus=corpus[:mf.MAX_NAME], clips=len(clips), speakers=n_speakers,
                     label_counts=dict(sorted(counts.items())),
                     trained_speakers=sorted(set(speakers)) if speakers is not None else [],
                     skipped=dict(skipped or {}), licences=dict(licences),
                     notes=[f"the encoder files are those of bundle {base.id} (learned from "
                            f"{old.data.corpus if old.data else 'unknown data'}); only the head was fit here"]),
        evaluation=mf.Evaluation(protocol=f"{report.protocol}, out-of-fold predictions of the head on the "
                                          f"{recognizer.variant} embeddings",
                                 shipped=f"the shipped head is refit on all {len(clips)} clips"),
        adapted=mf.Adapted(base=base.id, base_labels=list(old.labels), variant=recognizer.variant, ua=report.ua,
                           ua_spread=report.ua_spread, protocol=report.protocol,
                           speaker_independent=report.speaker_independent),
        export=None, fusion=None)   # the alignment head learned the old labels
    manifest.check_written()
    new = copy.copy(recognizer)
    new.bundle = Bundle(base.path, manifest)
    new.labels, new.aligned = names, None
    new.engine = replace(recognizer.engine, bundle=new.bundle, variant=variants[recognizer.variant], head=head)
    return new, report


def save(recognizer, out: str | os.PathLike, overwrite: bool = False) -> mf.Manifest:
    """Write an adapted recognizer's bundle at ``out`` atomically: the encoder files read (checked) from its base
    bundle, its head, the manifest and a model card."""
    bundle, out = recognizer.bundle, Path(out)
    check_out(out, overwrite)
    with atomic_directory(out, overwrite) as tmp:
        for name in bundle.manifest.files:
            (tmp / name).write_bytes(recognizer.engine.head.to_bytes() if name == HEAD_FILE else bundle.read(name))
        return write_bundle(tmp, bundle.manifest)
