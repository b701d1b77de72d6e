import json

import pytest
import torch

from gptcli import checkpoint
from gptcli.config import TrainConfig
from gptcli.errors import GptcliError
from gptcli.model import GPT
from gptcli.train import lr_at, make_optimizer, resolve_device, resolve_precision, train

from .conftest import tiny_config


def test_training_lowers_the_loss_and_writes_a_checkpoint(tmp_path, char_data):
    cfg = tiny_config(char_data, tmp_path / "run")
    result = train(cfg)
    assert result.steps == 40
    assert result.last_eval.val_loss < result.first_eval.val_loss - 0.5
    assert result.checkpoint == tmp_path / "run" / "step-0000040"
    pointer = checkpoint.read_pointer(tmp_path / "run")
    assert pointer["latest"] == "step-0000040"
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").open()]
    evals = [r for r in records if "val_loss" in r]
    steps = [r for r in records if "loss" in r]
    assert [r["step"] for r in evals] == [0, 20, 40]
    assert [r["step"] for r in steps] == list(range(5, 41, 5))


def test_lr_schedule_warms_up_then_decays_to_min():
    tc = TrainConfig(lr=1.0, min_lr=0.1, warmup_iters=10, max_iters=110)
    lrs = [lr_at(s, tc) for s in range(120)]
    assert lrs[0] < lrs[5] < lrs[9] < 1.0
    assert lrs[10] == pytest.approx(1.0)
    assert all(a >= b for a, b in zip(lrs[10:], lrs[11:], strict=False))
    assert lrs[60] == pytest.approx(0.55)
    assert lrs[110] == lrs[119] == pytest.approx(0.1)


def test_weight_decay_skips_biases_and_norm_gains(tmp_path):
    model = GPT(tiny_config(tmp_path, tmp_path).model.__class__(n_layer=1, n_head=1, n_embd=8), 11)
    opt = make_optimizer(model, TrainConfig(weight_decay=0.1), torch.device("cpu"))
    decay, no_decay = opt.param_groups
    assert decay["weight_decay"] == 0.1 and no_decay["weight_decay"] == 0.0
    assert all(p.dim() >= 2 for p in decay["params"])
    assert all(p.dim() == 1 for p in no_decay["params"]) and no_decay["params"]
    assert len(decay["params"]) + len(no_decay["params"]) == len(list(model.parameters()))


def test_existing_run_needs_resume_or_force(tmp_path, char_data):
    cfg = tiny_config(char_data, tmp_path / "run", train={"max_iters": 20})
    train(cfg)
    with pytest.raises(GptcliError, match="--resume"):
        train(cfg)
    assert train(cfg, force=True).steps == 20


def test_resume_continues_bitwise_identically(tmp_path, char_data):
    # Dropout on, so the restored RNG state matters; the schedule is fixed by lr_decay_iters so
    # that stopping at step 20 does not change it.
    def cfg(out, max_iters):
        train_keys = {"max_iters": max_iters, "lr_decay_iters": 40}
        return tiny_config(char_data, tmp_path / out, model={"dropout": 0.1}, train=train_keys)

    train(cfg("full", 40))
    train(cfg("half", 20))
    assert train(cfg("half", 40), resume=True).steps == 20
    a = checkpoint.load(tmp_path / "full", "latest").model_state()
    b = checkpoint.load(tmp_path / "half", "latest").model_state()
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_resume_refuses_a_different_model(tmp_path, char_data):
    train(tiny_config(char_data, tmp_path / "run", train={"max_iters": 20}))
    other = tiny_config(char_data, tmp_path / "run", model={"n_layer": 3})
    with pytest.raises(GptcliError, match=r"model\.n_layer: 2 in checkpoint vs 3 now"):
        train(other, resume=True)
    with pytest.raises(GptcliError, match="nothing to resume"):
        train(tiny_config(char_data, tmp_path / "empty"), resume=True)


def test_device_and_precision_choices():
    assert resolve_device("cpu").type == "cpu"
    assert resolve_precision("auto", torch.device("cpu")) == "fp32"
    with pytest.raises(GptcliError, match="fp16 needs a CUDA"):
        resolve_precision("fp16", torch.device("cpu"))
    if not torch.cuda.is_available():
        with pytest.raises(GptcliError, match="CUDA is not available"):
            resolve_device("cuda")


def test_bf16_autocast_trains_on_cpu(tmp_path, char_data):
    cfg = tiny_config(char_data, tmp_path / "run", train={"precision": "bf16", "max_iters": 20})
    result = train(cfg)
    assert result.last_eval.val_loss < result.first_eval.val_loss
