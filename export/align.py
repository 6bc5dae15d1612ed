"""The text path's attention-alignment head (the seed's multimodal model), trained by ``edge-ser export`` when
its manifest has a ``text`` column (what is said in each clip).

Each token of the transcript, as the text emotion model's encoder states it (``edge_ser.textemotion``: the same
int8 encoder the runtime runs), attends over the frames of the bundle's student encoder (its last hidden state):
the audio aligned with each word. The head pools, over the tokens, the words, the audio they align with and their
product, adds the mean audio frame, and classifies the bundle's labels. The encoder stays frozen (the head learns
on its cached frames of at most the first 30 s of a clip, as the runtime cuts segments); the bundle gets one ONNX graph
``audio, tokens, token_mask -> logits`` with int8 weights (manifest ``fusion``; it runs only on segments with a
transcript, see ``edge_ser.fusion``).
"""
from __future__ import annotations

import logging
import math
import warnings
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from edge_ser.audio import SAMPLE_RATE
from edge_ser.errors import DatasetError, EdgeSerError
from edge_ser.manifest import INPUT_NAME, LOGITS_NAME, TOKEN_MASK_NAME, TOKENS_NAME
from edge_ser.metrics import scores
from edge_ser.progress import progress

from .features import MAX_CHUNK_S, _hidden
from .graph import OPSET, quantize_dynamic_onnx

log = logging.getLogger(__name__)
FILE = "fusion.onnx"
DIM = 128              # the space words and frames meet in
EPOCHS = 40
MIN_STEPS = 400        # updates at least (more epochs over few clips)
BATCH = 32
LR = 1e-3
WEIGHT_DECAY = 1e-2
DROPOUT = 0.2
MIN_CLIPS = 2          # training clips with text per label
PARITY_TOLERANCE = 1e-3


class AlignmentHead(nn.Module):
    """``frames[B, T, Da]`` (``frame_mask[B, T]``) and ``tokens[B, S, Dt]`` (``token_mask[B, S]``) -> logits."""

    def __init__(self, audio_dim: int, text_dim: int, n_classes: int, dim: int = DIM):
        super().__init__()
        self.audio = nn.Sequential(nn.LayerNorm(audio_dim), nn.Linear(audio_dim, dim))
        self.text = nn.Sequential(nn.LayerNorm(text_dim), nn.Linear(text_dim, dim))
        self.drop = nn.Dropout(DROPOUT)
        self.out = nn.Linear(4 * dim, n_classes)

    def forward(self, frames: Tensor, frame_mask: Tensor, tokens: Tensor, token_mask: Tensor) -> Tensor:
        a, t = self.audio(frames), self.text(tokens)
        scores = (t @ a.transpose(1, 2)) / math.sqrt(a.shape[-1])              # [B, S, T]
        scores = scores.masked_fill(frame_mask[:, None, :] == 0, -1e4)
        aligned = torch.softmax(scores, dim=-1) @ a                             # the audio each token aligns with
        tm, fm = token_mask[..., None], frame_mask[..., None]
        pooled = [(h * tm).sum(1) / tm.sum(1).clamp(min=1.0) for h in (t, aligned, t * aligned)]
        pooled.append((a * fm).sum(1) / fm.sum(1).clamp(min=1.0))
        return self.out(self.drop(torch.cat(pooled, dim=-1)))


class FusionGraph(nn.Module):
    """What the bundle's fusion graph holds: ``audio[B, N], tokens[B, S, Dt], token_mask[B, S] -> logits[B, C]``."""

    def __init__(self, encoder: nn.Module, head: AlignmentHead):
        super().__init__()
        self.encoder, self.head = encoder, head

    def forward(self, audio: Tensor, tokens: Tensor, token_mask: Tensor) -> Tensor:
        frames = self.encoder(audio)[-1]
        return self.head(frames, torch.ones(frames.shape[:2], dtype=frames.dtype), tokens, token_mask)


def check_texts(texts: list[str | None], y: np.ndarray, train: np.ndarray, labels: list[str]) -> bool:
    """Whether the clips have text to train the head on (False: none has); too few per label is an error, found
    before any expensive work."""
    if not any(texts):
        return False
    counts = np.bincount([y[i] for i in train if texts[i]], minlength=len(labels))
    few = [f"{labels[k]} {c}" for k, c in enumerate(counts) if c < MIN_CLIPS]
    if few:
        raise DatasetError(f"the text column trains the alignment head, which needs at least {MIN_CLIPS} training "
                           f"clips with text per label; these have fewer: {', '.join(few)}. Fill in the text of "
                           "more clips, or leave the column empty")
    return True


def frames_of(encoder: nn.Module, waves: list[np.ndarray]) -> list[np.ndarray]:
    """The encoder's last hidden state ``[T, D]`` of the first 30 s of each clip (float16, to keep them all in
    memory)."""
    n = int(MAX_CHUNK_S * SAMPLE_RATE)
    with torch.inference_mode():
        return [_hidden(encoder, w[:n])[-1, 0].numpy().astype(np.float16)
                for w in progress(waves, description="alignment: audio frames")]


