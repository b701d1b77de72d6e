"""checkpoint -> exact scores: every token of a split scored once, in windows of a context.

The procedure: the split's n tokens give n - 1 predictions (token t from the tokens before it).
With the default stride (= context) the windows do not overlap: each window's first target is
predicted from one token of history, as in training. With stride S < context the windows slide
by S, and each window scores only its last S targets (the first window scores all of its own),
so every target is still scored once, each with at least context - S tokens of history.
Per-token losses are summed in float64, so the result does not depend on the batch size beyond
float32 rounding inside the model.
"""

from __future__ import annotations

import contextlib
import json
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from gptcli import atomic, checkpoint, memory
from gptcli.checkpoint import load_model, lock
from gptcli.compute import Compute, compute, tokens_per_step
from gptcli.data.dataset import SPLITS, TokenDataset
from gptcli.data.tokenizers import Tokenizer
from gptcli.errors import GptcliError
from gptcli.model import GPT
from gptcli.model.mlp import hidden_size


@dataclass(frozen=True)
class Window:
    start: int  # inputs are tokens[start:end], targets tokens[start + 1:end + 1]
    end: int
    scored_from: int  # targets at input positions >= scored_from - start are scored

    @property
    def length(self) -> int:
        return self.end - self.start


def windows(n_tokens: int, context: int, stride: int | None = None) -> Iterator[Window]:
    """The windows that score each of the n_tokens - 1 targets exactly once."""
    stride = context if stride is None else stride
    if not 1 <= stride <= context:
        raise ValueError(f"stride must be in [1, context={context}], got {stride}")
    last = n_tokens - 1  # inputs end here at the latest: the last target is tokens[n - 1]
    if stride == context:
        for start in range(0, last, context):
            yield Window(start, min(start + context, last), start)
        return
    end = min(context, last)
    yield Window(0, end, 0)
    while end < last:
        new_end = min(end + stride, last)
        yield Window(max(0, new_end - context), new_end, end)
        end = new_end


@dataclass
class Score:
    tokens: int  # targets scored
    nll: float  # their summed negative log-likelihood, in nats

    @property
    def loss(self) -> float:
        return self.nll / self.tokens

    @property
    def perplexity(self) -> float:
        return math.exp(min(self.loss, 700.0))

    def bits_per_byte(self, n_bytes: int) -> float:
        return self.nll / math.log(2) / n_bytes


LogitsFn = Callable[[torch.Tensor], torch.Tensor]


@torch.no_grad()
def score_tokens(
    logits_fn: LogitsFn,
    tokens: np.ndarray,
    context: int,
    stride: int | None = None,
    batch_size: int = 16,
    device: torch.device | str = "cpu",
    max_tokens: int | None = None,
) -> Score:
    """Score tokens (the first max_tokens of them) with logits_fn: (B, T) ids -> (B, T, V)."""
    if max_tokens is not None:
        tokens = tokens[:max_tokens]
    nll, count = 0.0, 0
    batch: list[Window] = []
    for window in windows(len(tokens), context, stride):
        if batch and window.length != batch[0].length:
            nll, count = _add(nll, count, logits_fn, tokens, batch, device)
            batch = []
        batch.append(window)
        if len(batch) == batch_size:
            nll, count = _add(nll, count, logits_fn, tokens, batch, device)
            batch = []
    if batch:
        nll, count = _add(nll, count, logits_fn, tokens, batch, device)
    return Score(count, nll)


def _add(nll, count, logits_fn, tokens, batch: list[Window], device) -> tuple[float, int]:
    rows = np.stack([tokens[w.start : w.end + 1] for w in batch]).astype(np.int64)
    xy = torch.from_numpy(rows).to(device)
    logits = logits_fn(xy[:, :-1]).float()
    losses = F.cross_entropy(logits.flatten(0, 1), xy[:, 1:].flatten(), reduction="none")
    losses = losses.view(len(batch), -1).double()
    for i, w in enumerate(batch):
        kept = losses[i, w.scored_from - w.start :]
        nll += kept.sum().item()
        count += kept.numel()
    return nll, count


# --- checkpoint -> scores per context, and RUN/eval.json ---------------------------------------

EVAL_FILE = "eval.json"
# Tokens decoded at a time to count the scored text's UTF-8 bytes, so a big split never sits in
# memory whole.
_DECODE_CHUNK = 1 << 20


@dataclass
class ContextResult:
    context: int
    beyond_training: bool  # longer than the block_size the model was trained at
    score: Score | None = None
    n_bytes: int = 0
    refused: str | None = None  # why this context could not be scored

    def record(self) -> dict[str, Any]:
        if self.score is None:
            return {"context": self.context, "refused": self.refused}
        return {
            "context": self.context,
            "beyond_training": self.beyond_training,
            "tokens": self.score.tokens,
            "loss": self.score.loss,
            "perplexity": self.score.perplexity,
            "bits_per_byte": self.score.bits_per_byte(self.n_bytes),
        }


