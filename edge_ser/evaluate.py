"""Score bundle variants on labelled audio through the runtime itself (the same path `edge-ser run` takes)."""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from .audio import SAMPLE_RATE
from .bundle import Bundle, load_bundle
from .errors import DatasetError, EdgeSerError, LabelError
from .metrics import ece, recalls, scores
from .progress import progress

log = logging.getLogger(__name__)


def evaluate_waves(bundle: Bundle, waves: list[np.ndarray], labels: list[str], variants=None,
                   backend: str | None = None, threads: int | None = None, show_progress: bool = True) -> dict:
    """{"variants": {NAME: {"ua", "wa", "f1", "n", "ece", "recall"}}} for 16 kHz clips with known labels (ECE: the
    expected calibration error of the probabilities; recall: per label).

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
        rec = Recognizer(bundle, variant=name, backend=None if v.format == "openvino" else backend, threads=threads,
                         vad="energy")   # predict() uses no VAD: the one that needs nothing loaded
        probs = np.array([[rec.predict(w, SAMPLE_RATE).probs[lab] for lab in bundle.labels] for w in
                          progress(waves, description=f"scoring {name}", transient=True, enabled=show_progress)])
        pred = probs.argmax(1)
        result[name] = {**scores(y, pred, len(bundle.labels)), "ece": ece(probs, np.array(y)),
                        "recall": recalls(y, pred, bundle.labels)}
    return {"variants": result}


def runnable_variants(bundle: Bundle, backend: str | None = None) -> tuple[list[str], dict[str, str]]:
    """The variants the installed engines can run (IR on OpenVINO, ONNX on ``backend``, ONNX Runtime by default),
    and {name: what it needs} for the others."""
    from .engine import backend_for
    from .targets import installed_backends

    installed, run, skipped = installed_backends(), [], {}
    for name, v in bundle.variants.items():
        needs = backend_for(v, None if v.format == "openvino" else backend)
        if needs in installed:
            run.append(name)
        else:
            skipped[name] = f"needs {needs} (pip install edge-ser[{needs}])"
    return run, skipped


def evaluate_bundle(path, data, variants=None, backend: str | None = None, threads: int | None = None,
                    label_map: dict[str, str] | str | None = None) -> dict:
    """Score a bundle on any labelled corpus.

    ``label_map`` renames or drops labels first (:func:`edge_ser.data.parse_label_map`); items whose label the
    bundle does not know are left out, counted and named in the log (a LabelError when none is left). Without
    ``variants``, every variant an installed engine can run is scored, and the others are named in the log
    (an EdgeSerError when none can run).
    """
    from .data import drop_other_labels, load_corpus, load_waveforms

    bundle = load_bundle(path)
    for name in variants or []:
        bundle.variant(name)   # an unknown name fails before decoding
    if not variants:
        variants, skipped = runnable_variants(bundle, backend)
        for name, why in skipped.items():
            log.warning("not scoring variant %s: it %s", name, why)
        if not variants:
            raise EdgeSerError(f"no variant of {path} runs with the engines installed here "
                               f"({'; '.join(f'{n} {w}' for n, w in skipped.items())})")
    corpus = load_corpus(Path(data), label_map=label_map)
    found = corpus.labels
    drop_other_labels(corpus, bundle.labels, "unknown to the model")
    if not corpus.items:
        raise LabelError(f"{data}: none of its labels ({', '.join(found)}) is one the model knows "
                         f"({', '.join(bundle.labels)}); map them with --label-map FROM=TO[,FROM=TO...]")
    waves, corpus = load_waveforms(corpus)
    (log.warning if corpus.skipped else log.info)("%s: %s", corpus.name, corpus.skip_summary())
    seen = bundle.trained_speakers
    overlap = sum(it.speaker in seen for it in corpus.items)
    if overlap:
        log.warning("%d of %d clips are of speakers the bundle learned from: their scores are optimistic; score "
                    "it on other speakers", overlap, len(corpus.items))
    if not waves:
        raise DatasetError(f"{data}: none of the clips could be scored ({corpus.skip_summary()})")
    return evaluate_waves(bundle, waves, [it.label for it in corpus.items], variants, backend, threads)
