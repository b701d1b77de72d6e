import math
import re

import numpy as np
import pytest
import torch

from gptcli.config import ModelConfig
from gptcli.evaluate import score_tokens, windows
from gptcli.model import GPT

CASES = [(100, 16, None), (100, 16, 5), (17, 16, None), (10, 16, None), (10, 16, 3), (65, 8, 8)]


@pytest.mark.parametrize(("n", "context", "stride"), CASES)
def test_windows_score_every_target_once(n, context, stride):
    scored = []
    for w in windows(n, context, stride):
        assert 0 <= w.start <= w.scored_from < w.end <= n - 1
        assert w.length <= context
        scored += range(w.scored_from + 1, w.end + 1)  # target indices
    assert scored == list(range(1, n))


def test_sliding_windows_give_each_target_history():
    for w in list(windows(200, 32, 8))[1:]:
        assert w.length == 32 and w.end - w.scored_from <= 8  # >= 24 tokens of history


def test_score_equals_a_direct_computation_and_ignores_batch_size():
    torch.manual_seed(0)
    model = GPT(ModelConfig(n_layer=2, n_head=2, n_embd=32, block_size=16), 11).eval()
    tokens = np.random.default_rng(0).integers(0, 11, 150).astype(np.uint16)

    def logits(x):
        return model(x)[0]

    scores = [score_tokens(logits, tokens, 16, batch_size=b) for b in (1, 3, 64)]
    assert {s.tokens for s in scores} == {149}
    for s in scores[1:]:
        assert s.loss == pytest.approx(scores[0].loss, abs=1e-5)
    # By hand: non-overlapping windows of 16 inputs, every target once.
    total = 0.0
    t = torch.from_numpy(tokens.astype(np.int64))
    for start in range(0, 149, 16):
        end = min(start + 16, 149)
        lp = torch.log_softmax(model(t[None, start:end])[0][0], -1)
        total -= lp[torch.arange(end - start), t[start + 1 : end + 1]].sum().item()
    assert scores[0].nll == pytest.approx(total, rel=1e-6)
    assert scores[0].perplexity == pytest.approx(math.exp(total / 149), rel=1e-6)
    assert scores[0].bits_per_byte(149) == pytest.approx(total / math.log(2) / 149)


def test_max_tokens_scores_a_prefix():
    tokens = np.arange(100) % 7
    uniform = score_tokens(lambda x: torch.zeros(*x.shape, 7), tokens, 10, max_tokens=31)
    assert uniform.tokens == 30 and uniform.loss == pytest.approx(math.log(7))


# --- checkpoints, eval.json and the command -----------------------------------------------------

import json  # noqa: E402

from typer.testing import CliRunner  # noqa: E402

from gptcli.cli import app  # noqa: E402
from gptcli.data.dataset import TokenDataset  # noqa: E402
from gptcli.data.prepare import prepare  # noqa: E402
from gptcli.errors import GptcliError  # noqa: E402
from gptcli.evaluate import evaluate_checkpoint, read_results  # noqa: E402
from gptcli.training.loop import train  # noqa: E402

from .conftest import make_text, tiny_config  # noqa: E402


def trained(tmp_path, data_dir, **model):
    cfg = tiny_config(data_dir, tmp_path / "run", model=model, train={"max_iters": 10})
    train(cfg)
    return tmp_path / "run"


def test_bits_per_byte_counts_the_scored_text_char(tmp_path, char_data, corpus):
    run = trained(tmp_path, char_data)
    [r] = evaluate_checkpoint(run, write=False).results
    n_val = TokenDataset(char_data).meta["tokens"]["val"]
    scored_text = corpus.read_text(encoding="utf-8")[-(n_val - 1) :]  # every val token but one
    assert r.score.tokens == n_val - 1
    expected = r.score.loss * r.score.tokens / math.log(2) / len(scored_text.encode("utf-8"))
    assert r.record()["bits_per_byte"] == pytest.approx(expected)


def test_bits_per_byte_counts_the_scored_text_bpe(tmp_path):
    text = make_text(600, seed=3) + "Ünïcödé ñ 漢字.\n" * 40  # multi-byte characters in the tail
    (tmp_path / "c.txt").write_text(text, encoding="utf-8")
    data = prepare(
        input_path=tmp_path / "c.txt", tokenizer="bpe", vocab_size=300, out_dir=tmp_path / "d"
    ).out_dir
    run = trained(tmp_path, data)
    report = evaluate_checkpoint(run, write=False)
    [r] = report.results
    from gptcli.data.tokenizers import tokenizer_from_spec

    ds = TokenDataset(data)
    decoded = tokenizer_from_spec(ds.tokenizer_spec).decode(ds.splits["val"][1:].tolist())
    assert text.endswith(decoded)
    n_bytes = len(decoded.encode("utf-8"))
    assert n_bytes > len(decoded)  # the multi-byte characters count as bytes
    assert r.record()["bits_per_byte"] == pytest.approx(r.score.nll / math.log(2) / n_bytes)


