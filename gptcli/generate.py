"""Sampling: a KV cache, the context-window rule, temperature / top-k / top-p, seeds, stop
strings and streaming text, plus `load()`, the Python API that `gptcli sample` also uses (it
samples, and scores text as `gptcli eval` scores a split).

The window rule (the same with and without the cache, so both produce the same tokens):
a prompt longer than block_size is cut to its last block_size tokens; when a new token no
longer fits, the window restarts at the last block_size // 2 tokens. With the cache, each
restart re-runs those block_size // 2 tokens once (a prefill) and the next block_size // 2
tokens are again one cheap step each, so sliding costs one half-window forward per half-window
of new tokens. A cache cannot simply drop its oldest entry instead: the kept keys and values of
layers above the first were computed while attending to the dropped tokens, so they differ from
what re-running the window gives; and absolute schemes (learned, sincos) would also need every
position renumbered. `window=False` never slides: the sequence grows past block_size, which
every scheme but `learned` can encode.
"""

from __future__ import annotations

import codecs
import contextlib
import copy
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from gptcli import autotune, checkpoint, cpu
from gptcli.checkpoint import load_model
from gptcli.data.tokenizers import Tokenizer
from gptcli.device import autocast, lowp_dtype, resolve_precision
from gptcli.errors import GptcliError
from gptcli.evaluate import score_tokens, scored_bytes
from gptcli.model import GPT
from gptcli.model.decode import forward_cached
from gptcli.model.inference import decode_attention, for_inference


