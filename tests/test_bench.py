"""`edge-ser bench` end to end on the tiny bundle: every output written, right columns, ratios to the reference."""
import csv
import json
import shutil

import numpy as np
import pytest
import soundfile as sf

from edge_ser import bench
from edge_ser.bundle import MANIFEST, load_bundle

TEACHER_ACC = {"ua": 0.5, "wa": 0.55, "f1": 0.45, "n": 6}


def tiny_corpus(root):
    """2 speakers x 3 labels x 2 clips; loudness decides the tiny graph's label (see conftest.tiny_graph)."""
    rng = np.random.default_rng(0)
    rows = ["path,label,speaker"]
    for s in ("s1", "s2"):
        for label, amp in (("anger", 0.5), ("neutral", 0.06), ("sadness", 0.005)):
            for i in range(2):
                n = int(16000 * rng.uniform(0.8, 3.0))
                t = np.arange(n) / 16000
                x = amp * np.sin(2 * np.pi * 200 * t) + 0.1 * amp * rng.standard_normal(n)
                sf.write(root / f"{s}_{label}_{i}.wav", x.astype(np.float32), 16000)
                rows.append(f"{s}_{label}_{i}.wav,{label},{s}")
    (root / "corpus.csv").write_text("\n".join(rows) + "\n")
    return root / "corpus.csv"


@pytest.fixture
def bundle_dir(tiny_bundle, tmp_path):
    """The tiny bundle, its manifest pointing at a tiny corpus with held-out speaker s2."""
    out = tmp_path / "tiny"
    shutil.copytree(tiny_bundle, out)
    manifest = json.loads((out / MANIFEST).read_text())
    (tmp_path / "corpus").mkdir()
    manifest["data"] = {"path": str(tiny_corpus(tmp_path / "corpus")), "test_speakers": ["s2"]}
    manifest["evaluation"] = {"protocol": "held-out speaker s2", "torch_teacher": TEACHER_ACC}
    (out / MANIFEST).write_text(json.dumps(manifest))
    return out


class FakeReference:
    """Stands in for the torch teacher (no torch here): the tiny graph on ONNX Runtime."""

    size_mb = 1.0

    def __init__(self, path):
        from edge_ser.engine import open_engine
        self.engine = open_engine(path, "fp32")

    def set_threads(self, threads):
        pass

    def run(self, audio):
        return self.engine.run(np.concatenate([audio, audio], axis=1))  # twice the work


@pytest.fixture
def fake_reference(monkeypatch):
    real_probe = bench.probe

    def probe(bundle, variant, backend, threads, *args, **kw):
        if backend == bench.REFERENCE_BACKEND:
            return {"peak_rss_mb": 500.0, "load_ms": 2000.0}
        return real_probe(bundle, variant, backend, threads, *args, **kw)

    monkeypatch.setattr(bench, "load_reference", lambda b: FakeReference(b.path))
    monkeypatch.setattr(bench, "probe", probe)


