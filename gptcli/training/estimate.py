"""The loss estimate that training logs: the same few random batches at every evaluation."""

from __future__ import annotations

import torch

from gptcli.config import Config
from gptcli.data.dataset import TokenDataset
from gptcli.device import autocast
from gptcli.training import distributed
from gptcli.training.batches import eval_generator
from gptcli.training.distributed import Dist


@torch.no_grad()
def evaluate(
    model, data: TokenDataset, cfg: Config, device, precision, d: Dist = Dist()
) -> dict[str, float]:
    """Mean loss over the same eval_iters batches every time, so evaluations compare fairly.

    Distributed, each process takes every world_size-th batch; the sums are added up, so the
    result is the single-process one. model must not be DDP-wrapped: a DDP forward is a
    collective, and the processes run different numbers of batches."""
    tc = cfg.train
    was_training = model.training
    model.eval()
    totals = torch.zeros(2, dtype=torch.float64)
    for s, split in enumerate(("train", "val")):
        for i in range(d.rank, tc.eval_iters, d.world_size):
            g = eval_generator(tc.seed, s, i)
            x, y = data.batch(split, tc.batch_size, cfg.model.block_size, g)
            with autocast(device, precision):
                _, loss = model(x.to(device), y.to(device))
            totals[s] += loss.item()
    model.train(was_training)
    totals = distributed.all_sum(d, totals, device) / tc.eval_iters
    return {"train": totals[0].item(), "val": totals[1].item()}
