"""Helpers more than one test module uses: the variant grid (a covering array over the model
registries), small models of a variant, and the fixtures-as-functions of the study, data and
interop tests. Test modules import from here, never from each other."""

from __future__ import annotations

import itertools
import json
import os
import warnings
from dataclasses import replace

import numpy as np
import pytest
import torch
import yaml

from gptcli import checkpoint
from gptcli.config import Config, ModelConfig
from gptcli.data.tokenizers import BPETokenizer, CharTokenizer, tokenizer_from_spec
from gptcli.model import GPT
from gptcli.model.attention import QK_NORMS
from gptcli.model.gpt import PLACEMENTS
from gptcli.model.mlp import ACTIVATIONS, MLPS
from gptcli.model.norms import NORMS
from gptcli.model.positions import POSITIONS

from .conftest import make_text, needs_gpt2

# --- The variant grid -------------------------------------------------------------------------

N_HEAD = 4  # so that 2 key/value heads is a real grouping and 1 is multi-query


def factors() -> dict[str, list]:
    """Every choice of every part of the block, read from the registries: a new entry joins the
    grid by being registered. A standard MLP is one choice per activation; a gated MLP has its
    own."""
    standard = [f"standard:{a}" for a in ACTIVATIONS.names()]
    return {
        "position": POSITIONS.names(),
        "norm": NORMS.names(),
        "placement": PLACEMENTS.names(),
        "mlp": standard + [m for m in MLPS.names() if m != "standard"],
        "kv": [N_HEAD, 2, 1],
        "qk": QK_NORMS.names(),
    }


def covering_array(choices: dict[str, list]) -> list[dict]:
    """Rows (a choice per factor) in which every pair of choices of two factors appears together
    at least once and every single choice at least twice; greedy and deterministic."""
    names = list(choices)
    index = {n: range(len(choices[n])) for n in names}
    uncovered = {((a, i), (b, j)) for a, b in itertools.combinations(names, 2)
                 for i in index[a] for j in index[b]}  # fmt: skip
    rows: list[dict[str, int]] = []
    uses = {(n, i): 0 for n in names for i in index[n]}

    def complete(row: dict[str, int]) -> dict[str, int]:
        for n in names:
            if n not in row:
                def gain(i, n=n):
                    new = sum(((m, row[m]), (n, i)) in uncovered or ((n, i), (m, row[m]))
                              in uncovered for m in row)  # fmt: skip
                    return (new, -uses[(n, i)], -i)

                row[n] = max(index[n], key=gain)
        return row

    def add(row: dict[str, int]) -> None:
        rows.append(row)
        for n in names:
            uses[(n, row[n])] += 1
        for a, b in itertools.combinations(names, 2):
            uncovered.discard(((a, row[a]), (b, row[b])))

    while uncovered:
        (a, i), (b, j) = min(uncovered)
        add(complete({a: i, b: j}))
    for (n, i), count in sorted(uses.items()):
        for _ in range(2 - count):
            add(complete({n: i}))
    return [{n: choices[n][row[n]] for n in names} for row in rows]


def block_name(row: dict) -> str:
    return f"mlp={row['mlp']},kv={row['kv']},qk={row['qk']}"


def block_options(block: str) -> dict:
    """ModelConfig keys for a block name ("mlp=swiglu,kv=2,qk=rmsnorm")."""
    parts = dict(part.split("=") for part in block.split(","))
    mlp, _, activation = parts["mlp"].partition(":")
    keys = {"mlp": mlp, "n_kv_head": int(parts["kv"]), "qk_norm": parts["qk"]}
    return {**keys, "activation": activation} if activation else keys


def variant_params() -> list:
    """(position, norm, placement, block) for every row of the covering array; with
    GPTCLI_EXHAUSTIVE=1 also every other combination, marked `exhaustive` (a release check:
    `make test-exhaustive`)."""
    choices = factors()
    rows = covering_array(choices)

    def param(row, *marks):
        args = (row["position"], row["norm"], row["placement"], block_name(row))
        return pytest.param(*args, id="-".join(args), marks=marks)

    params = [param(row) for row in rows]
    if os.environ.get("GPTCLI_EXHAUSTIVE") == "1":
        seen = {tuple(row.values()) for row in rows}
        for combo in itertools.product(*choices.values()):
            if combo not in seen:
                row = dict(zip(choices, combo, strict=True))
                params.append(param(row, pytest.mark.exhaustive))
    return params


VARIANT_PARAMS = variant_params()


def every_variant(test):
    """Parametrize a test over the variant grid: (position, norm, placement, block)."""
    return pytest.mark.parametrize(("position", "norm", "placement", "block"), VARIANT_PARAMS)(test)


def variant_config(position, norm, placement="pre", block="mlp=standard:gelu,kv=4,qk=none",
                   **keys) -> ModelConfig:  # fmt: skip
    return ModelConfig(
        n_layer=3, n_head=N_HEAD, n_embd=32, block_size=12, position=position, norm=norm,
        norm_placement=placement, relative_buckets=8, relative_max_distance=16,
        **{**block_options(block), **keys},
    )  # fmt: skip


