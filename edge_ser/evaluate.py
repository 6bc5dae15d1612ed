"""Score bundle variants on labelled audio through the runtime itself (the same path `edge-ser run` takes)."""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from .bundle import Bundle, load_bundle
from .errors import DatasetError
from .metrics import scores
from .progress import progress

log = logging.getLogger(__name__)


def evaluate_waves(bundle: Bundle, waves: list[np.ndarray], labels: list[str], variants=None,
                   backend: str | None = None, threads: int | None = None, show_progress: bool = True) -> dict:
    """{"variants": {NAME: {"ua", "wa", "f1", "n"}}} for 16 kHz clips with known labels.

    IR variants always run on OpenVINO; ONNX variants on ``backend`` (ONNX Runtime by default).
    """
    from .recognizer import Recognizer

    if not waves:
        raise DatasetError("no clips to score")
    index = {label: i for i, label in enumerate(bundle.labels)}
    y = [index[label] for label in labels]
    result = {}
    for name in variants or list(bundle.variants):
        _, v = bundle.variant(name)
        rec = Recognizer(bundle, variant=name, backend=None if v.format == "openvino" else backend, threads=threads)
        pred = [index[rec.predict(w).label] for w in
                progress(waves, description=f"scoring {name}", transient=True, enabled=show_progress)]
        result[name] = scores(y, pred, len(bundle.labels))
    return {"variants": result}


def evaluate_bundle(path, data, variants=None, backend: str | None = None, threads: int | None = None) -> dict:
    """Score a bundle on any labelled corpus; a label the bundle does not know is a LabelError."""
    from .data import load_corpus, load_waveforms

    bundle = load_bundle(path)
    for name in variants or []:
        bundle.variant(name)   # an unknown name fails before decoding
    corpus = load_corpus(Path(data), known_labels=bundle.labels)
    waves, corpus = load_waveforms(corpus)
    log.info("%s: %s", corpus.name, corpus.skip_summary())
    seen = bundle.trained_speakers
    overlap = sum(it.speaker in seen for it in corpus.items)
    if overlap:
        log.warning("%d of %d clips are of speakers the bundle learned from: their scores are optimistic; score "
                    "it on other speakers", overlap, len(corpus.items))
    if not waves:
        raise DatasetError(f"{data}: none of the clips could be scored ({corpus.skip_summary()})")
    return evaluate_waves(bundle, waves, [it.label for it in corpus.items], variants, backend, threads)
