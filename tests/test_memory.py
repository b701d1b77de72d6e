"""Evaluation in bounded memory: attention in blocks of queries computes what the whole does,
the plan fits a budget or refuses before starting, and the measured peak stays inside it."""

import json
import subprocess
import sys

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from gptcli import memory
from gptcli.cli import app
from gptcli.config import ModelConfig
from gptcli.errors import GptcliError
from gptcli.evaluate import evaluate_model
from gptcli.model import GPT
from gptcli.model.positions import POSITIONS

from .conftest import REPO

runner = CliRunner()
VOCAB = 30


def model_of(position: str, **kw) -> GPT:
    cfg = ModelConfig(n_layer=2, n_head=4, n_embd=32, block_size=16, position=position,
                      relative_buckets=8, relative_max_distance=16, **kw)  # fmt: skip
    torch.manual_seed(0)
    model = GPT(cfg, VOCAB).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    return model


@pytest.mark.parametrize("position", [p for p in POSITIONS.names() if p != "learned"])
@pytest.mark.parametrize("chunk", [1, 7, 16])
def test_attention_in_blocks_of_queries_equals_the_whole(position, chunk):
    model = model_of(position)
    idx = torch.randint(VOCAB, (2, 40), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        whole = model(idx)[0]
        model.query_chunk = chunk
        blocks = model(idx)[0]
        # New queries after cached keys (a prompt's second part) take the block path too.
        cache = model.new_cache(2, 40)
        model(idx[:, :9], cache=cache)
        cached = model(idx[:, 9:], cache=cache)[0]
    torch.testing.assert_close(blocks, whole, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(cached, whole[:, 9:], rtol=1e-5, atol=1e-5)


def test_the_plan_fits_the_budget_or_says_what_would():
    cfg = ModelConfig(n_layer=4, n_head=4, n_embd=128, block_size=64)
    small = memory.plan(cfg, 512, 65, 64, 16, 1 << 30, biased=True)
    assert small.batch == 16 and small.chunk is None  # training-sized windows: all at once
    long = memory.plan(cfg, 512, 65, 16384, 16, 2 << 30, biased=True)
    assert long.bytes <= 2 << 30 and long.chunk is not None and long.chunk < 16384
    flash = memory.plan(cfg, 512, 65, 16384, 16, 2 << 30, biased=False)
    assert flash.chunk is None and flash.batch > long.batch  # no scores held without a bias
    with pytest.raises(GptcliError) as info:
        memory.plan(cfg, 512, 65, 65536, 16, 100 << 20, biased=True)
    message = str(info.value)
    assert "context 65536 needs about" in message and "contexts up to about" in message
    fits = int(message.rsplit("about ", 1)[1].split()[0])
    assert memory.plan(cfg, 512, 65, fits, 16, 100 << 20, biased=True).batch == 1


def test_a_context_too_big_for_the_budget_is_refused_before_any_is_scored(tmp_path):
    model = model_of("alibi")
    tokens = np.random.default_rng(0).integers(0, VOCAB, 3000).astype(np.uint16)

    class Chars:
        def decode_bytes(self, ids):
            return bytes(len(ids))

    results = evaluate_model(model, Chars(), tokens, [64, 2048], max_memory=4 << 20)
    assert results[0].score is not None and results[0].score.tokens == 2999
    assert results[1].score is None and "contexts up to about" in results[1].refused


MEASURE = """
import json, resource, sys
import numpy as np, torch
from gptcli.config import ModelConfig
from gptcli.evaluate import evaluate_model
from gptcli.model import GPT
torch.set_num_threads(1)
context, budget = int(sys.argv[1]), int(sys.argv[2])
cfg = ModelConfig(n_layer=2, n_head=4, n_embd=32, block_size=64, position="alibi")
model = GPT(cfg, 30).eval()
tokens = np.random.default_rng(0).integers(0, 30, context + 1).astype(np.uint16)
class Chars:
    def decode_bytes(self, ids):
        return bytes(len(ids))
evaluate_model(model, Chars(), tokens[:200], [64], max_memory=budget)  # warm up the kernels
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
[result] = evaluate_model(model, Chars(), tokens, [context], max_memory=budget)
after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
print(json.dumps({"grew": after - before, "tokens": result.score.tokens}))
"""


@pytest.mark.slow
def test_the_measured_peak_stays_inside_the_budget():
    # ALiBi at context 4096: a whole (heads x T x T) bias alone would be 256 MiB, its scores and
    # softmax 3x that again. With a 64 MiB budget the peak grows by no more than the budget.
    context, budget = 4096, 64 << 20
    whole = memory.forward_bytes(ModelConfig(n_layer=2, n_head=4, n_embd=32), 128, 30, 1,
                                 context, context, biased=True)  # fmt: skip
    assert whole > 12 * budget
    done = subprocess.run([sys.executable, "-c", MEASURE, str(context), str(budget)], cwd=REPO,
                          capture_output=True, text=True, timeout=300)  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    measured = json.loads(done.stdout)
    assert measured["tokens"] == context
    assert measured["grew"] < budget, measured


def test_eval_cli_refuses_in_one_line(tmp_path, char_data):
    from gptcli.training.loop import train

    from .conftest import tiny_config

    cfg = tiny_config(char_data, tmp_path / "run", model={"position": "alibi"},
                      train={"max_iters": 2, "eval_interval": 2})  # fmt: skip
    train(cfg)
    args = ["eval", "--checkpoint", str(tmp_path / "run"), "--context", "256"]
    done = runner.invoke(app, [*args, "--max-memory", "0.0001"])
    assert done.exit_code == 2 and done.output.count("\n") == 1, done.output
    assert "contexts up to about" in done.output and "--max-memory" in done.output
    done = runner.invoke(app, [*args, "--max-memory", "-1"])
    assert done.exit_code == 2 and "--max-memory must be" in done.output
