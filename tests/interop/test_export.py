"""`gptcli export`: checked against transformers loading the export with no custom code (logits
and token ids), and against gptcli reading its own exports back (sample, eval, load,
train.init_from)."""

import json

import pytest
import torch
import yaml
from typer.testing import CliRunner

import gptcli
from gptcli import checkpoint
from gptcli.cli import app
from gptcli.data.dataset import TokenDataset
from gptcli.data.prepare import prepare
from gptcli.data.tokenizers import tokenizer_from_spec
from gptcli.errors import GptcliError
from gptcli.evaluate import evaluate_checkpoint, load_model
from gptcli.interop.export import export
from gptcli.interop.hf import convert
from gptcli.training import resume
from gptcli.training.loop import train

from ..conftest import make_text, needs_gpt2, tiny_config
from ..helpers import assert_same_logits, load_hf, save_checkpoint, tokenizer_spec

transformers = pytest.importorskip("transformers")

runner = CliRunner()

TEXTS = [
    "The cat sat on the mat.\nThe dog ran.",
    "  leading spaces, trailing spaces   \n\n\nand blank lines\n",
    "It's we'll they've I'm he'd you're: 123 4567 3.14",
    "naïve café, 日本語 and 🤖 emoji",
    "\ttabs\tand\r\nwindows line ends",
]


def texts_for(kind: str) -> list[str]:
    # The char vocabulary is the corpus's own characters; the others take any text.
    return [make_text(6, seed=3), "Sun. And the red ball\n\nsat."] if kind == "char" else TEXTS


KINDS = ["char", "bpe", pytest.param("gpt2", marks=needs_gpt2)]


@pytest.mark.slow
@pytest.mark.parametrize("kind", KINDS)
def test_transformers_loads_an_hf_export(tmp_path, kind):
    spec = tokenizer_spec(kind)
    gpt = save_checkpoint(tmp_path / "run", spec)
    out = tmp_path / "exported"
    result = runner.invoke(
        app, ["export", "--checkpoint", str(tmp_path / "run"), "--out", str(out)]
    )
    assert result.exit_code == 0, result.output
    for name in ("config.json", "model.safetensors", "generation_config.json", "gptcli.json"):
        assert (out / name).is_file()
    assert_same_logits(gpt, load_hf(out))

    ours = tokenizer_from_spec(spec)
    theirs = transformers.AutoTokenizer.from_pretrained(out)
    for text in texts_for(kind):
        ids = ours.encode(text)
        assert theirs(text)["input_ids"] == ids, text
        assert theirs.decode(ids) == text
    gen = transformers.GenerationConfig.from_pretrained(out)
    assert gen.bos_token_id == ours.start_ids()[0] and gen.eos_token_id == ours.separator_id


@pytest.mark.parametrize(
    "model", [{"activation": "gelu"}, {"activation": "relu"}, {"tie_embeddings": False}]
)
def test_other_variants_gpt2_can_express(tmp_path, model):
    gpt = save_checkpoint(tmp_path / "run", tokenizer_spec("char"), **model)
    export(tmp_path / "run", tmp_path / "out")
    hf_model = load_hf(tmp_path / "out")
    assert_same_logits(gpt, hf_model)
    tied = hf_model.lm_head.weight.data_ptr() == hf_model.transformer.wte.weight.data_ptr()
    assert tied == gpt.cfg.tie_embeddings


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("position", "rope"),
        ("position", "sincos"),
        ("position", "alibi"),
        ("position", "relative"),
        ("position", "none"),
        ("norm", "rmsnorm"),
        ("norm", "none"),
        ("norm_placement", "post"),
        ("n_kv_head", 1),
        ("qk_norm", "rmsnorm"),
        ("mlp", "swiglu"),
    ],
)
def test_variants_no_architecture_can_express_are_refused(tmp_path, key, value):
    # GPT-2-like but for one key: neither GPT-2 nor Llama nor Qwen3 computes it.
    save_checkpoint(tmp_path / "run", tokenizer_spec("char"), **{key: value})
    out = tmp_path / "out"
    result = runner.invoke(
        app, ["export", "--checkpoint", str(tmp_path / "run"), "--out", str(out)]
    )
    assert result.exit_code == 2
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: cannot export as hf: ")
    assert f"model.{key} " in lines[0] and f"(it is {value!r})" in lines[0]
    for architecture in ("GPT2LMHeadModel", "LlamaForCausalLM", "Qwen3ForCausalLM"):
        assert f"{architecture} needs model." in lines[0]
    assert "--format safetensors" in lines[0]
    assert not out.exists()


