"""scripts/upgrade_bundle.py: a schema-2 bundle (each graph ends in its own head) becomes schema 3 with the same
probabilities, float and int8."""
from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
from torch import nn  # noqa: E402

from edge_ser.bundle import load_bundle, sha256_file  # noqa: E402
from edge_ser.engine import load_graph, read_graph  # noqa: E402
from edge_ser.recognizer import Recognizer  # noqa: E402
from edge_ser_export import graph  # noqa: E402

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "upgrade_bundle.py"


class Norm(nn.Module):
    def __init__(self, layers: int, dim: int):
        super().__init__()
        self.register_buffer("mean", torch.randn(layers, dim))
        self.register_buffer("scale", torch.rand(layers, dim) + 0.5)


class Head(nn.Module):   # the schema-2 linear head, named as edge-ser 0.2 named it
    def __init__(self, layers: int, dim: int, classes: int):
        super().__init__()
        self.norm = Norm(layers, dim)
        self.register_buffer("layers", torch.tensor([0, 2]))
        self.linear = nn.Linear(2 * dim, classes)

    def forward(self, x):
        return self.linear(((x - self.norm.mean) / self.norm.scale).index_select(1, self.layers).flatten(1))


class Old(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv1d(1, 8, 400, stride=160)
        self.head = Head(3, 16, 4)

    def forward(self, audio):
        frames = torch.stack([self.conv(audio[:, None]) * k for k in (1.0, 0.5, -1.0)], 1).transpose(2, 3)  # [B,L,T,8]
        pooled = torch.cat([frames.mean(2), frames.std(2)], -1)
        return torch.softmax(self.head(pooled), -1)


def test_a_schema_2_bundle_keeps_its_probabilities(tmp_path):
    spec = importlib.util.spec_from_file_location("upgrade_bundle", SCRIPT)
    upgrade = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(upgrade)
    torch.manual_seed(0)
    old = tmp_path / "old"
    fp32 = graph.export_onnx(Old().eval(), old / "fp32.onnx")
    graph.quantize_dynamic_onnx(fp32, old / "int8.onnx", signed_weights=False, nodes_to_exclude=())
    variants = {n: {"files": [f"{n}.onnx"], "format": "onnx", "precision": n, "model": "student"}
                for n in ("fp32", "int8")}
    doc = {"schema_version": 2, "labels": ["a", "b", "c", "d"], "input": {"window_s": 2.0, "hop_s": 1.0},
           "variants": variants, "default_variant": "fp32", "head": {"kind": "linear", "inputs": "layers 0, 2"},
           "files": {f.name: {"sha256": sha256_file(f), "bytes": f.stat().st_size} for f in old.glob("*.onnx")}}
    (old / "edge-ser.json").write_text(json.dumps(doc))
    upgrade.upgrade(old, tmp_path / "new")
    new = load_bundle(tmp_path / "new")
    assert new.manifest.schema_version == 3 and set(new.manifest.heads) == {"student"}
    x = (0.1 * np.random.default_rng(0).standard_normal((2, 24000))).astype(np.float32)
    for name in variants:
        before = load_graph(read_graph(old / f"{name}.onnx"))(x)
        after = Recognizer(new, variant=name).engine.run(x)
        np.testing.assert_allclose(after, before, atol=2e-3 if name == "int8" else 1e-5)
