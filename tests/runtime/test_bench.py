"""`edge-ser bench` end to end on the tiny bundle (no torch): outputs, columns, peers, accuracy, projection."""
import csv
import importlib.util
import json
import types
from dataclasses import replace

import numpy as np
import pytest
import soundfile as sf

from edge_ser import bench
from edge_ser import manifest as mf
from edge_ser.bench import pi, report
from edge_ser.bench.peers import Peer
from edge_ser.bench.plot import pareto_front
from edge_ser.bundle import load_bundle, write_bundle


def tiny_corpus(root):
    """2 speakers x 3 labels x 2 clips; loudness decides the tiny graph's label (see tests/conftest.py)."""
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
def bundle_dir(bundle_copy):
    """The tiny bundle with held-out speaker s2 and MAC counts in its manifest."""
    b = load_bundle(bundle_copy)
    m = b.manifest
    write_bundle(bundle_copy, replace(m, data=mf.Data(corpus="corpus", clips=12, speakers=2, test_speakers=["s2"]),
                                      student=replace(m.student, macs_per_s=10**8)))
    return bundle_copy


@pytest.fixture
def corpus(tmp_path):
    (tmp_path / "corpus").mkdir()
    return tiny_corpus(tmp_path / "corpus")


def fake_peers(monkeypatch, factories):
    """Install peer entry points whose factories are ``factories`` (name -> callable)."""
    eps = {name: types.SimpleNamespace(name=name, load=lambda f=f: f) for name, f in factories.items()}
    monkeypatch.setattr(bench.peers, "find", lambda group: eps)


def slow_copy(bundle):
    """A peer: the tiny graph on twice the audio (twice the work), scored like the bundle."""
    from edge_ser.engine import open_engine
    engine = open_engine(bundle, "fp32")
    return Peer("slow copy", "onnxruntime", "fp32", run=lambda x: engine.run(np.concatenate([x, x], axis=1)),
                set_threads=lambda t: None, size_mb=1.0, note="a test peer",
                accuracy=lambda split: {"ua": 0.25, "wa": 0.5, "f1": 0.3, "n": len(split.test)})


