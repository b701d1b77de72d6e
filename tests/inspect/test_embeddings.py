"""inspect embeddings: neighbours and the PCA map on a planted structure, frequencies counted
from the data, tied and untied models, char / trained-BPE / GPT-2 tokenizers, and bad --tokens."""

import json
from collections import Counter

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from gptcli.cli import app
from gptcli.data.prepare import prepare
from gptcli.errors import GptcliError
from gptcli.inspect import embeddings as em
from gptcli.inspect.inspection import embeddings, load_subject
from gptcli.training.loop import train

from ..conftest import make_text, needs_gpt2, tiny_config

PNG = b"\x89PNG\r\n\x1a\n"
runner = CliRunner()


def planted(vocab=12, dim=8, groups=3, seed=0):
    """Token t lies near direction t % groups (small noise): its neighbours are known."""
    rng = np.random.default_rng(seed)
    centres = np.eye(dim)[:groups] * 3.0
    return np.stack([centres[t % groups] + rng.normal(0, 0.05, dim) for t in range(vocab)])


def test_neighbours_of_a_planted_embedding_are_its_group():
    weight = planted()
    found = em.neighbours(weight, [0, 1, 5], k=3)
    for token, near in zip([0, 1, 5], found, strict=True):
        ids = [i for i, _ in near]
        assert token not in ids
        assert {i % 3 for i in ids} == {token % 3}  # the three others of its group
        cosines = [c for _, c in near]
        assert cosines == sorted(cosines, reverse=True) and min(cosines) > 0.95
    # A cosine is a cosine: scaling a vector changes nothing.
    scaled = weight.copy()
    scaled[3] *= 50
    assert [i for i, _ in em.neighbours(scaled, [0], 3)[0]] == [i for i, _ in found[0]]


def test_the_pca_map_keeps_groups_together_and_apart():
    weight = planted(vocab=30)
    points, share = em.pca_map(weight, list(range(30)))
    assert points.shape == (30, 2) and 0 < share[1] <= share[0] <= 1
    groups = [points[[t for t in range(30) if t % 3 == g]] for g in range(3)]
    within = max(np.linalg.norm(g - g.mean(axis=0), axis=1).max() for g in groups)
    centres = [g.mean(axis=0) for g in groups]
    between = min(np.linalg.norm(a - b) for i, a in enumerate(centres) for b in centres[i + 1:])
    assert between > 10 * within


def test_tokens_are_parsed_with_escapes_and_must_be_single_tokens():
    chars = "abc ,\n\t\\"

    def encode(text):
        return [chars.index(c) for c in text]

    assert em.parse_tokens("a,b,\\s,\\,,\\n,\\t,\\\\", encode) == [0, 1, 3, 4, 5, 6, 7]
    with pytest.raises(GptcliError, match="'ab' is 2 tokens"):
        em.parse_tokens("ab", encode)
    with pytest.raises(GptcliError, match="empty entry"):
        em.parse_tokens("a,,b", encode)
    with pytest.raises(GptcliError, match="unknown escape"):
        em.parse_tokens("\\q", encode)


@pytest.fixture
def run(tmp_path, char_data):
    out = tmp_path / "run"
    train(tiny_config(char_data, out, train={"max_iters": 4}))
    return out


def test_a_planted_model_shows_its_groups_and_the_most_frequent_tokens(run, char_data):
    subject = load_subject(run, "latest")
    vocab = subject.ckpt.vocab_size
    with torch.no_grad():
        subject.model.wte.weight.copy_(torch.from_numpy(planted(vocab, 32, 4)).float())
    found = embeddings(subject, "a", top=20, k=3, out=None, data_dir=None)
    record = found.record["matrices"]
    assert len(record) == 1 and record[0]["matrix"] == "wte = lm_head (tied)"
    a = subject.tokenizer.encode("a")[0]
    near = [n["id"] for n in record[0]["neighbours"][0]["nearest"]]
    assert all(i % 4 == a % 4 and i != a for i in near)
    # The map holds the 20 most frequent tokens of the train split, most frequent first.
    train_text = subject.tokenizer.decode(np.fromfile(char_data / "train.bin",
                                          dtype=np.uint16).tolist())  # fmt: skip
    top = [t for t, _ in Counter(train_text).most_common(20)]
    mapped = [subject.tokenizer.decode([p["id"]]) for p in record[0]["map"]]
    assert sorted(mapped) == sorted(top) and mapped[0] == top[0]
    assert "most frequent" in found.record["frequency"]
    assert found.picture.read_bytes()[:8] == PNG


