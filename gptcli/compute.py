"""What a run costs: its parameters (total, and without embeddings), the tokens a step trains
on, and the FLOPs a token of training takes; training, evaluate and study all count with these.

The FLOP count is PaLM's (appendix B), as nanoGPT's MFU: 6 per matmul weight per token (2
forward, 4 backward), plus 12 x layers x n_embd x context for attention's scores and weighted
sum. Matmul weights are the linear layers' (attention's q/k/v and output projections, the MLP's
two or, gated, three matrices, the LM head), counted from the config, so GQA's smaller k/v
projections and a gated MLP's third matrix count as they are. Norms (QK-norm included), biases,
position tables and the token embedding's lookup are not matmuls and are left out.
"""

from __future__ import annotations

from dataclasses import dataclass

from gptcli.config import ModelConfig, TrainConfig
from gptcli.errors import GptcliError
from gptcli.model import count_params_formula
from gptcli.model.mlp import MLPS, hidden_size
from gptcli.model.positions import POSITIONS


def matmul_weights(mc: ModelConfig, vocab_size: int) -> int:
    """The weights that multiply activations, per token: every linear layer of the model."""
    C, head_dim = mc.n_embd, mc.n_embd // mc.n_head
    attention = C * (C + 2 * mc.kv_heads * head_dim) + C * C
    mlp = (3 if MLPS[mc.mlp].gated else 2) * C * hidden_size(mc)
    return mc.n_layer * (attention + mlp) + vocab_size * C


def flops_per_token(mc: ModelConfig, vocab_size: int) -> float:
    """Training FLOPs per token at context block_size (forward and backward)."""
    return 6 * matmul_weights(mc, vocab_size) + 12 * mc.n_layer * mc.n_embd * mc.block_size


def embedding_params(mc: ModelConfig, vocab_size: int) -> int:
    """The token embedding, the position scheme's tables (learned positions, relative biases)
    and an untied head: what Kaplan's N leaves out."""
    head = 0 if mc.tie_embeddings else vocab_size * mc.n_embd
    return vocab_size * mc.n_embd + POSITIONS[mc.position].num_params(mc) + head


@dataclass(frozen=True)
class Compute:
    """What a run spent, as the summary, metrics.jsonl and eval.json record it."""

    params: int
    params_non_embedding: int
    tokens: int  # training tokens seen (steps x tokens per step)
    flops: float  # training FLOPs: tokens x flops_per_token

    def record(self) -> dict[str, float]:
        return {"params": self.params, "params_non_embedding": self.params_non_embedding,
                "train_tokens": self.tokens, "train_flops": self.flops}  # fmt: skip


def compute(mc: ModelConfig, vocab_size: int, steps: int, tokens_per_step: int) -> Compute:
    params = count_params_formula(mc, vocab_size)
    tokens = steps * tokens_per_step
    return Compute(params, params - embedding_params(mc, vocab_size), tokens,
                   float(tokens * flops_per_token(mc, vocab_size)))  # fmt: skip


def micro_batches(tc: TrainConfig, block_size: int) -> int:
    """Micro-batches of batch_size sequences per optimizer step, all processes together."""
    tokens = tc.batch_size * block_size
    if tc.tokens_per_step is None:
        return tc.grad_accum
    if tc.tokens_per_step % tokens:
        below = tc.tokens_per_step // tokens * tokens
        near = f"{below} or {below + tokens}" if below else str(tokens)
        raise GptcliError(
            f"config error: train.tokens_per_step: {tc.tokens_per_step} is not a multiple of "
            f"batch_size x block_size = {tc.batch_size} x {block_size} = {tokens}; use e.g. {near}"
        )
    return tc.tokens_per_step // tokens


def tokens_per_step(tc: TrainConfig, block_size: int) -> int:
    """Training tokens per optimizer step, all processes together."""
    return micro_batches(tc, block_size) * tc.batch_size * block_size
