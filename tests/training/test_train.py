import json
import math
import time

import pytest
import torch
import yaml

from gptcli import checkpoint, cpu
from gptcli.compute import flops_per_token
from gptcli.config import ModelConfig, TrainConfig
from gptcli.device import resolve_device, resolve_precision
from gptcli.errors import GptcliError
from gptcli.model import GPT
from gptcli.training.loop import train
from gptcli.training.mfu import peak_flops
from gptcli.training.optim import make_optimizer
from gptcli.training.report import Callbacks

from ..conftest import tiny_config


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


@pytest.mark.parametrize(("precision", "order"), [("fp32", "random"), ("bf16", "random"),
                                                  ("fp32", "epoch")])  # fmt: skip
def test_resume_continues_bitwise_identically(tmp_path, char_data, precision, order):
    # Dropout on, so the restored RNG state matters; the schedule is fixed by lr_decay_iters so
    # that stopping at step 20 does not change it. Bit for bit in bf16 too: both runs are in
    # one process, so on one CPU, and run the same kernels on the same shapes.
    def cfg(out, max_iters):
        train_keys = {"max_iters": max_iters, "lr_decay_iters": 40, "precision": precision}
        return tiny_config(char_data, tmp_path / out, model={"dropout": 0.1}, train=train_keys,
                           data={"order": order})  # fmt: skip

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


def test_device_and_precision_choices(monkeypatch):
    assert resolve_device("cpu").type == "cpu"
    cpu_dev = torch.device("cpu")
    asked = []

    def faster():
        asked.append(1)
        return "fp32"

    # A CPU with native bf16: auto is what the measurement says (bf16 where none is given).
    monkeypatch.setattr(cpu, "has_native_bf16", lambda: True)
    assert resolve_precision("auto", cpu_dev, faster=faster) == "fp32" and asked == [1]
    assert resolve_precision("auto", cpu_dev) == "bf16"
    # One without: bf16 is emulated there, so fp32, and nothing is measured.
    monkeypatch.setattr(cpu, "has_native_bf16", lambda: False)
    assert resolve_precision("auto", cpu_dev, faster=faster) == "fp32" and asked == [1]
    # A precision asked for by name is kept.
    assert resolve_precision("bf16", cpu_dev, faster=faster) == "bf16" and asked == [1]
    with pytest.raises(GptcliError, match="fp16 needs a CUDA"):
        resolve_precision("fp16", torch.device("cpu"))
    if not torch.cuda.is_available():
        with pytest.raises(GptcliError, match="CUDA is not available"):
            resolve_device("cuda")


def test_bf16_autocast_trains_on_cpu(tmp_path, char_data):
    cfg = tiny_config(char_data, tmp_path / "run", train={"precision": "bf16", "max_iters": 20})
    result = train(cfg)
    assert result.last_eval.val_loss < result.first_eval.val_loss


def test_nan_loss_stops_naming_the_step_and_keeps_the_last_good_checkpoint(
    tmp_path, char_data, monkeypatch
):
    from gptcli.training import loop as train_module

    real_lr_at = train_module.lr_at
    # An infinite learning rate from step 12 on turns the weights, then the loss, to nan.
    monkeypatch.setattr(
        train_module, "lr_at", lambda step, tc: math.inf if step >= 12 else real_lr_at(step, tc)
    )
    run = tmp_path / "run"
    cfg = tiny_config(char_data, run, train={"eval_interval": 10, "log_interval": 5})
    with pytest.raises(GptcliError) as err:
        train(cfg)
    message = str(err.value)
    assert "the training loss became nan at step 15" in message
    assert f"the last good checkpoint, {run / 'step-0000010'}, is kept" in message
    assert checkpoint.read_pointer(run)["latest"] == "step-0000010"
    state = checkpoint.load(run, "latest").model_state()
    assert all(torch.isfinite(v).all() for v in state.values())
    assert "GradScaler" not in message  # that remark is for fp16 only


def test_tokens_per_step_sets_the_accumulation(tmp_path, char_data):
    class Info(Callbacks):
        def on_start(self, info):
            self.info = info

    keys = {"max_iters": 4, "batch_size": 4, "eval_interval": 4}
    by_tokens, by_accum = Info(), Info()
    for run, extra, info in (
        ("a", {"tokens_per_step": 256}, by_tokens),
        ("b", {"grad_accum": 4}, by_accum),
    ):
        train(tiny_config(char_data, tmp_path / run, train={**keys, **extra}), callbacks=info)
    assert by_tokens.info.tokens_per_step == by_accum.info.tokens_per_step == 256
    assert by_tokens.info.micro_batches == 4
    a = checkpoint.load(tmp_path / "a", "latest").model_state()
    b = checkpoint.load(tmp_path / "b", "latest").model_state()
    assert all(torch.equal(a[k], b[k]) for k in a)
    with pytest.raises(GptcliError, match="tokens_per_step: 200 is not a multiple of"):
        train(tiny_config(char_data, tmp_path / "c", train={**keys, "tokens_per_step": 200}))


