import json
import pickle

import pytest
import torch

from gptcli import checkpoint
from gptcli.checkpoint import load_model
from gptcli.errors import GptcliError
from gptcli.training.loop import train

from ..conftest import tiny_config


@pytest.fixture
def run(tmp_path, char_data):
    cfg = tiny_config(char_data, tmp_path / "run", train={"max_iters": 20, "eval_interval": 10})
    train(cfg)
    return tmp_path / "run"


def test_run_dir_keeps_only_latest_and_best(run):
    pointer = checkpoint.read_pointer(run)
    kept = sorted(p.name for p in run.iterdir() if p.name.startswith("step-"))
    assert kept == sorted({pointer["latest"], pointer["best"]})
    assert pointer["latest"] == "step-0000020"
    assert not [p for p in run.iterdir() if ".tmp-" in p.name]


@pytest.mark.slow
def test_load_model_round_trip(run):
    model, tok, ckpt = load_model(run, "latest")
    state = torch.load(run / "step-0000020" / "model.pt", weights_only=True)
    assert all(torch.equal(model.state_dict()[k], v) for k, v in state.items())
    assert tok.spec() == ckpt.tokenizer_spec and ckpt.step == 20
    assert not model.training


def test_checkpoint_dir_can_be_given_directly(run):
    assert checkpoint.resolve(run / "step-0000020") == run / "step-0000020"


def test_truncated_weights_are_a_clear_error(run):
    path = run / "step-0000020" / "model.pt"
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(GptcliError, match="corrupt"):
        load_model(run, "latest")


def test_pickled_code_is_refused(run):
    class Payload:
        def __reduce__(self):
            return (print, ("pwned",))

    path = run / "step-0000020" / "model.pt"
    path.write_bytes(pickle.dumps({"x": Payload()}, protocol=2))
    with pytest.raises(GptcliError, match="unsafe"):
        load_model(run, "latest")


def test_corrupt_config_and_pointer(run):
    (run / "step-0000020" / "config.json").write_text("{")
    with pytest.raises(GptcliError, match="corrupt"):
        checkpoint.load(run, "latest")
    (run / "checkpoints.json").write_text(json.dumps({"best": "x"}))
    with pytest.raises(GptcliError, match="corrupt"):
        checkpoint.load(run)


def test_not_a_checkpoint(tmp_path):
    with pytest.raises(GptcliError, match="not found"):
        checkpoint.load(tmp_path / "missing")
    with pytest.raises(GptcliError, match="holds no checkpoint"):
        checkpoint.load(tmp_path)


def test_a_checkpoint_the_pointer_names_is_never_replaced(run):
    with pytest.raises(GptcliError, match="not replacing it"):
        checkpoint.save(run, step=20, **_payload(run))
    assert checkpoint.load(run, "latest").step == 20


def test_leftovers_of_a_killed_save_are_cleaned_up(run):
    # A process killed mid-save leaves a temporary dir, or a full step dir the pointer never
    # named; neither is ever read, and the next save removes or replaces them.
    (run / ".step-0000030.tmp-abc").mkdir()
    (run / "step-0000030").mkdir()
    checkpoint.save(run, step=30, **_payload(run))
    assert checkpoint.load(run, "latest").step == 30
    assert not [p for p in run.iterdir() if ".tmp-" in p.name]


def test_force_starts_over_without_a_broken_pointer(run, tmp_path, char_data):
    # Killed right after --force forgot the old run: no run to resume, but nothing broken.
    checkpoint.forget(run)
    assert not checkpoint.has_checkpoint(run)
    cfg = tiny_config(char_data, run, train={"max_iters": 10, "eval_interval": 10})
    train(cfg)  # the old step dirs are no run: no --force needed, and they get pruned
    assert sorted(p.name for p in run.iterdir() if p.name.startswith("step-")) == ["step-0000010"]


def _payload(run):
    ckpt = checkpoint.load(run, "latest")
    return {
        "model_state": ckpt.model_state(),
        "trainer_state": ckpt.trainer_state(),
        "config": ckpt.config,
        "vocab_size": ckpt.vocab_size,
        "tokenizer_spec": ckpt.tokenizer_spec,
        "best_step": 20,
        "best_val_loss": 1.0,
        "val_loss": 1.0,
    }
