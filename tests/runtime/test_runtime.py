"""The runtime: engine, VAD, recognizer, streaming and `run` (tiny bundle from conftest, no torch)."""
from __future__ import annotations

import io
import itertools
import json
import shutil
import subprocess
import sys
import types

import numpy as np
import pytest
import soundfile as sf

from edge_ser import AudioError, BundleError, EdgeSerError
from edge_ser.bundle import load_bundle
from edge_ser.engine import open_engine
from edge_ser.manifest import MANIFEST
from edge_ser.mic import Counters, mic_chunks
from edge_ser.recognizer import Recognizer, window_spans
from edge_ser.run import run_chunks
from edge_ser.vad import Vad, VadOptions

SR = 16000
from conftest import REPO as ROOT  # noqa: E402
from conftest import SHARED_DATA, speechlike  # noqa: E402

EMODB = SHARED_DATA / "emodb"


def tone(seconds: float, amp: float) -> np.ndarray:
    """Speech-like sound of peak ``amp`` (the tiny graph labels it by loudness)."""
    return speechlike(seconds, amp)


def hiss(seconds: float, amp: float, seed: int = 0) -> np.ndarray:
    return (amp * np.random.default_rng(seed).standard_normal(round(seconds * SR))).astype(np.float32)


def bursts(parts):
    """Concatenate (kind, seconds, amp) parts; return audio and the [start, end) s of non-silence parts."""
    audio, regions, t = [], [], 0.0
    for i, (kind, seconds, amp) in enumerate(parts):
        if kind == "silence":
            audio.append(hiss(seconds, 1e-4, seed=i))
        else:
            envelope = 0.8 + 0.2 * np.sin(2 * np.pi * 4 * np.arange(round(seconds * SR)) / SR)   # not steady
            audio.append(tone(seconds, amp) if kind == "tone" else hiss(seconds, amp, seed=i) * envelope)
            regions.append((t, t + seconds))
        t += seconds
    return np.concatenate(audio), regions


SCENE = [("silence", 1.0, 0), ("tone", 3.0, 0.8), ("silence", 1.2, 0), ("noise", 1.5, 0.01),
         ("silence", 0.9, 0), ("tone", 4.3, 0.05), ("silence", 1.0, 0)]


@pytest.fixture(scope="module")
def recognizer(tiny_bundle):
    return Recognizer(tiny_bundle, vad="energy")   # the synthetic sounds here are speech to the energy VAD


@pytest.fixture(scope="module")
def scene():
    return bursts(SCENE)


def feed_in_chunks(rec, x, sizes, **stream_args):
    stream, events, i = rec.stream(SR, **stream_args), [], 0
    for size in itertools.cycle(sizes):
        if i >= len(x):
            break
        events += stream.feed(x[i:i + size])
        i += size
    return events + stream.flush()


def strip(events):
    """Events without the wall-clock latency."""
    return [(e.start, e.end, e.label, e.probs) for e in events]


def run_main(*args):
    """`edge-ser ARGS` in this process; returns the exit status."""
    from edge_ser.cli import main
    with pytest.raises(SystemExit) as exit_:
        main([str(a) for a in args])
    return exit_.value.code


# --- runtime never imports torch ---------------------------------------------------------------

@pytest.mark.parametrize("backend", ["onnxruntime", "openvino"])
def test_import_and_run_leave_torch_out(tiny_bundle, scene, tmp_path, backend):
    if backend == "openvino":
        pytest.importorskip("openvino")
    wav = tmp_path / "scene.wav"
    sf.write(wav, scene[0], SR)
    code = f"""
import sys
import edge_ser
assert 'torch' not in sys.modules
from edge_ser.cli import main
try:
    main(["run", {str(tiny_bundle)!r}, "--input", {str(wav)!r}, "--output", {str(tmp_path / 'out.jsonl')!r},
          "--variant", {"fp32" if backend == "onnxruntime" else "ov-fp32"!r}, "--vad", "energy"])
except SystemExit as e:
    assert e.code == 0, e.code
heavy = [m for m in sys.modules if m.split(".")[0] in ('torch', 'transformers', 'onnx', 'edge_ser_export')]
assert not heavy, heavy
"""
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "segments" in done.stderr
    assert len((tmp_path / "out.jsonl").read_text().splitlines()) == 3


# --- engine ------------------------------------------------------------------------------------