def test_out_dir_rules(tmp_path):
    gpt = save_checkpoint(tmp_path / "run", tokenizer_spec("char"))
    out = tmp_path / "out"
    args = ["export", "--checkpoint", str(tmp_path / "run"), "--out", str(out)]
    out.mkdir()  # empty: fine
    assert runner.invoke(app, args).exit_code == 0

    (out / "mine.txt").write_text("keep me")
    result = runner.invoke(app, args)
    assert result.exit_code == 2
    assert result.output.strip() == f"error: --out {out} is not empty; pass --force to replace it"
    assert (out / "mine.txt").read_text() == "keep me"

    result = runner.invoke(app, [*args, "--force", "--format", "safetensors"])
    assert result.exit_code == 0, result.output
    assert not (out / "mine.txt").exists() and not (out / "config.json").exists()
    assert json.loads((out / "gptcli.json").read_text())["format"] == "safetensors"

    # --force replaces an earlier export only, never some other directory.
    other = tmp_path / "other"
    other.mkdir()
    (other / "notes.txt").write_text("mine")
    result = runner.invoke(app, [*args[:-1], str(other), "--force"])
    assert result.exit_code == 2 and "holds no earlier export" in result.output
    assert [p.name for p in other.iterdir()] == ["notes.txt"]

    # Never over the checkpoint itself, --force or not; and no unknown format.
    for bad in (tmp_path / "run", tmp_path):
        result = runner.invoke(app, [*args[:-1], str(bad), "--force"])
        assert result.exit_code == 2 and "holds the checkpoint being exported" in result.output
    result = runner.invoke(app, [*args, "--force", "--format", "onnx"])
    assert result.exit_code == 2 and "--format must be one of hf, safetensors" in result.output
    assert load_model(tmp_path / "run")[0].state_dict().keys() == gpt.state_dict().keys()


def test_a_failed_export_leaves_out_as_it_was(tmp_path, monkeypatch):
    from gptcli.interop import export as export_module

    save_checkpoint(tmp_path / "run", tokenizer_spec("char"))
    out = tmp_path / "out"
    out.mkdir()
    (out / "gptcli.json").write_text("{}")  # an earlier export, which --force may replace
    (out / "old.txt").write_text("old")

    def fail(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(export_module, "generation_config", fail)
    with pytest.raises(OSError):
        export(tmp_path / "run", out, force=True)
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".out")] == []
    assert sorted(p.name for p in out.iterdir()) == ["gptcli.json", "old.txt"]


# --- gptcli reads its exports back ------------------------------------------------------------


@pytest.fixture(scope="module")
def trained_char(tmp_path_factory):
    """A briefly trained GPT-2-style char model, and its dataset."""
    tmp = tmp_path_factory.mktemp("export_trained")
    (tmp / "corpus.txt").write_text(make_text(), encoding="utf-8")
    data = prepare(input_path=tmp / "corpus.txt", tokenizer="char", out_dir=tmp / "data").out_dir
    run = tmp / "run"
    small = {"max_iters": 6, "eval_interval": 6, "eval_iters": 2}
    train(tiny_config(data, run, model={"bias": True}, train=small))
    return data, run


@pytest.mark.parametrize("fmt", ["hf", "safetensors"])
def test_init_from_an_export_starts_from_the_same_weights(trained_char, tmp_path, fmt):
    data, run = trained_char
    out = export(run, tmp_path / "exported", fmt=fmt).out_dir
    source = checkpoint.load(run)
    mc, state = resume.load_init(str(out), TokenDataset(data))
    assert mc == source.config.model
    original = source.model_state()
    assert state.keys() == original.keys()
    assert all(torch.equal(state[k], v) for k, v in original.items())

    # Through the command: its first evaluation is the source's last, on the same batches.
    new_run = tmp_path / "new_run"
    small = {"max_iters": 1, "eval_iters": 2, "init_from": str(out), "final_eval": False}
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump(tiny_config(data, new_run, train=small).to_dict()))
    result = runner.invoke(app, ["train", "--config", str(config)])
    assert result.exit_code == 0, result.output
    metrics = [json.loads(line) for line in (new_run / "metrics.jsonl").read_text().splitlines()]
    first = next(m for m in metrics if m.get("val_loss") is not None)
    saved = json.loads((source.dir / "config.json").read_text())["val_loss"]
    assert first["step"] == 0 and first["val_loss"] == pytest.approx(saved, abs=1e-5)


