"""GPT: token (+ position) embeddings -> N blocks -> final norm -> LM head."""

import math
from collections.abc import Callable

import torch
import torch.nn as nn
import torch.nn.functional as F

from gptcli.config import ModelConfig
from gptcli.model import mup
from gptcli.model.attention import CausalSelfAttention, LayerKV, ScoreBias
from gptcli.model.mlp import MLPS
from gptcli.model.norms import NORMS
from gptcli.model.positions import POSITIONS, PositionScheme
from gptcli.registry import PART, Registry

PLACEMENTS: Registry[type["Block"]] = Registry("norm placement", PART)
Sublayer = Callable[[torch.Tensor], torch.Tensor]


class Block(nn.Module):
    """A block's parts; a placement (a subclass, registered by name) says how they are wired,
    once, in wire(): the training forward and sampling's cached step both run it."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        norm = NORMS[cfg.norm]
        self.ln_1 = norm(cfg.n_embd, bias=cfg.bias)
        self.attn = CausalSelfAttention(cfg)
        self.ln_2 = norm(cfg.n_embd, bias=cfg.bias)
        self.mlp = MLPS[cfg.mlp](cfg)

    # Whether the model needs a norm after the last block (pre-norm leaves the stream raw).
    final_norm = True
    config_keys: tuple[str, ...] = ()
    exports_as: str | None = None  # transformers names it by the architecture

    @classmethod
    def num_params(cls, cfg: ModelConfig) -> int:
        """What the placement adds beyond its blocks: the final norm, where it has one."""
        return NORMS[cfg.norm].num_params(cfg) if cls.final_norm else 0

    @staticmethod
    def wire(x: torch.Tensor, attend: Sublayer, ln_1: Sublayer, mlp: Sublayer,
             ln_2: Sublayer) -> torch.Tensor:  # fmt: skip
        raise NotImplementedError("a norm placement wires its block in wire()")

    def forward(self, x, positions, start, bias, kv=None):
        attend = lambda h: self.attn(h, positions, start, bias, kv)  # noqa: E731
        return self.wire(x, attend, self.ln_1, self.mlp, self.ln_2)

    def step(self, x: torch.Tensor, attend: Sublayer) -> torch.Tensor:
        """The same wiring without nn.Module's call machinery (model/decode.py)."""
        return self.wire(x, attend, self.ln_1.forward, self.mlp.forward, self.ln_2.forward)


@PLACEMENTS.register("pre")
class PreNormBlock(Block):
    """GPT-2: normalise the input of each sublayer; the residual stream stays unnormalised."""

    @staticmethod
    def wire(x, attend, ln_1, mlp, ln_2):
        x = x + attend(ln_1(x))
        return x + mlp(ln_2(x))


@PLACEMENTS.register("post")
class PostNormBlock(Block):
    """The original Transformer: normalise after each residual addition."""

    final_norm = False

    @staticmethod
    def wire(x, attend, ln_1, mlp, ln_2):
        x = ln_1(x + attend(x))
        return ln_2(x + mlp(x))


