"""train.precision auto: measured on the model it trains, without touching it, remembered."""

import json
import time

import torch

from gptcli import autotune, cpu
from gptcli.config import ModelConfig
from gptcli.model import GPT
from gptcli.training.loop import train
from gptcli.training.precision import faster_step, train_precision

from ..conftest import tiny_config

RECIPE = ModelConfig(n_layer=4, n_head=4, n_embd=128, block_size=64, bias=False, dropout=0.1)


def test_measuring_leaves_the_model_and_the_rng_as_they_were(tmp_path, monkeypatch):
    monkeypatch.setenv("GPTCLI_CACHE_DIR", str(tmp_path))
    torch.manual_seed(0)
    model = GPT(RECIPE, 65).eval()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    rng = torch.get_rng_state()
    start = time.perf_counter()
    choice = faster_step(model, 12, torch.device("cpu"))
    # The CPU recipe's model (dropout on, so the RNG is drawn from) at its batch: the decision
    # costs under a second (autotune.BUDGET of timing, plus a copy of the model) where auto
    # measures at all, a CPU with native bf16. Under a lower cap (make test-isa) bf16 is
    # emulated, auto takes fp32 without measuring, and one emulated warm-up alone took
    # 0.67-1.09 s on the AMD EPYC capped to AVX2.
    if cpu.has_native_bf16():
        assert time.perf_counter() - start < 1.0
    assert choice in ("fp32", "bf16")
    assert torch.equal(torch.get_rng_state(), rng)
    assert not model.training and all(p.grad is None for p in model.parameters())
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())
    entry = next(iter(json.loads((tmp_path / autotune.FILE).read_text()).values()))
    assert entry["choice"] == choice and entry["for"]["task"] == "train step"
    assert entry["for"]["rows"] == 12 and entry["for"]["model"]["n_embd"] == 128


def test_a_run_trains_in_the_measured_choice(tmp_path, char_data, monkeypatch):
    monkeypatch.setattr(cpu, "has_native_bf16", lambda: True)
    chosen = []

    def fastest(workload, choices, prepare, default):
        assert choices == ("fp32", "bf16")
        chosen.append(workload)
        return "fp32" if default == "bf16" else "bf16"  # not the default: it was asked

    monkeypatch.setattr(autotune, "fastest", fastest)
    cfg = tiny_config(char_data, tmp_path / "run", train={"precision": "auto", "max_iters": 2})
    assert train(cfg).steps == 2 and len(chosen) == 1
    assert chosen[0]["rows"] == 8 and chosen[0]["model"]["n_layer"] == 2
    env = json.loads((tmp_path / "run" / "environment.json").read_text())
    assert env[-1]["precision"] == "fp32" and env[-1]["cpu_level"] == cpu.level()
    # Without native bf16 nothing is measured.
    monkeypatch.setattr(cpu, "has_native_bf16", lambda: False)
    assert train_precision("auto", GPT(RECIPE, 65), 12, torch.device("cpu")) == "fp32"
    assert len(chosen) == 1
