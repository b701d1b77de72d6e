"""µP (model/mup.py): its scales, init and per-layer rates, and a µP model's export computing the
same logits in transformers (its scales folded into the weights) or refused where tied."""

import math

import pytest
import torch

from gptcli.config import ModelConfig, TrainConfig, config_from_dict
from gptcli.errors import GptcliError
from gptcli.interop.export import export
from gptcli.model import GPT
from gptcli.training.optim import make_optimizer

from ..helpers import assert_same_logits, load_hf, save_checkpoint, tokenizer_spec

MUP = {"parametrization": "mup", "mup_base_width": 32}


def _model(width, **keys):
    torch.manual_seed(0)
    return GPT(ModelConfig(n_layer=2, n_head=width // 16, n_embd=width, block_size=16,
                           **keys), 50)  # fmt: skip


def test_mup_scores_are_q_k_over_d_and_logits_shrink_with_width():
    standard, mup = _model(128), _model(128, **MUP)
    assert mup.blocks[0].attn.q_scale == pytest.approx(16**-0.5) and mup.output_mult == 0.25
    assert standard.blocks[0].attn.q_scale == 1.0 and standard.output_mult == 1.0
    # The same weights: µP's logits are the standard model's with 1/d scores, times 1/m.
    mup.load_state_dict(standard.state_dict())
    idx = torch.randint(50, (2, 16), generator=torch.Generator().manual_seed(1))
    for block in standard.blocks:
        block.attn.q_scale = 16**-0.5
    assert torch.allclose(mup(idx)[0], standard(idx)[0] * 0.25, atol=1e-6)


def test_mup_init_narrows_the_hidden_matrices_by_the_square_root_of_width():
    base, wide = _model(32, **MUP), _model(512, **MUP)
    fc = lambda m: float(m.blocks[0].mlp.c_fc.weight.detach().std())  # noqa: E731
    assert fc(base) == pytest.approx(0.02, rel=0.05)
    assert fc(wide) == pytest.approx(0.02 / math.sqrt(16), rel=0.05)
    assert float(wide.wte.weight.detach().std()) == pytest.approx(0.02, rel=0.05)  # as before
    # At the base width a µP model starts where a standard one does.
    assert all(torch.equal(a, b) for a, b in zip(base.state_dict().values(),
                                                 _model(32).state_dict().values(), strict=True))


@pytest.mark.parametrize(("optimizer", "hidden_scale"), [("adamw", 0.25), ("muon", 1.0)])
def test_mup_rates_divide_the_hidden_matrices_adam_rate_by_width(optimizer, hidden_scale):
    model = _model(128, **MUP)
    tc = TrainConfig(lr=1e-3, optimizer=optimizer, muon_lr=0.02)
    groups = make_optimizer(model, tc, torch.device("cpu")).param_groups
    hidden = {id(p) for p in model.block_matrices()}
    for g in groups:
        if any(id(p) in hidden for p in g["params"]):
            assert all(id(p) in hidden for p in g["params"])
            base = tc.muon_lr / tc.lr if optimizer == "muon" else 1.0
            assert g["lr_scale"] == pytest.approx(base * hidden_scale)
        else:
            assert g["lr_scale"] == 1.0  # embeddings, norms, biases


def test_mup_needs_a_base_width():
    with pytest.raises(GptcliError, match=r"model\.mup_base_width: µP needs the width"):
        config_from_dict({"model": {"parametrization": "mup"}})
    with pytest.raises(GptcliError, match=r"model\.parametrization: 'mu' is not a choice"):
        config_from_dict({"model": {"parametrization": "mu"}})


LLAMA = {"position": "rope", "norm": "rmsnorm", "mlp": "swiglu", "bias": False, "n_head": 4,
         "n_embd": 64, "block_size": 32, "tie_embeddings": False, **MUP}  # fmt: skip


@pytest.mark.parametrize("qk_norm", ["none", "rmsnorm"])
def test_a_mup_export_computes_the_same_logits_in_transformers(tmp_path, qk_norm):
    pytest.importorskip("transformers")
    gpt = save_checkpoint(tmp_path / "run", tokenizer_spec("char"), **LLAMA, qk_norm=qk_norm)
    assert gpt.output_mult == 0.5
    result = export(tmp_path / "run", tmp_path / "out")
    assert result.architecture == ("Qwen3ForCausalLM" if qk_norm == "rmsnorm" else
                                   "LlamaForCausalLM")  # fmt: skip
    assert_same_logits(gpt, load_hf(tmp_path / "out"))


def test_a_tied_mup_model_is_refused_as_hf_and_nothing_is_written(tmp_path):
    save_checkpoint(tmp_path / "run", tokenizer_spec("char"), **{**LLAMA, "tie_embeddings": True})
    with pytest.raises(GptcliError, match="a µP model scales its logits by 0.5"):
        export(tmp_path / "run", tmp_path / "out")
    assert not (tmp_path / "out").exists()
    export(tmp_path / "run", tmp_path / "st", fmt="safetensors")  # for gptcli: any variant


@torch.no_grad()
def test_a_mup_model_is_causal_and_its_cache_gives_the_full_forwards_logits():
    from gptcli.model.decode import forward_cached

    model = _model(64, **MUP, position="rope", qk_norm="rmsnorm").eval()
    idx = torch.randint(50, (2, 16), generator=torch.Generator().manual_seed(2))
    full, _ = model(idx)
    changed = idx.clone()
    changed[:, 10:] = (changed[:, 10:] + 1) % 50
    assert torch.equal(model(changed)[0][:, :10], full[:, :10])  # the future never leaks back
    cache = model.new_cache(2, 16)
    steps = [forward_cached(model, idx[:, :8], cache)]
    steps += [forward_cached(model, idx[:, t : t + 1], cache) for t in range(8, 16)]
    assert torch.allclose(torch.cat(steps, dim=1), full, atol=1e-5)
