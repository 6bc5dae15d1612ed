"""Microphone input through sounddevice: a bounded queue, dropped blocks counted, not piled up."""
from __future__ import annotations

import queue
from dataclasses import dataclass
from typing import Iterator

import numpy as np

from .errors import EdgeSerError

MIC_BLOCK_S = 0.1     # seconds per microphone block
MIC_QUEUE = 100       # blocks (10 s) buffered before dropping
HINT = "; list the devices with `edge-ser run --list-devices` and pick one with --device"


@dataclass
class Counters:
    """What went wrong without stopping the run."""

    skipped: int = 0      # chunks rejected (NaN/Inf) on live input
    overflow: int = 0     # sounddevice reported input overflow
    dropped: int = 0      # blocks dropped because the queue was full


def _sounddevice():
    try:
        import sounddevice
    except (ImportError, OSError) as e:
        raise EdgeSerError(f"microphone input needs sounddevice and PortAudio ({e}): pip install "
                           "edge-ser[mic] and install PortAudio (e.g. apt install libportaudio2)") from None
    return sounddevice


def list_input_devices() -> str:
    """The input devices sounddevice sees, one per line with its index."""
    sd = _sounddevice()
    lines = [f"{i}: {d['name']} ({d['max_input_channels']} ch, {d['default_samplerate']:.0f} Hz)"
             for i, d in enumerate(sd.query_devices()) if d["max_input_channels"] > 0]
    return "\n".join(lines) if lines else "no audio input devices found"


def mic_chunks(device: int | None, sample_rate: int, counters: Counters, block_s: float = MIC_BLOCK_S,
               queue_size: int = MIC_QUEUE) -> Iterator[np.ndarray]:
    """Blocks from a microphone at ``sample_rate`` (resampled if the device cannot do it), until Ctrl-C."""
    sd = _sounddevice()
    blocks: queue.Queue = queue.Queue(maxsize=queue_size)

    def callback(indata, frames, time_info, status):
        if status.input_overflow:
            counters.overflow += 1
        try:
            blocks.put_nowait(indata[:, 0].copy())
        except queue.Full:
            counters.dropped += 1

    def open_stream(rate: int):
        return sd.InputStream(samplerate=rate, channels=1, dtype="float32", device=device,
                              blocksize=round(block_s * rate), callback=callback)

    rate, resampler = sample_rate, None
    try:
        try:
            stream = open_stream(rate)
        except sd.PortAudioError:   # many devices only do 44.1/48 kHz: record natively and resample
            rate = int(sd.query_devices(device, "input")["default_samplerate"])
            stream = open_stream(rate)
            import soxr
            resampler = soxr.ResampleStream(rate, sample_rate, 1, dtype="float32")
    except (sd.PortAudioError, ValueError) as e:
        raise EdgeSerError(f"cannot open audio input device {device if device is not None else '(default)'}: "
                           f"{e}{HINT}") from None
    with stream:
        while True:
            try:
                block = blocks.get(timeout=2.0)
            except queue.Empty:
                if not stream.active:
                    raise EdgeSerError(f"the audio input device stopped delivering audio{HINT}") from None
                continue
            yield resampler.resample_chunk(block) if resampler else block


def record_clip(device: int | None, sample_rate: int, seconds: float) -> np.ndarray:
    """``seconds`` of microphone audio at ``sample_rate`` (the device is closed again after)."""
    chunks, total, counters = [], 0, Counters()
    source = mic_chunks(device, sample_rate, counters)
    try:
        for chunk in source:
            chunks.append(chunk)
            total += len(chunk)
            if total >= seconds * sample_rate:
                break
    finally:
        source.close()
    return np.concatenate(chunks)[:round(seconds * sample_rate)]
