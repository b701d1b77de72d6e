"""What a run costs (gptcli/compute.py) and a run's length from a budget (training/budgets.py):
the FLOP count against the model's own linear layers for every variant and against a count by
hand, budgets against max_iters, and the records that carry them (summary, metrics.jsonl,
eval.json, compare)."""

import json
import math
import warnings

import pytest
import torch
import yaml
from typer.testing import CliRunner

from gptcli.cli import app
from gptcli.compute import compute, embedding_params, flops_per_token, tokens_per_step
from gptcli.config import ModelConfig, load_config
from gptcli.errors import GptcliError
from gptcli.model import GPT
from gptcli.training.budgets import resolve_length

from .conftest import tiny_config
from .helpers import every_variant, variant_config

VOCAB = 30


@every_variant
@pytest.mark.parametrize("tied", [True, False])
def test_flops_count_every_linear_weight_six_times_plus_attention(position, norm, placement,
                                                                  block, tied):  # fmt: skip
    cfg = variant_config(position, norm, placement, block, tie_embeddings=tied)
    with torch.device("meta"), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = GPT(cfg, VOCAB)
    # The model's own matmuls: every nn.Linear's weight, the LM head once even where tied.
    linear = sum(m.weight.numel() for m in model.modules() if isinstance(m, torch.nn.Linear))
    attention = 12 * cfg.n_layer * cfg.n_embd * cfg.block_size
    assert flops_per_token(cfg, VOCAB) == 6 * linear + attention
    # Kaplan's N: everything but the token embedding, the position scheme's tables (learned
    # positions, relative biases), an untied head.
    tables = VOCAB * cfg.n_embd * (1 if tied else 2)
    tables += sum(p.numel() for p in model.positions.parameters())
    assert embedding_params(cfg, VOCAB) == tables
    spent = compute(cfg, VOCAB, steps=5, tokens_per_step=96)
    assert spent.params == model.num_params()
    assert spent.params_non_embedding == model.num_params() - tables
    assert spent.tokens == 480 and spent.flops == 480 * flops_per_token(cfg, VOCAB)


def test_flops_by_hand():
    # 2 layers, 16 wide, 2 heads of 8, block 8, vocab 11, hidden 64, tied:
    # q,k,v 16 x 48 + out 16 x 16 = 1,024; MLP 2 x 16 x 64 = 2,048; x 2 layers + head 11 x 16
    # = 6,320 weights -> 37,920; attention 12 x 2 x 16 x 8 = 3,072.
    mc = ModelConfig(n_layer=2, n_head=2, n_embd=16, block_size=8)
    assert flops_per_token(mc, 11) == 40_992
    # One key/value head: k and v shrink to 16 x 8 each (q,k,v 16 x 32).
    assert flops_per_token(ModelConfig(n_layer=2, n_head=2, n_embd=16, block_size=8,
                                       n_kv_head=1), 11) == 40_992 - 6 * 2 * 2 * 16 * 8  # fmt: skip
    # SwiGLU at the same ratio: hidden 8 x round(2 x 64 / 3 / 8) = 40, three matrices.
    gated = ModelConfig(n_layer=2, n_head=2, n_embd=16, block_size=8, mlp="swiglu")
    assert flops_per_token(gated, 11) == 40_992 + 6 * 2 * (3 * 16 * 40 - 2 * 16 * 64)
    # QK-norm adds weights but no matmul.
    qk = ModelConfig(n_layer=2, n_head=2, n_embd=16, block_size=8, qk_norm="rmsnorm")
    assert flops_per_token(qk, 11) == 40_992


def test_a_budget_sets_max_iters_and_the_decay_horizon(tmp_path, char_data):
    cfg = tiny_config(char_data, tmp_path / "run", train={"flops_budget": 3e9})
    vocab = 20
    per_step = tokens_per_step(cfg.train, cfg.model.block_size)  # 8 x 16
    sized, line = resolve_length(cfg, vocab)
    steps = math.ceil(3e9 / flops_per_token(cfg.model, vocab) / per_step)
    assert sized.train.max_iters == sized.train.lr_decay_iters == steps and steps > 1
    assert f"{steps:,} steps of {per_step:,} tokens" in line and "train.flops_budget 3e+09" in line
    per_param = tiny_config(char_data, tmp_path / "run", train={"tokens_per_param": 20})
    sized, line = resolve_length(per_param, vocab)
    params = compute(per_param.model, vocab, 0, per_step).params
    assert sized.train.max_iters == math.ceil(20 * params / per_step)
    assert resolve_length(tiny_config(char_data, tmp_path / "r"), vocab)[1] is None