def test_engine_batch_and_variable_length(tiny_bundle):
    engine = open_engine(tiny_bundle)
    for n in (4000, 16000, 32001):
        probs = engine.run(np.stack([tone(n / SR, 0.8), tone(n / SR, 0.005)]))
        assert probs.shape == (2, 3)
        np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-5)
        assert [engine.labels[i] for i in probs.argmax(axis=1)] == ["anger", "sadness"]


def test_openvino_matches_onnxruntime(tiny_bundle, scene):
    pytest.importorskip("openvino")
    x = np.stack([scene[0][:2 * SR], scene[0][SR:3 * SR], tone(2.0, 0.05)])
    reference = open_engine(tiny_bundle, backend="onnxruntime").run(x)
    for variant in ("fp32", "ov-fp32"):
        np.testing.assert_allclose(open_engine(tiny_bundle, variant, backend="openvino").run(x), reference,
                                   atol=1e-5)
    a = Recognizer(tiny_bundle, vad="energy").process(scene[0], SR)
    b = Recognizer(tiny_bundle, variant="ov-fp32", backend="openvino", vad="energy").process(scene[0], SR)
    assert [(e.start, e.end, e.label) for e in a] == [(e.start, e.end, e.label) for e in b]
    for ea, eb in zip(a, b):
        np.testing.assert_allclose(list(ea.probs.values()), list(eb.probs.values()), atol=1e-5)


def test_ir_variant_needs_openvino_backend(tiny_bundle):
    if "ov-fp32" not in load_bundle(tiny_bundle).variants:
        pytest.skip("openvino not installed")
    with pytest.raises(EdgeSerError, match="--backend openvino"):
        open_engine(tiny_bundle, "ov-fp32", backend="onnxruntime")


def test_missing_openvino_package_says_what_to_install(tiny_bundle, monkeypatch):
    monkeypatch.setitem(sys.modules, "openvino", None)
    with pytest.raises(EdgeSerError, match=r"pip install edge-ser\[openvino\]"):
        open_engine(tiny_bundle, backend="openvino")


def test_bad_backend_variant_threads(tiny_bundle):
    with pytest.raises(EdgeSerError, match="unknown backend"):
        open_engine(tiny_bundle, backend="tensorrt")
    with pytest.raises(BundleError, match="no variant 'int8'"):
        open_engine(tiny_bundle, "int8")
    with pytest.raises(EdgeSerError, match="threads"):
        open_engine(tiny_bundle, threads=0)
    open_engine(tiny_bundle, threads=1)


def test_tampered_model_refused(tiny_bundle, tmp_path):
    bundle = shutil.copytree(tiny_bundle, tmp_path / "b")
    with open(bundle / "model.onnx", "ab") as f:
        f.write(b"\0")
    with pytest.raises(BundleError, match="model.onnx.*SHA-256"):
        Recognizer(bundle)


def test_wrong_schema_refused(tiny_bundle, tmp_path):
    bundle = shutil.copytree(tiny_bundle, tmp_path / "b")
    manifest = json.loads((bundle / MANIFEST).read_text())
    manifest["schema_version"] = 99
    (bundle / MANIFEST).write_text(json.dumps(manifest))
    with pytest.raises(BundleError, match="schema_version 99"):
        open_engine(bundle)


# --- predict -----------------------------------------------------------------------------------

def test_window_spans():
    assert window_spans(10, 20, 5) == [(0, 10)]
    assert window_spans(20, 20, 5) == [(0, 20)]
    assert window_spans(47, 20, 10) == [(0, 20), (10, 30), (20, 40), (27, 47)]
    assert window_spans(40, 20, 10) == [(0, 20), (10, 30), (20, 40)]


def test_predict_labels_short_and_long_clips(recognizer):
    assert recognizer.predict(tone(1.0, 0.8), SR).label == "anger"
    assert recognizer.predict(tone(1.0, 0.05), SR).label == "neutral"
    assert recognizer.predict(tone(1.0, 0.005), SR).label == "sadness"
    short = recognizer.predict(tone(0.1, 0.8), SR)          # below min_input_s: tiled, same level
    assert short.label == "anger"
    # a long clip: windows averaged, so a loud half and a quiet half land in between
    mixed = recognizer.predict(np.concatenate([tone(5.0, 0.8), tone(5.0, 0.005)]), SR)
    loud = recognizer.predict(tone(10.0, 0.8), SR)
    assert mixed.probs["anger"] < loud.probs["anger"]
    assert abs(sum(mixed.probs.values()) - 1.0) < 1e-5
    # other sample rates and integer PCM are converted
    assert recognizer.predict((tone(1.0, 0.8)[::2] * 32767).astype(np.int16), 8000).label == "anger"


