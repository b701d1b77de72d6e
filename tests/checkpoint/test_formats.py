"""Checkpoint formats: checkpoints written before a variant's maths changed are refused (or
converted exactly), never loaded to compute something else. The fixtures in tests/fixtures/format1
were written by gptcli at 21fd795, before formats existed and before sincos was rescaled."""

import json
import shutil
import warnings
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from gptcli import checkpoint
from gptcli.checkpoint import formats, load_model
from gptcli.cli import app
from gptcli.errors import GptcliError
from gptcli.training.loop import train

from ..conftest import tiny_config

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "format1"
runner = CliRunner()


def test_an_old_sincos_checkpoint_is_refused_in_one_line_saying_why():
    with pytest.raises(GptcliError) as info:
        checkpoint.load(FIXTURES / "sincos")
    message = str(info.value)
    assert "format-1 checkpoint with model.position: sincos" in message
    assert "changed in format 2" in message and "train it again" in message
    assert "\n" not in message
    done = runner.invoke(app, ["sample", "--checkpoint", str(FIXTURES / "sincos"),
                               "--prompt", "the", "--max-new-tokens", "3"])  # fmt: skip
    assert done.exit_code == 2 and done.output.count("\n") == 1, done.output


def test_an_old_checkpoint_of_an_unchanged_variant_computes_what_it_did():
    model, tokenizer, ckpt = load_model(FIXTURES / "learned")
    expected = json.loads((FIXTURES / "learned" / "expected_logits.json").read_text())
    idx = torch.tensor([tokenizer.encode(expected["prompt"])])
    with torch.no_grad():
        logits = model(idx)[0][0]
    torch.testing.assert_close(logits, torch.tensor(expected["logits"]), rtol=0, atol=1e-6)
    assert ckpt.conversions == []


def test_new_checkpoints_and_exports_record_the_format(tmp_path, char_data):
    train(tiny_config(char_data, tmp_path / "run", train={"max_iters": 2, "eval_interval": 2}))
    info = json.loads((tmp_path / "run" / "step-0000002" / "config.json").read_text())
    assert info[formats.FORMAT_KEY] == formats.FORMAT
    out = tmp_path / "export"
    done = runner.invoke(app, ["export", "--checkpoint", str(tmp_path / "run"), "--out", str(out),
                               "--format", "safetensors"])  # fmt: skip
    assert done.exit_code == 0, done.output
    exported = json.loads((out / checkpoint.EXPORT_FILE).read_text())
    assert exported[formats.FORMAT_KEY] == formats.FORMAT


def test_a_newer_format_is_refused(tmp_path):
    copy = tmp_path / "learned"
    shutil.copytree(FIXTURES / "learned", copy)
    info = json.loads((copy / "config.json").read_text())
    info[formats.FORMAT_KEY] = formats.FORMAT + 1
    (copy / "config.json").write_text(json.dumps(info))
    with pytest.raises(GptcliError, match="newer than this gptcli's"):
        checkpoint.load(copy)


def test_an_old_sincos_export_is_refused_too(tmp_path, char_data):
    cfg = tiny_config(char_data, tmp_path / "run", model={"position": "sincos"},
                      train={"max_iters": 2, "eval_interval": 2})  # fmt: skip
    train(cfg)
    out = tmp_path / "export"
    runner.invoke(app, ["export", "--checkpoint", str(tmp_path / "run"), "--out", str(out),
                        "--format", "safetensors"])  # fmt: skip
    assert checkpoint.load(out).config.model.position == "sincos"  # this version's: loads
    info = json.loads((out / checkpoint.EXPORT_FILE).read_text())
    del info[formats.FORMAT_KEY]  # as an export written before formats existed
    (out / checkpoint.EXPORT_FILE).write_text(json.dumps(info))
    with pytest.raises(GptcliError, match="format-1 checkpoint with model.position: sincos"):
        checkpoint.load(out)


def test_a_change_with_an_exact_conversion_converts(monkeypatch, tmp_path):
    # A made-up change to learned positions whose conversion negates wte: loading applies it.
    negate = formats.Change(
        "position", "learned", "test", convert=lambda s: {**s, "wte.weight": -s["wte.weight"]}
    )
    monkeypatch.setattr(formats, "CHANGES", {**formats.CHANGES, 2: [negate]})
    ckpt = checkpoint.load(FIXTURES / "learned")
    assert ckpt.conversions == [negate]
    raw = torch.load(FIXTURES / "learned" / "model.pt", weights_only=True)
    assert torch.equal(ckpt.model_state()["wte.weight"], -raw["wte.weight"])


def test_batchnorm_checkpoints_load_without_a_warning(tmp_path, char_data):
    # The causal-leak warning is said when training; every reader of the checkpoint is quiet.
    cfg = tiny_config(char_data, tmp_path / "bn", model={"norm": "batchnorm"},
                      train={"max_iters": 2, "eval_interval": 2})  # fmt: skip
    with pytest.warns(UserWarning, match="mixes statistics"):
        train(cfg)
    run = str(tmp_path / "bn")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        import gptcli

        gptcli.load(run)
        for args in (
            ["sample", "--checkpoint", run, "--prompt", "the", "--max-new-tokens", "3"],
            ["eval", "--checkpoint", run],
            ["export", "--checkpoint", run, "--out", str(tmp_path / "x"), "--format",
             "safetensors"],
        ):  # fmt: skip
            done = runner.invoke(app, args)
            assert done.exit_code == 0, (args, done.output)
            assert "mixes statistics" not in done.output
