"""Batch mode (a folder or glob of files): worker processes, resume, Dask, and the timeline plot."""
import contextlib
import hashlib
import io
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter

import numpy as np
import pytest
import soundfile as sf
from conftest import speechlike

from edge_ser import interrupt, run

SR = 16000


def cli(*args, **kw):
    """`edge-ser ARGS`; `run` with the energy VAD, to which the synthetic clips here are speech."""
    if args[:1] == ("run",):
        args = (*args, "--vad", "energy")
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
                          "--output", str(out), "--threads", "1", "--vad", "energy"], stderr=subprocess.PIPE,
                         text=True)
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


# ------------------------------------------------------------------------------- resume only into our own output
def no_traceback(r):
    assert "Traceback" not in r.stderr, r.stderr
    return r


def test_output_that_is_not_ours_is_never_appended_to(tiny_bundle, folder, tmp_path):
    """N3: batch --output appended JSON lines to any existing file (a WAV, notes, an older output)."""
    wav = tmp_path / "precious.wav"
    sf.write(wav, speechlike(1.0, 0.5), SR)
    notes = tmp_path / "notes.txt"
    notes.write_text("my notes\n")
    old = tmp_path / "old.jsonl"   # an output without bundle and variant: which model made it is unknown
    old.write_text(json.dumps({"file": "x.wav", "summary": {"segments": 0}}) + "\n")
    for path in (wav, notes, old):
        before = path.read_bytes()
        r = no_traceback(cli("run", tiny_bundle, "--input", folder, "--output", path))
        assert r.returncode == 2 and r.stderr.startswith("error: ") and len(r.stderr.splitlines()) == 1, r.stderr
        assert "--overwrite" in r.stderr and path.read_bytes() == before


def test_resume_refuses_another_bundle_or_variant(tiny_bundle, folder, tmp_path):
    """N5: a rerun with another model skipped the files done and mixed two models' records in one file."""
    out = tmp_path / "events.jsonl"
    assert cli("run", tiny_bundle, "--input", folder, "--output", out).returncode == 0
    before = out.read_bytes()
    slim = tmp_path / "slim"   # the same graph in another bundle (its own manifest, so another id)
    assert cli("pack", tiny_bundle, "--variant", "fp32", "--out", slim).returncode == 0
    r = no_traceback(cli("run", slim, "--input", folder, "--output", out))
    assert r.returncode == 2 and "bundle" in r.stderr and "--overwrite" in r.stderr and out.read_bytes() == before
    if "ov-fp32" in json.loads((tiny_bundle / "edge-ser.json").read_text())["variants"]:
        r = no_traceback(cli("run", tiny_bundle, "--input", folder, "--output", out, "--variant", "ov-fp32"))
        assert r.returncode == 2 and "ov-fp32" in r.stderr and out.read_bytes() == before


def test_resume_refuses_records_made_with_the_other_text_setting(tiny_bundle, folder, tmp_path):
    """Events of a --text run (audio_probs, text ...) and of a run without it must not mix in one output."""
    out = tmp_path / "events.jsonl"
    assert cli("run", tiny_bundle, "--input", folder, "--output", out).returncode == 0
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert any("label" in r for r in records)
    out.write_text("".join(json.dumps({**r, "audio_probs": r["probs"]} if "label" in r else r) + "\n"
                           for r in records[:-1]))   # as a --text run left it, its last file not finished
    before = out.read_bytes()
    r = no_traceback(cli("run", tiny_bundle, "--input", folder, "--output", out))
    assert r.returncode == 2 and "with --text" in r.stderr and out.read_bytes() == before


def test_every_record_names_its_bundle_and_variant(tiny_bundle, sequential):
    from edge_ser.bundle import load_bundle
    bundle_id = hashlib.sha256((tiny_bundle / "edge-ser.json").read_bytes()).hexdigest()[:12]
    assert load_bundle(tiny_bundle).id == bundle_id
    for r in sequential:
        if "error" not in r:
            assert r["bundle"] == bundle_id and r["variant"] == "fp32", r


def test_resume_knows_a_file_by_its_resolved_path(tiny_bundle, tmp_path):
    """N6: the same files spelled another way (absolute, ./x/..) were processed again: every summary twice."""
    make_folder(tmp_path / "clips", n=3, corrupt=False)
    out = tmp_path / "events.jsonl"
    assert cli("run", tiny_bundle, "--input", "clips", "--output", out, cwd=tmp_path).returncode == 0
    for spelling in (tmp_path / "clips", "./clips/../clips"):
        r = cli("run", tiny_bundle, "--input", spelling, "--output", out, cwd=tmp_path)
        assert r.returncode == 0 and "0 processed, 3 already in" in r.stderr, r.stderr
    assert sorted(x["file"] for x in records(out) if "summary" in x) == \
        [os.path.join("clips", "part0", "clip0.wav"), os.path.join("clips", "part0", "clip2.wav"),
         os.path.join("clips", "part1", "clip1.wav")]   # as first spelled