def test_predict_rejects_nan_and_empty(recognizer):
    x = tone(1.0, 0.5)
    x[100] = np.nan
    with pytest.raises(AudioError, match="NaN"):
        recognizer.predict(x, SR)
    with pytest.raises(AudioError):
        recognizer.predict(np.zeros(0, np.float32), SR)


def test_window_and_hop_checked(tiny_bundle):
    with pytest.raises(EdgeSerError, match="--window"):
        Recognizer(tiny_bundle, window_s=0.1)
    with pytest.raises(EdgeSerError, match="--hop"):
        Recognizer(tiny_bundle, window_s=1.0, hop_s=2.0)


# --- streaming ---------------------------------------------------------------------------------

def test_streaming_equals_whole_file(recognizer, scene):
    whole = strip(recognizer.process(scene[0], SR))
    assert len(whole) == 3
    for sizes in ([333], [777], [16001], [32000], [5, 4097, 12345, 1]):
        assert strip(feed_in_chunks(recognizer, scene[0], sizes)) == whole, sizes


def test_streaming_with_other_window_and_live_view(tiny_bundle, scene):
    rec = Recognizer(tiny_bundle, window_s=0.75, hop_s=0.3, vad="energy")  # neither divides the chunk nor the frame
    whole = strip(rec.process(scene[0], SR))
    assert strip(feed_in_chunks(rec, scene[0], [1111], partial=True, smooth=0.5)) == whole
    stream = rec.stream(SR, partial=True, smooth=0.5)
    stream.feed(scene[0][:int(2.5 * SR)])          # inside the loud tone: a partial result exists
    assert stream.in_speech and max(stream.current, key=stream.current.get) == "anger"


def test_segment_labels_follow_loudness(recognizer, scene):
    events = recognizer.process(scene[0], SR)
    assert [e.label for e in events] == ["anger", "sadness", "neutral"]


def test_silence_gives_no_events(recognizer):
    for x in (np.zeros(5 * SR, np.float32), hiss(5.0, 1e-4), hiss(5.0, 1e-3)):
        assert recognizer.process(x, SR) == []
        assert feed_in_chunks(recognizer, x, [1234]) == []


def test_nan_inf_chunk_rejected_and_stream_goes_on(recognizer, scene):
    stream = recognizer.stream(SR)
    events = stream.feed(scene[0][:SR])
    for bad in (np.nan, np.inf, -np.inf):
        chunk = tone(0.1, 0.5)
        chunk[7] = bad
        with pytest.raises(AudioError, match="NaN/Inf"):
            stream.feed(chunk)
    events += stream.feed(scene[0][SR:]) + stream.flush()
    assert strip(events) == strip(recognizer.process(scene[0], SR))


def test_long_speech_split_at_max(tiny_bundle):
    rec = Recognizer(tiny_bundle, vad="energy", vad_options=VadOptions(max_speech_s=3.0))
    x = np.concatenate([hiss(0.5, 1e-4), tone(7.0, 0.8), hiss(1.0, 1e-4)])
    events = rec.process(x, SR)
    assert len(events) == 3
    assert all(e.end - e.start <= 3.0 + 0.2 + 1e-6 for e in events)
    assert [e.end for e in events[:-1]] == [e.start for e in events[1:]]  # contiguous, no overlap
    assert strip(feed_in_chunks(rec, x, [999])) == strip(events)


# --- VAD ---------------------------------------------------------------------------------------

def test_energy_vad_boundaries_match_bursts(scene):
    x, regions = scene
    vad = Vad("energy")
    segments = vad.feed(x) + vad.flush()
    assert len(segments) == len(regions)
    pad = VadOptions().pad_s
    for seg, (start, end) in zip(segments, regions):
        assert abs(seg.start / SR - (start - pad)) <= 0.12   # 4 frames of 30 ms
        assert abs(seg.end / SR - (end + pad)) <= 0.12


