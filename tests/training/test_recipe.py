"""The recipe's choices, each through training: train.optimizer (AdamW, Muon beside AdamW) and
train.schedule, with gradient accumulation, clipping and bf16; exact resume for every pair."""

import signal

import pytest
import torch

from gptcli import checkpoint
from gptcli.config import ModelConfig, TrainConfig, config_from_dict
from gptcli.errors import GptcliError
from gptcli.model import GPT
from gptcli.training import loop as train_module
from gptcli.training.loop import train
from gptcli.training.optim import Chain, make_optimizer, set_lr

from ..conftest import tiny_config

MUON = {"optimizer": "muon", "muon_lr": 0.02}
MUP = {"parametrization": "mup", "mup_base_width": 16}


def test_muon_trains_the_blocks_matrices_and_adamw_the_rest():
    model = GPT(ModelConfig(n_layer=2, n_head=2, n_embd=16, block_size=8, mlp="swiglu",
                            position="relative", tie_embeddings=False), 11)  # fmt: skip
    tc = TrainConfig(lr=1e-3, **MUON)
    opt = make_optimizer(model, tc, torch.device("cpu"))
    assert isinstance(opt, Chain) and set(opt.optimizers) == {"muon", "adamw"}
    muon = {id(p) for g in opt.optimizers["muon"].param_groups for p in g["params"]}
    names = {n for n, p in model.named_parameters() if id(p) in muon}
    # 2 layers x (c_attn, c_proj, c_fc, c_proj): the gated MLP's two inputs are one matrix.
    assert names == {f"blocks.{i}.{m}.weight" for i in range(2)
                     for m in ("attn.c_attn", "attn.c_proj", "mlp.c_fc", "mlp.c_proj")}  # fmt: skip
    assert len(model.block_matrices()) == 8
    adamw = {id(p) for g in opt.optimizers["adamw"].param_groups for p in g["params"]}
    assert adamw | muon == {id(p) for p in model.parameters()} and not adamw & muon
    # The schedule moves both: Muon's rate is muon_lr at train.lr, in proportion below it.
    set_lr(opt, 5e-4)
    assert [g["lr"] for g in opt.optimizers["muon"].param_groups] == [pytest.approx(0.01)]
    assert {g["lr"] for g in opt.optimizers["adamw"].param_groups} == {5e-4}


@pytest.mark.parametrize(("precision", "recipe", "model"), [
    ("fp32", MUON, {}), ("bf16", MUON, {}), ("fp32", {}, MUP), ("bf16", MUON, MUP)])
def test_the_loss_falls_with_accumulation_and_clipping(tmp_path, char_data, precision, recipe,
                                                        model):  # fmt: skip
    keys = {**recipe, "grad_accum": 2, "grad_clip": 0.5, "precision": precision, "max_iters": 40}
    result = train(tiny_config(char_data, tmp_path / "run", train=keys, model=model))
    first, last = result.first_eval.val_loss, result.last_eval.val_loss
    assert last < first - 0.5


@pytest.mark.slow  # 10 trainings: make test runs them, make check does not
@pytest.mark.parametrize("optimizer", ["adamw", "muon"])
@pytest.mark.parametrize("schedule", ["cosine", "linear", "constant", "wsd", "wsd-mup"])
def test_resume_is_bitwise_for_every_optimizer_and_schedule(tmp_path, char_data, monkeypatch,
                                                            optimizer, schedule):  # fmt: skip
    # A 30-step run stopped after step 15 (by the signal a user would send) and resumed ends
    # where the uninterrupted one does, bit for bit: weights and optimizer state round-trip.
    # µP (tiny_config's 32 wide over a base of 16) with wsd, its per-layer rates included.
    schedule, _, mup = schedule.partition("-")

    def cfg(out):
        keys = {"max_iters": 30, "optimizer": optimizer, "schedule": schedule, "cooldown": 8}
        model = {"dropout": 0.1, **(MUP if mup else {})}
        return tiny_config(char_data, tmp_path / out, model=model, train=keys)

    train(cfg("full"))
    real_lr_at = train_module.lr_at

    def stop_after_15(step, tc):
        if step == 14:
            signal.raise_signal(signal.SIGTERM)
        return real_lr_at(step, tc)

    monkeypatch.setattr(train_module, "lr_at", stop_after_15)
    assert train(cfg("cut")).step == 15
    monkeypatch.setattr(train_module, "lr_at", real_lr_at)
    assert train(cfg("cut"), resume=True).steps == 15
    a, b = (checkpoint.load(tmp_path / run, "latest") for run in ("full", "cut"))
    assert all(torch.equal(a.model_state()[k], b.model_state()[k]) for k in a.model_state())
    sa, sb = (c.trainer_state()["optimizer"] for c in (a, b))
    flat = lambda s: [v for st in (s.get("state") or {}).values() for v in st.values()]  # noqa: E731
    for part in ("muon", "adamw") if optimizer == "muon" else (None,):
        x, y = (sa[part], sb[part]) if part else (sa, sb)
        assert all(torch.equal(u, v) for u, v in zip(flat(x), flat(y), strict=True))


def test_bad_recipe_values_and_a_changed_optimizer_are_one_line(tmp_path, char_data):
    with pytest.raises(GptcliError, match=r"train\.optimizer: 'adam' is not a choice"):
        config_from_dict({"train": {"optimizer": "adam"}})
    with pytest.raises(GptcliError, match=r"train\.muon_lr: .*> 0"):
        config_from_dict({"train": {"muon_lr": 0}})
    train(tiny_config(char_data, tmp_path / "run", train={"max_iters": 5}))
    muon = tiny_config(char_data, tmp_path / "run", train={"max_iters": 10, **MUON})
    with pytest.raises(GptcliError, match="cannot resume: the checkpoint's optimizer state does "
                                          "not fit train.optimizer muon"):  # fmt: skip
        train(muon, resume=True)
