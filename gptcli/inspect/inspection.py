"""The `gptcli inspect` subjects as library calls: each loads what it needs, computes the numbers,
draws the picture (PNG, Agg backend) and returns a Finding for the CLI to show."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from gptcli.errors import GptcliError
from gptcli.inspect.subject import Subject, load_subject

SUBJECTS = ("params", "attention", "positions", "norm-leak", "embeddings")


@dataclass
class Finding:
    summary: str
    record: dict[str, Any] = field(default_factory=dict)
    picture: Path | None = None
    table: tuple[list[str], list[list[str]]] | None = None  # header, rows: shown under summary


def params_of(checkpoint: Path | None, config: Path | None, which: str = "best",
              sets: list[str] | None = None, vocab_size: int | None = None):  # fmt: skip
    """The parameter report of a checkpoint, or of a config before any training (built on the
    meta device, so even a large model costs no memory)."""
    from gptcli.inspect.params import param_report

    if (checkpoint is None) == (config is None):
        raise GptcliError("give --checkpoint RUN or --config FILE (one of them)")
    if checkpoint is not None:
        return param_report(load_subject(checkpoint, which).model)
    from gptcli.config import load_config
    from gptcli.model import GPT, check_config

    cfg = load_config(config, list(sets or []))
    check_config(cfg.model)
    if vocab_size is not None and vocab_size < 1:
        raise GptcliError(f"--vocab-size must be at least 1, got {vocab_size}")
    vocab = vocab_size or _vocab_of(cfg.data.dir)
    with torch.device("meta"):
        return param_report(GPT(cfg.model, vocab))


def _vocab_of(data_dir: str) -> int:
    from gptcli.data.dataset import TokenDataset

    try:
        return TokenDataset(data_dir).vocab_size
    except GptcliError as exc:
        raise GptcliError(
            f"{exc} (or give --vocab-size N to size the model without data)"
        ) from None


def attention(subject: Subject, prompt: str, out: Path | None, layer: int | None,
              head: int | None) -> Finding:  # fmt: skip
    from gptcli.inspect import attention_maps as am

    mc = subject.model.cfg
    am.check_index("layer", layer, mc.n_layer)
    am.check_index("head", head, mc.n_head)
    ids = am.encode_prompt(subject.tokenizer, prompt, mc.block_size)
    weights = am.attention_weights(subject.model, torch.tensor([ids]))
    labels = [am.token_label(subject.tokenizer.decode([i])) for i in ids]
    kv = mc.kv_heads
    path = am.draw(weights, labels, out or subject.default_out("attention"), subject.title,
                   layer, head, kv)  # fmt: skip
    where = f"layer {layer}" if layer is not None else f"{mc.n_layer} layers"
    where += f", head {head}" if head is not None else f" x {mc.n_head} heads"
    if kv != mc.n_head:
        where += f" sharing {kv} key/value heads ({mc.n_head // kv} query heads each)"
    kv_heads = [am.kv_head_of(h, mc.n_head, kv) for h in range(mc.n_head)]
    record = {"tokens": labels, "weights": weights.tolist(), "kv_head_of_head": kv_heads}
    return Finding(f"attention of {len(ids)} tokens, {where}", record, path)


def positions(subject: Subject, out: Path | None) -> Finding:
    from gptcli.inspect import position_maps as pm

    view = pm.position_view(subject.model)
    if view.scheme == "none":
        return Finding(view.summary, {"scheme": "none"})
    block = subject.model.cfg.block_size
    path = pm.draw(view, out or subject.default_out("positions"), subject.title, block)
    # The masked future is -inf in a bias matrix: null in JSON, which has no infinities.
    arrays = {k: np.where(np.isfinite(v), v, np.nan).tolist() for k, v in view.arrays.items()}
    record = {"scheme": view.scheme, **{k: _nulls(v) for k, v in arrays.items()}}
    return Finding(f"{view.scheme}: {view.summary}", record, path)


def _nulls(value):
    if isinstance(value, list):
        return [_nulls(v) for v in value]
    return None if value != value else value  # NaN -> None


def norm_leak(subject: Subject, out: Path | None, data_dir: Path | None) -> Finding:
    from gptcli.data.dataset import TokenDataset
    from gptcli.evaluate import check_same_tokenizer
    from gptcli.inspect import norm_leak as nl

    ckpt = subject.ckpt
    data = TokenDataset(data_dir or ckpt.config.data.dir)
    check_same_tokenizer(data, ckpt.tokenizer_spec, ckpt.vocab_size)
    data.check_block_size(ckpt.config.model.block_size)
    report = nl.measure_leak(subject.model, data, ckpt.config.train.batch_size)
    path = nl.draw(report, out or subject.default_out("norm-leak"), subject.title)
    rec = report.record()
    if report.mixes_positions:
        summary = (f"norm '{report.norm}' mixes positions: val loss "
                   f"{rec['val_loss_train_mode']:.4f} with batch statistics vs "
                   f"{rec['val_loss_eval_mode']:.4f} with running ones;"
                   f" a changed later token moves earlier outputs by up to "
                   f"{rec['leak_train_mode']:.3g} in train mode, {rec['leak_eval_mode']:.3g} in "
                   "eval mode")  # fmt: skip
    else:
        summary = (f"norm '{report.norm}' works within each position, so nothing leaks: the probe "
                   f"gives {rec['leak_train_mode']:.3g} in train mode and "
                   f"{rec['leak_eval_mode']:.3g} in eval mode")  # fmt: skip
    return Finding(summary, rec, path)


def embeddings(subject: Subject, tokens: str | None, top: int, k: int, out: Path | None,
               data_dir: Path | None) -> Finding:  # fmt: skip
    from gptcli.inspect import embeddings as em

    if top < 2 or k < 1:
        raise GptcliError(f"--top must be at least 2 and --neighbours at least 1 ({top}, {k})")
    vocab = subject.ckpt.vocab_size
    counts, source = _counts(subject, data_dir)
    order = np.argsort(-counts, kind="stable") if counts is not None else np.arange(vocab)
    chosen = em.parse_tokens(tokens, subject.tokenizer.encode) if tokens else None
    ids = chosen or [int(i) for i in order[:8]]
    seen = order if counts is None else order[counts[order] > 0]  # unseen: not frequent
    mapped = [int(i) for i in seen[: min(top, vocab)]]

    def name(token: int) -> str:
        return em.label(subject.tokenizer.decode, token)

    header, rows, maps, record = ["token", "matrix", f"{k} nearest (cosine)"], [], [], []
    for emb in em.embeddings_of(subject.model):
        found = em.neighbours(emb.weight, ids, k)
        for token, near in zip(ids, found, strict=True):
            rows.append([name(token), emb.name, "  ".join(f"{name(i)} {c:.2f}" for i, c in near)])
        points, share = em.pca_map(emb.weight, mapped)
        maps.append((emb.name, points, share))
        record.append({
            "matrix": emb.name,
            "neighbours": [{"token": name(t), "id": t, "nearest": [
                {"token": name(i), "id": i, "cosine": c} for i, c in near]}
                for t, near in zip(ids, found, strict=True)],
            "map": [{"token": name(i), "id": i, "x": float(x), "y": float(y)}
                    for i, (x, y) in zip(mapped, points, strict=True)],
            "explained_variance": [float(v) for v in share],
        })  # fmt: skip
    path = em.draw(maps, [name(i) for i in mapped], out or subject.default_out("embeddings"),
                   f"{subject.title}\n{len(mapped)} {source}")  # fmt: skip
    summary = (f"{len(ids)} tokens' nearest neighbours in {len(maps)} embedding matrix"
               f"{'es' * (len(maps) > 1)}; map of the {len(mapped)} {source}")  # fmt: skip
    return Finding(summary, {"frequency": source, "matrices": record}, path, (header, rows))


def _counts(subject: Subject, data_dir: Path | None):
    """Token counts for "most frequent", and the words saying where they came from."""
    from gptcli.data.dataset import TokenDataset
    from gptcli.evaluate import check_same_tokenizer
    from gptcli.inspect import embeddings as em

    where = data_dir or Path(subject.ckpt.config.data.dir)
    try:
        data = TokenDataset(where)
        check_same_tokenizer(data, subject.ckpt.tokenizer_spec, subject.ckpt.vocab_size)
    except GptcliError as exc:
        if data_dir is not None:
            raise
        why = "another tokenizer" if (where / "meta.json").is_file() else "no dataset"
        return None, f"first token ids ({why} at {where} to count frequencies in: {exc})"
    counts = em.token_counts(data, subject.ckpt.vocab_size)
    return counts, f"most frequent tokens of {where}'s train split"
