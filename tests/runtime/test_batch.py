"""Batch mode (a folder or glob of files): worker processes, resume, Dask, and the timeline plot."""
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import soundfile as sf
from conftest import speechlike

SR = 16000


def cli(*args, **kw):
    return subprocess.run([sys.executable, "-m", "edge_ser", *map(str, args)], capture_output=True, text=True,
                          timeout=600, **kw)


def make_folder(root, n=6, corrupt=True):
    """n clips of speech-like bursts at three loudness levels, in two sub-folders, plus one corrupt file."""
    for i in range(n):
        x = np.concatenate([np.zeros(SR // 2, np.float32), speechlike(1.5, (0.8, 0.05, 0.02)[i % 3], seed=i),
                            np.zeros(SR, np.float32), speechlike(1.0, 0.8, seed=i + 1),
                            np.zeros(SR // 2, np.float32)])
        path = root / f"part{i % 2}" / f"clip{i}.wav"
        path.parent.mkdir(parents=True, exist_ok=True)
        sf.write(path, x, SR)
    if corrupt:
        (root / "part0" / "broken.wav").write_bytes(b"RIFF" + os.urandom(100))
    (root / ".hidden").mkdir()
    sf.write(root / ".hidden" / "skip.wav", speechlike(1.0, 0.5), SR)
    return root


def records(path):
    """The output's records without wall-clock latency, sorted by file and time."""
    out = []
    for line in path.read_text().splitlines():
        r = json.loads(line)
        r.pop("latency_ms", None)
        out.append(r)
    return sorted(out, key=lambda r: (r["file"], r.get("start", 1e9)))


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return make_folder(tmp_path_factory.mktemp("batch"))


@pytest.fixture(scope="module")
def sequential(tiny_bundle, folder, tmp_path_factory):
    out = tmp_path_factory.mktemp("seq") / "events.jsonl"
    r = cli("run", tiny_bundle, "--input", folder, "--output", out)
    assert r.returncode == 0, r.stderr
    assert "7 files: 6 processed, 0 already in" in r.stderr and "1 unreadable" in r.stderr
    return records(out)


def test_a_folder_gives_events_and_one_summary_per_file(sequential, folder):
    files = {r["file"] for r in sequential}
    assert len(files) == 7 and not any(".hidden" in f for f in files)
    broken = [r for r in sequential if r["file"].endswith("broken.wav")]
    assert len(broken) == 1 and "error" in broken[0] and broken[0]["reason"]
    for f in files - {broken[0]["file"]}:
        events = [r for r in sequential if r["file"] == f and "label" in r]
        (summary,) = [r["summary"] for r in sequential if r["file"] == f and "summary" in r]
        assert summary["segments"] == len(events) == 2
        assert summary["speech_s"] == pytest.approx(sum(e["end"] - e["start"] for e in events), abs=1e-2)
        assert sum(summary["share"].values()) == pytest.approx(1.0, abs=1e-3)
        assert summary["dominant"] == max(summary["share"], key=summary["share"].get)


def test_worker_processes_give_the_same_events(tiny_bundle, folder, sequential, tmp_path):
    out = tmp_path / "events.jsonl"
    r = cli("run", tiny_bundle, "--input", folder, "--output", out, "--jobs", "2")
    assert r.returncode == 0, r.stderr
    assert records(out) == sequential


def test_a_glob_selects_files(tiny_bundle, folder, tmp_path):
    out = tmp_path / "events.jsonl"
    r = cli("run", tiny_bundle, "--input", f"{folder}/part1/*.wav", "--output", out)
    assert r.returncode == 0, r.stderr
    assert {os.path.basename(r["file"]) for r in records(out)} == {"clip1.wav", "clip3.wav", "clip5.wav"}


def test_a_rerun_resumes_where_it_stopped(tiny_bundle, tmp_path):
    folder = make_folder(tmp_path / "many", n=24, corrupt=False)
    out = tmp_path / "events.jsonl"
    p = subprocess.Popen([sys.executable, "-m", "edge_ser", "run", str(tiny_bundle), "--input", str(folder),
                          "--output", str(out), "--threads", "1"], stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and (not out.exists() or out.read_text().count('"summary"') < 3):
        time.sleep(0.05)
    p.send_signal(signal.SIGINT)
    _, err = p.communicate(timeout=120)
    assert p.returncode == 130, err
    done_before = out.read_text().count('"summary"')
    assert 3 <= done_before < 24
    r = cli("run", tiny_bundle, "--input", folder, "--output", out)
    assert r.returncode == 0, r.stderr
    assert f"{24 - done_before} processed, {done_before} already in" in r.stderr
    summaries = [x["file"] for x in records(out) if "summary" in x]
    assert len(summaries) == len(set(summaries)) == 24       # every file once, none redone
    assert all(x.count("\n") == 0 for x in out.read_text().splitlines())


def test_dask_cluster_gives_the_same_events(tiny_bundle, folder, sequential, tmp_path):
    distributed = pytest.importorskip("distributed")
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster:
        out = tmp_path / "events.jsonl"
        r = cli("run", tiny_bundle, "--input", folder, "--output", out, "--dask", cluster.scheduler_address)
        assert r.returncode == 0, r.stderr
        assert records(out) == sequential


def test_timeline_plot(tiny_bundle, tmp_path):
    pytest.importorskip("matplotlib")
    wav = tmp_path / "talk.wav"
    sf.write(wav, np.concatenate([speechlike(3.0, 0.8), np.zeros(SR, np.float32), speechlike(6.0, 0.05)]), SR)
    png = tmp_path / "timeline.png"
    r = cli("run", tiny_bundle, "--input", wav, "--plot", png)
    assert r.returncode == 0, r.stderr
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000
    assert len(r.stdout.splitlines()) == 2
    r = cli("run", tiny_bundle, "--input", tmp_path, "--plot", tmp_path / "x.png")
    assert r.returncode == 2 and "one input file" in r.stderr