class GPT(nn.Module):
    def __init__(self, cfg: ModelConfig, vocab_size: int):
        super().__init__()
        self.cfg = cfg
        self.vocab_size = vocab_size
        # Queries per attention block where scores carry a bias (None: all at once). Evaluation
        # at long contexts sets it so that memory stays bounded (see attention.ScoreBias).
        self.query_chunk: int | None = None
        block = PLACEMENTS[cfg.norm_placement]
        if problem := POSITIONS[cfg.position].check(cfg):
            raise ValueError(problem)
        self.wte = nn.Embedding(vocab_size, cfg.n_embd)
        self.positions: PositionScheme = POSITIONS[cfg.position](cfg)
        self.drop = nn.Dropout(cfg.dropout)
        self.blocks = nn.ModuleList(block(cfg) for _ in range(cfg.n_layer))
        self.ln_f = (
            NORMS[cfg.norm](cfg.n_embd, bias=cfg.bias) if block.final_norm else nn.Identity()
        )
        self.lm_head = nn.Linear(cfg.n_embd, vocab_size, bias=False)
        if cfg.tie_embeddings:
            self.lm_head.weight = self.wte.weight
        self.output_mult = mup.output_mult(cfg)  # µP's readout: 1 otherwise
        self.apply(self._init_weights)
        # GPT-2: scale the init of projections into the residual stream by 1/sqrt(2 * n_layer),
        # so the stream's variance does not grow with depth. µP: narrower by 1/sqrt(width).
        std = mup.hidden_std(cfg)
        for name, p in self.named_parameters():
            if name.endswith("c_proj.weight"):
                nn.init.normal_(p, mean=0.0, std=std / math.sqrt(2 * cfg.n_layer))
            elif std != 0.02 and any(p is w for w in self.block_matrices()):
                nn.init.normal_(p, mean=0.0, std=std)

    @classmethod
    def to_load(cls, cfg: ModelConfig, vocab_size: int) -> "GPT":
        """A GPT whose every weight a state dict is about to replace (load it strictly): built
        on the meta device, so no init fills anything (most of what building costs: 0.1 s of a
        sample's start-up at 10M parameters, over a second at GPT-2's 124M), then given
        uninitialised CPU memory. The position scheme, whose tables are no weights (sincos,
        RoPE, ALiBi) and so are not in a state dict, is built for real."""
        with torch.device("meta"):
            model = cls(cfg, vocab_size)
        model.to_empty(device="cpu")
        with torch.random.fork_rng(devices=[]):  # its init draws nothing from the caller's RNG
            model.positions = POSITIONS[cfg.position](cfg)
        if cfg.tie_embeddings:  # to_empty gave each its own storage
            model.lm_head.weight = model.wte.weight
        saved = model.state_dict().keys()
        tables = [n for n, _ in model.named_buffers() if n not in saved]
        if stray := [n for n in tables if not n.startswith("positions.")]:
            raise RuntimeError(f"to_load cannot compute {stray}: only positions own tables")
        return model

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)

    def num_params(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def block_matrices(self) -> list[torch.Tensor]:
        """The linear layers' weights inside the blocks: µP's hidden matrices, Muon's."""
        return [m.weight for m in self.blocks.modules() if isinstance(m, nn.Linear)]

    def new_cache(self, batch_size: int, capacity: int) -> list[LayerKV]:
        """An empty KV cache (one LayerKV per block) for `capacity` positions."""
        cfg = self.cfg
        shape = (batch_size, cfg.kv_heads, capacity, cfg.n_embd // cfg.n_head)
        return [LayerKV(shape, self.wte.weight.device) for _ in range(cfg.n_layer)]

    def check_length(self, end: int) -> None:
        """Refuse a sequence reaching position `end` that the position scheme cannot encode."""
        max_len = self.positions.max_len
        if max_len is not None and end > max_len:
            raise ValueError(
                f"a sequence reaching position {end} is longer than block_size={max_len}: "
                f"'{self.cfg.position}' positions have no encoding past the training length; "
                "crop the input to block_size tokens"
            )

    def forward(
        self,
        idx: torch.Tensor,
        targets: torch.Tensor | None = None,
        cache: list[LayerKV] | None = None,
    ):
        """idx: (B, T) token ids -> (logits (B, T, vocab), loss or None).

        With a cache, idx holds the tokens after those already cached: they sit at positions
        cache_length.. and attend to the cached keys and values, which the call extends.
        """
        T = idx.shape[1]
        start = cache[0].length if cache else 0
        self.check_length(start + T)
        x = self.positions.embed(self.wte(idx), start)
        # Dropout is the identity in eval mode: not calling it saves a sampling step 13 calls.
        x = self.drop(x) if self.training else x
        bias = ScoreBias(self.positions, T, start, idx.device, self.query_chunk)
        for i, block in enumerate(self.blocks):
            x = block(x, self.positions, start, bias, cache[i] if cache else None)
        logits = self.lm_head(self.ln_f(x))
        logits = logits * self.output_mult if self.output_mult != 1.0 else logits
        loss = None
        if targets is not None:
            loss = F.cross_entropy(logits.flatten(0, 1).float(), targets.flatten())
        return logits, loss


def count_params_formula(cfg: ModelConfig, vocab_size: int) -> int:
    """The parameter count the config implies, from each part's own formula."""
    C, L = cfg.n_embd, cfg.n_layer
    norm = NORMS[cfg.norm].num_params(cfg)
    attn = CausalSelfAttention.num_params(cfg)
    mlp = MLPS[cfg.mlp].num_params(cfg)
    per_block = 2 * norm + attn + mlp
    embeddings = vocab_size * C + POSITIONS[cfg.position].num_params(cfg)
    head = 0 if cfg.tie_embeddings else vocab_size * C
    return embeddings + L * per_block + PLACEMENTS[cfg.norm_placement].num_params(cfg) + head
