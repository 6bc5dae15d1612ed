import io
import tracemalloc

import numpy as np
import pytest
import soundfile as sf

from edge_ser.audio import (SAMPLE_RATE, clip_fraction, is_silent, load_audio, prepare, stream_audio,
                            stream_pcm16)
from edge_ser.errors import AudioError


def sine(freq, sr, seconds=1.0, amp=0.5, channels=1):
    t = np.arange(int(sr * seconds)) / sr
    x = (amp * np.sin(2 * np.pi * freq * t)).astype(np.float32)
    return np.stack([x] * channels, axis=1) if channels > 1 else x


def peak_hz(x, sr=SAMPLE_RATE):
    spectrum = np.abs(np.fft.rfft(x * np.hanning(len(x))))
    return np.argmax(spectrum) * sr / len(x)


def test_zero_length_file(tmp_path):
    p = tmp_path / "empty.wav"
    p.write_bytes(b"")
    with pytest.raises(AudioError, match=r"empty\.wav.*empty"):
        load_audio(p)


def test_header_only_wav_has_no_samples(tmp_path):
    p = tmp_path / "noframes.wav"
    sf.write(p, np.zeros(0, np.float32), 16000)
    with pytest.raises(AudioError, match="no samples"):
        load_audio(p)


def test_non_audio_file_with_wav_name(tmp_path):
    p = tmp_path / "notes.wav"
    p.write_text("this is a text file, not audio\n" * 20)
    with pytest.raises(AudioError, match=r"notes\.wav.*ffmpeg") as e:
        load_audio(p)
    assert e.value.reason == "unreadable audio"


def test_corrupt_file(tmp_path):
    p = tmp_path / "corrupt.wav"
    sf.write(p, sine(440, 16000), 16000, subtype="PCM_16")
    data = bytearray(p.read_bytes())
    data[:16] = b"\xde\xad\xbe\xef" * 4  # smash the RIFF/WAVE header
    p.write_bytes(bytes(data))
    with pytest.raises(AudioError, match=r"corrupt\.wav.*not decodable"):
        load_audio(p)
    with pytest.raises(AudioError):
        next(stream_audio(p))


def test_missing_file(tmp_path):
    with pytest.raises(AudioError, match="no such audio file"):
        load_audio(tmp_path / "nope.wav")


def test_all_zero_audio_loads_but_is_silent(tmp_path):
    p = tmp_path / "zeros.wav"
    sf.write(p, np.zeros(16000, np.int16), 16000, subtype="PCM_16")
    x = load_audio(p)
    assert x.shape == (16000,) and x.dtype == np.float32
    assert is_silent(x)
    assert not is_silent(sine(440, 16000))


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_samples(tmp_path, bad):
    x = sine(440, 16000)
    x[8000] = bad
    p = tmp_path / "nan.wav"
    sf.write(p, x, 16000, subtype="FLOAT")
    with pytest.raises(AudioError, match=r"nan\.wav.*1 NaN/Inf samples \(first at 0\.50 s\)") as e:
        load_audio(p)
    assert e.value.reason == "non-finite samples"
    with pytest.raises(AudioError, match="NaN/Inf"):
        list(stream_audio(p, block_s=0.1))
    with pytest.raises(AudioError, match="NaN/Inf"):
        prepare(x, 16000)


def test_clipped_float_audio_is_clipped_to_unit_range(tmp_path):
    x = sine(440, 16000, amp=3.0)
    p = tmp_path / "loud.wav"
    sf.write(p, x, 16000, subtype="FLOAT")
    assert np.abs(sf.read(p)[0]).max() > 2.9  # the file really holds out-of-range floats
    y = load_audio(p)
    assert y.min() >= -1.0 and y.max() <= 1.0
    assert clip_fraction(y) > 0.5
    assert clip_fraction(sine(440, 16000)) == 0.0
    assert np.concatenate(list(stream_audio(p))).max() <= 1.0


def test_clipped_int_audio(tmp_path):
    x = np.clip(sine(440, 16000, amp=4.0), -1, 1)
    p = tmp_path / "clipped.wav"
    sf.write(p, x, 16000, subtype="PCM_16")
    y = load_audio(p)
    assert np.abs(y).max() <= 1.0
    assert clip_fraction(y) > 0.5


