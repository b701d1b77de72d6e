"""Hugging Face GPT-2 weights: checked against transformers' own GPT-2, built here with random
weights (nothing is downloaded)."""

import json
import math
import pickle
from dataclasses import replace

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from typer.testing import CliRunner

from gptcli import checkpoint
from gptcli.checkpoint import load_model
from gptcli.cli import app
from gptcli.data.dataset import TokenDataset
from gptcli.data.prepare import prepare
from gptcli.errors import GptcliError
from gptcli.generate import generate
from gptcli.interop.hf import convert, is_hf_dir, load_hf
from gptcli.model import GPT
from gptcli.training.estimate import evaluate
from gptcli.training.loop import train
from gptcli.training.report import Callbacks

from ..conftest import needs_gpt2, tiny_config

transformers = pytest.importorskip("transformers")

runner = CliRunner()


def make_hf(path, seed=0, **overrides):
    """A random transformers GPT-2 saved to path. Weights are drawn wider than GPT-2's init and
    every 1-D parameter (LayerNorm gains and shifts, biases) is moved off its init value (1 or
    0), so a swapped, untransposed or ignored tensor changes the logits visibly."""
    torch.manual_seed(seed)
    kw = dict(n_layer=2, n_head=4, n_embd=64, n_positions=32, vocab_size=100)
    kw.update(overrides)
    last = kw["vocab_size"] - 1
    config = transformers.GPT2Config(
        initializer_range=0.2,
        bos_token_id=last,
        eos_token_id=last,
        attn_implementation="eager",  # transformers' own attention, not torch's SDPA
        **kw,
    )
    model = transformers.GPT2LMHeadModel(config).eval()
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() == 1:
                p.add_(0.3 * torch.randn_like(p))
    model.save_pretrained(path)
    return model


def gptcli_model(path):
    cfg, state = load_hf(path)
    model = GPT(cfg, state["wte.weight"].shape[0])
    model.load_state_dict(state)
    return model.eval()


@torch.no_grad()
def logits_gap(hf_model, model) -> float:
    cfg = hf_model.config
    idx = torch.randint(
        cfg.vocab_size, (3, cfg.n_positions), generator=torch.Generator().manual_seed(1)
    )
    theirs = hf_model(idx).logits
    ours, _ = model(idx)
    assert theirs.abs().max() > 1.0  # the logits are far from trivially small
    return (ours - theirs).abs().max().item()


@pytest.fixture(scope="module")
def tiny_hf(tmp_path_factory):
    path = tmp_path_factory.mktemp("hf_tiny")
    return make_hf(path), path


@pytest.fixture(scope="module")
def gpt2_vocab_hf(tmp_path_factory):
    """Small, but with GPT-2's vocabulary, so the GPT-2 tokenizer fits it."""
    path = tmp_path_factory.mktemp("hf_gpt2_vocab")
    return make_hf(path, n_layer=1, n_head=2, n_embd=32, n_positions=32, vocab_size=50257), path


def test_default_activation_is_gpt2s_tanh_gelu(tiny_hf):
    hf_model, path = tiny_hf
    assert hf_model.config.activation_function == "gelu_new"
    cfg, _ = load_hf(path)
    assert cfg.activation == "gelu_tanh"
    assert (cfg.position, cfg.norm, cfg.norm_placement) == ("learned", "layernorm", "pre")
    assert cfg.bias and cfg.tie_embeddings


def test_logits_match_transformers_safetensors(tiny_hf):
    hf_model, path = tiny_hf
    assert (path / "model.safetensors").is_file() and is_hf_dir(path)
    assert logits_gap(hf_model, gptcli_model(path)) < 1e-4