def write(tmp_path, name, text):
    path = tmp_path / f"{name}.yaml"
    path.write_text(text)
    return path


def test_a_budget_beside_max_iters_or_another_budget_is_refused(tmp_path):
    both = write(tmp_path, "both", "train: {flops_budget: 1.0e12, tokens_per_param: 20}\n")
    with pytest.raises(GptcliError, match="train.flops_budget: and train.tokens_per_param both"):
        load_config(both)
    given = write(tmp_path, "given", "train: {max_iters: 500}\n")
    with pytest.raises(GptcliError, match=r"train.max_iters: is decided by train.flops_budget; "
                                          r"give one of them \(--set train.max_iters=null"):
        load_config(given, ["train.flops_budget=1e12"])
    decay = write(tmp_path, "decay", "train: {lr_decay_iters: 500, tokens_per_param: 20}\n")
    with pytest.raises(GptcliError, match="train.lr_decay_iters: is decided by "
                                          "train.tokens_per_param"):
        load_config(decay)
    # A null max_iters drops the file's, so the budget decides; alone, null is the default.
    cfg = load_config(given, ["train.max_iters=null", "train.flops_budget=1e12"])
    assert cfg.train.flops_budget == 1e12
    assert load_config(given, ["train.max_iters=null"]).train.max_iters == 2000
    done = CliRunner().invoke(app, ["train", "--config", str(both)])
    assert done.exit_code == 2 and len(done.output.strip().splitlines()) == 1


def test_a_run_by_budget_records_what_it_spent_everywhere(tmp_path, char_data):
    out = tmp_path / "run"
    cfg = tiny_config(char_data, out, train={"tokens_per_param": 0.05, "max_iters": 2000,
                                             "eval_interval": 1000})  # fmt: skip
    raw = cfg.to_dict()
    del raw["train"]["max_iters"], raw["train"]["lr_decay_iters"]
    config = tmp_path / "c.yaml"
    config.write_text(yaml.safe_dump(raw))
    done = CliRunner().invoke(app, ["train", "--config", str(config)])
    assert done.exit_code == 0, done.output
    assert "train.tokens_per_param 0.05 x" in done.output  # the summary says what it chose
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    last = records[-1]
    steps, per_step = last["step"], 8 * 16
    params = last["params"]
    assert steps == math.ceil(0.05 * params / per_step)
    assert last["train_tokens"] == steps * per_step
    vocab = json.loads((char_data / "meta.json").read_text())["vocab_size"]
    assert last["train_flops"] == steps * per_step * flops_per_token(cfg.model, vocab)
    assert 0 < last["params_non_embedding"] < params
    assert "trained" in done.output and f"{steps * per_step:,} tokens" in done.output
    [entry] = json.loads((out / "eval.json").read_text())["results"]
    assert entry["train_flops"] == last["train_flops"] and entry["params"] == params
    # compare's json carries them, and --compute shows them as columns.
    rows = json.loads(CliRunner().invoke(app, ["compare", str(out), "--format", "json"]).output)
    assert rows[0]["train_flops"] == last["train_flops"]
    assert rows[0]["params_non_embedding"] == last["params_non_embedding"]
    table = CliRunner().invoke(app, ["compare", str(out), "--compute", "--format", "csv"]).output
    head, row = table.splitlines()[:2]
    assert head.endswith("params w/o emb.,train tokens,train FLOPs")
    assert row.endswith(f"{last['params_non_embedding']},{steps * per_step},"
                        f"{last['train_flops']:.0f}")  # raw numbers, for spreadsheets  # fmt: skip


def test_a_grid_of_budgets_knows_each_run_s_length(tmp_path, char_data):
    from gptcli.study.grid import Grid, expand

    from .helpers import base_config

    grid = Grid(base_config(tmp_path, char_data), tmp_path / "sweep",
                ["train.max_iters=null"], {"train.tokens_per_param": [0.05, 0.1]}, [1])  # fmt: skip
    short, long = expand(grid)
    assert long.config.train.max_iters >= 2 * short.config.train.max_iters - 1
    assert short.config.train.max_iters == short.config.train.lr_decay_iters != 6