def test_stereo_is_downmixed(tmp_path):
    left, right = sine(440, 16000, amp=0.4), sine(1000, 16000, amp=0.2)
    p = tmp_path / "stereo.wav"
    sf.write(p, np.stack([left, right], axis=1), 16000, subtype="FLOAT")
    y = load_audio(p)
    assert y.ndim == 1 and len(y) == 16000
    np.testing.assert_allclose(y, (left + right) / 2, atol=1e-6)
    np.testing.assert_allclose(prepare(np.stack([left, right], axis=1), 16000, channel_axis=-1), y, atol=1e-6)
    np.testing.assert_allclose(prepare(np.stack([left, right]), 16000, channel_axis=0), y, atol=1e-6)


@pytest.mark.parametrize("shape", [(2, 16000), (16000, 2), (1, 16000), (16000, 1)])
def test_multichannel_arrays_need_an_explicit_channel_axis(shape):
    # [channels, samples] read as [samples, channels] gave confident nonsense: refuse to guess
    with pytest.raises(AudioError, match="channel_axis"):
        prepare(np.zeros(shape, np.float32), 16000)


@pytest.mark.parametrize("sr", [8000, 22050, 44100, 48000])
@pytest.mark.parametrize("fmt", ["WAV", "FLAC", "OGG"])
def test_resampled_to_16k_keeps_length_and_frequency(tmp_path, sr, fmt):
    p = tmp_path / f"tone.{fmt.lower()}"
    sf.write(p, sine(440, sr, seconds=2.0, channels=2), sr, format=fmt)
    y = load_audio(p)
    assert y.dtype == np.float32 and y.ndim == 1
    assert abs(len(y) - 2 * SAMPLE_RATE) <= 2
    assert abs(peak_hz(y) - 440) < 2
    streamed = np.concatenate(list(stream_audio(p, block_s=0.25)))
    assert abs(len(streamed) - len(y)) <= 2
    assert abs(peak_hz(streamed) - 440) < 2


def test_prepare_in_memory_arrays():
    x = (sine(440, 8000) * 32767).astype(np.int16)
    y = prepare(x, 8000)
    assert y.dtype == np.float32 and len(y) == 16000
    assert abs(peak_hz(y) - 440) < 2
    with pytest.raises(AudioError, match="no samples"):
        prepare(np.zeros(0, np.float32), 16000)
    with pytest.raises(AudioError, match="shape"):
        prepare(np.zeros((2, 2, 2), np.float32), 16000)
    with pytest.raises(AudioError, match="shape"):
        prepare(np.zeros((2, 2, 2), np.float32), 16000, channel_axis=0)
    with pytest.raises(AudioError, match="sample rate"):
        prepare(np.zeros(10, np.float32), 0)


@pytest.mark.parametrize("sr", [1, 999, 768001, 10**9, True, 16000.0, 2.5, "16000", None])
def test_in_memory_sample_rates_are_bounded(sr):
    # red-team N16: prepare(x, 1) made 16,000 times the input; True was taken as 1 Hz
    with pytest.raises(AudioError, match="sample rate"):
        prepare(np.zeros(2000, np.float32), sr)
    assert len(prepare(np.zeros(2000, np.float32), np.int64(1000))) == 32000   # numpy integers are rates too


def test_a_wrong_channel_axis_is_caught():
    # red-team N15: [2, N] with the README's channel_axis=-1 was read as 2 samples of N channels
    x = np.stack([sine(440, 16000), sine(440, 16000)])
    with pytest.raises(AudioError, match="channel_axis=-1 reads shape \\(2, 16000\\) as 2 samples of 16000 channels"):
        prepare(x, 16000, channel_axis=-1)
    with pytest.raises(AudioError, match="at most 64"):
        prepare(np.zeros((1000, 65), np.float32), 16000, channel_axis=-1)
    assert len(prepare(x, 16000, channel_axis=0)) == 16000
    assert len(prepare(np.zeros((1000, 64), np.float32), 16000, channel_axis=1)) == 1000


