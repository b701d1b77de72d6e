"""A run's length from a budget instead of max_iters: train.flops_budget (training FLOPs to
spend) or train.tokens_per_param (training tokens per parameter; Chinchilla's optimum is about
20, nanochat measured 10.5), each counted from the model's own config (gptcli/compute.py)."""

from __future__ import annotations

import math
from dataclasses import replace

from gptcli.compute import flops_per_token, tokens_per_step
from gptcli.config import Config
from gptcli.model import count_params_formula


def resolve_length(cfg: Config, vocab_size: int) -> tuple[Config, str | None]:
    """cfg with max_iters (and the decay horizon) set from train.flops_budget or
    train.tokens_per_param where one is given, and a line saying what they chose; cfg as it
    is, and None, where neither is."""
    tc, mc = cfg.train, cfg.model
    per_step = tokens_per_step(tc, mc.block_size)
    if tc.flops_budget is not None:
        per_token = flops_per_token(mc, vocab_size)
        tokens = tc.flops_budget / per_token
        why = f"train.flops_budget {tc.flops_budget:.3g} / {per_token:.3g} FLOPs a token"
    elif tc.tokens_per_param is not None:
        params = count_params_formula(mc, vocab_size)
        tokens = tc.tokens_per_param * params
        why = f"train.tokens_per_param {tc.tokens_per_param:g} x {params:,} parameters"
    else:
        return cfg, None
    steps = max(1, math.ceil(tokens / per_step))
    line = (f"{why} = {tokens:,.0f} tokens: {steps:,} steps of {per_step:,} tokens "
            "(max_iters and the decay horizon)")  # fmt: skip
    return replace(cfg, train=replace(tc, max_iters=steps, lr_decay_iters=steps)), line
