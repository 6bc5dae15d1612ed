"""Score bundle variants on labelled audio through the runtime itself (the same path `edge-ser run` takes)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
from rich.progress import track

from .bundle import Bundle, load_bundle
from .metrics import scores


def evaluate_waves(bundle: Bundle, waves: list[np.ndarray], labels: list[str], variants=None,
                   backend: str = "onnxruntime", threads: int | None = None, progress: bool = True) -> dict:
    """{"variants": {NAME: {"ua", "wa", "f1", "n"}}} for 16 kHz clips with known labels.

    IR variants always run on OpenVINO; ONNX variants on ``backend``.
    """
    from .recognizer import Recognizer

    index = {label: i for i, label in enumerate(bundle.labels)}
    y = [index[label] for label in labels]
    result = {}
    for name in variants or list(bundle.variants):
        v = bundle.variant(name)
        rec = Recognizer(bundle, variant=name, backend="openvino" if v.format == "openvino" else backend,
                         threads=threads)
        pred = [index[rec.predict(w).label] for w in
                track(waves, description=f"scoring {name}", transient=True, disable=not progress)]
        result[name] = scores(y, pred, len(bundle.labels))
    return {"variants": result}


def evaluate_bundle(path, data, variants=None, backend: str = "onnxruntime", threads: int | None = None) -> dict:
    """Score a bundle on any labelled corpus; a label the bundle does not know is a LabelError."""
    from .data import load_corpus, load_waveforms

    bundle = load_bundle(path)
    corpus = load_corpus(Path(data), known_labels=bundle.labels)
    waves, corpus = load_waveforms(corpus)
    return evaluate_waves(bundle, waves, [it.label for it in corpus.items], variants, backend, threads)
