"""CLI surface, bundle contract (schema, checksums, atomic writes) and metrics."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from edge_ser.bundle import MANIFEST, atomic_directory, load_bundle, write_manifest
from edge_ser.errors import BundleError
from edge_ser.metrics import confusion, scores

COMMANDS = ["export", "run", "eval", "bench", "info"]


def cli(*args):
    return subprocess.run([sys.executable, "-m", "edge_ser.cli", *args], capture_output=True, text=True,
                          env={**os.environ, "COLUMNS": "200"})


def test_help_lists_every_command():
    r = cli("--help")
    assert r.returncode == 0
    for c in COMMANDS:
        assert c in r.stdout


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_has_real_help(command):
    r = cli(command, "--help")
    assert r.returncode == 0 and "--help" in r.stdout and "Usage" in r.stdout
    assert "not implemented" not in r.stdout.lower()


def fake_bundle(root):
    (root / "m.onnx").write_bytes(b"graph bytes")
    return write_manifest(root, {
        "labels": ["anger", "neutral"], "sample_rate": 16000, "window_s": 2.0, "hop_s": 1.0,
        "min_input_s": 0.25, "max_input_s": 30.0, "default_variant": "fp32",
        "variants": {"fp32": {"files": ["m.onnx"], "format": "onnx", "precision": "fp32", "model": "student",
                              "metrics": {"ua": 0.5, "wa": 0.5, "f1": 0.5, "n": 4}}}})


def test_manifest_roundtrip_and_info_table(tmp_path):
    fake_bundle(tmp_path)
    b = load_bundle(tmp_path)
    assert b.labels == ["anger", "neutral"] and b.variant().name == "fp32"
    assert "fp32" in (tmp_path / "MODEL_CARD.md").read_text()
    r = cli("info", str(tmp_path))
    assert r.returncode == 0 and "anger, neutral" in r.stdout and "m.onnx" in r.stdout


def test_unknown_variant_lists_known(tmp_path):
    fake_bundle(tmp_path)
    with pytest.raises(BundleError, match="has: fp32"):
        load_bundle(tmp_path).variant("int4")


@pytest.mark.parametrize("mutate, message", [
    (lambda d: (d / "m.onnx").write_bytes(b"graph bytez"), "SHA-256"),
    (lambda d: (d / "m.onnx").unlink(), "missing"),
    (lambda d: (d / MANIFEST).write_text(json.dumps({**json.loads((d / MANIFEST).read_text()),
                                                       "schema_version": 99})), "schema_version 99"),
    (lambda d: (d / MANIFEST).write_text("{not json"), "not valid JSON"),
    (lambda d: (d / MANIFEST).unlink(), "not an edge-ser bundle"),
])
def test_bad_bundles_are_refused(tmp_path, mutate, message):
    fake_bundle(tmp_path)
    mutate(tmp_path)
    with pytest.raises(BundleError, match=message):
        load_bundle(tmp_path)
    r = cli("info", str(tmp_path))
    assert r.returncode == 2 and "error:" in r.stderr and "Traceback" not in r.stderr


def test_atomic_directory_removes_partial_output(tmp_path):
    out = tmp_path / "bundle"
    with pytest.raises(RuntimeError):
        with atomic_directory(out) as tmp:
            (tmp / "half.onnx").write_bytes(b"x")
            raise RuntimeError("boom")
    assert list(tmp_path.iterdir()) == []
    with atomic_directory(out) as tmp:
        (tmp / "whole.onnx").write_bytes(b"x")
    assert [p.name for p in tmp_path.iterdir()] == ["bundle"] and (out / "whole.onnx").exists()
    with pytest.raises(BundleError, match="already exists"):
        with atomic_directory(out):
            pass


def test_scores_against_hand_computed_values():
    y_true = [0, 0, 0, 0, 1, 1, 2, 2]
    y_pred = [0, 0, 0, 1, 1, 0, 2, 1]
    s = scores(y_true, y_pred, 3)
    # recalls 3/4, 1/2, 1/2 ; precisions 3/4, 1/3, 1 ; F1s 3/4, 2/5, 2/3
    assert s["ua"] == pytest.approx((0.75 + 0.5 + 0.5) / 3)
    assert s["wa"] == pytest.approx(5 / 8)
    assert s["f1"] == pytest.approx((0.75 + 0.4 + 2 / 3) / 3)
    assert s["n"] == 8
    assert confusion(y_true, y_pred, 3).tolist() == [[3, 1, 0], [1, 1, 0], [0, 1, 1]]


def test_scores_ignore_absent_classes():
    assert scores([0, 0], [0, 1], 3)["ua"] == pytest.approx(0.5)
    assert np.isnan(scores([], [], 3)["ua"])