def sample_next(
    logits: torch.Tensor,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float = 1.0,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """logits: (B, V) -> next ids (B, 1). temperature 0 is greedy."""
    if temperature == 0:
        return logits.argmax(dim=-1, keepdim=True)
    logits = logits.float() / temperature
    if top_k is not None and top_k < logits.size(-1):
        kth = torch.topk(logits, top_k, dim=-1).values[:, -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p < 1.0:
        logits = _top_p_filter(logits, top_p)
    probs = torch.softmax(logits, dim=-1)
    return torch.multinomial(probs, 1, generator=generator)


def _top_p_filter(logits: torch.Tensor, top_p: float) -> torch.Tensor:
    """Keep the smallest set of most likely tokens whose total probability reaches top_p."""
    sorted_logits, order = torch.sort(logits, dim=-1, descending=True)
    probs = torch.softmax(sorted_logits, dim=-1)
    # A token is dropped when the tokens before it already reach top_p; the first always stays.
    mass_before = probs.cumsum(dim=-1) - probs
    drop_sorted = mass_before >= top_p
    drop = torch.empty_like(drop_sorted).scatter_(-1, order, drop_sorted)
    return logits.masked_fill(drop, float("-inf"))


@torch.no_grad()
def generate(
    model: GPT,
    idx: torch.Tensor,
    max_new_tokens: int,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float = 1.0,
    generator: torch.Generator | None = None,
    use_cache: bool = True,
    window: bool = True,
    autocast_ctx: Callable[[], Any] = contextlib.nullcontext,
) -> Iterator[torch.Tensor]:
    """Yield (B,) next ids, one step at a time, from a (B, T) prompt, in eval mode.

    use_cache=False re-runs the whole window for every token: the reference the cache must
    match token for token.
    """
    block = model.cfg.block_size
    if not window and model.positions.max_len is not None:
        raise GptcliError(
            f"'{model.cfg.position}' positions cannot extend past block_size={block}; "
            "generate with the sliding window instead"
        )
    keep = max(1, block // 2)
    start = max(0, idx.shape[1] - block) if window else 0  # the window is idx[:, start:]
    cache, cached = None, start  # idx[:, start:cached] is in the cache
    was_training = model.training
    model.eval()
    try:
        for step in range(max_new_tokens):
            n = idx.shape[1]
            if window and n - start > block:
                start = n - keep
                cache, cached = None, start
            if use_cache and cache is None:
                capacity = block if window else n + max_new_tokens - step
                cache = model.new_cache(idx.shape[0], capacity)
            with autocast_ctx(), decode_attention(idx.device):
                if use_cache:
                    logits = forward_cached(model, idx[:, cached:], cache)
                else:
                    logits, _ = model(idx[:, start:])
            cached = n
            next_id = sample_next(logits[:, -1, :], temperature, top_k, top_p, generator)
            idx = torch.cat([idx, next_id], dim=1)
            yield next_id[:, 0]
    finally:
        model.train(was_training)


class TextStream:
    """Token ids in, text out, as soon as it is complete: a multi-byte character split across
    tokens is held back until its last byte arrives. Stop strings end the stream; the text
    that could still be the start of one is held back too, so a stop string never shows."""

    def __init__(self, tokenizer: Tokenizer, stop: list[str] | tuple[str, ...] = ()):
        self.tokenizer = tokenizer
        self.stop = [s for s in stop if s]
        self.decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self.text = ""
        self.emitted = 0
        self.stopped = False

    def push(self, token_id: int) -> str:
        """Add one token; return the text that became final."""
        if self.stopped:
            return ""
        self.text += self.decoder.decode(self.tokenizer.decode_bytes([token_id]))
        hits = [i for i in (self.text.find(s, max(0, self.emitted - len(s))) for s in self.stop)]
        hits = [i for i in hits if i >= 0]
        if hits:
            self.stopped = True
            self.text = self.text[: min(hits)]
            return self._emit(len(self.text))
        hold = max((len(s) - 1 for s in self.stop), default=0)
        return self._emit(len(self.text) - hold)

    def finish(self) -> str:
        """The rest of the text, once no more tokens will come."""
        if not self.stopped:
            self.text += self.decoder.decode(b"", final=True)
        return self._emit(len(self.text))

    def _emit(self, end: int) -> str:
        end = max(end, self.emitted)
        piece = self.text[self.emitted : end]
        self.emitted = end
        return piece


@dataclass(frozen=True)
class TextScore:
    """How well a model predicts a text (every token but the first, which has no history)."""

    tokens: int  # targets scored
    loss: float  # mean negative log-likelihood, nats per token
    perplexity: float  # exp(loss)
    bits_per_byte: float  # loss / ln 2 x tokens / UTF-8 bytes of the scored tokens


class LoadedModel:
    """A model with its tokenizer and sampling defaults: what `gptcli.load()` returns."""

    def __init__(
        self, model: GPT, tokenizer: Tokenizer, ckpt: checkpoint.Checkpoint, precision="fp32"
    ):
        self.model = model
        self.tokenizer = tokenizer
        self.checkpoint = ckpt
        self.device = next(model.parameters()).device
        self.precision = precision  # resolved: fp32 | bf16 | fp16
        if precision != "fp32":
            native = self.device.type == "cpu" and cpu.has_native_bf16()
            for_inference(model, lowp_dtype(precision), pack=native)

    def _autocast(self):
        return autocast(self.device, self.precision)

    def encode_prompt(self, prompt: str) -> list[int]:
        return self.tokenizer.encode(prompt) if prompt else self.tokenizer.start_ids()

    def generate_streams(
        self,
        prompt: str = "",
        *,
        max_new_tokens: int | None = None,
        temperature: float | None = None,
        top_k: int | None = None,
        top_p: float | None = None,
        seed: int | None = None,
        num_samples: int = 1,
        stop: list[str] | tuple[str, ...] = (),
        window: bool = True,
    ) -> Iterator[list[str]]:
        """Yield, after each generated token, the new text of each of num_samples samples
        (generated as one batch); unset options come from the checkpoint's sample config."""
        sc = self.checkpoint.config.sample
        n_new = sc.max_new_tokens if max_new_tokens is None else max_new_tokens
        temperature = sc.temperature if temperature is None else temperature
        top_k = sc.top_k if top_k is None else (top_k or None)
        top_p = sc.top_p if top_p is None else top_p
        if not 0 < top_p <= 1:
            raise GptcliError(f"top_p must be in (0, 1], got {top_p}")
        ids = self.encode_prompt(prompt)
        g = torch.Generator(self.device).manual_seed(sc.seed if seed is None else seed)
        idx = torch.tensor([ids] * num_samples, dtype=torch.long, device=self.device)
        streams = [TextStream(self.tokenizer, stop) for _ in range(num_samples)]
        steps = generate(
            self.model, idx, n_new, temperature, top_k, top_p, g, window=window,
            autocast_ctx=self._autocast,
        )  # fmt: skip
        for next_ids in steps:
            yield [s.push(t) for s, t in zip(streams, next_ids.tolist(), strict=True)]
            if all(s.stopped for s in streams):
                break
        yield [s.finish() for s in streams]

    def generate(self, prompt: str = "", **options) -> Iterator[str]:
        """Yield the text of one sample piece by piece (see generate_streams for options)."""
        for pieces in self.generate_streams(prompt, num_samples=1, **options):
            if pieces[0]:
                yield pieces[0]

    def score(self, text: str, *, batch_size: int = 16) -> TextScore:
        """The loss, perplexity and bits per byte of text under the model, computed as `gptcli
        eval` scores a split: non-overlapping windows of block_size, each token after the first
        predicted once, from the tokens before it in its window. In eval mode, in the
        precision load() was given (fp32 by default: exact)."""
        if not text:
            raise GptcliError("cannot score an empty text; pass at least two tokens of text")
        tokens = np.asarray(self.tokenizer.encode(text), dtype=np.int64)
        if len(tokens) < 2:
            raise GptcliError(
                f"cannot score {text!r}: it is a single token, and a score needs at least 2 "
                "(the first is only context for the next)"
            )
        was_training = self.model.training
        self.model.eval()
        try:
            scored = score_tokens(
                self._logits, tokens, self.model.cfg.block_size,
                batch_size=batch_size, device=self.device,
            )  # fmt: skip
        finally:
            self.model.train(was_training)
        bpb = scored.bits_per_byte(scored_bytes(self.tokenizer, tokens))
        return TextScore(scored.tokens, scored.loss, scored.perplexity, bpb)

    def _logits(self, x: torch.Tensor) -> torch.Tensor:
        with self._autocast():
            return self.model(x)[0]


def load(
    path: str | Path,
    which: str = "best",
    device: str | torch.device = "auto",
    precision: str = "fp32",
) -> LoadedModel:
    """Load a checkpoint (a run directory or one checkpoint) for sampling and scoring, e.g. in a
    notebook (docs/api_example.py, the README's example, shows more):

    m = gptcli.load("out/demo")
    print("".join(m.generate("ROMEO:", max_new_tokens=100)))
    print(m.score("ROMEO:\nBut soft!").bits_per_byte)

    precision: fp32 | bf16 | fp16 | auto (sampling_precision): what sampling and scoring
    compute in; bf16 samples faster on a CPU with native bf16 once the model is wide enough
    (the weights are read in half the bytes each token) but not the same text as fp32.
    """
    from gptcli.config import CHOICES
    from gptcli.device import resolve_device

    if precision not in (names := CHOICES["train.precision"]):
        raise GptcliError(f"precision must be one of {', '.join(names)}, got {precision!r}")
    dev = resolve_device(device) if isinstance(device, str) else device
    model, tokenizer, ckpt = load_model(path, which, dev)
    return LoadedModel(model, tokenizer, ckpt, sampling_precision(precision, dev, model))


def sampling_precision(name: str, device: torch.device, model: GPT) -> str:
    """The precision to sample model in: name resolved as training resolves it, except that
    auto on a CPU with native bf16 measures this model's token step (faster_token)."""
    return resolve_precision(name, device, "precision", faster=lambda: faster_token(model))


def faster_token(model: GPT, tokens: int = 16) -> str:
    """fp32 or bf16 (cast and packed, as LoadedModel samples in it): the faster for this model
    at one sequence through the KV cache, measured once per machine (gptcli.autotune). A
    sampling step's matmuls have one row: bf16 reads half the weight bytes, but each packed
    oneDNN call also costs a fixed time that fp32's small products do not, so below some width
    fp32 is faster as well as exact, and where that width lies depends on the CPU.
    Attention runs in fp32 either way, so a short context decides as a long one would."""
    device = next(model.parameters()).device
    tokens = min(tokens, model.cfg.block_size)
    idx = torch.zeros(1, tokens, dtype=torch.long, device=device)

    def steps(m: GPT, precision: str) -> Callable[[], None]:
        def run() -> None:
            cache = m.new_cache(1, tokens)
            with torch.no_grad(), autocast(device, precision):
                for t in range(tokens):
                    forward_cached(m, idx[:, t : t + 1], cache)

        return run

    def prepare() -> dict[str, Callable[[], None]]:
        fp32 = copy.deepcopy(model).eval()
        cast = copy.deepcopy(fp32)
        for_inference(cast, torch.bfloat16, pack=True)
        return {"fp32": steps(fp32, "fp32"), "bf16": steps(cast, "bf16")}

    workload = {"task": "sample token", "device": device.type, "model": asdict(model.cfg),
                "vocab": model.vocab_size, "tokens": tokens}  # fmt: skip
    return autotune.fastest(workload, ("fp32", "bf16"), prepare, default="bf16")
