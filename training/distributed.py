"""Multi-process training under torchrun (DistributedDataParallel).

`torchrun --nproc_per_node=N -m training ...` sets RANK/WORLD_SIZE/LOCAL_RANK; a
plain `python -m training` run is world size 1 and touches nothing here. Every rank
builds the same tokenizer and batch order from the same seed, takes its share of
the batches, and only rank 0 logs, writes metrics and exports the artifact.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class DistContext:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def per_rank_batch_size(self, batch_size: int) -> int:
        """Keep the global batch (and so the number of optimiser steps) as configured."""
        return max(1, math.ceil(batch_size / self.world_size))

    def shard(self, batches: list[list[int]]) -> list[list[int]]:
        """This rank's batches; every rank gets the same count so collectives stay in step."""
        usable = len(batches) - len(batches) % self.world_size
        return batches[:usable][self.rank :: self.world_size]


def context_from_env() -> DistContext:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistContext()
    return DistContext(int(os.environ["RANK"]), world, int(os.environ.get("LOCAL_RANK", "0")))


def init(ctx: DistContext, device: torch.device) -> None:
    if ctx.enabled and not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")


def cleanup(ctx: DistContext) -> None:
    if ctx.enabled and dist.is_initialized():
        dist.destroy_process_group()