def test_bench_writes_every_output_with_the_columns(bundle_dir, tmp_path, fake_reference):
    out = tmp_path / "results"
    rows = bench.run_bench(bundle_dir, threads=[1, 2], out=out, quick=True, progress=False)

    variants = load_bundle(bundle_dir).variants
    expected = {(bench.REFERENCE_VARIANT, "torch")} | {("fp32", "onnxruntime")}
    if "ov-fp32" in variants:
        expected |= {("fp32", "openvino"), ("ov-fp32", "openvino")}
    assert {(r["variant"], r["backend"]) for r in rows} == expected
    assert len(rows) == 2 * len(expected)
    for r in rows:
        assert tuple(r) == bench.COLUMNS
        assert r["latency_ms_p50"] > 0 and r["latency_ms_p95"] >= r["latency_ms_p50"]
        assert r["rtf"] == pytest.approx(r["latency_ms_p50"] / 2000, rel=1e-2, abs=2e-6)
        assert r["peak_rss_mb"] > 0 and r["load_ms"] > 0 and r["size_mb"] > 0
        assert r["macs_per_s"] is None or r["macs_per_s"] > 0
        assert 0 <= r["ua"] <= 1 and 0 <= r["wa"] <= 1 and 0 <= r["f1"] <= 1

    name = bundle_dir.name
    with open(out / f"bench_{name}.csv", newline="") as f:
        reader = csv.DictReader(f)
        assert tuple(reader.fieldnames) == bench.COLUMNS
        assert len(list(reader)) == len(rows)
    doc = json.loads((out / f"bench_{name}.json").read_text())
    assert doc["rows"] == rows and all(tuple(r) == bench.COLUMNS for r in doc["rows"])
    md = (out / f"bench_{name}.md").read_text()
    assert "| " + " | ".join(bench.COLUMNS) + " |" in md
    assert "Raspberry Pi projection" in md and "evaluation.torch_teacher" in md
    assert (out / f"pareto_{name}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_ratios_are_to_the_torch_reference_row(bundle_dir, tmp_path, fake_reference):
    rows = bench.run_bench(bundle_dir, threads=[1], backends=["onnxruntime"], out=tmp_path, quick=True,
                           progress=False)
    ref = next(r for r in rows if r["backend"] == bench.REFERENCE_BACKEND)
    assert ref["speedup_vs_teacher"] == 1.0
    assert {k: ref[k] for k in ("ua", "wa", "f1")} == {k: TEACHER_ACC[k] for k in ("ua", "wa", "f1")}
    assert ref["peak_rss_mb"] == 500.0
    for r in rows:
        assert r["speedup_vs_teacher"] == pytest.approx(ref["latency_ms_p50"] / r["latency_ms_p50"], rel=1e-2)


def test_data_scores_that_corpus_whole_and_drops_the_export_time_teacher_accuracy(bundle_dir, tmp_path,
                                                                                   fake_reference):
    manifest = json.loads((bundle_dir / MANIFEST).read_text())
    rows = bench.run_bench(bundle_dir, data=manifest["data"]["path"], threads=[1], backends=["onnxruntime"],
                           out=tmp_path, quick=True, progress=False)
    ref, row = rows
    assert ref["ua"] is None and row["ua"] == 1.0   # the tiny graph gets every clip's loudness right
    assert "not given for --data" in (tmp_path / f"bench_{bundle_dir.name}.md").read_text()


def test_without_torch_the_reference_row_is_skipped_with_a_note(bundle_dir, tmp_path, monkeypatch):
    def no_torch(bundle):
        raise ImportError("No module named 'torch'")

    monkeypatch.setattr(bench, "load_reference", no_torch)
    rows = bench.run_bench(bundle_dir, threads=[1], backends=["onnxruntime"], out=tmp_path, quick=True,
                           progress=False)
    assert [r["backend"] for r in rows] == ["onnxruntime"]
    assert rows[0]["speedup_vs_teacher"] is None
    assert "torch teacher row skipped" in (tmp_path / f"bench_{bundle_dir.name}.md").read_text()


def test_pareto_front():
    #            fast/bad    slow/good   dominated   fastest/worst
    points = [(10.0, 0.5), (100.0, 0.7), (50.0, 0.4), (5.0, 0.3)]
    assert bench.pareto_front(points) == [3, 0, 1]


def test_projection_uses_the_stated_throughput():
    macs = {"teacher": 10**9, "student": 10**8}
    targets = [bench.Target("student-int8", "onnxruntime", "int8", "student", 1.0)]
    proj = bench._projection(None, targets, macs, 2.0)
    assert [p["variant"] for p in proj] == [bench.REFERENCE_VARIANT, "student-int8"]
    for board, gmacs in bench.PI_GMACS_PER_CORE.items():
        assert proj[1][board]["latency_ms_1_core"] == pytest.approx(2e8 / (gmacs["int8"] * 1e9) * 1e3, abs=0.1)


def test_the_reference_is_the_torch_teacher_named_in_the_manifest(bundle_dir, tmp_path):
    """A tiny wav2vec2 teacher rebuilt through export.teachers, timed and probed in a fresh process."""
    pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    pytest.importorskip("export.heads")
    cfg = transformers.Wav2Vec2Config(hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                                      intermediate_size=64, conv_dim=(16, 16), conv_stride=(5, 4),
                                      conv_kernel=(10, 8), num_conv_pos_embeddings=16,
                                      num_conv_pos_embedding_groups=2, vocab_size=10)
    transformers.Wav2Vec2Model(cfg).save_pretrained(tmp_path / "teacher")
    manifest = json.loads((bundle_dir / MANIFEST).read_text())
    manifest["export"] = {"config": {"teacher": str(tmp_path / "teacher")}}
    manifest["head"] = "linear"
    (bundle_dir / MANIFEST).write_text(json.dumps(manifest))

    rows = bench.run_bench(bundle_dir, threads=[1], backends=["onnxruntime"], out=tmp_path / "out", quick=True,
                           progress=False)
    ref, row = rows
    assert (ref["variant"], ref["backend"]) == (bench.REFERENCE_VARIANT, "torch")
    assert ref["peak_rss_mb"] > 0 and ref["load_ms"] > 0 and ref["size_mb"] > 0
    assert row["speedup_vs_teacher"] == pytest.approx(ref["latency_ms_p50"] / row["latency_ms_p50"], rel=1e-2)
