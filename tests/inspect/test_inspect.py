import json
import warnings

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from gptcli.cli import app
from gptcli.config import ModelConfig
from gptcli.inspect.attention_maps import attention_weights
from gptcli.inspect.norm_leak import measure_leak
from gptcli.inspect.params import param_report
from gptcli.inspect.position_maps import position_view
from gptcli.model import GPT, count_params_formula
from gptcli.model.norms import NORMS
from gptcli.model.positions import POSITIONS, alibi_slopes
from gptcli.training.loop import train

from ..conftest import tiny_config

PNG = b"\x89PNG\r\n\x1a\n"
runner = CliRunner()


def tiny_model(vocab: int = 13, **model) -> GPT:
    torch.manual_seed(0)
    keys = {"n_layer": 2, "n_head": 2, "n_embd": 16, "block_size": 12, **model}
    return GPT(ModelConfig(**keys), vocab).eval()


def trained(tmp_path, data, name, **model):
    cfg = tiny_config(data, tmp_path / name, model=model, train={"max_iters": 4})
    train(cfg)
    return tmp_path / name


@pytest.mark.parametrize("position", POSITIONS.names())
@pytest.mark.parametrize("norm", NORMS.names())
def test_params_count_every_parameter_once(position, norm):
    for tie in (True, False):
        model = tiny_model(position=position, norm=norm, tie_embeddings=tie)
        report = param_report(model)
        assert report.total == model.num_params() == count_params_formula(model.cfg, 13)
        assert sum(r.params for r in report.rows) == report.total
        assert report.parts["lm head"] == (0 if tie else 13 * 16)
        wpe = 12 * 16 if position == "learned" else 0
        assert report.non_embedding == report.total - 13 * 16 - wpe
        assert any("tied to wte.weight" in r.note for r in report.rows) == tie


def layer_outputs(model: GPT, idx: torch.Tensor) -> list[torch.Tensor]:
    """What each attention layer really returned, and the value vectors it used."""
    outputs = []
    hooks = [b.attn.register_forward_hook(lambda m, args, out: outputs.append((args, out)))
             for b in model.blocks]  # fmt: skip
    with torch.no_grad():
        model(idx)
    for h in hooks:
        h.remove()
    return outputs


BLOCKS = {"mha": {}, "mqa": {"n_kv_head": 1}, "qknorm": {"qk_norm": "rmsnorm"}}