def test_cli_tied_and_untied_json_table_and_errors(tmp_path, char_data, run):
    untied = tmp_path / "untied"
    train(tiny_config(char_data, untied, model={"tie_embeddings": False},
                      train={"max_iters": 4}))  # fmt: skip
    out = tmp_path / "e.png"
    done = runner.invoke(app, ["inspect", "embeddings", "--checkpoint", str(untied), "--format",
                               "json", "--out", str(out), "--top", "10"])  # fmt: skip
    assert done.exit_code == 0, done.output
    record = json.loads(done.output)
    assert [m["matrix"] for m in record["matrices"]] == ["wte (input)", "lm_head (output)"]
    assert all(len(m["map"]) == 10 and len(m["neighbours"]) == 8 for m in record["matrices"])
    assert out.read_bytes()[:8] == PNG
    table = runner.invoke(app, ["inspect", "embeddings", "--checkpoint", str(run), "--tokens",
                                "e,\\s", "--neighbours", "2"])  # fmt: skip
    assert table.exit_code == 0, table.output
    assert "2 nearest (cosine)" in table.output and "wte = lm_head (tied)" in table.output
    bad = runner.invoke(app, ["inspect", "embeddings", "--checkpoint", str(run), "--tokens", "ab"])
    assert bad.exit_code == 2 and "'ab' is 2 tokens" in bad.output
    assert len(bad.output.strip().splitlines()) == 1


def bpe_run(tmp_path, tokenizer, **kw):
    (tmp_path / "c.txt").write_text(make_text(600), encoding="utf-8")
    data = prepare(input_path=tmp_path / "c.txt", tokenizer=tokenizer, out_dir=tmp_path / "d",
                   **kw).out_dir  # fmt: skip
    out = tmp_path / "r"
    train(tiny_config(data, out, train={"max_iters": 4}))
    return out


def test_a_trained_bpe_model_maps_its_word_tokens(tmp_path):
    run = bpe_run(tmp_path, "bpe", vocab_size=300)
    done = runner.invoke(app, ["inspect", "embeddings", "--checkpoint", str(run), "--format",
                               "json", "--tokens", " the, red"])  # fmt: skip
    assert done.exit_code == 0, done.output
    names = [n["token"] for n in json.loads(done.output)["matrices"][0]["neighbours"]]
    assert names == ["\u2423the", "\u2423red"]  # spaces shown as ␣


@pytest.mark.slow
@needs_gpt2
def test_a_gpt2_tokenizer_model_shows_its_frequent_tokens(tmp_path):
    run = bpe_run(tmp_path, "gpt2")
    done = runner.invoke(app, ["inspect", "embeddings", "--checkpoint", str(run), "--format",
                               "json", "--top", "12"])  # fmt: skip
    assert done.exit_code == 0, done.output
    mapped = [p["token"] for p in json.loads(done.output)["matrices"][0]["map"]]
    assert len(mapped) == 12 and "." in mapped  # every sentence ends with one


def test_labels_that_look_like_tex_are_drawn_as_text(tmp_path):
    from gptcli.inspect import attention_maps

    labels = ["$\\frac{$", "$x$", "a"]  # the first is broken TeX: mathtext would raise
    points, share = em.pca_map(planted(3, 4, 3), [0, 1, 2])
    out = em.draw([("wte", points, share)], labels, tmp_path / "e.png", "t")
    assert out.read_bytes()[:8] == PNG
    weights = torch.softmax(torch.randn(1, 1, 3, 3), -1)
    out = attention_maps.draw(weights, labels, tmp_path / "a.png", "t", None, None, 1)
    assert out.read_bytes()[:8] == PNG
