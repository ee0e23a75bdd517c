"""Single-process, multi-GPU and multi-node training with one code path.

``torchrun --nproc-per-node N -m training.pipeline ...`` sets RANK/WORLD_SIZE/LOCAL_RANK; plain
``python -m training.pipeline`` runs as world size 1 and every helper here is a no-op.
NCCL on CUDA, gloo on CPU (the tests run 2 gloo processes).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class Dist:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def init(device: str = "auto") -> tuple[Dist, torch.device]:
    """Join the process group torchrun describes (if any) and pick this process's device."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local = int(os.environ.get("LOCAL_RANK", "0"))
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda"):
        if not torch.cuda.is_available():
            raise RuntimeError("--device cuda was asked for but torch sees no CUDA device")
        dev = torch.device("cuda", local if world > 1 else (torch.device(device).index or 0))
        torch.cuda.set_device(dev)
    else:
        dev = torch.device("cpu")
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if dev.type == "cuda" else "gloo")
    return Dist(rank, world, local), dev


def shutdown() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def shard(n: int, d: Dist) -> range:
    """This rank's share of ``n`` items (strided, so shards differ by at most one item)."""
    return range(d.rank, n, d.world_size)


def all_gather_rows(x: torch.Tensor, n_total: int, d: Dist) -> torch.Tensor:
    """Gather the per-rank rows of a strided :func:`shard` back into the original order."""
    if not d.enabled:
        return x
    sizes = [len(range(r, n_total, d.world_size)) for r in range(d.world_size)]
    pad = max(sizes) - x.shape[0]
    xp = torch.cat([x, x.new_zeros((pad, *x.shape[1:]))]) if pad else x
    parts = [torch.empty_like(xp) for _ in range(d.world_size)]
    dist.all_gather(parts, xp.contiguous())
    out = x.new_empty((n_total, *x.shape[1:]))
    for r, (p, s) in enumerate(zip(parts, sizes)):
        out[r::d.world_size] = p[:s]
    return out


def broadcast(obj: Any, d: Dist) -> Any:
    """``obj`` from rank 0 on every rank (pickled; for small results such as k-means labels)."""
    if not d.enabled:
        return obj
    box = [obj if d.is_main else None]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def mean_scalar(value: float, d: Dist, device: torch.device) -> float:
    if not d.enabled:
        return value
    t = torch.tensor([value], dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return float(t.item()) / d.world_size


def broadcast_parameters(params, d: Dist) -> None:
    """Make freshly (re-)initialised parameters identical on every rank (rank 0's values)."""
    if d.enabled:
        for p in params:
            dist.broadcast(p.data, src=0)


def barrier(d: Dist) -> None:
    if d.enabled:
        dist.barrier()
