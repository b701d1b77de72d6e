"""Llama and Qwen3 in and out: exports that transformers loads with no custom code (logits within
1e-4, the same greedy tokens), Hugging Face directories with random weights read back, and
exports that round-trip bit for bit."""

import json
import shutil

import pytest
import torch
from typer.testing import CliRunner

from gptcli import checkpoint
from gptcli.cli import app
from gptcli.data.tokenizers import tokenizer_from_spec
from gptcli.errors import GptcliError
from gptcli.interop import hf_tokenizer
from gptcli.interop.export import export
from gptcli.interop.hf import convert, load_hf

from ..conftest import needs_gpt2
from ..helpers import assert_same_logits, save_checkpoint, tokenizer_spec
from ..helpers import load_hf as load_transformers

transformers = pytest.importorskip("transformers")
runner = CliRunner()

LLAMA = {"position": "rope", "norm": "rmsnorm", "mlp": "swiglu", "bias": False,
         "n_head": 4, "n_embd": 32, "block_size": 64}  # fmt: skip
FAMILIES = {
    "llama": (LLAMA, "LlamaForCausalLM"),
    "qwen3": ({**LLAMA, "qk_norm": "rmsnorm"}, "Qwen3ForCausalLM"),
}
KINDS = ["char", "bpe", pytest.param("gpt2", marks=needs_gpt2)]
PROMPTS = {"char": "The cat", "bpe": "The cat", "gpt2": "The cat"}


def greedy_gptcli(run, prompt: str) -> str:
    args = ["sample", "--checkpoint", str(run), "--prompt", prompt, "--temperature", "0",
            "--max-new-tokens", "50", "--no-stream", "--precision", "fp32"]  # fmt: skip
    done = runner.invoke(app, args)
    assert done.exit_code == 0, done.output
    return done.output.rstrip("\n").removeprefix(prompt)


def greedy_transformers(model, tokenizer, prompt: str) -> str:
    ids = torch.tensor([tokenizer.encode(prompt)])
    model.generation_config.eos_token_id = None  # gptcli does not stop at a separator either
    out = model.generate(ids, max_new_tokens=50, do_sample=False)
    assert out.shape[1] == ids.shape[1] + 50
    return tokenizer.decode(out[0, ids.shape[1] :].tolist())


@pytest.mark.slow
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("kv_heads", [4, 2], ids=["mha", "gqa"])
@pytest.mark.parametrize("tied", [True, False], ids=["tied", "untied"])
@pytest.mark.parametrize("family", FAMILIES)
def test_transformers_runs_a_llama_or_qwen3_export_as_gptcli_does(
    tmp_path, family, tied, kv_heads, kind
):
    model, architecture = FAMILIES[family]
    spec = tokenizer_spec(kind)
    gpt = save_checkpoint(tmp_path / "run", spec, n_kv_head=kv_heads, tie_embeddings=tied,
                          **model)  # fmt: skip
    out = tmp_path / "exported"
    done = runner.invoke(app, ["export", "--checkpoint", str(tmp_path / "run"), "--out", str(out)])
    assert done.exit_code == 0, done.output
    config = json.loads((out / "config.json").read_text())
    assert config["architectures"] == [architecture] and config["num_key_value_heads"] == kv_heads
    hf_model = load_transformers(out)
    assert type(hf_model).__name__ == architecture
    assert_same_logits(gpt, hf_model)
    tokenizer = tokenizer_from_spec(spec)
    assert transformers.AutoTokenizer.from_pretrained(out)(PROMPTS[kind])["input_ids"] == (
        tokenizer.encode(PROMPTS[kind])
    )
    ours = greedy_gptcli(tmp_path / "run", PROMPTS[kind])
    assert greedy_transformers(hf_model, tokenizer, PROMPTS[kind]) == ours


def test_geglu_is_llama_with_gelu_and_biases_are_kept(tmp_path):
    gpt = save_checkpoint(tmp_path / "run", tokenizer_spec("char"),
                          **{**LLAMA, "mlp": "geglu", "bias": True})  # fmt: skip
    result = export(tmp_path / "run", tmp_path / "out")
    assert result.architecture == "LlamaForCausalLM"
    config = json.loads((tmp_path / "out" / "config.json").read_text())
    assert config["hidden_act"] == "gelu" and config["attention_bias"] and config["mlp_bias"]
    assert_same_logits(gpt, load_transformers(tmp_path / "out"))


def test_qwen3_with_biases_is_refused_naming_the_key(tmp_path):
    save_checkpoint(tmp_path / "run", tokenizer_spec("char"),
                    **{**FAMILIES["qwen3"][0], "bias": True})  # fmt: skip
    with pytest.raises(GptcliError) as info:
        export(tmp_path / "run", tmp_path / "out")
    assert "Qwen3ForCausalLM needs model.bias false" in str(info.value)
    assert not (tmp_path / "out").exists()


