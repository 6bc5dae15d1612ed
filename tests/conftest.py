"""Shared fixtures: a tiny bundle from a committed 2 kB ONNX graph (no torch, no onnx package needed).

``tests/fixtures/tiny.onnx`` maps audio[B, N] -> embedding[B, 1], the mean framewise log-power; the bundle's head
(:func:`tiny_head`) makes it probs[B, 3]: loud audio (RMS above ~0.14) is ``anger``, quiet audio (RMS under ~0.02)
``sadness``, in between ``neutral``. It needs at least 400 samples. ``tests/toolchain/test_graph.py`` rebuilds it
with onnx.helper and checks that the committed bytes are what that code makes.
"""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest

TINY_LABELS = ["anger", "neutral", "sadness"]
FIXTURES = Path(__file__).resolve().parent / "fixtures"
REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"


def speechlike(seconds: float, amp: float, f0: float = 180.0, sr: int = 16000, seed: int = 0):
    """A voiced, speech-like sound: harmonics of a wobbling pitch under a syllable-rate envelope, as loud (RMS) as
    a sine of peak ``amp``.

    Energy sits in the speech band (harmonics up to 8 x f0) and rises and falls by about 14 dB four times a second,
    as syllables do; a steady pure tone is, rightly, not speech to the energy VAD.
    """
    import numpy as np

    t = np.arange(round(seconds * sr)) / sr
    phase = 2 * np.pi * np.cumsum(f0 * (1 + 0.05 * np.sin(2 * np.pi * 3 * t + seed))) / sr
    x = sum(np.sin(k * phase) / k for k in range(1, 9))
    x = x * (0.6 + 0.4 * np.sin(2 * np.pi * 4 * t + seed))
    return np.clip(x * amp / np.sqrt(2 * np.mean(x * x)), -1.0, 1.0).astype(np.float32)


def tiny_head():
    """The tiny bundle's head: logits (e, 0, -e) + (4, 0, -8) of the log-power e."""
    import numpy as np

    from edge_ser.head import LinearHead

    return LinearHead(np.zeros(1), np.ones(1), np.array([[1.0], [0.0], [-1.0]]), np.array([4.0, 0.0, -8.0]))


def make_tiny_bundle(out: Path, openvino: bool = True, **manifest_fields) -> Path:
    """A bundle in ``out``: variant ``fp32`` (ONNX, default) and ``ov-fp32`` (OpenVINO IR, if openvino imports)."""
    from edge_ser import manifest as mf
    from edge_ser.bundle import write_bundle

    out.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(FIXTURES / "tiny.onnx", out / "model.onnx")
    (out / "head.npz").write_bytes(tiny_head().to_bytes())
    variants = {"fp32": mf.Variant(files=["model.onnx"], format="onnx", precision="fp32", model="student",
                                   head="student", metrics=mf.Metrics(ua=0.9, wa=0.9, f1=0.9, n=30))}
    if openvino:
        try:
            from edge_ser.engine import import_openvino
            ov = import_openvino()
        except Exception:
            ov = None
        if ov is not None:
            ov.save_model(ov.convert_model(str(out / "model.onnx")), str(out / "model.xml"), compress_to_fp16=False)
            variants["ov-fp32"] = mf.Variant(files=["model.xml", "model.bin"], format="openvino", precision="fp32",
                                             model="student", head="student",
                                             metrics=mf.Metrics(ua=0.9, wa=0.9, f1=0.9, n=30))
    manifest = mf.Manifest(labels=list(TINY_LABELS), input=mf.Input(window_s=2.0, hop_s=1.0), variants=variants,
                           default_variant="fp32",
                           heads={"student": mf.Head(file="head.npz", dim=1, inputs="mean log-power")},
                           teacher=mf.Teacher(name="none (test graph)", family="none", blocks=1, dim=1),
                           student=mf.Student(blocks=1, dim=1, summary="log-power + linear"), **manifest_fields)
    write_bundle(out, manifest)
    return out


@pytest.fixture(scope="session")
def tiny_bundle(tmp_path_factory):
    return make_tiny_bundle(tmp_path_factory.mktemp("tiny-bundle"))


@pytest.fixture
def bundle_copy(tiny_bundle, tmp_path):
    """A private copy of the tiny bundle, free to tamper with."""
    return Path(shutil.copytree(tiny_bundle, tmp_path / "bundle"))
