
"""FusedAdamW: torch.optim.AdamW(fused=True)'s updates and state, without torch._dynamo."""

import copy
import io
import subprocess
import sys

import pytest
import torch

from gptcli.config import ModelConfig, TrainConfig
from gptcli.model import GPT
from gptcli.training.optim import FusedAdamW, make_optimizer, set_lr

TC = TrainConfig(lr=3e-3, weight_decay=0.1, beta1=0.9, beta2=0.99)


def model_and_batch():
    torch.manual_seed(0)
    model = GPT(ModelConfig(n_layer=2, n_head=2, n_embd=16, block_size=8, bias=True), 11)
    x = torch.randint(11, (4, 8), generator=torch.Generator().manual_seed(1))
    return model, x


def torch_adamw(model):
    ours = make_optimizer(model, TC, torch.device("cpu"))
    groups = [{"params": g["params"], "weight_decay": g["weight_decay"]} for g in ours.param_groups]
    return torch.optim.AdamW(groups, lr=TC.lr, betas=(TC.beta1, TC.beta2), fused=True)


def train(model, opt, steps: int, x, first: int = 0):
    for step in range(first, first + steps):
        set_lr(opt, TC.lr / (step + 1))  # the schedule changes lr between steps
        _, loss = model(x, x)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)


def roundtrip(state: dict) -> dict:
    buffer = io.BytesIO()
    torch.save(state, buffer)
    buffer.seek(0)
    return torch.load(buffer, weights_only=True)


def assert_same_params(a, b):
    for (name, p), q in zip(a.named_parameters(), b.parameters(), strict=True):
        assert torch.equal(p, q), name


def test_updates_equal_torch_fused_adamw_bit_for_bit():
    ours, x = model_and_batch()
    theirs = copy.deepcopy(ours)
    opt = make_optimizer(ours, TC, torch.device("cpu"))
    assert isinstance(opt, FusedAdamW)
    train(ours, opt, 6, x)
    train(theirs, torch_adamw(theirs), 6, x)
    assert_same_params(ours, theirs)


def test_state_dicts_load_into_either_and_training_continues_identically():
    a, x = model_and_batch()
    opt_a = make_optimizer(a, TC, torch.device("cpu"))
    train(a, opt_a, 3, x)
    b = copy.deepcopy(a)
    opt_b = torch_adamw(b)
    opt_b.load_state_dict(roundtrip(opt_a.state_dict()))  # ours -> torch's
    c = copy.deepcopy(a)
    opt_c = make_optimizer(c, TC, torch.device("cpu"))
    opt_c.load_state_dict(roundtrip(opt_b.state_dict()))  # torch's -> ours
    assert opt_c.state_dict()["param_groups"] == opt_b.state_dict()["param_groups"]
    for model, opt in ((a, opt_a), (b, opt_b), (c, opt_c)):
        train(model, opt, 3, x, first=3)
    assert_same_params(a, b)
    assert_same_params(a, c)


@pytest.mark.slow
def test_a_cpu_training_does_not_import_torch_dynamo(tmp_path, char_data):
    code = f"""
import sys
from gptcli.config import config_from_dict
from gptcli.training.loop import train
cfg = config_from_dict({{
    "data": {{"dir": {str(char_data)!r}}},
    "model": {{"n_layer": 1, "n_head": 1, "n_embd": 8, "block_size": 8}},
    "train": {{"max_iters": 3, "batch_size": 2, "eval_interval": 3, "eval_iters": 1,
               "device": "cpu", "out_dir": {str(tmp_path / "run")!r}}},
}})
train(cfg)
print("torch._dynamo" in sys.modules)
"""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] == "False"