def test_optimizer_is_fused_on_cpu_and_foreach_elsewhere():
    model = GPT(ModelConfig(n_layer=1, n_head=1, n_embd=8), 11)
    assert make_optimizer(model, TrainConfig(), torch.device("cpu")).param_groups[0]["fused"]
    assert make_optimizer(model, TrainConfig(), torch.device("meta")).defaults["foreach"]


def test_mfu_estimate(monkeypatch):
    # MFU counts what the runs record (gptcli/compute.py): 6 per linear weight (norms, biases and
    # tables are no matmuls) plus attention; tests/test_compute.py counts it by hand.
    model = GPT(ModelConfig(n_layer=2, n_head=2, n_embd=16, block_size=8), 11)
    linear = sum(m.weight.numel() for m in model.modules() if isinstance(m, torch.nn.Linear))
    assert flops_per_token(model.cfg, 11) == 6 * linear + 12 * 2 * 16 * 8 == 40_992
    assert peak_flops(torch.device("cpu"), "bf16") is None
    names = {"NVIDIA H100 80GB HBM3": 989e12, "NVIDIA H100 PCIe": 756e12, "NVIDIA T4": None}
    for name, peak in names.items():
        monkeypatch.setattr(torch.cuda, "get_device_name", lambda device, name=name: name)
        assert peak_flops(torch.device("cuda"), "bf16") == peak
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device: "NVIDIA A100-SXM4-80GB")
    assert peak_flops(torch.device("cuda"), "fp32") == 19.5e12


@pytest.mark.slow
def test_tokens_per_sec_leaves_out_the_first_step(tmp_path, char_data, monkeypatch):
    """The first step carries compilation and warm-up; the summary's tokens/s and MFU do not."""
    from gptcli.training.loop import Loop

    original, calls = Loop.forward_backward, []

    def slow_first(self, step):
        calls.append(step)
        if len(calls) == 1:
            time.sleep(1.0)
        return original(self, step)

    monkeypatch.setattr(Loop, "forward_backward", slow_first)
    cfg = tiny_config(char_data, tmp_path / "run", train={"max_iters": 6})
    result = train(cfg)
    assert result.first_step_seconds >= 1.0
    timed_seconds = 5 * cfg.train.batch_size * cfg.model.block_size / result.tokens_per_sec
    assert timed_seconds < 0.5  # the five later steps of a tiny model, without the sleep


def test_cli_shows_the_eta_on_a_terminal_plain_lines_elsewhere_and_the_end_table(
    tmp_path, char_data, monkeypatch
):
    from typer.testing import CliRunner

    from gptcli.cli import app
    from gptcli.cli import train as train_command

    config = tmp_path / "tiny.yaml"
    cfg = tiny_config(char_data, tmp_path / "run", train={"max_iters": 4, "eval_interval": 4})
    config.write_text(yaml.safe_dump(cfg.to_dict()))
    result = CliRunner().invoke(app, ["train", "--config", str(config), "--force"])
    assert result.exit_code == 0, result.output
    assert "ETA" not in result.output and "step 4/4: loss" in result.output
    for row in ("parameters", "tokens per step", "precision", "best val perplexity", "MFU"):
        assert row in result.output
    monkeypatch.setattr(train_command, "_on_terminal", lambda: True)
    result = CliRunner().invoke(app, ["train", "--config", str(config), "--force"])
    assert result.exit_code == 0, result.output
    assert "ETA" in result.output and "step 4/4: loss" not in result.output


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="fp16 with a GradScaler needs CUDA")
def test_fp16_with_grad_scaler_on_cuda(tmp_path, char_data):
    keys = {"device": "cuda", "precision": "fp16", "max_iters": 40}
    result = train(tiny_config(char_data, tmp_path / "run", train=keys))
    assert result.last_eval.val_loss < result.first_eval.val_loss - 0.5
    scale = checkpoint.load(tmp_path / "run", "latest").trainer_state()["scaler"]["scale"]
    assert math.isfinite(scale) and scale > 0
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").open()]
    assert all(math.isfinite(r["loss_scale"]) for r in records if "loss" in r)