def variant(position, norm, placement="pre", block="mlp=standard:gelu,kv=4,qk=none", **keys):
    """A small model of the variant in eval mode, every parameter moved off its init (so that
    every part matters) and BatchNorm's running statistics off theirs."""
    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = GPT(variant_config(position, norm, placement, block, **keys), 30)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    model.train()
    model(torch.randint(30, (4, 12)))
    return model.eval()


# --- Study --------------------------------------------------------------------------------------


def base_config(tmp_path, data_dir):
    """A sweep's base config: a model small enough to train 6 steps in a moment."""
    path = tmp_path / "base.yaml"
    path.write_text(yaml.safe_dump({
        "data": {"dir": str(data_dir)},
        "model": {"n_layer": 1, "n_head": 2, "n_embd": 16, "block_size": 16},
        "train": {"batch_size": 4, "max_iters": 6, "eval_interval": 3, "eval_iters": 2,
                  "warmup_iters": 1, "device": "cpu", "log_interval": 1},
    }))  # fmt: skip
    return path


def statuses(out):
    """Each run's status in a sweep directory's sweep.json."""
    return {r["name"]: r["status"] for r in json.loads((out / "sweep.json").read_text())["runs"]}


# --- Data ---------------------------------------------------------------------------------------

DOCS = [
    make_text(120, seed=1),
    "春眠不觉晓，处处闻啼鸟。\n夜来风雨声，花落知多少。\n" * 15,
    "",  # an empty document still gets its separators, as an empty file does
    'Quotes " and \\ backslashes, a literal <|endoftext|>, emoji 😀 and\ttabs\r\n' * 10,
    make_text(80, seed=2),
]

TOKENIZERS = [
    pytest.param("gpt2", {}, marks=needs_gpt2),
    pytest.param("char", {}),
    pytest.param("bpe", {"vocab_size": 300}),
]


def jsonl(docs, field="text", **dump):
    return "".join(json.dumps({"id": i, field: doc}, **dump) + "\n" for i, doc in enumerate(docs))


def tokens(out):
    """A prepared dataset's tokens (train then val) and its meta.json."""
    meta = json.loads((out / "meta.json").read_text())
    split = [np.fromfile(out / f"{s}.bin", dtype=meta["dtype"]) for s in ("train", "val")]
    return np.concatenate(split).tolist(), meta


def expected_tokens(meta, docs):
    """The documents encoded one by one, joined by the tokenizer's separator."""
    tok = tokenizer_from_spec(meta["tokenizer"])
    ids = []
    for i, doc in enumerate(docs):
        if i and tok.separator_id is not None:
            ids.append(tok.separator_id)
        ids += tok.encode(doc)
    return ids


# --- Interop ------------------------------------------------------------------------------------

GPT2_LIKE = {"n_layer": 2, "n_head": 2, "n_embd": 32, "block_size": 16, "bias": True}


def tokenizer_spec(kind: str) -> dict:
    if kind == "char":
        return CharTokenizer("".join(sorted(set(make_text())))).spec()
    if kind == "bpe":
        return BPETokenizer.from_corpus([make_text(seed=1)], vocab_size=300).spec()
    return {"type": "gpt2"}


def save_checkpoint(run_dir, spec: dict, seed: int = 0, **model) -> GPT:
    """A checkpoint of a random model, every tensor moved off its init (norm gains off 1, biases
    off 0), so a swapped, untransposed or dropped tensor changes the logits visibly."""
    tokenizer = tokenizer_from_spec(spec)
    cfg = Config(model=replace(Config().model, **{**GPT2_LIKE, **model}))
    torch.manual_seed(seed)
    gpt = GPT(cfg.model, tokenizer.vocab_size).eval()
    with torch.no_grad():
        for p in gpt.parameters():
            p.add_(0.3 * torch.randn_like(p))
    checkpoint.save(
        run_dir, step=7, model_state=gpt.state_dict(), trainer_state={"step": 7}, config=cfg,
        vocab_size=tokenizer.vocab_size, tokenizer_spec=spec, best_step=7, best_val_loss=None,
        val_loss=None,
    )  # fmt: skip
    return gpt


@torch.no_grad()
def assert_same_logits(gpt: GPT, hf_model) -> None:
    idx = torch.randint(
        gpt.vocab_size, (3, gpt.cfg.block_size), generator=torch.Generator().manual_seed(1)
    )
    ours, _ = gpt(idx)
    theirs = hf_model(idx).logits
    assert theirs.abs().max() > 1.0  # far from trivially small
    assert (ours - theirs).abs().max().item() < 1e-4


def load_hf(out):
    """transformers' own model of an export directory, refused if any tensor did not fit."""
    import transformers

    model, info = transformers.AutoModelForCausalLM.from_pretrained(
        out, output_loading_info=True, dtype=torch.float32
    )
    assert not any(info.values()), info  # no tensor missing, unexpected or mismatched
    return model.eval()