def test_a_file_longer_than_a_clip_is_refused_before_it_is_decoded(tmp_path, monkeypatch):
    # red-team N9: eval/bench/export decoded whole files (a 635 kB FLAC held 2.46 GB of float32)
    from edge_ser.audio import MAX_CLIP_S
    p = tmp_path / "bomb.flac"
    with sf.SoundFile(p, "w", samplerate=8000, channels=8, format="FLAC") as f:
        for _ in range(round(MAX_CLIP_S) + 2):   # one second a block
            f.write(np.zeros((8000, 8), np.float32))

    def no_decoding(*args, **kwargs):
        raise AssertionError("the file was decoded")
    monkeypatch.setattr(sf.SoundFile, "read", no_decoding)
    monkeypatch.setattr(sf.SoundFile, "blocks", no_decoding)
    with pytest.raises(AudioError, match=r"bomb\.flac: 62\.0 s of audio, longer than the 60 s") as e:
        load_audio(p)
    assert e.value.reason == "too long"
    monkeypatch.undo()
    assert len(load_audio(p, max_s=100)) == 62 * SAMPLE_RATE   # a larger cap when asked for


def test_load_audio_keeps_one_mono_block_of_many_channels_at_a_time(tmp_path):
    p = tmp_path / "many.wav"
    sf.write(p, np.zeros((48000 * 10, 32), np.int16), 48000, subtype="PCM_16")   # 10 s of 32 channels
    tracemalloc.start()
    try:
        y = load_audio(p)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert len(y) == 10 * SAMPLE_RATE
    assert peak < 25 * 2**20   # reading it whole takes 61 MB of float32 (10 s x 48 kHz x 32 channels)


def test_stream_pcm16_from_pipe():
    x = sine(440, 16000, seconds=1.3)
    raw = (x * 32767).astype("<i2").tobytes()
    blocks = list(stream_pcm16(io.BytesIO(raw), block_s=0.25))
    assert max(len(b) for b in blocks) <= 4000
    y = np.concatenate(blocks)
    np.testing.assert_allclose(y, x, atol=1e-4)
    # an odd trailing byte (half a sample) is dropped, not an error
    assert len(np.concatenate(list(stream_pcm16(io.BytesIO(raw + b"\x01"))))) == len(x)


def test_stream_pcm16_resamples():
    x = sine(440, 8000, seconds=1.0)
    raw = (x * 32767).astype("<i2").tobytes()
    y = np.concatenate(list(stream_pcm16(io.BytesIO(raw), sr=8000)))
    assert abs(len(y) - 16000) <= 2 and abs(peak_hz(y) - 440) < 2


def test_one_hour_file_streams_in_bounded_memory(tmp_path):
    sr, minute = 8000, 60 * 8000  # 1 h at 8 kHz PCM_16 is ~58 MB on disk, 230 MB as float32 at 16 kHz
    block = (sine(440, sr, seconds=60) * 32767).astype(np.int16)
    p = tmp_path / "hour.wav"
    with sf.SoundFile(p, "w", samplerate=sr, channels=1, subtype="PCM_16") as f:
        for _ in range(60):
            f.write(block)
    assert sf.info(p).frames == 60 * minute

    tracemalloc.start()
    try:
        total, biggest = 0, 0
        for x in stream_audio(p, block_s=1.0):
            total += len(x)
            biggest = max(biggest, len(x))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert abs(total - 3600 * SAMPLE_RATE) <= 2
    assert biggest <= 1.1 * SAMPLE_RATE
    assert peak < 8 * 2**20  # whole output would be 230 MB


def test_trim_silence_keeps_the_utterance_with_a_margin():
    from edge_ser.audio import trim_silence
    speech = sine(300, 16000, seconds=1.0, amp=0.5)
    x = np.concatenate([np.zeros(8000, np.float32), 1e-4 * np.ones(4000, np.float32), speech,
                        np.zeros(16000, np.float32)])
    y = trim_silence(x)
    assert len(speech) <= len(y) <= len(speech) + 2 * 800 + 320   # 50 ms margins, frames of 10 ms
    assert np.array_equal(trim_silence(y), y)                    # idempotent
    assert len(trim_silence(np.zeros(20, np.float32))) == 20
    quiet = 0.001 * speech                                         # relative, not absolute: a quiet clip stays
    assert len(trim_silence(quiet)) == len(quiet)
