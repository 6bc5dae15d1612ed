"""Peers for `edge-ser bench` (entry points ``edge_ser.bench_peers``): what a user would otherwise run.

- ``reference``: a torch teacher the user names (``edge-ser bench --reference whisper-tiny.en``) with a head
  of the bundle's shape; never the teacher named in a manifest (a bundle must not make the bench load code or
  weights from elsewhere).
- ``wav2vec2-base``: the architecture of facebook/wav2vec2-base in torch fp32 with mean pooling and a linear
  layer, as most SER toolkits run it. Random weights (nothing is downloaded): a speed row only.
- ``egemaps``: openSMILE's eGeMAPS v02 functionals through its Python API, and, where the bench has
  training speakers, the accuracy of eGeMAPS + the same linear head on the same held-out speakers.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from edge_ser.audio import SAMPLE_RATE
from edge_ser.bench.peers import Peer, Split
from edge_ser.errors import EdgeSerError
from edge_ser.metrics import scores


def _set_torch_threads(threads: int) -> None:
    import torch
    torch.set_num_threads(threads)


def _torch_runner(model):
    import torch

    def run(x: np.ndarray):
        with torch.inference_mode():
            return model(torch.from_numpy(x))
    return run


def _megabytes(model) -> float:
    return sum(p.numel() * p.element_size() for p in model.parameters()) / 1e6


def reference(bundle, teacher: str) -> Peer:
    """The torch fp32 teacher ``teacher`` + a linear head of the bundle's shape (timing; accuracy from export)."""
    import torch

    from .heads import EmotionModel, fit_head
    from .teachers import load_teacher

    encoder = load_teacher(teacher).eval()
    n = len(bundle.labels)
    features = torch.randn(2 * n, encoder.n_layers, 2 * encoder.dim, generator=torch.Generator().manual_seed(0))
    head = fit_head("linear", features, np.arange(2 * n) % n, n, l2=1.0, layers=-1)   # only its shape matters
    model = EmotionModel(encoder, head).eval()
    m = bundle.manifest
    same = m.teacher is not None and m.teacher.name == encoder.name and m.evaluation and m.evaluation.torch_teacher

    def accuracy(split: Split) -> dict:
        if not (same and split.heldout):
            raise EdgeSerError("the torch teacher's accuracy is known only for the bundle's own teacher on its "
                               "held-out speakers")
        return vars(m.evaluation.torch_teacher)
    shown = Path(encoder.name).name if Path(encoder.name).exists() else encoder.name   # no local paths in reports
    return Peer(f"{shown} (torch teacher)", "torch", "fp32", run=_torch_runner(model),
                set_threads=_set_torch_threads, size_mb=_megabytes(model),
                macs_per_s=m.teacher.macs_per_s if same else None, accuracy=accuracy if same else None,
                note="a head of the bundle's shape with random weights for timing; its accuracy is the export-time "
                     "torch teacher's on the held-out speakers")


def wav2vec2_base(bundle) -> Peer:
    """facebook/wav2vec2-base's architecture (12 blocks x 768), random weights, mean pooling + linear."""
    import torch
    import transformers

    class Model(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.encoder = transformers.Wav2Vec2Model(transformers.Wav2Vec2Config())
            self.head = torch.nn.Linear(768, len(bundle.labels))

        def forward(self, audio):
            return torch.softmax(self.head(self.encoder(audio).last_hidden_state.mean(1)), -1)

    torch.manual_seed(0)
    model = Model().eval()
    return Peer("wav2vec2-base (random weights)", "torch", "fp32", run=_torch_runner(model),
                set_threads=_set_torch_threads, size_mb=_megabytes(model),
                note="the facebook/wav2vec2-base architecture with random weights: speed and memory only, no accuracy")


def egemaps(bundle) -> Peer:
    """openSMILE eGeMAPS v02 functionals (88 features per clip) and, for accuracy, the bundle's head kind."""
    import opensmile

    smile = opensmile.Smile(feature_set=opensmile.FeatureSet.eGeMAPSv02,
                            feature_level=opensmile.FeatureLevel.Functionals)

    def run(x: np.ndarray):
        return smile.process_signal(x[0], SAMPLE_RATE)

    def accuracy(split: Split) -> dict:
        from .features import egemaps as features
        from .heads import fit_head, predict

        if not split.train:
            raise EdgeSerError("eGeMAPS accuracy needs training speakers: pass --data holding the bundle's "
                               "held-out speakers and others")
        index = {label: i for i, label in enumerate(split.labels)}
        x_train = np.stack([features(w) for w in split.train])
        x_test = np.stack([features(w) for w in split.test])
        y_train = np.array([index[label] for label in split.train_labels])
        head = fit_head("linear", x_train, y_train, len(split.labels), groups=split.train_groups)
        pred = predict(head, x_test).argmax(1)
        return scores([index[label] for label in split.test_labels], pred, len(split.labels))
    return Peer("openSMILE eGeMAPS + linear", "opensmile", "fp32", run=run, set_threads=lambda threads: None,
                note="eGeMAPS v02 functionals through openSMILE's Python API (one thread whatever the setting); its "
                     "accuracy is a linear head fit on the --data speakers that are not held out",
                accuracy=accuracy)