def test_gpt2_without_biases_exports_as_gpt2_with_zero_biases(tmp_path):
    gpt = save_checkpoint(tmp_path / "run", tokenizer_spec("char"), bias=False)
    assert export(tmp_path / "run", tmp_path / "out").architecture == "GPT2LMHeadModel"
    hf_model = load_transformers(tmp_path / "out")
    assert_same_logits(gpt, hf_model)
    assert hf_model.transformer.h[0].attn.c_attn.bias.abs().max() == 0
    # ... and gptcli reads it back as the bias-free model it was.
    assert checkpoint.load(tmp_path / "out").config.model.bias is False


@pytest.mark.parametrize("family", FAMILIES)
def test_an_export_round_trips_bit_for_bit(tmp_path, family):
    model, _ = FAMILIES[family]
    gpt = save_checkpoint(tmp_path / "run", tokenizer_spec("bpe"), n_kv_head=2, **model)
    export(tmp_path / "run", tmp_path / "out")
    original = gpt.state_dict()
    for state in (
        checkpoint.load(tmp_path / "out").model_state(),  # through gptcli.json
        load_hf(tmp_path / "out")[1],  # through config.json, as any Llama directory
    ):
        assert set(state) == set(original)
        assert all(torch.equal(state[k], original[k]) for k in original)
    convert(tmp_path / "out", tmp_path / "converted")
    again = checkpoint.load(tmp_path / "converted")
    assert again.config.model == gpt.cfg and again.tokenizer_spec == tokenizer_spec("bpe")
    assert all(torch.equal(again.model_state()[k], original[k]) for k in original)


def random_hf_model(path, family: str, tokenizer_kind: str = "char", **overrides):
    """A transformers model with random weights, saved as its own library saves it, with the
    tokenizer files gptcli's exports write."""
    tokenizer = tokenizer_from_spec(tokenizer_spec(tokenizer_kind))
    common = dict(vocab_size=tokenizer.vocab_size, hidden_size=32, intermediate_size=88,
                  num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                  max_position_embeddings=64, rms_norm_eps=1e-5,
                  tie_word_embeddings=False)  # fmt: skip
    common.update(overrides)
    if family == "llama":
        config = transformers.LlamaConfig(**common)
        model = transformers.LlamaForCausalLM(config)
    else:
        config = transformers.Qwen3Config(head_dim=8, **common)
        model = transformers.Qwen3ForCausalLM(config)
    torch.manual_seed(0)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.3 * torch.randn_like(p))  # norm gains off 1, so a dropped one shows
    model.eval().save_pretrained(path)
    for name, content in hf_tokenizer.tokenizer_files(tokenizer, 64).items():
        text = content if isinstance(content, str) else json.dumps(content)
        (path / name).write_text(text, encoding="utf-8")
    return model, tokenizer


@pytest.mark.parametrize("tied", [False, True], ids=["untied", "tied"])
@pytest.mark.parametrize("family", FAMILIES)
def test_convert_reads_a_transformers_llama_or_qwen3(tmp_path, family, tied):
    hf_model, tokenizer = random_hf_model(tmp_path / "hf", family, tie_word_embeddings=tied)
    done = runner.invoke(app, ["convert", str(tmp_path / "hf"), str(tmp_path / "ckpt")])
    assert done.exit_code == 0, done.output
    ckpt = checkpoint.load(tmp_path / "ckpt")
    mc = ckpt.config.model
    assert (mc.position, mc.norm, mc.mlp, mc.n_kv_head) == ("rope", "rmsnorm", "swiglu", 2)
    assert mc.qk_norm == ("rmsnorm" if family == "qwen3" else "none")
    assert mc.tie_embeddings == tied and ckpt.tokenizer_spec == tokenizer.spec()
    from gptcli.checkpoint import load_model

    gpt, _, _ = load_model(tmp_path / "ckpt")
    assert_same_logits(gpt, hf_model)


def test_convert_refuses_a_tokenizer_gptcli_cannot_run(tmp_path):
    random_hf_model(tmp_path / "hf", "llama")
    for name in ("tokenizer.json", "tokenizer_config.json"):
        (tmp_path / "hf" / name).unlink()
    (tmp_path / "hf" / "tokenizer.model").write_bytes(b"\x00sentencepiece")
    done = runner.invoke(app, ["convert", str(tmp_path / "hf"), str(tmp_path / "ckpt")])
    assert done.exit_code == 2 and done.output.count("\n") == 1, done.output
    assert "tokenizer is not one gptcli can run (found: tokenizer.model)" in done.output
    assert not (tmp_path / "ckpt").exists()


def test_convert_refuses_llama_options_gptcli_does_not_compute(tmp_path):
    random_hf_model(tmp_path / "hf", "llama")
    config_path = tmp_path / "hf" / "config.json"
    config = json.loads(config_path.read_text())
    for key, value, expected in (
        ("rms_norm_eps", 1e-6, "rms_norm_eps=1e-06 is not supported"),
        ("hidden_act", "relu", "hidden_act='relu' is not supported"),
        ("rope_parameters", {"rope_type": "linear", "factor": 2.0, "rope_theta": 1e4},
         "rope_type='linear' is not supported"),
    ):  # fmt: skip
        shutil.copy(config_path, tmp_path / "saved.json")
        config_path.write_text(json.dumps({**config, key: value}))
        with pytest.raises(GptcliError, match=expected):
            load_hf(tmp_path / "hf")
        shutil.copy(tmp_path / "saved.json", config_path)
