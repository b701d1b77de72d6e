"""Distributed data parallel: the global-batch rule, and a real torchrun run on CPU (gloo) that
must match the single-process run with the same global batch."""

import json
import os
import subprocess
import sys

import pytest
import torch
import yaml

from gptcli.config import TrainConfig
from gptcli.errors import GptcliError
from gptcli.training import checkpoint
from gptcli.training.batches import micro_batches
from gptcli.training.loop import train

from ..conftest import REPO, tiny_config


def test_global_batch_splits_over_processes():
    assert micro_batches(TrainConfig(batch_size=8, grad_accum=4), 16, world_size=2) == 4
    with pytest.raises(GptcliError, match="grad_accum: 3 micro-batches do not split evenly over 2"):
        micro_batches(TrainConfig(batch_size=8, grad_accum=3), 16, world_size=2)


def test_tokens_per_step_decides_grad_accum():
    tc = TrainConfig(batch_size=8, grad_accum=1, tokens_per_step=512)
    assert micro_batches(tc, 16) == 4
    assert micro_batches(tc, 16, world_size=2) == 4  # the same global batch
    with pytest.raises(GptcliError, match=r"8 x 16 x 3 = 384; use e.g. 384 or 768"):
        micro_batches(tc, 16, world_size=3)
    with pytest.raises(GptcliError, match=r"not a multiple of batch_size x block_size = 8 x 16"):
        micro_batches(TrainConfig(batch_size=8, tokens_per_step=100), 16)


@pytest.fixture
def one_thread():
    # The torchrun processes get one thread each; so does the run they are compared with, and
    # tiny models train faster without threads contending for a busy machine's cores.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def records(run):
    return [json.loads(line) for line in (run / "metrics.jsonl").open()]


@pytest.mark.slow
def test_torchrun_two_processes_match_one(tmp_path, char_data, one_thread):
    # Global batch 4 x 4 micro-batches of 16 tokens: two processes run 2 each (so no_sync is
    # used), first 10 steps, then --resume to 20. The schedule is fixed by lr_decay_iters; 5
    # eval batches do not split evenly, which must not deadlock.
    keys = {"batch_size": 4, "grad_accum": 4, "max_iters": 20, "lr_decay_iters": 20}
    keys |= {"eval_interval": 10, "eval_iters": 5, "log_interval": 5}
    single = train(tiny_config(char_data, tmp_path / "single", train=keys))

    cfg = tiny_config(char_data, tmp_path / "ddp", train=keys).to_dict()
    config = tmp_path / "ddp.yaml"
    config.write_text(yaml.safe_dump(cfg))
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
    command = [*torchrun, "-m", "gptcli", "train", "--config", str(config)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    for extra in (["--set", "train.max_iters=10"], ["--resume"]):
        done = subprocess.run(
            command + extra, cwd=REPO, env=env, capture_output=True, text=True, timeout=180
        )
        assert done.returncode == 0, done.stderr[-3000:]
        assert done.stdout.count("best val loss") == 1  # rank 0 alone reports

    one, two = records(tmp_path / "single"), records(tmp_path / "ddp")
    assert [r["step"] for r in two] == [r["step"] for r in one]  # rank 0 alone writes
    # Same batches, same micro-batch split: only the order of the float sums differs (two
    # processes with 2 micro-batches each, against 4 accumulated in one), so the losses agree
    # to float32 rounding; 1e-5 relative leaves room for 20 steps of it.
    for a, b in zip(one, two, strict=True):
        for key in ("loss", "train_loss", "val_loss"):
            if key in a:
                assert b[key] == pytest.approx(a[key], rel=1e-5), (a["step"], key)
    assert two[-1]["val_loss"] < two[0]["val_loss"] - 0.3
    assert single.last_eval.val_loss == pytest.approx(two[-1]["val_loss"], rel=1e-5)

    a = checkpoint.load(tmp_path / "single", "latest").model_state()
    b = checkpoint.load(tmp_path / "ddp", "latest").model_state()
    assert all(torch.allclose(a[k], b[k], rtol=1e-4, atol=1e-6) for k in a)
    rng = checkpoint.load(tmp_path / "ddp", "latest").trainer_state()["rng"]
    assert len(rng) == 2  # each process's dropout RNG, for an exact resume