def test_vad_min_speech_and_min_silence():
    options = VadOptions(min_speech_s=0.25, min_silence_s=0.5)
    click = np.concatenate([hiss(1.0, 1e-4), tone(0.1, 0.5), hiss(1.0, 1e-4)])  # too short: dropped
    vad = Vad("energy", options)
    assert vad.feed(click) + vad.flush() == []
    gap = np.concatenate([hiss(1.0, 1e-4), tone(1.0, 0.5), hiss(0.3, 1e-4), tone(1.0, 0.5), hiss(1.0, 1e-4)])
    vad = Vad("energy", options)
    assert len(vad.feed(gap) + vad.flush()) == 1       # a 0.3 s pause does not split


def test_webrtc_vad_streams_like_whole(tiny_bundle, scene):
    pytest.importorskip("webrtcvad")
    rec = Recognizer(tiny_bundle, vad="webrtc")
    x = np.concatenate([hiss(1.0, 1e-4), hiss(2.0, 0.3, seed=5), hiss(1.0, 1e-4)])
    assert strip(feed_in_chunks(rec, x, [1001])) == strip(rec.process(x, SR))
    assert rec.process(np.zeros(3 * SR, np.float32), SR) == []


def test_the_same_audio_after_the_same_silence_gets_the_same_events(recognizer):
    # newcomer item 11: a file tiled 8 times got other segment lengths and labels from the 3rd copy on (the
    # frames fell elsewhere in each copy, and the detector carried its state over)
    clip = np.concatenate([speechlike(1.3, 0.5, seed=1), hiss(0.35, 1e-3), speechlike(0.9, 0.05, seed=2),
                           hiss(0.9, 2e-3, seed=3), speechlike(2.1, 0.02, seed=4), speechlike(0.4, 0.6, seed=5)])
    clip = clip[:len(clip) - 137]   # neither a whole number of 30 ms nor of 32 ms frames
    gap = np.zeros(SR, np.float32)
    x = np.concatenate([gap, clip] * 4 + [gap])
    events = recognizer.process(x, SR)
    assert len(events) % 4 == 0 and events
    per_copy = [[(round(e.start * SR) - k * (len(gap) + len(clip)), round(e.end * SR) - k * (len(gap) + len(clip)),
                  e.label, e.probs) for e in events[k * len(events) // 4:(k + 1) * len(events) // 4]]
                for k in range(4)]
    assert per_copy[1] == per_copy[0] and per_copy[2] == per_copy[0] and per_copy[3] == per_copy[0]


@pytest.mark.data
def test_the_same_speech_after_the_same_silence_gets_the_same_segments_from_silero():
    if not EMODB.is_dir():
        pytest.skip("../shared/data/emodb is absent")
    from edge_ser.audio import load_audio

    clips = [load_audio(p) for p in sorted(EMODB.glob("*.wav"))[:3]]
    one = np.concatenate([np.zeros(SR, np.float32), clips[0], np.zeros(SR // 2, np.float32), clips[1],
                          np.zeros(SR, np.float32), clips[2]])
    vad = Vad("silero")
    segments = vad.feed(np.tile(one, 4)) + vad.feed(np.zeros(SR, np.float32)) + vad.flush()
    per_copy = [[(s.start - k * len(one), s.end - k * len(one)) for s in segments if s.start // len(one) == k]
                for k in range(4)]
    assert len(per_copy[0]) == 3 and all(copy == per_copy[0] for copy in per_copy)


@pytest.mark.parametrize("options", [dict(min_speech_s=float("nan")), dict(min_silence_s=float("nan")),
                                     dict(pad_s=float("inf")), dict(max_speech_s=float("inf")),
                                     dict(steady_s=float("inf")), dict(frame_ms=20.0), dict(frame_ms=True),
                                     dict(webrtc_mode=1.5), dict(threshold_db="10"), dict(pad_s=-0.1),
                                     dict(max_speech_s=0), dict(silero_threshold=1.0), dict(steady_s=1e9)])
def test_bad_vad_options_are_clear_errors(options):
    # red-team N17: nan/inf reached math.ceil/round (ValueError, OverflowError), frame_ms=20.0 reached numpy
    name = next(iter(options))
    with pytest.raises(EdgeSerError, match=f"VadOptions {name}"):
        VadOptions(**options)


@pytest.mark.parametrize("kwargs", [dict(window_s=float("nan")), dict(hop_s=float("inf")), dict(window_s="2"),
                                    dict(threads=2.5), dict(threads=True), dict(variant=3), dict(bundle=42)])
def test_bad_recognizer_arguments_are_clear_errors(tiny_bundle, kwargs):
    kwargs = {"bundle": tiny_bundle, **kwargs}
    with pytest.raises(EdgeSerError, match=next(iter(set(kwargs) - {"bundle"}), "bundle")):
        Recognizer(**kwargs)


def test_clips_and_recordings_need_their_sample_rate(recognizer):
    # newcomer item 3: predict(x) took any audio for 16 kHz without a word
    with pytest.raises(TypeError, match="sample_rate"):
        recognizer.predict(tone(1.0, 0.5))
    with pytest.raises(TypeError, match="sample_rate"):
        recognizer.process(tone(1.0, 0.5))
    with pytest.raises(TypeError, match="sample_rate"):
        recognizer.stream()
    with pytest.raises(AudioError, match="sample rate"):
        recognizer.stream(True)


def test_a_stream_at_another_rate_gives_the_events_of_run(recognizer, scene, tmp_path):
    # newcomer item 3: 22.05 kHz chunks fed as if 16 kHz gave other events than `edge-ser run` on the file
    from edge_ser.audio import stream_audio

    x22 = soxr_resample(scene[0], SR, 22050)
    wav = tmp_path / "scene22.wav"
    sf.write(wav, x22, 22050, subtype="FLOAT")
    stream = recognizer.stream(SR)
    cli_events = [e for chunk in stream_audio(wav, sr=SR) for e in stream.feed(chunk)] + stream.flush()
    assert len(cli_events) == 3
    for sizes in ([2205], [999, 4410, 17]):
        stream, events, i = recognizer.stream(22050), [], 0
        for size in itertools.cycle(sizes):
            if i >= len(x22):
                break
            events += stream.feed(x22[i:i + size])
            i += size
        assert strip(events + stream.flush()) == strip(cli_events), sizes
    assert strip(recognizer.process(x22, 22050)) == strip(cli_events)


def soxr_resample(x, sr_in, sr_out):
    import soxr
    return soxr.resample(x, sr_in, sr_out).astype(np.float32)


def test_unknown_vad(tiny_bundle):
    with pytest.raises(EdgeSerError, match="unknown VAD"):
        Recognizer(tiny_bundle, vad="loudness")


@pytest.mark.data
def test_energy_vad_on_concatenated_emodb_clips():
    if not EMODB.is_dir():
        pytest.skip("../shared/data/emodb is absent")
    from edge_ser.audio import load_audio

    clips = [load_audio(p) for p in sorted(EMODB.glob("*.wav"))[:8]]
    gaps = [1.0, 1.5, 0.8, 2.0, 1.2, 0.9, 1.7, 1.1]
    audio, regions, t = [], [], 0.0
    for clip, gap in zip(clips, gaps):
        audio += [hiss(gap, 3e-4, seed=len(audio)), clip]
        regions.append((t + gap, t + gap + len(clip) / SR))
        t += gap + len(clip) / SR
    audio.append(hiss(1.0, 3e-4))
    x = np.concatenate(audio)
    vad = Vad("energy")
    segments = vad.feed(x) + vad.flush()
    assert len(segments) == len(regions)
    pad = VadOptions().pad_s
    for seg, (start, end) in zip(segments, regions):
        s, e = seg.start / SR, seg.end / SR
        assert start - pad - 0.05 <= s and e <= end + pad + 0.05      # inside the clip (plus padding)
        clip = x[round(start * SR):round(end * SR)]
        covered = x[max(seg.start, round(start * SR)):min(seg.end, round(end * SR))]
        assert np.sum(covered.astype(np.float64) ** 2) >= 0.98 * np.sum(clip.astype(np.float64) ** 2)


@pytest.mark.data
def test_silero_vad_finds_emodb_clips_and_streams_like_whole(tiny_bundle):
    if not EMODB.is_dir():
        pytest.skip("../shared/data/emodb is absent")
    from edge_ser.audio import load_audio

    clips = [load_audio(p) for p in sorted(EMODB.glob("*.wav"))[:4]]
    audio, regions, t = [], [], 0.0
    for clip in clips:
        audio += [np.zeros(SR, np.float32), clip]
        regions.append((t + 1.0, t + 1.0 + len(clip) / SR))
        t += 1.0 + len(clip) / SR
    x = np.concatenate([*audio, np.zeros(SR, np.float32)])
    vad = Vad("silero")
    segments = vad.feed(x) + vad.flush()
    assert len(segments) == len(regions)
    for seg, (start, end) in zip(segments, regions):
        assert start - 0.5 <= seg.start / SR < seg.end / SR <= end + 0.5
    rec = Recognizer(tiny_bundle, vad="silero")
    assert strip(feed_in_chunks(rec, x, [1001, 333])) == strip(rec.process(x, SR))   # its state carries across chunks
    assert rec.process(np.zeros(3 * SR, np.float32), SR) == []


def test_a_damaged_silero_model_is_a_clear_error(monkeypatch):
    from edge_ser import vad as vad_module

    vad_module._silero_session.cache_clear()
    monkeypatch.setattr(vad_module, "SILERO_SHA256", "0" * 64)
    try:
        with pytest.raises(EdgeSerError, match="damaged"):
            Vad("silero")
    finally:
        vad_module._silero_session.cache_clear()


# --- run_cli: JSON lines, microphone, stdin ----------------------------------------------------

def fake_mic(x, block=1600, bad_at=None):
    """A microphone stand-in: 1-D float32 blocks as mic_chunks gives, optionally one NaN block."""
    for i in range(0, len(x), block):
        chunk = x[i:i + block].copy()
        if bad_at is not None and i // block == bad_at:
            yield np.full_like(chunk, np.nan)
        yield chunk


def test_json_lines_from_file(tiny_bundle, scene, tmp_path, capsys):
    wav = tmp_path / "scene.wav"
    sf.write(wav, scene[0], SR, subtype="FLOAT")
    assert run_main("run", tiny_bundle, "--input", wav, "--vad", "energy") == 0
    out, err = capsys.readouterr()
    lines = [json.loads(line) for line in out.splitlines()]
    assert len(lines) == 3
    for line in lines:
        assert set(line) >= {"start", "end", "label", "probs", "latency_ms"}
        assert set(line["probs"]) == {"anger", "neutral", "sadness"} and line["label"] in line["probs"]
    expected = Recognizer(tiny_bundle, vad="energy").process(scene[0], SR)
    assert [(d["start"], d["end"], d["label"]) for d in lines] == [
        (round(e.start, 3), round(e.end, 3), e.label) for e in expected]
    assert "3 segments" in err and "real-time factor" in err


def test_fake_microphone_drives_feed(recognizer, scene):
    events = []
    summary = run_chunks(recognizer.stream(SR, partial=True), fake_mic(scene[0]), events.append)
    assert strip(events) == strip(recognizer.process(scene[0], SR))
    assert summary.segments == 3 and summary.audio_s == pytest.approx(len(scene[0]) / SR)


def test_run_mic_path_with_injected_source(tiny_bundle, scene, tmp_path, capsys, monkeypatch):
    import edge_ser.mic
    monkeypatch.setattr(edge_ser.mic, "mic_chunks", lambda device, sr, counters: fake_mic(scene[0], bad_at=20))
    out = tmp_path / "events.jsonl"
    assert run_main("run", tiny_bundle, "--mic", "--output", out, "--smooth", "0.3", "--vad", "energy") == 0
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert [d["label"] for d in lines] == ["anger", "sadness", "neutral"]
    assert "1 chunks skipped" in capsys.readouterr().err


def test_mic_queue_drops_and_counts(monkeypatch):
    """A fake sounddevice whose callback outruns the consumer: the queue drops and counts."""
    class Status:
        def __init__(self, overflow):
            self.input_overflow = overflow

    class InputStream:
        active = True

        def __init__(self, samplerate, channels, dtype, device, blocksize, callback):
            self.callback, self.blocksize = callback, blocksize

        def __enter__(self):
            for i in range(20):
                self.callback(np.full((self.blocksize, 1), i, np.float32), self.blocksize, None, Status(i == 3))
            return self

        def __exit__(self, *exc):
            return False

    fake = types.SimpleNamespace(InputStream=InputStream, PortAudioError=type("PortAudioError", (Exception,), {}))
    monkeypatch.setitem(sys.modules, "sounddevice", fake)
    counters = Counters()
    chunks = mic_chunks(None, SR, counters, queue_size=5)
    got = list(itertools.islice(chunks, 5))
    chunks.close()
    assert [c[0] for c in got] == [0, 1, 2, 3, 4]
    assert counters.dropped == 15 and counters.overflow == 1


def test_mic_device_error_mentions_list_devices(monkeypatch):
    class PortAudioError(Exception):
        pass

    def InputStream(**kwargs):
        raise PortAudioError("Invalid device")

    def query_devices(device, kind):
        raise ValueError(f"No input device matching {device!r}")

    fake = types.SimpleNamespace(InputStream=InputStream, PortAudioError=PortAudioError,
                                 query_devices=query_devices)
    monkeypatch.setitem(sys.modules, "sounddevice", fake)
    with pytest.raises(EdgeSerError, match="--list-devices"):
        next(mic_chunks(7, SR, Counters()))


def test_mic_without_sounddevice(tiny_bundle, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "sounddevice", None)
    assert run_main("run", tiny_bundle, "--mic") == 2
    assert "edge-ser[mic]" in capsys.readouterr().err


def test_run_stdin_pcm16(tiny_bundle, scene, monkeypatch, capsys):
    pcm = (np.clip(scene[0], -1, 1) * 32767).astype("<i2").tobytes()
    monkeypatch.setattr(sys, "stdin", types.SimpleNamespace(buffer=io.BytesIO(pcm), closed=False))
    assert run_main("run", tiny_bundle, "--input", "-", "--vad", "energy") == 0
    lines = capsys.readouterr().out.splitlines()
    assert [json.loads(line)["label"] for line in lines] == ["anger", "sadness", "neutral"]


@pytest.mark.parametrize("fmt, subtype", [("WAV", "PCM_16"), ("WAV", "FLOAT"), ("WAV", "PCM_24"), ("FLAC", "PCM_16")])
def test_run_stdin_detects_a_file_header(tiny_bundle, scene, monkeypatch, capsys, fmt, subtype):
    # a WAV piped in was read as raw PCM (header as samples, wrong rate): it is decoded now, at any rate
    buf = io.BytesIO()
    x22 = __import__("soxr").resample(scene[0], SR, 22050)
    sf.write(buf, np.stack([x22, x22], axis=1), 22050, format=fmt, subtype=subtype)
    monkeypatch.setattr(sys, "stdin", types.SimpleNamespace(buffer=io.BytesIO(buf.getvalue()), closed=False))
    assert run_main("run", tiny_bundle, "--input", "-", "--vad", "energy") == 0
    labels = [json.loads(line)["label"] for line in capsys.readouterr().out.splitlines()]
    assert labels == ["anger", "sadness", "neutral"]


def test_run_argument_errors(tiny_bundle, tmp_path, capsys):
    assert run_main("run", tiny_bundle) == 2
    assert run_main("run", tiny_bundle, "--input", "x.wav", "--mic") == 2
    assert run_main("run", tiny_bundle, "--input", tmp_path / "nothing.wav") == 2
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 3 and all(line.startswith("error:") for line in err)


def test_a_file_without_speech_says_so(tiny_bundle, tmp_path, capsys):
    """Newcomer: a file with no speech found printed nothing on stdout; the summary had microphone counters."""
    from edge_ser.bundle import load_bundle
    silent = tmp_path / "silent.wav"
    sf.write(silent, np.zeros(SR * 3 // 2, np.float32), SR)
    assert run_main("run", tiny_bundle, "--input", silent) == 0
    out, err = capsys.readouterr()
    assert [json.loads(line) for line in out.splitlines()] == [
        {"no_speech": True, "duration_s": 1.5, "bundle": load_bundle(tiny_bundle).id, "variant": "fp32"}]
    assert "0 segments (no speech found), 1.500 s audio in " in err
    assert "chunks skipped" not in err and "overflows" not in err and "dropped" not in err


def test_a_short_clip_the_vad_misses_is_classified_whole(tiny_bundle, tmp_path, capsys):
    """Newcomer: short clips (0.2 s of speech, or quiet ones) got no event; now the trimmed clip is classified whole."""
    x = np.concatenate([np.zeros(SR // 2, np.float32), tone(0.15, 0.8), np.zeros(SR // 2, np.float32)])
    clip = tmp_path / "short.wav"
    sf.write(clip, x, SR)
    assert run_main("run", tiny_bundle, "--input", clip, "--vad", "energy") == 0
    (event,) = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert event["vad_fallback"] is True and 0.4 < event["start"] < event["end"] < 0.75
    rec = Recognizer(tiny_bundle, vad="energy")
    expected = rec.predict(x, SR)   # as eval scores a clip: trimmed, classified whole
    assert event["label"] == expected.label and event["probs"] == {k: round(v, 4) for k, v in expected.probs.items()}
    assert rec.process(x, SR) == []   # the API's events stay the VAD's


def test_a_file_given_as_the_bundle_says_so(tmp_path, capsys):
    """Newcomer: `edge-ser run talk.wav` said only 'give exactly one of --input and --mic'."""
    talk = tmp_path / "talk.wav"
    sf.write(talk, tone(1.0, 0.5), SR)
    for path in (talk, "missing.wav"):
        assert run_main("run", path) == 2
        (line,) = capsys.readouterr().err.splitlines()
        assert "taken as the bundle" in line and f"edge-ser run --input {path}" in line


def test_a_decode_error_shows_no_bytes_repr(tiny_bundle, tmp_path, capsys):
    """Newcomer: `Error opening b'recordings/broken.wav'`."""
    broken = tmp_path / "broken.wav"
    broken.write_bytes(b"RIFF" + bytes(100))
    assert run_main("run", tiny_bundle, "--input", broken) == 2
    (line,) = capsys.readouterr().err.splitlines()
    assert "b'" not in line and f"{broken}: not decodable audio" in line


def test_a_long_timeline_wraps_and_names_every_segment(monkeypatch, tmp_path):
    """Newcomer: a 10 min plot was a cloud of dots at 11 inches, with no label in the strip and no summary."""
    pytest.importorskip("matplotlib")
    from matplotlib.figure import Figure

    from edge_ser.recognizer import Event
    from edge_ser.timeline import plot_timeline
    seen = []
    monkeypatch.setattr(Figure, "savefig", lambda fig, f, **kw: seen.append(fig))
    labels = ["anger", "neutral", "sadness"]
    events = [Event(t, t + 2.0, labels[i % 3], {k: 0.6 if k == labels[i % 3] else 0.2 for k in labels}, 1.0,
                    [(t, t + 2.0, [0.6 if k == labels[i % 3] else 0.2 for k in labels])])
              for i, t in enumerate(np.arange(1.0, 598.0, 4.0))]
    plot_timeline(events, labels, 600.0, tmp_path / "p.png", title="talk.wav: ready model")
    fig = seen[0]
    assert len(fig.axes) == 10   # 5 rows of 120 s: probabilities and a label strip each
    strips = fig.axes[1::2]
    assert sum(len(a.texts) for a in strips) == len(events)   # every segment named
    assert [t.get_text() for t in fig.legends[0].get_texts()] == ["anger 33%", "neutral 33%", "sadness 33%"]
    assert fig._suptitle.get_text().startswith("talk.wav: ready model (150 segments")
    single = [line for a in fig.axes[::2] for line in a.lines if line.get_marker() == "o"]
    assert single and all(len(line.get_xdata()) == len(events) for line in single)   # a dot per segment


def test_the_plot_title_names_the_bundle(tiny_bundle, scene, tmp_path, monkeypatch):
    pytest.importorskip("matplotlib")
    from matplotlib.figure import Figure
    seen = []
    monkeypatch.setattr(Figure, "savefig", lambda fig, f, **kw: seen.append(fig._suptitle.get_text()))
    wav = tmp_path / "scene.wav"
    sf.write(wav, scene[0], SR)
    assert run_main("run", tiny_bundle, "--input", wav, "--plot", tmp_path / "p.png") == 0
    assert seen[0].startswith(f"scene.wav: {tiny_bundle.name}, variant fp32 (")


def test_ctrl_c_anywhere_says_interrupted(tiny_bundle, tmp_path, capsys, monkeypatch):
    """N21: typer turns Ctrl-C into a silent exit 130; the CLI says 'interrupted'."""
    import edge_ser.run

    def interrupted(spec):
        raise KeyboardInterrupt
    monkeypatch.setattr(edge_ser.run, "list_inputs", interrupted)
    assert run_main("run", tiny_bundle, "--input", tmp_path) == 130
    assert capsys.readouterr().err == "interrupted\n"
