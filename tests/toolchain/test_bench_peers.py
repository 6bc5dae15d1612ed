"""The toolchain's bench peers: a torch reference chosen with --reference, wav2vec2-base and openSMILE eGeMAPS."""
import sys
from dataclasses import replace
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from edge_ser import bench  # noqa: E402
from edge_ser import manifest as mf  # noqa: E402
from edge_ser.bundle import load_bundle, write_bundle  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "runtime"))
from test_bench import tiny_corpus  # noqa: E402


def test_reference_and_peers_are_timed_probed_and_scored(bundle_copy, tmp_path):
    cfg = transformers.Wav2Vec2Config(hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                                      intermediate_size=64, conv_dim=(16, 16), conv_stride=(5, 4),
                                      conv_kernel=(10, 8), num_conv_pos_embeddings=16,
                                      num_conv_pos_embedding_groups=2, vocab_size=10)
    transformers.Wav2Vec2Model(cfg).save_pretrained(tmp_path / "teacher")
    b = load_bundle(bundle_copy)
    write_bundle(bundle_copy, replace(b.manifest, data=mf.Data(corpus="c", clips=12, speakers=2, test_speakers=["s2"])))
    (tmp_path / "corpus").mkdir()
    data = tiny_corpus(tmp_path / "corpus")
    rows = bench.run_bench(bundle_copy, data=data, threads=[1], backends=["onnxruntime"], out=tmp_path / "out",
                           quick=True, reference=str(tmp_path / "teacher"), peers="wav2vec2-base,egemaps")
    by = {r["variant"]: r for r in rows}
    assert set(by) == {"fp32", "teacher (torch teacher)", "wav2vec2-base (random weights)",
                       "openSMILE eGeMAPS + linear"}
    for name in ("teacher (torch teacher)", "wav2vec2-base (random weights)", "openSMILE eGeMAPS + linear"):
        r = by[name]
        assert r["latency_ms_p50"] > 0 and r["peak_rss_mb"] > 0 and r["load_ms"] > 0, r
    assert by["wav2vec2-base (random weights)"]["size_mb"] > 300        # 95 M fp32 parameters
    assert by["wav2vec2-base (random weights)"]["ua"] is None            # random weights: speed only
    assert 0 <= by["openSMILE eGeMAPS + linear"]["ua"] <= 1              # fit on s1, scored on s2
    assert by["teacher (torch teacher)"]["ua"] is None                   # not the bundle's teacher: no accuracy
    assert by["teacher (torch teacher)"]["speedup"] == 1.0               # the first peer is the baseline