def test_resume_drops_the_lines_a_crash_cut_short(tiny_bundle, tmp_path):
    """N7: a line cut short by a crash stayed in the output, which was then no longer JSON Lines."""
    folder = make_folder(tmp_path / "clips", n=4, corrupt=False)
    out = tmp_path / "events.jsonl"
    assert cli("run", tiny_bundle, "--input", folder, "--output", out).returncode == 0
    lines = out.read_text().splitlines(keepends=True)
    whole = lines[:3]   # the first file (2 events and its summary), then the second file's first event ...
    out.write_text("".join(whole + [lines[3], lines[4][:40]]))   # ... and half of its second: a crash
    r = cli("run", tiny_bundle, "--input", folder, "--output", out)
    assert r.returncode == 0 and "3 processed, 1 already in" in r.stderr, r.stderr
    again = out.read_text().splitlines()
    assert [json.loads(line) for line in again] and "".join(whole) == out.read_text()[:len("".join(whole))]
    assert len(again) == 12   # 4 files x (2 events + 1 summary): the unfinished file's lines once, whole


def test_a_glob_does_not_follow_symlink_loops(tiny_bundle, folder, tmp_path):
    """N11: `g/**/*.wav` with a link `g/l -> .` listed each file 41 times; with two such links it hung."""
    g = tmp_path / "g"
    g.mkdir()
    for name in ("a.wav", "b.wav"):
        sf.write(g / name, speechlike(1.0, 0.5), SR)
    (g / "l1").symlink_to(".")
    (g / "l2").symlink_to(".")
    (g / "sub").mkdir()
    (g / "sub" / "up").symlink_to("..")
    out = tmp_path / "events.jsonl"
    r = cli("run", tiny_bundle, "--input", f"{g}/**/*.wav", "--output", out)
    assert r.returncode == 0 and "2 files: 2 processed" in r.stderr, r.stderr


