"""Feature extraction and distillation on several processes (``torchrun``) or a GPU, unchanged otherwise.

Run under ``torchrun --nproc_per_node N -m edge_ser export ...`` (or ``torchrun --nnodes ...`` across machines),
every process reads the same data; the heavy loops split their clips by :func:`shard`, and sums (gradients,
least-squares statistics) are added up across processes with :func:`all_reduce`, so the result matches one
process within floating-point rounding. The process group uses ``nccl`` on GPUs and ``gloo`` on CPUs. Only
rank 0 writes the bundle. Without torchrun everything here is a no-op.
"""
from __future__ import annotations

import os
from typing import Sequence, TypeVar

import torch
import torch.distributed as dist

from edge_ser.errors import EdgeSerError

T = TypeVar("T")
_device = torch.device("cpu")


def init(device: str = "cpu") -> None:
    """Pick the torch device and, under torchrun (``WORLD_SIZE`` > 1), join the process group."""
    global _device
    local = int(os.environ.get("LOCAL_RANK", "0"))
    if device.startswith("cuda"):
        if not torch.cuda.is_available():
            raise EdgeSerError(f"--device {device}: no CUDA device is available (torch {torch.__version__}); "
                               "use --device cpu")
        _device = torch.device(f"cuda:{local}" if device == "cuda" else device)
        torch.cuda.set_device(_device)
    else:
        _device = torch.device("cpu")
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if _device.type == "cuda" else "gloo")


def device() -> torch.device:
    return _device


def world() -> tuple[int, int]:
    """(rank, world size); (0, 1) without torchrun."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def is_main() -> bool:
    return world()[0] == 0


def mine(index: int) -> bool:
    """Whether item ``index`` of a shared list belongs to this process."""
    rank, size = world()
    return index % size == rank


def shard(items: Sequence[T]) -> list[T]:
    """This process's items: every ``size``-th from its rank."""
    rank, size = world()
    return list(items[rank::size])


def all_reduce(t: torch.Tensor) -> torch.Tensor:
    """Sum ``t`` across processes in place (on its device) and return it."""
    if world()[1] > 1:
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t


def gather(items: list[T]) -> list[T]:
    """Undo :func:`shard`: every process gets the whole list back in the original order."""
    rank, size = world()
    if size == 1:
        return items
    parts: list = [None] * size
    dist.all_gather_object(parts, items)
    n = sum(len(p) for p in parts)
    return [parts[i % size][i // size] for i in range(n)]


def broadcast(value: T) -> T:
    """Rank 0's ``value`` on every process."""
    if world()[1] == 1:
        return value
    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]