def test_learned_positions_refuse_only_the_contexts_past_block_size(tmp_path, char_data):
    run = trained(tmp_path, char_data)  # learned positions, block_size 16
    report = evaluate_checkpoint(run, contexts=[8, 16, 32])
    by_context = {r.context: r for r in report.results}
    assert by_context[8].score and by_context[16].score
    assert by_context[32].score is None and by_context[32].beyond_training
    assert "learned positions have block_size=16 rows" in by_context[32].refused
    with pytest.raises(GptcliError, match="block_size=16 rows"):
        evaluate_checkpoint(run, contexts=[64])  # nothing left to score: exit 2


@pytest.mark.parametrize("position", ["none", "sincos", "relative", "rope", "alibi"])
def test_other_position_schemes_extrapolate(tmp_path, char_data, position):
    run = trained(tmp_path, char_data, position=position)
    report = evaluate_checkpoint(run, contexts=[16, 64], write=False)
    assert all(r.score is not None and math.isfinite(r.score.loss) for r in report.results)
    assert [r.beyond_training for r in report.results] == [False, True]


def test_tokenizer_mismatch_and_short_split_are_refused(tmp_path, char_data, corpus):
    run = trained(tmp_path, char_data)
    text = corpus.read_text(encoding="utf-8")
    for name, other_text, needle in [
        ("bigger", text + "XYZ!?\n", "its vocabulary has 35 tokens, the checkpoint's 30"),
        ("same size", text.replace("b", "q"), "both are char tokenizers, but with different voc"),
    ]:
        (tmp_path / f"{name}.txt").write_text(other_text, encoding="utf-8")
        other = prepare(
            input_path=tmp_path / f"{name}.txt", tokenizer="char", out_dir=tmp_path / name
        )
        with pytest.raises(GptcliError, match=needle):
            evaluate_checkpoint(run, data_dir=other.out_dir)
    with pytest.raises(GptcliError, match="fewer than one window of context 16"):
        evaluate_checkpoint(run, max_tokens=10)


def test_eval_json_merges_calls_and_replaces_repeats(tmp_path, char_data):
    run = trained(tmp_path, char_data)
    final = read_results(run)  # train.final_eval's entry: the final checkpoint at block_size
    assert [(e["step"], e["context"], e["split"]) for e in final] == [(10, 16, "val")]
    evaluate_checkpoint(run, contexts=[8])
    evaluate_checkpoint(run, contexts=[8, 16], which="latest")
    evaluate_checkpoint(run, contexts=[16], split="train")
    keys = sorted((e["context"], e["split"]) for e in read_results(run))
    assert keys == [(8, "val"), (16, "train"), (16, "val")]  # the repeats replaced, not added
    metrics = [json.loads(line) for line in (run / "metrics.jsonl").open()]
    assert metrics[-1]["full_val_loss"] == pytest.approx(final[0]["loss"])


def test_eval_command_prints_a_table_and_json(tmp_path, char_data):
    # Under a long directory [with brackets], as a path must stay whole and as it is in a pipe.
    run = trained(tmp_path / ("long-" * 20 + "[x]"), char_data, position="rope")
    runner = CliRunner()
    done = runner.invoke(app, ["eval", "--checkpoint", str(run), "--context", "16,32"])
    assert done.exit_code == 0, done.output
    assert "32 (past training)" in done.output
    assert f"results merged into {run / 'eval.json'}\n" in done.output
    assert re.sub(r"\s", "", done.output).count("[x]") == 2  # and in the table's title
    done = runner.invoke(app, ["eval", "--checkpoint", str(run), "--format", "json"])
    [record] = json.loads(done.output)
    assert record["context"] == 16 and record["tokens"] > 0
    for bad, said in ((["--context", "a,b"], "a,b"), (["--split", "test"], "test"),
                      (["--stride", "99"], "99"), (["--batch-size", "0"], "--batch-size must"),
                      (["--max-tokens", "1"], "--max-tokens must be at least 2"),
                      (["--precision", "fp16"], "--precision fp16 needs a CUDA device")):
        done = runner.invoke(app, ["eval", "--checkpoint", str(run), *bad])
        assert done.exit_code == 2 and done.output.count("\n") == 1, done.output
        assert said in done.output, done.output
