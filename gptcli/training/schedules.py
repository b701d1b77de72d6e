"""The learning rate at each step: a linear warmup, then the config's schedule.

- cosine: nanoGPT's, from lr to min_lr at lr_decay_iters (max_iters when null), then flat.
- linear: a straight line from lr to min_lr over the same horizon.
- constant: lr to the end.
- wsd: warmup-stable-decay (MiniCPM; Hägele et al. 2024): lr until the last `cooldown` steps,
  then a straight line to min_lr at max_iters. The stable part does not depend on the run's
  length, so a run resumed with a longer max_iters before its decay began goes on as if it had
  been started with it, and one checkpoint of the stable part can be cooled down at any length.
"""

from __future__ import annotations

import math
from collections.abc import Callable

from gptcli.config import TrainConfig, config_error


def _horizon(tc: TrainConfig) -> int:
    return tc.lr_decay_iters or tc.max_iters


def _cosine(step: int, tc: TrainConfig) -> float:
    progress = (step - tc.warmup_iters) / max(1, _horizon(tc) - tc.warmup_iters)
    return tc.min_lr + 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress))) * (tc.lr - tc.min_lr)


def _linear(step: int, tc: TrainConfig) -> float:
    progress = (step - tc.warmup_iters) / max(1, _horizon(tc) - tc.warmup_iters)
    return tc.lr + min(1.0, progress) * (tc.min_lr - tc.lr)


def _constant(step: int, tc: TrainConfig) -> float:
    return tc.lr


def cooldown_steps(tc: TrainConfig) -> int:
    """wsd's final decay in steps: train.cooldown as a fraction of max_iters when below 1,
    else as a count of steps."""
    if tc.cooldown < 1:
        return max(1, round(tc.cooldown * tc.max_iters))
    return int(tc.cooldown)


def _wsd(step: int, tc: TrainConfig) -> float:
    start = tc.max_iters - cooldown_steps(tc)
    if step < start:
        return tc.lr
    progress = (step - start + 1) / cooldown_steps(tc)
    return tc.lr + min(1.0, progress) * (tc.min_lr - tc.lr)


SCHEDULES: dict[str, Callable[[int, TrainConfig], float]] = {
    "cosine": _cosine, "linear": _linear, "constant": _constant, "wsd": _wsd,
}  # fmt: skip


def lr_at(step: int, tc: TrainConfig) -> float:
    """Linear warmup to lr over warmup_iters, then the schedule."""
    if step < tc.warmup_iters:
        return tc.lr * (step + 1) / (tc.warmup_iters + 1)
    return SCHEDULES[tc.schedule](step, tc)


def check_schedule(tc: TrainConfig) -> None:
    """Refuse, in one line, a wsd decay that does not fit after the warmup of the run's length
    (known only once a budget has decided max_iters)."""
    if tc.schedule == "wsd" and cooldown_steps(tc) > tc.max_iters - tc.warmup_iters:
        raise config_error(
            "train.cooldown",
            f"a decay of {cooldown_steps(tc)} steps does not fit in a run of {tc.max_iters} "
            f"steps after {tc.warmup_iters} of warmup; shorten it (a fraction below 1, or "
            "fewer steps) or lengthen the run",
        )
