"""Which batches a step sees: the global-batch rule under torchrun, and batch keys.

Under torchrun the global batch is the config's whatever the number of processes: one optimizer
step sees batch_size x grad_accum sequences (tokens_per_step tokens when that is set), and each
of the N processes runs grad_accum / N of those micro-batches, so grad_accum must be a multiple
of N. Micro-batch m of step s is drawn from (seed, s, m) alone, so the same steps see the same
data with any number of processes, and a resumed run sees what an uninterrupted one would have.
"""

from __future__ import annotations

import numpy as np
import torch

from gptcli.config import TrainConfig
from gptcli.errors import GptcliError

_TRAIN, _EVAL = 0, 1


def micro_batches(tc: TrainConfig, block_size: int, world_size: int = 1) -> int:
    """Micro-batches of batch_size sequences per optimizer step, all processes together."""
    tokens = tc.batch_size * block_size
    if tc.tokens_per_step is not None:
        unit = tokens * world_size
        if tc.tokens_per_step % unit:
            parts = f"batch_size x block_size{' x processes' if world_size > 1 else ''}"
            values = f"{tc.batch_size} x {block_size}{f' x {world_size}' if world_size > 1 else ''}"
            below = tc.tokens_per_step // unit * unit
            near = f"{below} or {below + unit}" if below else str(unit)
            raise GptcliError(
                f"config error: train.tokens_per_step: {tc.tokens_per_step} is not a multiple of "
                f"{parts} = {values} = {unit}; use e.g. {near}"
            )
        return tc.tokens_per_step // tokens
    if tc.grad_accum % world_size:
        raise GptcliError(
            f"config error: train.grad_accum: {tc.grad_accum} micro-batches do not split evenly "
            f"over {world_size} processes (the global batch, batch_size x grad_accum sequences, "
            f"stays the config's and each process runs grad_accum / {world_size} of them); set "
            f"grad_accum to a multiple of {world_size}"
        )
    return tc.grad_accum


def _generator(*key: int) -> torch.Generator:
    # A batch depends only on its key (seed, what, index...), never on what ran before it: a
    # resumed run draws what it would have, and processes can split a step's micro-batches.
    seed = np.random.SeedSequence([k % 2**64 for k in key]).generate_state(1, np.uint64)[0]
    return torch.Generator().manual_seed(int(seed))


def train_generator(seed: int, step: int, micro: int) -> torch.Generator:
    return _generator(seed, _TRAIN, step, micro)


def eval_generator(seed: int, split_index: int, batch: int) -> torch.Generator:
    return _generator(seed, _EVAL, split_index, batch)
