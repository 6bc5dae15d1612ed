"""Distill a teacher encoder into a cheaper student (DistilHuBERT-style layer prediction, task-aligned).

The student trunk (fewer, narrower or strided blocks, see ``teachers.make_student``) carries one linear
prediction per teacher hidden state the head reads (``Student.targets``), so the teacher's head works on its
output unchanged and a head refitted on the student sees the same kind of features.

Targets are aligned with what the head reads: (1) the frames of those teacher layers, standardised per
dimension (L1 - log sigmoid cosine, DistilHuBERT); (2) their mean+std pooled statistics, the head's actual
input (MSE, standardised); (3) given the teacher's head, its emotion distribution (KL at a temperature) after
a warm-up epoch. No labels are used. The predictions start as the closed-form least-squares fit of the target
layers on the trunk's last layer (:func:`fit_predictions`), most of the gain for a student close to the teacher.

Training audio is cut into pieces of at most ``max_clip_s`` and, with ``augment`` > 0, each piece also gets
that many augmented copies (:func:`.augment.augmented`: speed, room, telephone line or low-pass, codec, gain,
noise), the teacher's targets being computed on the augmented audio. An epoch is kept only if ``validate`` (the UA
of a head refitted on the student, on speakers distillation never sees) says it is the best so far (epoch 0 = the
closed-form start).

Under torchrun (:mod:`.parallel`) every process computes the targets of its share of the pieces; a step's
gradient is summed over the processes, so training matches one process with the same ``batch``.
"""
from __future__ import annotations

import copy
import math
import random
from dataclasses import dataclass
from typing import Callable, Iterable, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from edge_ser.audio import SAMPLE_RATE
from edge_ser.progress import bar

from . import parallel
from .augment import augmented
from .features import pool_layers
from .teachers import Encoder, ffn_layers, ffn_residuals, make_student

PRUNE_CLIPS = 1500   # clips that rank and refit the pruned feed-forward units
PRUNE_REFIT = 3      # the version of prune_ffn's refit (2: each block makes up for the cuts before it; 3: clips'
                     # mean frames weighed PRUNE_CLIP_MEANS more); keys caches
PRUNE_CLIP_MEANS = 4.0   # the refit's extra weight on each clip's mean frame, on top of its frames (prune_ffn;
                         # a new value needs a new PRUNE_REFIT, which keys caches and made_with)


@dataclass
class DistillConfig:
    blocks: int = 1                # student transformer blocks
    width: int | None = None       # student width (None: the teacher's)
    init: str = "teacher"          # "teacher" (copy front end and blocks) | "random"
    time_stride: int = 1           # student frames = teacher frames / time_stride
    ffn: int | None = None         # hidden units kept in each feed-forward block (None: all)
    epochs: int = 3                # passes over the pieces
    lr: float = 3e-5
    batch: int = 8                 # pieces per optimiser step (split across processes under torchrun)
    max_clip_s: float = 6.0        # longer clips are cut into pieces of at most this length
    augment: int = 1               # augmented copies of every piece
    pool_weight: float = 1.0       # weight of the pooled-statistics term
    kd_weight: float = 1.0         # weight of the KL term on the teacher head's distribution
    kd_warmup: int = 1             # epochs of layer prediction alone before the KL term joins
    temperature: float = 2.0
    seed: int = 0


class Student(torch.nn.Module):
    """Student trunk + a linear prediction of each target teacher layer from the trunk's last layer."""

    def __init__(self, trunk: Encoder, targets: list[int], target_dim: int):
        super().__init__()
        self.trunk = trunk
        self.targets = list(targets)    # the teacher layer each prediction reproduces
        self.predict = torch.nn.ModuleList(torch.nn.Linear(trunk.dim, target_dim) for _ in self.targets)
        if trunk.dim == target_dim:   # start as the truncated teacher: every prediction = the last layer
            for p in self.predict:
                torch.nn.init.eye_(p.weight)
                torch.nn.init.zeros_(p.bias)
        self.dim = target_dim

    @property
    def n_layers(self) -> int:
        return len(self.targets)

    def forward(self, audio: torch.Tensor) -> torch.Tensor:
        last = self.trunk(audio)[-1]
        return torch.stack([p(last) for p in self.predict])