def test_glob_expansion_matches_glob_glob(tmp_path, monkeypatch):
    from edge_ser.run import expand_glob
    for name in ("a.wav", "b.flac", ".hidden.wav", "x/c.wav", "x/y/d.wav", ".h/e.wav", "x/.f.wav", "z/g.wav"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(b"")
    (tmp_path / "x" / "dir.wav").mkdir()
    import glob
    for pattern in ("**/*.wav", "*.wav", "*/*.wav", "x/**", "**/y/*.wav", "x/*/d.wav", ".*/*.wav", "[ab].*",
                    "**/.*.wav", "x/**/*.wav"):
        want = sorted(p for p in glob.glob(str(tmp_path / pattern), recursive=True) if os.path.isfile(p))
        assert [str(p) for p in expand_glob(str(tmp_path / pattern))] == want, pattern
        monkeypatch.chdir(tmp_path)
        want = sorted(p for p in glob.glob(pattern, recursive=True) if os.path.isfile(p))
        assert [str(p) for p in expand_glob(pattern)] == want, pattern


@pytest.mark.parametrize("signum, group, code, word", [(signal.SIGINT, True, 130, "interrupted"),
                                                        (signal.SIGINT, False, 130, "interrupted"),
                                                        (signal.SIGTERM, False, 143, "terminated")])
def test_stopping_a_batch_says_what_was_done(tiny_bundle, tmp_path, signum, group, code, word):
    """N21: Ctrl-C in batch mode printed nothing (or `Process SpawnPoolWorker-2:` when sent to the group), and
    SIGTERM with --jobs 2 left a resource_tracker warning about leaked semaphores."""
    folder = tmp_path / "many"
    folder.mkdir()
    for i in range(40):
        sf.write(folder / f"{i:02d}.wav", speechlike(3.0, 0.5, seed=i), SR)
    out = tmp_path / "events.jsonl"
    p = subprocess.Popen([sys.executable, "-m", "edge_ser", "run", str(tiny_bundle), "--input", str(folder),
                          "--output", str(out), "--jobs", "2", "--threads", "1", "--vad", "energy"],
                         stderr=subprocess.PIPE, text=True,
                         start_new_session=True)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and (not out.exists() or out.read_text().count('"summary"') < 2):
        time.sleep(0.05)
    (os.killpg if group else os.kill)(p.pid, signum)
    _, err = p.communicate(timeout=120)
    time.sleep(1)   # the resource tracker, if it complains, does so after the parent is gone
    assert p.returncode == code, err
    done = out.read_text().count('"summary"')
    assert f"{done} processed" in err and f"not done ({word})" in err, err
    assert len(err.splitlines()) == 1 and "Process" not in err and "leaked" not in err, err


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_a_stop_while_a_file_is_written_counts_it(signum):
    """CI: SIGTERM between a file's records and their count said "5 processed" over 6 summaries in the output."""
    class Stopping(io.StringIO):
        def write(self, text):
            n = super().write(text)
            signal.raise_signal(signum)   # handled at once unless held
            return n
    counts, out, seen = Counter(), Stopping(), []

    def stop(signum, frame):   # what the CLI's handlers see: the counts and the lines written
        seen.append((counts["processed"], out.getvalue().count("\n")))
        raise KeyboardInterrupt
    before = signal.signal(signum, stop)
    try:
        with run.interruptible(counts):
            run.write_records(iter([[{"file": "a", "summary": {}}], [{"file": "b", "summary": {}}]]), 2, out,
                              counts, "files", False)
    finally:
        signal.signal(signum, before)
    assert seen == [(1, 1)] and counts["interrupted"] == 1


@pytest.mark.parametrize("patience_s", [1.0, 0.0], ids=["second stop", "late stop"])
def test_a_stop_is_not_held_for_long(patience_s):
    """Review: held signals made a write blocked on a full pipe impossible to stop (SIGTERM from `timeout`)."""
    seen, reached, handlers = [], [], {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}

    def stop(signum, frame):
        seen.append(signum)
        raise KeyboardInterrupt
    before = signal.signal(signal.SIGTERM, stop)
    try:
        with pytest.raises(KeyboardInterrupt):
            with interrupt.signals_held(patience_s):
                signal.raise_signal(signal.SIGINT)
                if patience_s:
                    assert not seen   # the first stop waits
                    signal.raise_signal(signal.SIGTERM)
                reached.append(True)   # the stop was held
    finally:
        signal.signal(signal.SIGTERM, before)
    assert not reached and seen == ([signal.SIGTERM] if patience_s else [])   # SIGTERM first; else KeyboardInterrupt
    assert signal.getsignal(signal.SIGINT) is handlers[signal.SIGINT]


def test_a_stop_interrupts_a_write_that_hangs():
    """Review: a write blocked on a full pipe, held, could not be stopped by the one SIGTERM `timeout` sends."""
    read, write = os.pipe()
    unblock = threading.Timer(10, os.close, (read,))   # if the stop never comes, the write fails instead of hanging
    unblock.start()
    start = time.monotonic()
    try:
        with pytest.raises(KeyboardInterrupt), interrupt.signals_held(0.3):
            signal.raise_signal(signal.SIGINT)   # held: the block started just now
            os.write(write, b"x" * (1 << 24))    # blocks: nobody reads the pipe
    finally:
        unblock.cancel()
        os.close(write)
        with contextlib.suppress(OSError):
            os.close(read)
    assert time.monotonic() - start < 5


def test_files_without_speech_get_a_record_and_are_counted(tiny_bundle, tmp_path):
    """Newcomer: a file with no speech found gave no record at all, and the batch summary did not count it."""
    folder = tmp_path / "clips"
    folder.mkdir()
    t = np.arange(10 * SR) / SR
    sf.write(folder / "silent.wav", np.zeros(2 * SR, np.float32), SR)
    sf.write(folder / "hum.wav", (0.3 * np.sign(np.sin(2 * np.pi * 50 * t))).astype(np.float32), SR)
    sf.write(folder / "speech.wav", np.concatenate([np.zeros(SR, np.float32), speechlike(1.5, 0.5)]), SR)
    short = np.concatenate([np.zeros(SR // 2, np.float32), speechlike(0.15, 0.5), np.zeros(SR // 2, np.float32)])
    sf.write(folder / "short.wav", short, SR)   # under the VAD's 0.25 s minimum: no segment
    sf.write(folder / "long.wav", np.concatenate([short, np.zeros(11 * SR, np.float32)]), SR)   # over 10 s
    out = tmp_path / "events.jsonl"
    r = cli("run", tiny_bundle, "--input", folder, "--output", out)
    assert r.returncode == 0, r.stderr
    assert "3 with no speech found" in r.stderr and "1 classified whole (vad_fallback)" in r.stderr, r.stderr
    by_file = {}
    for x in records(out):
        by_file.setdefault(os.path.basename(x["file"]), []).append(x)
    for name in ("silent.wav", "hum.wav", "long.wav"):
        first, summary = by_file[name]
        assert first["no_speech"] is True and first["bundle"] and first["variant"] == "fp32"
        assert summary["summary"]["segments"] == 0 and summary["summary"]["dominant"] is None
    event, summary = by_file["short.wav"]
    assert event["vad_fallback"] is True and 0.3 < event["start"] < event["end"] < 0.85
    assert summary["summary"]["segments"] == 1 and summary["summary"]["dominant"] == event["label"]
    assert "vad_fallback" not in by_file["speech.wav"][0] and by_file["speech.wav"][-1]["summary"]["segments"] == 1