@dataclass
class EvalReport:
    checkpoint: Path
    step: int
    split: str
    data_dir: str
    stride: int | None
    max_tokens: int | None
    block_size: int
    results: list[ContextResult] = field(default_factory=list)
    eval_file: Path | None = None
    compute: Compute | None = None  # what the checkpoint's training spent to its step


def evaluate_model(
    model: GPT,
    tokenizer: Tokenizer,
    tokens: np.ndarray,
    contexts: list[int],
    *,
    stride: int | None = None,
    batch_size: int = 16,
    max_tokens: int | None = None,
    autocast_ctx: Callable[[], Any] = contextlib.nullcontext,
    max_memory: int | None = None,
) -> list[ContextResult]:
    """Score tokens at each context, in eval mode, each forward pass within max_memory bytes
    (default: half the free memory; see memory.py). A context the model cannot take (learned
    positions past block_size, a split shorter than one window, too big for the budget) is
    refused on its own, before any context is scored."""
    if max_tokens is not None:
        tokens = tokens[:max_tokens]
    block = model.cfg.block_size
    device = next(model.parameters()).device
    budget = max_memory if max_memory is not None else memory.default_budget(device)
    results, plans = [], {}
    for context in contexts:
        result = ContextResult(context, context > block)
        result.refused = _why_not(model, len(tokens), context, stride)
        if result.refused is None:
            try:
                plans[context] = _plan(model, context, batch_size, budget)
            except GptcliError as exc:
                result.refused = str(exc)
        results.append(result)
    if not plans:
        return results
    n_bytes = scored_bytes(tokenizer, tokens)
    was_training, chunk = model.training, model.query_chunk
    model.eval()

    def logits(x: torch.Tensor) -> torch.Tensor:
        with autocast_ctx():
            return model(x)[0]

    try:
        for result in results:
            if result.refused is None:
                plan = plans[result.context]
                model.query_chunk = plan.chunk
                result.score = score_tokens(
                    logits, tokens, result.context, stride, plan.batch, device
                )
                result.n_bytes = n_bytes
    finally:
        model.train(was_training)
        model.query_chunk = chunk
    return results


def _plan(model: GPT, context: int, batch_size: int, budget: int) -> memory.Plan:
    biased = model.positions.biases_scores
    hidden = hidden_size(model.cfg)
    return memory.plan(model.cfg, hidden, model.vocab_size, context, batch_size, budget, biased)


def _why_not(model: GPT, n_tokens: int, context: int, stride: int | None) -> str | None:
    max_len = model.positions.max_len
    if max_len is not None and context > max_len:
        return (
            f"{model.cfg.position} positions have block_size={max_len} rows; context {context} "
            f"needs positions up to {context - 1}: evaluate at most {max_len}, or train another "
            "position scheme to extrapolate"
        )
    if n_tokens <= context:
        return (
            f"the split has {n_tokens} tokens, fewer than one window of context {context} and "
            "its targets; use a smaller --context or a larger split"
        )
    if stride is not None and not 1 <= stride <= context:
        return f"--stride {stride} must be between 1 and the context ({context})"
    return None


def scored_bytes(tokenizer: Tokenizer, tokens: np.ndarray) -> int:
    """UTF-8 bytes of the scored text: every token but the first (which is never a target)."""
    total = 0
    for start in range(1, len(tokens), _DECODE_CHUNK):
        chunk = tokens[start : start + _DECODE_CHUNK]
        total += len(tokenizer.decode_bytes(chunk.astype(np.int64).tolist()))
    return total


def check_same_tokenizer(data: TokenDataset, spec: dict[str, Any], vocab_size: int) -> None:
    """Refuse a dataset whose tokenizer is not the checkpoint's, saying how they differ."""
    ours, theirs = data.tokenizer_spec, spec
    kind, their_kind = ours.get("type"), theirs.get("type")
    if kind != their_kind:
        why = f"the dataset's tokenizer is {kind}, the checkpoint's {their_kind}"
    elif data.vocab_size != vocab_size:
        why = f"its vocabulary has {data.vocab_size} tokens, the checkpoint's {vocab_size}"
    elif ours != theirs:
        what = "merges" if kind == "bpe" else "vocabulary"
        why = f"both are {kind} tokenizers, but with different {what}"
    else:
        return
    raise GptcliError(
        f"{data.dir} cannot score this checkpoint: {why}; prepare the data with the checkpoint's "
        "tokenizer (or pass --data with such a dataset)"
    )


