"""Which batches a step sees: the global-batch rule under torchrun, and batch keys.

Under torchrun the global batch is the config's whatever the number of processes: one optimizer
step sees batch_size x grad_accum sequences (tokens_per_step tokens when that is set). With N
processes, each runs grad_accum / N of those micro-batches when N divides grad_accum; otherwise,
when N divides batch_size, each runs every micro-batch but only its batch_size / N rows of it.
Micro-batch m of step s is drawn from (seed, s, m) alone, so the same steps see the same data
with any number of processes, and a resumed run sees what an uninterrupted one would have.

data.order picks where its sequences lie: at random places (nanoGPT's way), or, with `epoch`,
the train split cut into windows of block_size that each come once per pass over it, in an order
drawn from (seed, pass): a run shorter than the corpus sees no token twice.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from gptcli.config import Config, TrainConfig
from gptcli.data.dataset import TokenDataset
from gptcli.errors import GptcliError

_TRAIN, _EVAL = 0, 1


@dataclass(frozen=True)
class StepShare:
    """One process's share of every optimizer step."""

    micro: range  # the micro-batches it runs
    rows: slice  # the rows of each of them it runs
    sharing: int  # processes that share each micro-batch (1 when micro-batches are split)


def step_share(tc: TrainConfig, n_micro: int, rank: int = 0, world_size: int = 1) -> StepShare:
    """Split a step over world_size processes: by micro-batches when world_size divides their
    number, else by the rows of each micro-batch when it divides batch_size."""
    if n_micro % world_size == 0:
        per = n_micro // world_size
        return StepShare(range(rank * per, (rank + 1) * per), slice(None), 1)
    if tc.batch_size % world_size == 0:
        per = tc.batch_size // world_size
        return StepShare(range(n_micro), slice(rank * per, (rank + 1) * per), world_size)
    divisors = sorted({k for n in (n_micro, tc.batch_size) for k in range(1, n + 1) if n % k == 0})
    what = "train.tokens_per_step" if tc.tokens_per_step is not None else "train.grad_accum"
    raise GptcliError(
        f"config error: {what}: a step of {n_micro} micro-batches x train.batch_size "
        f"{tc.batch_size} sequences does not split over {world_size} processes (neither number is "
        f"a multiple of {world_size}); run {', '.join(map(str, divisors))} processes, or make "
        f"grad_accum or batch_size a multiple of {world_size}"
    )


def _generator(*key: int) -> torch.Generator:
    # A batch depends only on its key (seed, what, index...), never on what ran before it: a
    # resumed run draws what it would have, and processes can split a step's micro-batches.
    seed = np.random.SeedSequence([k % 2**64 for k in key]).generate_state(1, np.uint64)[0]
    return torch.Generator().manual_seed(int(seed))


def train_generator(seed: int, step: int, micro: int) -> torch.Generator:
    return _generator(seed, _TRAIN, step, micro)


def eval_generator(seed: int, split_index: int, batch: int) -> torch.Generator:
    return _generator(seed, _EVAL, split_index, batch)


class TrainBatches:
    """The train sequences of micro-batch m of step s, in the config's data.order."""

    def __init__(self, cfg: Config, data: TokenDataset, n_micro: int):
        self.data, self.n_micro = data, n_micro
        self.seed, self.rows = cfg.train.seed, cfg.train.batch_size
        self.block = cfg.model.block_size
        self.epoch = cfg.data.order == "epoch"
        self.windows = (len(data.splits["train"]) - 1) // self.block
        self._order: tuple[int, list[int]] = (-1, [])  # (pass, its window order)

    def __call__(self, step: int, micro: int) -> tuple[torch.Tensor, torch.Tensor]:
        if not self.epoch:
            gen = train_generator(self.seed, step, micro)
            return self.data.batch("train", self.rows, self.block, gen)
        first = (step * self.n_micro + micro) * self.rows
        starts = [self.block * self._window(i) for i in range(first, first + self.rows)]
        return self.data.windows("train", starts, self.block)

    def _window(self, sequence: int) -> int:
        # Sequence g of the run is window order_p[g mod W] of pass p = g // W.
        epoch, index = divmod(sequence, self.windows)
        if self._order[0] != epoch:
            gen = _generator(self.seed, _TRAIN, 2**32 + epoch)  # apart from every step's key
            self._order = (epoch, torch.randperm(self.windows, generator=gen).tolist())
        return self._order[1][index]

    def passes(self, steps: int) -> float:
        """How many times over the train split `steps` steps read (epoch order's meaning)."""
        return steps * self.n_micro * self.rows / self.windows
