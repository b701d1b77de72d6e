"""train.tensorboard: the scalars mirror metrics.jsonl, grad_norm is logged, and a missing
tensorboard package is one line before any work. tensorboard itself is not a test dependency:
a fake SummaryWriter records what the run would have written."""

import json
import sys
import types
from types import SimpleNamespace

import pytest
import torch
import yaml
from typer.testing import CliRunner

from gptcli.cli import app
from gptcli.data.dataset import TokenDataset
from gptcli.errors import GptcliError
from gptcli.model import GPT
from gptcli.training.batches import train_generator
from gptcli.training.loop import metrics_log, train
from gptcli.training.report import TENSORBOARD_DIR, TENSORBOARD_TAGS

from ..conftest import tiny_config


class FakeWriter:
    made: list["FakeWriter"] = []

    def __init__(self, log_dir, purge_step=None, flush_secs=120):
        self.log_dir, self.purge_step, self.flush_secs = log_dir, purge_step, flush_secs
        self.scalars: list[tuple[str, float, int]] = []
        self.closed = False
        FakeWriter.made.append(self)

    def add_scalar(self, tag, value, step):
        assert not self.closed
        self.scalars.append((tag, value, step))

    def close(self):
        self.closed = True


@pytest.fixture
def fake_tensorboard(monkeypatch):
    module = types.ModuleType("torch.utils.tensorboard")
    module.SummaryWriter = FakeWriter
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", module)
    FakeWriter.made = []
    return FakeWriter.made


@pytest.fixture
def no_tensorboard(monkeypatch):
    # None in sys.modules makes the import raise ImportError, as a missing package does.
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)


def records(run_dir):
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").open(encoding="utf-8")]


def test_missing_tensorboard_is_refused_before_any_work(tmp_path, char_data, no_tensorboard):
    cfg = tiny_config(char_data, tmp_path / "run", train={"tensorboard": True})
    with pytest.raises(GptcliError, match=r"pip install 'gptcli\[tensorboard\]'") as info:
        train(cfg)
    assert "\n" not in str(info.value)
    assert not (tmp_path / "run").exists()  # not even a metrics.jsonl
    train(tiny_config(char_data, tmp_path / "off", train={"max_iters": 2}))  # off: no import


def test_the_cli_flag_without_tensorboard_is_one_error_line(tmp_path, char_data, no_tensorboard):
    cfg = tiny_config(char_data, tmp_path / "run")
    config = tmp_path / "tiny.yaml"
    config.write_text(yaml.safe_dump(cfg.to_dict()), encoding="utf-8")
    result = CliRunner().invoke(app, ["train", "--config", str(config), "--tensorboard"])
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: train.tensorboard needs"), lines
    assert not (tmp_path / "run").exists()


def test_the_scalars_are_the_metrics_log_records(tmp_path, char_data, fake_tensorboard):
    run = tmp_path / "run"
    train(tiny_config(char_data, run, train={"tensorboard": True}))
    [writer] = fake_tensorboard
    assert writer.log_dir == str(run / TENSORBOARD_DIR) and writer.purge_step is None
    assert writer.closed
    expected = [
        (tag, r[key], r["step"])
        for r in records(run)
        for key, tag in TENSORBOARD_TAGS.items()
        if r.get(key) is not None
    ]
    assert writer.scalars == expected
    tags = {tag for tag, _, _ in writer.scalars}
    assert {"loss/train", "loss/val", "train/lr", "train/tokens_per_sec"} <= tags
    assert {"train/grad_norm", "final/val_loss", "final/val_bits_per_byte"} <= tags
    assert [s for t, _, s in writer.scalars if t == "train/grad_norm"] == list(range(5, 41, 5))


def test_a_resumed_run_hides_the_steps_it_trains_again(tmp_path, char_data, fake_tensorboard):
    run = tmp_path / "run"

    def cfg(max_iters):
        keys = {"tensorboard": True, "max_iters": max_iters, "lr_decay_iters": 40}
        return tiny_config(char_data, run, train=keys)

    train(cfg(20))
    old = run / TENSORBOARD_DIR / "events.out.tfevents.1.host"
    old.parent.mkdir(exist_ok=True)
    old.write_text("")  # the fake writer writes no files; stand in for the first run's
    train(cfg(40), resume=True)
    assert fake_tensorboard[-1].purge_step == 21 and old.exists()
    assert min(s for _, _, s in fake_tensorboard[-1].scalars) == 25
    train(cfg(20), force=True)  # a new run starts its curves over, as metrics.jsonl does
    assert fake_tensorboard[-1].purge_step is None and not old.exists()


def test_only_rank_0_writes_tensorboard(tmp_path, char_data, fake_tensorboard):
    cfg = tiny_config(char_data, tmp_path / "run", train={"tensorboard": True})
    rank1 = SimpleNamespace(is_main=False, enabled=False)  # gather() then hears no problem
    other = SimpleNamespace(cfg=cfg, d=rank1, out_dir=tmp_path / "run")
    with metrics_log(other, append=False) as log:
        log.write({"step": 1, "loss": 2.0})
    assert fake_tensorboard == [] and not (tmp_path / "run").exists()


def test_grad_norm_is_the_first_steps_total_norm(tmp_path, char_data):
    cfg = tiny_config(char_data, tmp_path / "run", train={"max_iters": 1, "log_interval": 1})
    train(cfg)
    [logged] = [r for r in records(tmp_path / "run") if "loss" in r]
    # The same first step by hand: the seeded init and micro-batch (seed, step 0, micro 0).
    data = TokenDataset(char_data)
    torch.manual_seed(cfg.train.seed)
    model = GPT(cfg.model, data.vocab_size)
    gen = train_generator(cfg.train.seed, 0, 0)
    x, y = data.batch("train", cfg.train.batch_size, cfg.model.block_size, gen)
    _, loss = model(x, y)
    loss.backward()
    norm = torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in model.parameters()]))
    assert logged["loss"] == pytest.approx(loss.item(), rel=1e-6)
    assert logged["grad_norm"] == pytest.approx(norm.item(), rel=1e-5)


def test_grad_norm_is_logged_with_clipping_off_too(tmp_path, char_data):
    def run(name, clip):
        keys = {"max_iters": 10, "grad_clip": clip, "eval_interval": 10, "final_eval": False}
        train(tiny_config(char_data, tmp_path / name, train=keys))
        return [r for r in records(tmp_path / name) if "loss" in r]

    off, never_clips = run("off", 0.0), run("huge", 1e9)
    assert [r["step"] for r in off] == [5, 10]
    for a, b in zip(off, never_clips, strict=True):
        assert a["grad_norm"] == pytest.approx(b["grad_norm"], rel=1e-5) and a["grad_norm"] > 0
        assert a["loss"] == pytest.approx(b["loss"], rel=1e-5)