def _pad(arrays: list[np.ndarray]) -> tuple[Tensor, Tensor]:
    n = max(len(a) for a in arrays)
    x = torch.zeros(len(arrays), n, arrays[0].shape[-1])
    mask = torch.zeros(len(arrays), n)
    for i, a in enumerate(arrays):
        x[i, :len(a)], mask[i, :len(a)] = torch.from_numpy(a.astype(np.float32)), 1.0
    return x, mask


def _logits(head: AlignmentHead, frames, tokens, idx) -> Tensor:
    return head(*_pad([frames[i] for i in idx]), *_pad([tokens[i] for i in idx]))


def fit_alignment(frames: list[np.ndarray], tokens: list[np.ndarray], y: np.ndarray, idx: np.ndarray,
                  n_classes: int, seed: int = 0) -> AlignmentHead:
    """The head trained on clips ``idx`` (class-balanced cross-entropy, AdamW, :data:`EPOCHS` epochs and at least
    :data:`MIN_STEPS` updates: no choice rests on a few validation speakers)."""
    with torch.random.fork_rng():   # initialisation, order and dropout from ``seed`` alone
        torch.manual_seed(seed)
        return _train(frames, tokens, y, idx, n_classes)


def _train(frames, tokens, y: np.ndarray, idx: np.ndarray, n_classes: int) -> AlignmentHead:
    head = AlignmentHead(frames[idx[0]].shape[-1], tokens[idx[0]].shape[-1], n_classes)
    counts = np.bincount(y[idx], minlength=n_classes)
    weight = torch.tensor(len(idx) / (n_classes * np.maximum(counts, 1)), dtype=torch.float32)
    opt = torch.optim.AdamW(head.parameters(), lr=LR, weight_decay=WEIGHT_DECAY)
    target = torch.from_numpy(y)
    head.train()
    for _ in progress(range(max(EPOCHS, math.ceil(MIN_STEPS / math.ceil(len(idx) / BATCH)))),
                      description="alignment: training"):
        order = idx[torch.randperm(len(idx)).numpy()]
        for b in range(0, len(order), BATCH):
            batch = order[b:b + BATCH]
            loss = F.cross_entropy(_logits(head, frames, tokens, batch), target[batch], weight=weight)
            opt.zero_grad()
            loss.backward()
            opt.step()
    return head.eval()


def score(head: AlignmentHead, frames, tokens, y: np.ndarray, idx: np.ndarray, n_classes: int) -> dict:
    """UA, WA and macro-F1 of the head on clips ``idx`` (one at a time, as the runtime runs it)."""
    with torch.inference_mode():
        pred = [int(_logits(head, frames, tokens, [i]).argmax()) for i in idx]
    return scores(y[idx], pred, n_classes)


def export_fusion_onnx(model: FusionGraph, path: Path, text_dim: int,
                       clips: list[tuple[np.ndarray, np.ndarray, np.ndarray]]) -> Path:
    """The fusion graph as ONNX (opset 17, dynamic batch, samples and tokens), checked against torch on ``clips``
    (audio, token states, mask), then with dynamic int8 weights (signed: every CPU family; the front end float)."""
    fp32 = path.with_name(f"{path.stem}-fp32.onnx")
    try:
        _export(model.eval(), fp32, text_dim, clips)
        return quantize_dynamic_onnx(fp32, path, signed_weights=True)
    finally:
        fp32.unlink(missing_ok=True)


def _export(model: FusionGraph, path: Path, text_dim: int, clips) -> None:
    import onnx

    from edge_ser.engine import ort_session

    example = (torch.randn(1, 32000, generator=torch.Generator().manual_seed(0)) * 0.1,
               torch.zeros(1, 5, text_dim), torch.ones(1, 5))
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, example, str(path), input_names=[INPUT_NAME, TOKENS_NAME, TOKEN_MASK_NAME],
                          output_names=[LOGITS_NAME], opset_version=OPSET, dynamo=False,
                          dynamic_axes={INPUT_NAME: {0: "batch", 1: "samples"},
                                        TOKENS_NAME: {0: "batch", 1: "tokens"},
                                        TOKEN_MASK_NAME: {0: "batch", 1: "tokens"}, LOGITS_NAME: {0: "batch"}})
    onnx.checker.check_model(str(path))
    session = ort_session(path.read_bytes(), 1, str(path), [INPUT_NAME, TOKENS_NAME, TOKEN_MASK_NAME])
    for x, states, mask in clips:
        feeds = [x[None].astype(np.float32), states, mask]
        with torch.no_grad():
            ref = torch.softmax(model(*map(torch.from_numpy, feeds)), -1).numpy()
        out = session.run([LOGITS_NAME], dict(zip((INPUT_NAME, TOKENS_NAME, TOKEN_MASK_NAME), feeds)))[0]
        out = np.exp(out - out.max(-1, keepdims=True))
        if np.abs(out / out.sum(-1, keepdims=True) - ref).max() > PARITY_TOLERANCE:
            raise EdgeSerError("the exported fusion graph disagrees with its torch model; the bundle was not written")