def evaluate_checkpoint(
    path: str | Path,
    *,
    which: str = "best",
    data_dir: str | Path | None = None,
    split: str = "val",
    contexts: list[int] | None = None,
    stride: int | None = None,
    batch_size: int = 16,
    max_tokens: int | None = None,
    device: str = "auto",
    precision: str | None = None,
    write: bool = True,
    max_memory: int | None = None,
) -> EvalReport:
    """Score a checkpoint on a whole split (see the module docstring) and, with write, merge the
    results into RUN/eval.json (holding the run directory meanwhile: one process at a time)."""
    args = dict(which=which, data_dir=data_dir, split=split, contexts=contexts, stride=stride,
                batch_size=batch_size, max_tokens=max_tokens, device=device, precision=precision,
                max_memory=max_memory)
    if not write:
        return _evaluate_checkpoint(path, **args)
    run_dir = run_dir_of(checkpoint.resolve(path, which))
    with lock.hold(run_dir, "wait for it to finish: eval writes its eval.json"):
        report = _evaluate_checkpoint(path, **args)
        report.eval_file = merge_results(run_dir, report)
    return report


def _evaluate_checkpoint(
    path, *, which, data_dir, split, contexts, stride, batch_size, max_tokens, device, precision,
    max_memory,
) -> EvalReport:
    from gptcli.device import autocast, resolve_device, resolve_precision

    if split not in SPLITS:
        raise GptcliError(f"--split must be one of {', '.join(SPLITS)}, got {split!r}")
    if batch_size < 1:
        raise GptcliError(f"--batch-size must be at least 1, got {batch_size}")
    if max_tokens is not None and max_tokens < 2:
        raise GptcliError(f"--max-tokens must be at least 2 (a token and its target), got "
                          f"{max_tokens}")  # fmt: skip
    dev = resolve_device(device)
    model, tokenizer, ckpt = load_model(path, which, dev)
    data = TokenDataset(data_dir or ckpt.config.data.dir)
    check_same_tokenizer(data, ckpt.tokenizer_spec, ckpt.vocab_size)
    block = ckpt.config.model.block_size
    contexts = contexts or [block]
    # fp32 on CPU unless asked; on a GPU the precision the checkpoint trained in.
    wanted = precision or ("fp32" if dev.type == "cpu" else ckpt.config.train.precision)
    prec = resolve_precision(wanted, dev, "--precision" if precision else "train.precision")
    results = evaluate_model(
        model, tokenizer, data.splits[split], contexts, stride=stride, batch_size=batch_size,
        max_tokens=max_tokens, autocast_ctx=lambda: autocast(dev, prec), max_memory=max_memory,
    )  # fmt: skip
    if all(r.refused for r in results):
        raise GptcliError(results[0].refused)
    mc, tc = ckpt.config.model, ckpt.config.train
    spent = compute(mc, ckpt.vocab_size, ckpt.step, tokens_per_step(tc, mc.block_size))
    return EvalReport(ckpt.dir, ckpt.step, split, str(data.dir), stride, max_tokens, block, results,
                      compute=spent)  # fmt: skip


def run_dir_of(ckpt_dir: Path) -> Path:
    """The run directory a checkpoint belongs to (itself when it stands alone)."""
    return ckpt_dir.parent if (ckpt_dir.parent / checkpoint.POINTER).is_file() else ckpt_dir


def read_results(run_dir: str | Path) -> list[dict[str, Any]]:
    path = Path(run_dir) / EVAL_FILE
    if not path.is_file():
        return []
    try:
        results = json.loads(path.read_text(encoding="utf-8"))["results"]
        if not isinstance(results, list):
            raise ValueError("'results' is not a list")
        return results
    except (ValueError, KeyError, TypeError) as exc:
        raise GptcliError(f"{path} is corrupt ({exc}); remove it and evaluate again") from None


_KEY = ("step", "split", "context", "stride", "max_tokens", "data")


def merge_results(run_dir: Path, report: EvalReport) -> Path:
    """Add the report's scored contexts to run_dir/eval.json, replacing entries with the same
    (step, split, context, stride, max_tokens, data) and keeping all others."""
    results = read_results(run_dir)
    for r in report.results:
        if r.score is None:
            continue
        entry = {
            "step": report.step,
            "checkpoint": report.checkpoint.name,
            "split": report.split,
            "stride": report.stride or r.context,
            "max_tokens": report.max_tokens,
            "data": report.data_dir,
            "block_size": report.block_size,
            **r.record(),
            **(report.compute.record() if report.compute else {}),
        }
        key = tuple(entry[k] for k in _KEY)
        results = [e for e in results if tuple(e.get(k) for k in _KEY) != key] + [entry]
    atomic.write_json(Path(run_dir) / EVAL_FILE, {"results": results})
    return Path(run_dir) / EVAL_FILE