def test_bench_writes_every_output_with_the_columns(bundle_dir, corpus, tmp_path):
    out = tmp_path / "results"
    rows = bench.run_bench(bundle_dir, data=corpus, threads=[1, 2], out=out, quick=True, peers="none")
    name = bundle_dir.name
    assert {(r["variant"], r["threads"]) for r in rows} >= {("fp32", 1), ("fp32", 2)}
    for r in rows:
        assert set(r) == set(report.COLUMNS)
        assert r["latency_ms_p50"] > 0 and r["peak_rss_mb"] > 0 and r["load_ms"] > 0
        assert r["ua"] == 1.0 and r["macs_per_s"] == 10**8   # the tiny graph gets every clip's loudness right
    with open(out / f"bench_{name}.csv") as f:
        assert next(csv.reader(f)) == list(report.COLUMNS)
    doc = json.loads((out / f"bench_{name}.json").read_text())
    assert doc["machine"]["target"] and "features" in doc["machine"] and doc["rows"] == rows
    md = (out / f"bench_{name}.md").read_text()
    assert "| " + " | ".join(report.COLUMNS) + " |" in md
    assert "Thread scaling" in md and "Raspberry Pi projection" in md and "held-out speakers s2" in md
    if importlib.util.find_spec("matplotlib"):   # an optional extra: without it, the plot is skipped
        assert (out / f"pareto_{name}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_the_shipped_files_are_never_scored_on_speakers_they_learned_from(bundle_dir, corpus, tmp_path):
    b = load_bundle(bundle_dir)
    write_bundle(bundle_dir, replace(b.manifest, data=replace(b.manifest.data, trained_speakers=["s1", "s2"])))
    rows = bench.run_bench(bundle_dir, data=corpus, threads=[1], backends=["onnxruntime"], out=tmp_path, quick=True,
                           peers="none")
    assert rows[0]["ua"] == 0.9      # the export-time metric (conftest), not a re-score on training speakers
    assert "would be optimistic" in (tmp_path / f"bench_{bundle_dir.name}.md").read_text()


def test_peers_are_timed_in_the_same_loop_and_give_the_speedup(bundle_dir, corpus, tmp_path, monkeypatch):
    fake_peers(monkeypatch, {"slow": slow_copy})
    rows = bench.run_bench(bundle_dir, data=corpus, threads=[1], backends=["onnxruntime"], out=tmp_path,
                           quick=True, reps=15)
    peer = next(r for r in rows if r["variant"] == "slow copy")
    assert peer["speedup"] == 1.0 and peer["ua"] == 0.25
    for r in rows:   # the latencies are rounded to 0.001 ms, the speedup (to 0.001) is not computed from them
        low, high = peer["latency_ms_p50"] - 5e-4, peer["latency_ms_p50"] + 5e-4
        assert low / (r["latency_ms_p50"] + 5e-4) - 5e-4 <= r["speedup"] <= high / (r["latency_ms_p50"] - 5e-4) + 5e-4
    md = (tmp_path / f"bench_{bundle_dir.name}.md").read_text()
    assert "slow copy: a test peer" in md and "faster than slow copy" in md


def test_a_peer_without_its_packages_is_a_note(bundle_dir, tmp_path, monkeypatch):
    def needs_torch(bundle):
        raise ModuleNotFoundError("No module named 'torch'", name="torch")
    fake_peers(monkeypatch, {"wav2vec2-base": needs_torch})
    rows = bench.run_bench(bundle_dir, threads=[1], backends=["onnxruntime"], out=tmp_path, quick=True)
    assert [r["variant"] for r in rows] == ["fp32"] and rows[0]["speedup"] is None and rows[0]["ua"] is None
    md = (tmp_path / f"bench_{bundle_dir.name}.md").read_text()
    assert "peer wav2vec2-base skipped: torch is not installed" in md


def test_a_broken_peer_plugin_is_a_note(bundle_dir, tmp_path, monkeypatch):
    """Red team r3, N19: a peer factory that raised, or an entry point that is no function, crashed the bench."""
    def broken(bundle):
        raise ValueError("bad options")
    fake_peers(monkeypatch, {"broken": broken, "number": 3})
    rows = bench.run_bench(bundle_dir, threads=[1], backends=["onnxruntime"], out=tmp_path, quick=True,
                           peers="broken,number")
    assert [r["variant"] for r in rows] == ["fp32"]
    md = (tmp_path / f"bench_{bundle_dir.name}.md").read_text()
    assert "peer broken skipped: its plugin failed (ValueError: bad options)" in md
    assert "peer number skipped: its plugin failed (TypeError" in md


def test_the_manifest_never_chooses_what_the_bench_loads(bundle_dir, tmp_path, monkeypatch):
    """A manifest naming a teacher (a hub id, a path) makes no reference row: only --reference does."""
    called = []
    fake_peers(monkeypatch, {"reference": lambda bundle, **kw: called.append(kw)})
    b = load_bundle(bundle_dir)
    write_bundle(bundle_dir, replace(b.manifest, teacher=mf.Teacher(name="facebook/wav2vec2-base", family="wav2vec2",
                                                                    blocks=12, dim=768, source="/etc/passwd")))
    bench.run_bench(bundle_dir, threads=[1], backends=["onnxruntime"], out=tmp_path, quick=True, peers="auto")
    assert called == []


def test_pareto_front():
    #            fast/bad    slow/good   dominated   fastest/worst
    points = [(10.0, 0.5), (100.0, 0.7), (50.0, 0.4), (5.0, 0.3)]
    assert pareto_front(points) == [3, 0, 1]


def test_projection_uses_the_stated_calibration():
    rows = [{"variant": "s", "backend": "onnxruntime", "precision": "int8", "threads": 1, "latency_ms_p50": 10.0,
             "macs_per_s": 10**8},
            {"variant": "s", "backend": "onnxruntime", "precision": "int8", "threads": 2, "latency_ms_p50": 6.0,
             "macs_per_s": 10**8}]
    (p,) = pi.projection(rows, 2.0)
    for board, (lo, hi) in pi.PI_SLOWDOWN.items():
        assert p[board]["ratio_ms"] == [10.0 * lo, 10.0 * hi]
        slow, fast = pi.PI_GMACS_PER_CORE[board]
        assert p[board]["macs_ms"] == pytest.approx([2e8 / (fast * 1e9) * 1e3, 2e8 / (slow * 1e9) * 1e3], abs=0.1)


def test_bad_thread_counts_are_usage_errors(bundle_dir, capsys):
    from edge_ser.cli import main
    for bad in ("1,a", "0", "100000", ""):
        with pytest.raises(SystemExit) as e:
            main(["bench", str(bundle_dir), "--threads", bad])
        assert e.value.code == 2
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 4 and all(line.startswith("error:") for line in err)
