"""The Python API: gptcli.load(), generate and score; and the guide's example, run as written
(docs/api_example.py is the Python API guide's code block, character for character)."""

import math
import runpy

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import gptcli
from gptcli.data.dataset import TokenDataset
from gptcli.errors import GptcliError
from gptcli.evaluate import evaluate_checkpoint
from gptcli.training.loop import train

from .conftest import REPO, make_text, tiny_config

EXAMPLE = REPO / "docs" / "api_example.py"


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    """A tiny char model at ROOT/out/demo, the path the example loads; its corpus holds every
    character of the example (and a multi-byte one), so the example's text encodes."""
    from gptcli.data.prepare import prepare

    root = tmp_path_factory.mktemp("api")
    corpus = root / "corpus.txt"
    extra = EXAMPLE.read_text(encoding="utf-8") + "Café crème, naïve.\n"
    corpus.write_text(make_text() + extra * 3, encoding="utf-8")
    data = prepare(input_path=corpus, tokenizer="char", out_dir=root / "data").out_dir
    keys = {"max_iters": 10, "eval_interval": 10, "final_eval": False}
    train(tiny_config(data, root / "out" / "demo", train=keys))
    return root / "out" / "demo"


@pytest.fixture(scope="module")
def m(run_dir):
    return gptcli.load(run_dir, device="cpu")


def test_the_api_guide_example_runs(run_dir, monkeypatch, capsys):
    monkeypatch.chdir(run_dir.parent.parent)
    runpy.run_path(str(EXAMPLE), run_name="__main__")
    out = capsys.readouterr().out
    sample, scored = out.rstrip("\n").rsplit("\n", 1)
    assert len(sample) >= 100  # ~200 characters of a char model's sample
    assert scored.endswith("bits/byte") and "nats/token, perplexity" in scored


def test_the_guide_shows_the_example_as_tested():
    guide = (REPO / "docs" / "how-to" / "api.md").read_text(encoding="utf-8")
    assert f"```python\n{EXAMPLE.read_text(encoding='utf-8')}```" in guide


def reference_score(model, ids):
    """Non-overlapping windows of block_size, by hand: every target once, summed in float64."""
    block = model.cfg.block_size
    nll, count = 0.0, 0
    with torch.no_grad():
        for start in range(0, len(ids) - 1, block):
            x = torch.tensor([ids[start : start + block]])
            y = torch.tensor([ids[start + 1 : start + block + 1]])
            x = x[:, : y.shape[1]]
            logits, _ = model(x)
            nll += F.cross_entropy(logits[0], y[0], reduction="sum").double().item()
            count += y.numel()
    return nll, count


@pytest.mark.parametrize(
    "text",
    ["The cat sat.", "The dog ran to see her big red ball.\nCafé crème, naïve."],
    ids=["one-window", "windows-and-multibyte"],
)
def test_score_is_the_windowed_loss_per_token_and_byte(m, text):
    ids = m.tokenizer.encode(text)
    nll, count = reference_score(m.model, ids)
    s = m.score(text)
    assert s.tokens == count == len(ids) - 1
    assert s.loss == pytest.approx(nll / count, rel=1e-5)
    assert s.perplexity == pytest.approx(math.exp(nll / count), rel=1e-5)
    # The first token is never a target, so its bytes do not count.
    n_bytes = len(text[1:].encode("utf-8"))
    assert s.bits_per_byte == pytest.approx(nll / math.log(2) / n_bytes, rel=1e-5)


def test_score_agrees_with_gptcli_eval_on_the_same_text(m, run_dir):
    report = evaluate_checkpoint(run_dir, split="val", device="cpu", write=False)
    [result] = report.results
    val = TokenDataset(m.checkpoint.config.data.dir).splits["val"]
    s = m.score(m.tokenizer.decode(val.astype(np.int64).tolist()))
    assert s.tokens == result.score.tokens
    assert s.loss == pytest.approx(result.score.loss, rel=1e-6)
    assert s.bits_per_byte == pytest.approx(result.score.bits_per_byte(result.n_bytes), rel=1e-6)


def test_score_leaves_the_model_as_it_found_it(m):
    before = m.score("The dog ran.")
    m.model.train()
    try:
        assert m.score("The dog ran.") == before  # scored in eval mode regardless
        assert m.model.training
    finally:
        m.model.eval()


@pytest.mark.parametrize(
    ("text", "needle"),
    [("", "empty text"), ("T", "a single token"), ("The ☃ sat.", "'☃'")],
    ids=["empty", "one-token", "unencodable"],
)
def test_score_refuses_in_one_line(m, text, needle):
    with pytest.raises(GptcliError, match=needle) as info:
        m.score(text)
    assert "\n" not in str(info.value)