def test_logits_match_transformers_bin_in_the_original_layout(tiny_hf, tmp_path):
    """pytorch_model.bin as the original GPT-2 upload has it: no "transformer." prefix, the
    attention mask buffers saved alongside, and lm_head.weight present although tied."""
    hf_model, path = tiny_hf
    (tmp_path / "config.json").write_text((path / "config.json").read_text())
    state = {k.removeprefix("transformer."): v for k, v in hf_model.state_dict().items()}
    for i in range(hf_model.config.n_layer):
        state[f"h.{i}.attn.bias"] = torch.tril(torch.ones(1, 1, 32, 32))
        state[f"h.{i}.attn.masked_bias"] = torch.tensor(-1e4)
    assert "lm_head.weight" in state
    torch.save(state, tmp_path / "pytorch_model.bin")
    assert logits_gap(hf_model, gptcli_model(tmp_path)) < 1e-4


@pytest.mark.parametrize(("hf_name", "ours"), [("gelu", "gelu"), ("relu", "relu")])
def test_other_activations(tmp_path, hf_name, ours):
    hf_model = make_hf(tmp_path, n_layer=1, activation_function=hf_name)
    model = gptcli_model(tmp_path)
    assert model.cfg.activation == ours
    assert logits_gap(hf_model, model) < 1e-4


def test_the_parity_check_can_fail(tiny_hf):
    """Exact GELU in place of the tanh approximation is a small error; the check still sees it."""
    hf_model, path = tiny_hf
    cfg, state = load_hf(path)
    wrong = GPT(replace(cfg, activation="gelu"), state["wte.weight"].shape[0])
    wrong.load_state_dict(state)
    assert logits_gap(hf_model, wrong.eval()) > 5 * 1e-4  # five times the tolerance


def test_layout_is_read_from_config_json(tmp_path):
    hf_model = make_hf(
        tmp_path,
        n_layer=3,
        n_head=2,
        n_embd=48,
        n_positions=16,
        vocab_size=77,
        tie_word_embeddings=False,
    )
    model = gptcli_model(tmp_path)
    cfg = model.cfg
    assert (cfg.n_layer, cfg.n_head, cfg.n_embd, cfg.block_size) == (3, 2, 48, 16)
    assert model.vocab_size == 77 and not cfg.tie_embeddings
    assert model.lm_head.weight.data_ptr() != model.wte.weight.data_ptr()
    assert logits_gap(hf_model, model) < 1e-4


# --- errors ---------------------------------------------------------------------------------


def copy_hf(src, dst, edit_config=None, edit_weights=None):
    config = json.loads((src / "config.json").read_text())
    if edit_config:
        edit_config(config)
    (dst / "config.json").write_text(json.dumps(config))
    weights = load_file(src / "model.safetensors")
    if edit_weights:
        edit_weights(weights)
    save_file(weights, dst / "model.safetensors")
    return dst


def test_not_an_hf_dir(tmp_path):
    assert not is_hf_dir(tmp_path)
    with pytest.raises(GptcliError, match="no config.json"):
        load_hf(tmp_path)
    with pytest.raises(GptcliError, match="not found"):
        load_hf(tmp_path / "missing")
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "gpt2"}))
    with pytest.raises(GptcliError, match="lacks an integer 'n_layer'"):
        load_hf(tmp_path)


@pytest.mark.parametrize(
    ("edit_config", "edit_weights", "message"),
    [
        (lambda c: c.pop("n_head"), None, "lacks an integer 'n_head'"),
        (lambda c: c.update(layer_norm_epsilon=1e-6), None,
         "layer_norm_epsilon=1e-06 is not supported"),
        (lambda c: c.update(activation_function="swish"), None,
         "activation_function='swish' is not supported"),
        (lambda c: c.update(model_type="mistral"), None, "model_type 'mistral' cannot be read"),
        (lambda c: c.update(n_positions=64), None, r"wpe.weight gives shape \(32, 64\)"),
        (None, lambda w: w.pop("transformer.h.1.mlp.c_fc.weight"),
         "lacks tensor 'transformer.h.1.mlp.c_fc"),
        (None, lambda w: w.update(extra=torch.zeros(1)), "unexpected tensor 'extra'"),
    ],
)
def test_broken_hf_dirs_are_clear_errors(tiny_hf, tmp_path, edit_config, edit_weights, message):
    path = copy_hf(tiny_hf[1], tmp_path, edit_config, edit_weights)
    with pytest.raises(GptcliError, match=message):
        load_hf(path)