def test_an_hf_export_of_bpe_data_round_trips(tmp_path):
    (tmp_path / "corpus.txt").write_text(make_text(), encoding="utf-8")
    data = prepare(
        input_path=tmp_path / "corpus.txt", tokenizer="bpe", vocab_size=300, out_dir=tmp_path / "d"
    ).out_dir
    gpt = save_checkpoint(tmp_path / "run", TokenDataset(data).tokenizer_spec)
    out = export(tmp_path / "run", tmp_path / "exported").out_dir
    _, state = resume.load_init(str(out), TokenDataset(data))
    assert all(torch.equal(state[k], v) for k, v in gpt.state_dict().items())


def test_a_safetensors_export_loads_in_sample_eval_and_load(trained_char, tmp_path):
    data, _ = trained_char
    run = tmp_path / "run"
    # A variant GPT-2 cannot express, trained so that its norms and biases are off their init.
    model = {"position": "rope", "norm": "rmsnorm", "norm_placement": "post", "activation": "relu"}
    small = {"max_iters": 4, "eval_interval": 4, "eval_iters": 2}
    train(tiny_config(data, run, model=model, train=small))
    out = tmp_path / "exported"
    args = ["export", "--checkpoint", str(run), "--out", str(out), "--format", "safetensors"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in out.iterdir()) == ["gptcli.json", "model.safetensors"]

    sample = ["sample", "--prompt", "The", "--temperature", "0", "--max-new-tokens", "12",
              "--precision", "fp32"]  # fmt: skip
    texts = [runner.invoke(app, [*sample, "--checkpoint", str(p)]) for p in (run, out)]
    assert texts[0].exit_code == texts[1].exit_code == 0, texts[1].output
    assert texts[0].output == texts[1].output

    scores = [
        evaluate_checkpoint(p, device="cpu", write=False).results[0].record() for p in (run, out)
    ]
    assert scores[0]["loss"] == pytest.approx(scores[1]["loss"], abs=1e-6)
    result = runner.invoke(app, ["eval", "--checkpoint", str(out), "--format", "json"])
    assert result.exit_code == 0, result.output

    loaded = gptcli.load(out, device="cpu")
    assert loaded.checkpoint.step == checkpoint.load(run).step
    assert "".join(loaded.generate("The", temperature=0, max_new_tokens=12)) in texts[0].output
    with pytest.raises(GptcliError, match="no training state|without training state"):
        loaded.checkpoint.trainer_state()


def test_an_export_exports_again(tmp_path):
    gpt = save_checkpoint(tmp_path / "run", tokenizer_spec("char"))
    first = export(tmp_path / "run", tmp_path / "st", fmt="safetensors").out_dir
    second = export(first, tmp_path / "hf").out_dir
    assert_same_logits(gpt, load_hf(second))


def test_a_broken_export_is_one_clear_error(tmp_path):
    save_checkpoint(tmp_path / "run", tokenizer_spec("char"))
    out = export(tmp_path / "run", tmp_path / "exported").out_dir
    info = json.loads((out / "gptcli.json").read_text())
    info["tensors"]["wte.weight"]["stored"] = "nowhere"
    (out / "gptcli.json").write_text(json.dumps(info))
    with pytest.raises(GptcliError, match="lacks tensor 'nowhere'"):
        load_model(out)
    (out / "gptcli.json").write_text("{}")
    result = runner.invoke(app, ["sample", "--checkpoint", str(out)])
    assert result.exit_code == 2 and result.output.startswith(f"error: export {out} is corrupt")


@needs_gpt2
def test_gpt2_merges_are_gpt2s():
    from gptcli.data.tokenizers import GPT2Tokenizer
    from gptcli.interop.hf_tokenizer import tokenizer_files

    merges = tokenizer_files(GPT2Tokenizer(), 1024)["merges.txt"].splitlines()
    # GPT-2's own vocab.bpe starts with these merges, in this order.
    assert merges[:4] == ["#version: 0.2", "Ġ t", "Ġ a", "h e"]
    assert len(merges) == 1 + 50000


def test_convert_keeps_an_exports_tokenizer(tmp_path):
    spec = tokenizer_spec("char")
    gpt = save_checkpoint(tmp_path / "run", spec)
    out = export(tmp_path / "run", tmp_path / "exported").out_dir
    converted = convert(out, tmp_path / "converted")
    assert checkpoint.load(converted).tokenizer_spec == spec
    model, tokenizer, _ = load_model(converted)
    assert tokenizer.spec() == spec
    assert all(torch.equal(model.state_dict()[k], v) for k, v in gpt.state_dict().items())