@pytest.mark.parametrize("block", BLOCKS)
@pytest.mark.parametrize("position", POSITIONS.names())
@pytest.mark.parametrize("norm", NORMS.names())
def test_attention_weights_are_causal_distributions_that_reproduce_the_layer(
    position, norm, block
):
    model = tiny_model(position=position, norm=norm, **BLOCKS[block])
    idx = torch.randint(0, 13, (1, 12), generator=torch.Generator().manual_seed(1))
    weights = attention_weights(model, idx)
    assert weights.shape == (2, 2, 12, 12)
    assert torch.allclose(weights.sum(-1), torch.ones(2, 2, 12), atol=1e-6)
    assert (weights.triu(1) == 0).all()  # no weight on a later key
    for layer, ((x, *_), out) in enumerate(layer_outputs(model, idx)):
        attn = model.blocks[layer].attn
        B, T, C = x.shape
        kv = attn.n_kv_head * (C // 2)
        v = attn.c_attn(x).split([C, kv, kv], dim=2)[2].view(B, T, attn.n_kv_head, C // 2)
        v = v.transpose(1, 2).repeat_interleave(2 // attn.n_kv_head, dim=1)  # shared heads
        y = (weights[layer][None] @ v).transpose(1, 2).reshape(B, T, C)
        assert torch.allclose(attn.c_proj(y), out, atol=1e-5)


def test_position_pictures_hold_the_scheme_numbers():
    for position in ("learned", "sincos"):
        sim = position_view(tiny_model(position=position)).arrays["similarity"]
        assert np.allclose(sim, sim.T, atol=1e-6) and np.allclose(np.diag(sim), 1, atol=1e-5)
    rope = position_view(tiny_model(position="rope")).arrays["score_by_distance"]
    assert rope[0] == pytest.approx(1.0) and len(rope) == 48
    assert np.abs(rope[24:]).mean() < 0.5  # decays with distance
    alibi = position_view(tiny_model(position="alibi")).arrays["by_distance"]
    slopes = alibi_slopes(2).numpy()
    assert np.allclose(alibi, -slopes[:, None] * np.arange(12)[None, :])
    model = tiny_model(position="relative")
    relative = position_view(model).arrays["by_distance"]
    table = model.positions.bias.weight.detach()
    expected = table[model.positions.bucket(torch.arange(12))].T.numpy()
    assert np.allclose(relative, expected)
    assert "nothing" in position_view(tiny_model(position="none")).summary


@pytest.mark.parametrize("norm", [n for n in NORMS.names() if not NORMS[n].mixes_positions])
def test_norm_leak_probe_is_zero_for_norms_within_a_position(char_data, norm):
    from gptcli.data.dataset import TokenDataset

    data = TokenDataset(char_data)
    report = measure_leak(tiny_model(data.vocab_size, norm=norm), data, 4)
    assert not report.mixes_positions
    assert report.worst(report.leak_train_mode) < 1e-6
    assert report.worst(report.leak_eval_mode) < 1e-6
    assert report.loss_train_mode == pytest.approx(report.loss_eval_mode)


def test_norm_leak_probe_sees_batchnorm_read_the_future(char_data):
    from gptcli.data.dataset import TokenDataset

    data = TokenDataset(char_data)
    model = tiny_model(data.vocab_size, norm="batchnorm")
    before = [b.clone() for b in model.buffers()]
    batch = measure_leak(model, data, 4)
    assert batch.worst(batch.leak_train_mode) > 1e-3  # later tokens move earlier outputs
    assert batch.worst(batch.leak_eval_mode) < 1e-6  # running statistics: causal again
    assert batch.loss_train_mode != pytest.approx(batch.loss_eval_mode)
    assert all(torch.equal(a, b) for a, b in zip(before, model.buffers(), strict=True))


@pytest.mark.slow
def test_inspect_command_draws_every_subject(tmp_path, char_data):
    run = trained(tmp_path, char_data, "alibi", position="alibi")
    for subject, extra in (("attention", ["--prompt", "The cat"]), ("positions", []),
                           ("norm-leak", [])):  # fmt: skip
        done = runner.invoke(app, ["inspect", subject, "--checkpoint", str(run), *extra])
        assert done.exit_code == 0, done.output
        picture = run / "inspect" / f"{subject}.png"
        assert picture.read_bytes().startswith(PNG) and str(picture) in done.output
    assert "nothing leaks" in done.output
    done = runner.invoke(app, ["inspect", "attention", "--checkpoint", str(run), "--prompt", "a",
                               "--layer", "1", "--head", "0", "--out", str(tmp_path / "one.png"),
                               "--format", "json"])  # fmt: skip
    assert done.exit_code == 0, done.output
    assert len(json.loads(done.output)["weights"][1][0]) == 1
    assert (tmp_path / "one.png").read_bytes().startswith(PNG)


def test_inspect_refuses_bad_requests_in_one_line(tmp_path, char_data):
    run = trained(tmp_path, char_data, "learned")
    for bad in (
        ["attention", "--prompt", "a", "--layer", "2"],
        ["attention", "--prompt", "a", "--head", "-1"],
        ["attention", "--prompt", ""],
        ["attention", "--prompt", "The cat sat on the mat."],  # 23 tokens > block_size 16
        ["attention", "--prompt", "\u00e9"],  # not in the char vocabulary
        ["lens"],
        ["positions", "--format", "yaml"],
    ):
        done = runner.invoke(app, ["inspect", *bad, "--checkpoint", str(run)])
        assert done.exit_code == 2 and done.output.count("\n") == 1, (bad, done.output)
    # An option of another subject is refused, not ignored.
    for bad, said in ((["params", "--prompt", "a"], "--prompt is for inspect attention"),
                      (["positions", "--layer", "0"], "--layer is for inspect attention"),
                      (["attention", "--tokens", "a"], "--tokens is for inspect embeddings"),
                      (["params", "--out", "x.png"], "--out is for inspect attention and")):
        done = runner.invoke(app, ["inspect", *bad, "--checkpoint", str(run)])
        assert done.exit_code == 2 and done.output.startswith(f"error: {said}"), done.output
    assert not (run / "inspect").exists()


def test_inspect_positions_none_and_norm_leak_of_batchnorm(tmp_path, char_data):
    none = trained(tmp_path, char_data, "none", position="none")
    done = runner.invoke(app, ["inspect", "positions", "--checkpoint", str(none)])
    assert done.exit_code == 0 and "causal mask alone" in done.output
    assert not (none / "inspect").exists()
    with pytest.warns(UserWarning, match="mixes statistics") as said:  # training says it
        bn = trained(tmp_path, char_data, "bn", norm="batchnorm")
    assert len([w for w in said if "mixes statistics" in str(w.message)]) == 1
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # loading it for inspection says nothing
        done = runner.invoke(app, ["inspect", "norm-leak", "--checkpoint", str(bn), "--format",
                                   "json"])  # fmt: skip
    assert done.exit_code == 0, done.output
    record = json.loads(done.output)
    assert record["mixes_positions"] and record["leak_train_mode"] > 1e-3
    assert record["leak_eval_mode"] < 1e-6


def test_inspect_params_from_a_config_before_training(tmp_path, char_data):
    config = tmp_path / "c.yaml"
    config.write_text(f"data: {{dir: {char_data}}}\nmodel: {{n_layer: 3, n_embd: 48, n_head: 4}}\n")
    done = runner.invoke(app, ["inspect", "params", "--config", str(config), "--format", "json",
                               "--set", "model.position=rope"])  # fmt: skip
    assert done.exit_code == 0, done.output
    record = json.loads(done.output)
    assert record["variants"]["position"] == "rope" and record["parts"]["positions"] == 0
    assert len([m for m in record["modules"] if m["name"].endswith("c_attn")]) == 3
    done = runner.invoke(app, ["inspect", "params", "--config", str(config), "--vocab-size",
                               "50304", "--set", "model.n_layer=48", "--set", "model.n_embd=1600",
                               "--set", "model.n_head=25"])  # fmt: skip
    assert done.exit_code == 0 and "total" in done.output  # GPT-2 XL sized, on the meta device
    done = runner.invoke(app, ["inspect", "params"])
    assert done.exit_code == 2 and "--checkpoint RUN or --config FILE" in done.output


def test_positions_json_is_strict_json_for_bias_schemes(tmp_path, char_data):
    run = trained(tmp_path, char_data, "relative", position="relative")
    done = runner.invoke(app, ["inspect", "positions", "--checkpoint", str(run), "--format",
                               "json"])  # fmt: skip
    assert done.exit_code == 0, done.output
    record = json.loads(done.output, parse_constant=lambda c: pytest.fail(f"not JSON: {c}"))
    assert record["bias"][0][0][1] is None  # the masked future
    config = tmp_path / "c.yaml"
    config.write_text(f"data: {{dir: {char_data}}}\nmodel: {{n_layer: 1}}\n")
    done = runner.invoke(app, ["inspect", "params", "--config", str(config), "--vocab-size", "-5"])
    assert done.exit_code == 2 and "--vocab-size must be at least 1" in done.output


@pytest.mark.slow
def test_inspect_marks_which_heads_share_a_key_value_head(tmp_path, char_data):
    run = trained(tmp_path, char_data, "gqa", n_head=4, n_kv_head=2)
    done = runner.invoke(app, ["inspect", "attention", "--checkpoint", str(run), "--prompt",
                               "The cat"])  # fmt: skip
    assert done.exit_code == 0, done.output
    assert "4 heads sharing 2 key/value heads (2 query heads each)" in done.output
    done = runner.invoke(app, ["inspect", "attention", "--checkpoint", str(run), "--prompt",
                               "The cat", "--format", "json"])  # fmt: skip
    assert json.loads(done.output)["kv_head_of_head"] == [0, 0, 1, 1]
    done = runner.invoke(app, ["inspect", "params", "--checkpoint", str(run), "--format", "json"])
    variants = json.loads(done.output)["variants"]
    assert variants["n_kv_head"] == 2 and variants["mlp"] == "standard"