def test_pickled_code_in_a_bin_is_refused(tiny_hf, tmp_path):
    class Payload:
        def __reduce__(self):
            return (print, ("pwned",))

    (tmp_path / "config.json").write_text((tiny_hf[1] / "config.json").read_text())
    (tmp_path / "pytorch_model.bin").write_bytes(pickle.dumps({"x": Payload()}, protocol=2))
    with pytest.raises(GptcliError, match="cannot load"):
        load_hf(tmp_path)


def test_cli_errors_are_one_line(tiny_hf, tmp_path):
    result = runner.invoke(app, ["convert", str(tmp_path / "missing"), str(tmp_path / "out")])
    assert result.exit_code == 2
    assert result.output.strip().splitlines() == [
        f"error: Hugging Face model directory not found: {tmp_path / 'missing'}"
    ]
    # A vocabulary smaller than GPT-2's cannot go with the GPT-2 tokenizer.
    result = runner.invoke(app, ["convert", str(tiny_hf[1]), str(tmp_path / "out")])
    assert result.exit_code == 2 and "vocab_size 100" in result.output
    assert len(result.output.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists()


# --- convert and sample ---------------------------------------------------------------------


def test_convert_writes_a_checkpoint(gpt2_vocab_hf, tmp_path):
    _, path = gpt2_vocab_hf
    out = tmp_path / "converted"
    result = runner.invoke(app, ["convert", str(path), str(out)])
    assert result.exit_code == 0, result.output
    assert "layers" in result.output and "50,257" in result.output
    ckpt = checkpoint.load(out)
    cfg, state = load_hf(path)
    assert ckpt.config.model == cfg and ckpt.vocab_size == 50257
    assert ckpt.tokenizer_spec == {"type": "gpt2"}
    saved = ckpt.model_state()
    assert saved.keys() == state.keys()
    assert all(torch.equal(saved[k], v) for k, v in state.items())

    result = runner.invoke(app, ["convert", str(path), str(out)])
    assert result.exit_code == 2 and "--force" in result.output
    result = runner.invoke(app, ["convert", str(path), str(out), "--force"])
    assert result.exit_code == 0, result.output


@needs_gpt2
def test_greedy_sample_matches_transformers(gpt2_vocab_hf, tmp_path):
    from gptcli.data.tokenizers import GPT2Tokenizer

    hf_model, path = gpt2_vocab_hf
    out = convert(path, tmp_path / "converted")
    prompt = "The cat sat on"
    tok = GPT2Tokenizer()
    idx = torch.tensor([tok.encode(prompt)])
    expected = []
    with torch.no_grad():
        for _ in range(5):
            next_id = hf_model(idx).logits[0, -1].argmax().item()
            expected.append(next_id)
            idx = torch.cat([idx, torch.tensor([[next_id]])], dim=1)

    model, _, _ = load_model(out)
    ours = generate(model, torch.tensor([tok.encode(prompt)]), 5, temperature=0)
    assert [int(t) for t in ours] == expected

    args = ["sample", "--checkpoint", str(out), "--prompt", prompt, "--max-new-tokens", "5"]
    fp32 = ["--temperature", "0", "--device", "cpu", "--precision", "fp32"]
    result = runner.invoke(app, [*args, *fp32])
    assert result.exit_code == 0, result.output
    assert result.stdout == prompt + tok.decode(expected) + "\n"


# --- train.init_from ------------------------------------------------------------------------


class AsGptcli(torch.nn.Module):
    """transformers' model behind gptcli's forward signature, for train.evaluate."""

    def __init__(self, hf_model):
        super().__init__()
        self.hf = hf_model

    def forward(self, idx, targets):
        logits = self.hf(idx).logits
        return logits, F.cross_entropy(logits.flatten(0, 1), targets.flatten())


@pytest.mark.slow
@needs_gpt2
def test_init_from_hf_dir(gpt2_vocab_hf, tmp_path, corpus):
    hf_model, path = gpt2_vocab_hf
    data = prepare(input_path=corpus, tokenizer="gpt2", out_dir=tmp_path / "data").out_dir
    run = tmp_path / "run"
    small = {"batch_size": 4, "max_iters": 2, "eval_interval": 2, "eval_iters": 2}
    cfg = tiny_config(data, run, model={"dropout": 0.1}, train={"init_from": str(path), **small})
    result = train(cfg)

    hf_cfg, _ = load_hf(path)
    effective = replace(cfg, model=replace(hf_cfg, dropout=0.1))
    hf_losses = evaluate(
        AsGptcli(hf_model), TokenDataset(data), effective, torch.device("cpu"), "fp32"
    )
    # gptcli's init (std 0.02) gives nearly uniform predictions: a loss within ~0.01 of ln(V).
    assert abs(hf_losses["val"] - math.log(50257)) > 0.3
    assert result.first_eval.train_loss == pytest.approx(hf_losses["train"], abs=1e-4)
    assert result.first_eval.val_loss == pytest.approx(hf_losses["val"], abs=1e-4)
    assert checkpoint.load(run, "latest").config.model == effective.model
    load_model(run)  # sample can rebuild the fine-tuned model

    # A resumed run keeps the source's architecture, whatever the model section says.
    longer = replace(cfg, train=replace(cfg.train, max_iters=3))
    assert train(longer, resume=True).steps == 1

    # A converted checkpoint is a start for init_from, not a run to resume.
    converted = convert(path, tmp_path / "converted")
    with pytest.raises(GptcliError, match="no training state"):
        train(replace(cfg, train=replace(cfg.train, out_dir=str(converted))), resume=True)


def test_init_from_gptcli_checkpoint(tmp_path, char_data):
    base = tmp_path / "base"
    train(tiny_config(char_data, base, train={"max_iters": 4, "eval_interval": 4}))
    source = checkpoint.load(base)

    run = tmp_path / "run"
    other_model = {"n_layer": 3, "n_embd": 64, "block_size": 8, "dropout": 0.2}
    cfg = tiny_config(
        char_data, run, model=other_model, train={"init_from": str(base), "max_iters": 2}
    )
    started = Callbacks()
    started.on_start = lambda info: setattr(started, "notes", info.notes)
    result = train(cfg, callbacks=started)
    assert f"weights from {base} (train.init_from); optimizer new" in started.notes
    # The same weights on the same evaluation batches: the source's own last val loss.
    assert result.first_eval.val_loss == pytest.approx(
        json.loads((source.dir / "config.json").read_text())["val_loss"], abs=1e-5
    )
    assert checkpoint.load(run).config.model == replace(source.config.model, dropout=0.2)


def test_init_from_must_fit_the_dataset(tiny_hf, tmp_path, char_data):
    cfg = tiny_config(char_data, tmp_path / "run", train={"init_from": str(tiny_hf[1])})
    vocab = TokenDataset(char_data).vocab_size
    with pytest.raises(GptcliError) as err:
        train(cfg)
    assert str(err.value) == (
        f"train.init_from {tiny_hf[1]} has vocab 100 but data.dir's dataset has {vocab}; "
        "prepare the data with --tokenizer gpt2"
    )

    same_vocab = make_hf(tmp_path / "hf", n_layer=1, vocab_size=vocab)
    assert same_vocab.config.vocab_size == vocab
    cfg = tiny_config(char_data, tmp_path / "run", train={"init_from": str(tmp_path / "hf")})
    with pytest.raises(GptcliError, match=r"another tokenizer \(gpt2\) than .* \(char\)"):
        train(cfg)

    cfg = tiny_config(char_data, tmp_path / "run", train={"init_from": str(tmp_path)})
    with pytest.raises(GptcliError, match="neither a gptcli run or checkpoint directory nor"):
        train(cfg)
    cfg = tiny_config(char_data, tmp_path / "run", train={"init_from": str(tmp_path / "nope")})
    with pytest.raises(GptcliError, match="nope does not exist"):
        train(cfg)
