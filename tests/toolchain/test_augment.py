"""The augmentation chain distillation and the fast student's refit learn from: each effect does what it says."""
import numpy as np
import pytest

from edge_ser.audio import SAMPLE_RATE
from edge_ser_export import augment
from edge_ser_export.augment import AVAILABLE, augmented, band, lossy, mu_law, noise, room


def tone(hz: float, seconds: float = 1.0) -> np.ndarray:
    return 0.5 * np.sin(2 * np.pi * hz * np.arange(int(seconds * SAMPLE_RATE)) / SAMPLE_RATE)


def power_share(x: np.ndarray, low: float, high: float) -> float:
    spectrum = np.abs(np.fft.rfft(x)) ** 2
    freqs = np.fft.rfftfreq(len(x), 1 / SAMPLE_RATE)
    return float(spectrum[(freqs >= low) & (freqs <= high)].sum() / spectrum.sum())


def test_band_keeps_the_band_and_removes_the_rest():
    x = tone(100) + tone(1000) + tone(6000)
    y = band(x, 300.0, 3400.0)
    assert power_share(y, 300, 3400) > 0.999
    np.testing.assert_allclose(y, tone(1000), atol=1e-6)


def test_room_adds_a_decaying_tail_and_keeps_the_level():
    click = np.zeros(SAMPLE_RATE)
    click[100] = 1.0
    wet = room(click, 0.5, np.random.default_rng(0))
    tail = wet[200:100 + SAMPLE_RATE // 2]
    assert np.sum(tail ** 2) > 0.01 * np.sum(wet ** 2)                       # reverberation after the click
    assert np.sum(tail[:len(tail) // 4] ** 2) > 100 * np.sum(tail[-len(tail) // 4:] ** 2)   # decaying
    assert np.sqrt(np.mean(wet ** 2)) == pytest.approx(np.sqrt(np.mean(click ** 2)), rel=1e-6)
    speech_like = tone(300)
    assert np.sqrt(np.mean(room(speech_like, 0.3, np.random.default_rng(1)) ** 2)) == pytest.approx(
        np.sqrt(np.mean(speech_like ** 2)), rel=1e-6)


def test_mu_law_is_8_bit_and_close_to_the_input():
    x = np.linspace(-1, 1, 10001)
    y = mu_law(x)
    assert len(np.unique(np.round(y, 9))) <= 256
    assert np.max(np.abs(y - x)) < 0.025 and np.max(np.abs(y[np.abs(x) < 0.01] - x[np.abs(x) < 0.01])) < 1e-3


@pytest.mark.skipif(not AVAILABLE, reason="this libsndfile has no lossy codec")
def test_lossy_codec_keeps_length_and_the_signal():
    x = tone(440, 0.7)
    for seed in range(4):   # both codecs are drawn
        y = lossy(x, np.random.default_rng(seed))
        assert len(y) == len(x)
        assert np.corrcoef(x[2000:-2000], y[2000:-2000])[0, 1] > 0.9
        assert np.allclose(x, y, atol=1e-4) == (augment.CODECS[np.random.default_rng(seed).integers(2)][0]
                                                not in AVAILABLE)


@pytest.mark.parametrize("codec", [0, 1])
def test_lossy_codec_at_its_lowest_bitrate(codec):
    class Draws:   # the codec, then the highest compression level uniform(0.5, 1.0) can give
        def integers(self, n):
            return codec

        def uniform(self, low=0.0, high=1.0):
            return np.nextafter(high, low)

    x = tone(440, 0.7)
    assert len(lossy(x, Draws())) == len(x)


def test_a_seed_gives_the_same_copies_whatever_codecs_libsndfile_has(monkeypatch):
    x = tone(440, 0.7)
    with_codecs = np.random.default_rng(1)
    lossy(x, with_codecs)
    monkeypatch.setattr(augment, "AVAILABLE", set())
    without = np.random.default_rng(1)
    assert lossy(x, without) is x
    assert with_codecs.random() == without.random()


def test_noise_colours_and_level():
    rng = np.random.default_rng(0)
    shares = [power_share(noise(SAMPLE_RATE, colour, rng), 0, 500) for colour in (0, 1, 2)]
    assert shares[0] < 0.1 < shares[1] < shares[2]
    assert np.mean(noise(SAMPLE_RATE, 1, rng) ** 2) == pytest.approx(1.0, rel=1e-6)


def test_augmented_is_seeded_bounded_and_varied():
    x = (tone(220, 2.0) * np.linspace(0, 1, 2 * SAMPLE_RATE)).astype(np.float32)
    copies = [augmented(x, np.random.default_rng(seed)) for seed in range(12)]
    np.testing.assert_array_equal(copies[0], augmented(x, np.random.default_rng(0)))
    for y in copies:
        assert y.dtype == np.float32 and np.isfinite(y).all() and np.abs(y).max() <= 1.0
        assert 0.89 * len(x) <= len(y) <= 1.11 * len(x)
    highs = [power_share(y, 3600, 8000) for y in copies]   # some copies band-limited, others not
    assert min(highs) < 0.01 < max(highs)
    assert augmented(np.zeros(0, np.float32), np.random.default_rng(0)).size == 0