def keep_used_layers(student: Student, head: torch.nn.Module) -> None:
    """Drop the predictions that ``head`` ignores (a linear head reads only its chosen layers).

    Edits both in place: the student predicts only those layers and the head reads them in order.
    """
    idx = head.layers.tolist()
    if idx == list(range(student.n_layers)):
        return
    student.predict = torch.nn.ModuleList(student.predict[i] for i in idx)
    student.targets = [student.targets[i] for i in idx]
    head.layers = torch.arange(len(idx))


def ridge(pairs: Iterable[tuple[torch.Tensor, torch.Tensor]],
          strength: float = 1e-3) -> tuple[torch.Tensor, torch.Tensor]:
    """Weight [out, in] and bias [out] of the ridge regression of Y on X over (X [n, in], Y [n, out]) batches,
    summed over processes under torchrun."""
    gram = xty = 0
    for x, y in pairs:
        x = torch.cat([x, torch.ones(len(x), 1, device=x.device)], 1).double()
        gram, xty = gram + x.T @ x, xty + x.T @ y.double()
    return _solve(parallel.all_reduce(gram), parallel.all_reduce(xty), strength)


def _solve(gram: torch.Tensor, xty: torch.Tensor, strength: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Weight and bias of a ridge regression from its sums (inputs with a trailing column of ones)."""
    gram = gram + strength * gram.diagonal().mean() * torch.eye(len(gram), dtype=gram.dtype, device=gram.device)
    w = torch.linalg.solve(gram, xty)
    return w[:-1].T.float(), w[-1].float()


def fit_predictions(student: Student, clips: list[torch.Tensor], targets: list[torch.Tensor]) -> None:
    """Set every prediction to the ridge regression of its target layer on the trunk's last layer.

    ``targets[i]`` is [len(student.targets), 1, T, D] for ``clips[i]`` (this process's share). The trunk's last
    state is not the teacher layer it should predict (a truncated Whisper ends in the final layer norm; a narrow
    student has another width), so gradient steps from an identity or random start first spend themselves on
    scale and outlier dimensions; the closed form does that part exactly. On EmoDB it is most of the gain: a
    1-block student's held-out UA goes from 0.829 (identity start) to 0.851.
    """
    def pairs():
        for c, tg in zip(clips, targets):   # trunk frames, and the targets [k, T, D] -> [T, k * D]
            f = student.trunk(c)[-1][0]
            n = min(len(f), tg.shape[2])
            yield f[:n], tg[:, 0, :n].transpose(0, 1).flatten(1)
    with torch.no_grad():
        weight, bias = ridge(pairs())
        for j, p in enumerate(student.predict):
            rows = slice(j * student.dim, (j + 1) * student.dim)
            p.weight.copy_(weight[rows])
            p.bias.copy_(bias[rows])


def fit_predictions_on(student: Student, teacher: Encoder, waves: list[np.ndarray], max_s: float = 6.0) -> None:
    """Refit the student's predictions on ``waves`` (e.g. every labelled speaker for the shipped bundle)."""
    clips = [_tensor(w) for w in parallel.shard(pieces(waves, max_s))]
    factor = student.trunk.frame_hop // teacher.frame_hop
    with torch.no_grad():
        targets = [to_frame_rate(teacher(c)[student.targets], factor) for c in clips]
    fit_predictions(student, clips, targets)


def ffn_units(trunk: Encoder, keep: int | Sequence[int]) -> list[int]:
    """The hidden units each feed-forward block of ``trunk`` keeps for ``keep`` (one count for every block, or a
    sequence: ``keep[i]`` for block i; blocks past it, 0 and counts at or over a block's width keep all)."""
    layers = ffn_layers(trunk.encoder)
    keeps = [keep] * len(layers) if isinstance(keep, int) else [*keep, *[0] * (len(layers) - len(keep))]
    return [k if 0 < k < getattr(parent, up).out_features else getattr(parent, up).out_features
            for (parent, up, _), k in zip(layers, keeps)]


def refit_clips(pool: list[np.ndarray], augment: int, seed: int) -> list[np.ndarray]:
    """What a cut is refit on (:func:`prune_ffn`): up to PRUNE_CLIPS clips of ``pool`` drawn with ``seed``, then
    ``augment`` augmented copies of each (:func:`augmented`: the pool's own audio is too narrow to refit on)."""
    rng = np.random.default_rng(seed)
    picked = [pool[i] for i in np.sort(rng.permutation(len(pool))[:PRUNE_CLIPS])]
    return picked + [augmented(w, rng) for _ in range(augment) for w in picked]


def prune_ffn(trunk: Encoder, clips: list[torch.Tensor], keep: int | Sequence[int],
              strength: float = 1e-3) -> list[int]:
    """Keep :func:`ffn_units` hidden units in every feed-forward block, block by block, and refit its output layer;
    returns the units each block kept.

    Units are ranked by how much output they carry on ``clips`` (mean |activation| x norm of their output
    weights); the output layer is then the ridge regression on the kept units of what brings the block's residual
    stream back to the uncut trunk's: the whole layer's output plus the error the blocks cut before it left in the
    stream, so each block also makes up for its predecessors' cuts. Its loss is every frame's squared error plus
    PRUNE_CLIP_MEANS x each clip's frames x the squared error of the clip's mean frame: a clip's emotion is in what
    its frames share more than in how they differ (sounds, words), and the heads read clip means. Solved from sums
    over every frame (memory does not grow with the clips).
    """
    kept = ffn_units(trunk, keep)
    whole, exact = copy.deepcopy(trunk), True   # exact: no block before this one is cut, nothing to make up for
    seen: dict[str, torch.Tensor] = {}   # one clip's FFN input and output, and both residual streams
    streams = zip(ffn_layers(trunk.encoder), ffn_residuals(trunk.encoder), ffn_residuals(whole.encoder), kept)
    for block, ((parent, up_name, down_name), here, there, k) in enumerate(streams):
        up, down = getattr(parent, up_name), getattr(parent, down_name)
        if k == up.out_features:
            continue
        sums: dict[str, torch.Tensor] = {}
        hooks = [down.register_forward_hook(lambda m, inputs, output: seen.update(a=inputs[0], d=output))]
        if not exact:
            hooks += [_tap(*here, lambda x: seen.update(cut=x)), _tap(*there, lambda x: seen.update(whole=x))]
        with torch.no_grad(), bar(len(clips), f"refitting block {block}'s cut FFN") as advance:
            for c in clips:
                trunk(c)
                y = seen["d"]
                if not exact:   # the uncut trunk only once earlier blocks are cut
                    whole(c)
                    y = y + seen["whole"] - seen["cut"]
                a = seen["a"].double()                                       # [clips, frames, units]
                a = torch.cat([a, a.new_ones(*a.shape[:-1], 1)], -1)
                mean_weight = PRUNE_CLIP_MEANS * a.shape[1]                 # each clip's mean frame, frames-fold
                means, y = a.mean(1), y.double()
                frames, targets = a.flatten(0, -2), y.flatten(0, -2)
                gram = frames.T @ frames + mean_weight * means.T @ means
                xty = frames.T @ targets + mean_weight * means.T @ y.mean(1)
                for name, value in (("abs", frames.abs().sum(0)), ("gram", gram), ("xty", xty)):
                    sums[name] = sums[name] + value if name in sums else value
                advance()
        for hook in hooks:
            hook.remove()
        gram, xty = parallel.all_reduce(sums["gram"]), parallel.all_reduce(sums["xty"])
        importance = parallel.all_reduce(sums["abs"])[:-1].float() * down.weight.norm(dim=0)
        idx = importance.topk(k).indices.sort().values
        rows = torch.cat([idx, torch.tensor([up.out_features], device=idx.device)])   # with the ones column
        new_up = torch.nn.Linear(up.in_features, k).to(up.weight.device)
        new_down = torch.nn.Linear(k, down.out_features).to(up.weight.device)
        with torch.no_grad():
            new_up.weight.copy_(up.weight[idx])
            new_up.bias.copy_(up.bias[idx])
            weight, bias = _solve(gram[rows][:, rows], xty[rows], strength)
            new_down.weight.copy_(weight)
            new_down.bias.copy_(bias)
        setattr(parent, up_name, new_up)
        setattr(parent, down_name, new_down)
        exact = False
    trunk.provenance["ffn"] = kept
    return kept


def _tap(module: torch.nn.Module, reads_input: bool, keep: Callable[[torch.Tensor], None]):
    """A hook handing ``keep`` the module's input (``reads_input``) or its output (the first, for a tuple)."""
    if reads_input:
        return module.register_forward_pre_hook(lambda m, inputs: keep(inputs[0]))
    return module.register_forward_hook(lambda m, inputs, output: keep(output[0] if isinstance(output, tuple)
                                                                        else output))


def to_frame_rate(hidden: torch.Tensor, factor: int) -> torch.Tensor:
    """Average ``factor`` consecutive frames of hidden states [L, B, T, D] (a student with a time stride)."""
    if factor == 1:
        return hidden
    layers, b, t, d = hidden.shape
    pooled = F.avg_pool1d(hidden.reshape(layers * b, t, d).transpose(1, 2), factor, ceil_mode=True)
    return pooled.transpose(1, 2).reshape(layers, b, -1, d)


def distill_loss(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """DistilHuBERT: L1 minus log-sigmoid cosine similarity, averaged over layers and frames."""
    t = min(pred.shape[2], target.shape[2])
    pred, target = pred[:, :, :t], target[:, :, :t]
    return F.l1_loss(pred, target) - F.logsigmoid(F.cosine_similarity(pred, target, dim=-1)).mean()


def pieces(waves: list[np.ndarray], max_s: float, sr: int = SAMPLE_RATE) -> list[np.ndarray]:
    """Cut long clips into pieces of at most ``max_s`` seconds (short remainders dropped)."""
    n = int(max_s * sr)
    out = []
    for w in waves:
        out += [w[i:i + n] for i in range(0, len(w), n) if len(w[i:i + n]) >= sr // 2]
    return out


def _tensor(x: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))[None].to(parallel.device())


def _standardiser(tensors: list[torch.Tensor], dims: tuple[int, ...]) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and std over ``dims`` of this process's tensors, pooled across processes."""
    total = sum(t.double().sum(dims, keepdim=True) for t in tensors)
    square = sum((t.double() ** 2).sum(dims, keepdim=True) for t in tensors)
    count = torch.tensor(float(sum(np.prod([t.shape[d] for d in dims]) for t in tensors)), dtype=torch.float64,
                         device=parallel.device())
    total, square, count = parallel.all_reduce(total), parallel.all_reduce(square), parallel.all_reduce(count)
    mean = total / count
    std = (square / count - mean ** 2).clamp_min(1e-10).sqrt()
    return mean[:1].float(), std[:1].float().clamp_min(1e-5)


def distill(teacher: Encoder, waves: list[np.ndarray], cfg: DistillConfig, head: torch.nn.Module | None = None,
            validate: Callable[[Student], float] | None = None) -> tuple[Student, list[dict]]:
    """Train a student on unlabeled 16 kHz clips to reproduce the teacher layers ``head`` reads (all, without a
    head or for a head that reads all), their pooled statistics and, with the teacher's ``head``, its emotion
    distribution.

    Returns the student (eval mode, on the CPU; with ``validate``, the weights of its best-scoring epoch, 0 = the
    closed-form start) and one record per epoch: ``{"epoch", "loss", "score", "kept"}``.
    """
    torch.manual_seed(cfg.seed)
    rng = random.Random(cfg.seed)
    dev = parallel.device()
    teacher = teacher.eval().to(dev)
    base = pieces(waves, cfg.max_clip_s)
    arng = np.random.default_rng(cfg.seed)
    every = base + [augmented(p, arng) for _ in range(cfg.augment) for p in base]   # same list on every process
    trunk = make_student(teacher, cfg.blocks, cfg.width, cfg.init, cfg.time_stride).to(dev)
    if cfg.ffn:
        sample = [every[i] for i in rng.sample(range(len(base)), min(len(base), PRUNE_CLIPS))]
        prune_ffn(trunk, [_tensor(c) for c in parallel.shard(sample)], cfg.ffn)
    used = getattr(head, "layers", None)
    used = list(range(teacher.n_layers)) if used is None else used.tolist()
    student = Student(trunk, used, teacher.dim).to(dev)
    mine = [i for i in range(len(every)) if parallel.mine(i)]
    clips, targets, pooled, soft = {}, {}, {}, {}
    factor = trunk.frame_hop // teacher.frame_hop
    with bar(len(mine), "teacher targets") as advance, torch.no_grad():
        for i in mine:
            clips[i] = _tensor(every[i])
            hidden = teacher(clips[i])
            targets[i] = to_frame_rate(hidden[used], factor)
            pooled[i] = pool_layers(hidden[used])
            if head is not None:
                soft[i] = torch.log_softmax(head.to(dev)(pool_layers(hidden)) / cfg.temperature, -1)
            advance()
    fit_predictions(student, [clips[i] for i in mine], [targets[i] for i in mine])
    # the losses compare standardised features: Whisper's few huge outlier dimensions would otherwise dominate
    mean, std = _standardiser([targets[i] for i in mine], (1, 2))      # [k, 1, 1, D]
    pmean, pstd = _standardiser([pooled[i] for i in mine], (0,))       # [1, k, 2D]
    for i in mine:   # standardised, the targets fit in half precision (3.1 h of audio: 1.2 GB per layer)
        targets[i] = ((targets[i] - mean) / std).half()
        pooled[i] = (pooled[i] - pmean) / pstd
    if head is not None:
        head = head.eval().requires_grad_(False)
    params = [p for p in student.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=0.01)
    steps = cfg.epochs * -(-len(every) // cfg.batch)
    warm = max(1, steps // 10)   # linear warm-up over a tenth of the steps, then a cosine decay
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda step: min(1.0, (step + 1) / warm) * 0.5 * (1 + math.cos(math.pi * step / max(steps, 1))))

    def score() -> float | None:
        return parallel.broadcast(validate(_on_cpu(student)) if validate and parallel.is_main() else None) \
            if validate else None

    history = [{"epoch": 0, "loss": None, "score": score()}]
    best = (history[0]["score"], 0, copy.deepcopy(student.state_dict()))
    with bar(steps, "distilling") as advance:
        for epoch in range(cfg.epochs):
            order = list(range(len(every)))
            rng.shuffle(order)
            total = torch.zeros(2, dtype=torch.float64, device=dev)   # loss sum, pieces
            student.to(dev).train()
            for start in range(0, len(order), cfg.batch):
                batch = order[start:start + cfg.batch]
                opt.zero_grad()
                for i in batch:
                    if not parallel.mine(i):
                        continue
                    pred = student(clips[i])
                    loss = distill_loss((pred - mean) / std, targets[i].float())
                    loss = loss + cfg.pool_weight * F.mse_loss((pool_layers(pred) - pmean) / pstd, pooled[i])
                    if head is not None and epoch >= cfg.kd_warmup:
                        log_p = torch.log_softmax(head(pool_layers(pred)) / cfg.temperature, -1)
                        loss = loss + cfg.kd_weight * cfg.temperature ** 2 * F.kl_div(
                            log_p, soft[i], log_target=True, reduction="batchmean")
                    (loss / len(batch)).backward()
                    total += torch.tensor([loss.item(), 1.0], dtype=torch.float64, device=dev)
                for p in params:   # data parallel: the step's gradient is the sum over every process's pieces
                    if p.grad is None:
                        p.grad = torch.zeros_like(p)
                    parallel.all_reduce(p.grad)
                torch.nn.utils.clip_grad_norm_(params, 5.0)
                opt.step()
                sched.step()
                advance(description=f"distilling (epoch {epoch + 1})")
            parallel.all_reduce(total)
            s = score()
            history.append({"epoch": epoch + 1, "loss": float(total[0] / max(total[1], 1)), "score": s})
            if validate is None or s > best[0]:
                best = (s, epoch + 1, copy.deepcopy(student.state_dict()))
    student.load_state_dict(best[2])
    for h in history:
        h["kept"] = h["epoch"] == best[1]
    teacher.cpu()
    if head is not None:
        head.cpu()
    return _on_cpu(student), history


def _on_cpu(student: Student) -> Student:
    return student.cpu().eval()
