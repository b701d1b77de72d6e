import json

import pytest
import torch

from gptcli.data.dataset import TokenDataset
from gptcli.errors import GptcliError


def test_batches_are_shifted_windows(char_data):
    data = TokenDataset(char_data)
    g = torch.Generator().manual_seed(0)
    x, y = data.batch("train", 4, 8, g)
    assert x.shape == y.shape == (4, 8) and x.dtype == torch.int64
    assert torch.equal(x[:, 1:], y[:, :-1])
    train = torch.from_numpy(data.splits["train"].astype("int64"))
    for row_x, row_y in zip(x, y, strict=True):
        # each row is a real window of the train split
        starts = (train[: len(train) - 8] == row_x[0]).nonzero().flatten().tolist()
        assert any(torch.equal(train[s : s + 9], torch.cat([row_x, row_y[-1:]])) for s in starts)


def test_same_generator_seed_same_batch(char_data):
    data = TokenDataset(char_data)
    a = data.batch("val", 3, 5, torch.Generator().manual_seed(7))
    b = data.batch("val", 3, 5, torch.Generator().manual_seed(7))
    assert all(torch.equal(p, q) for p, q in zip(a, b, strict=True))


def test_not_a_dataset(tmp_path):
    with pytest.raises(GptcliError, match="not a prepared dataset"):
        TokenDataset(tmp_path)


def test_corrupt_meta_and_truncated_bin(char_data):
    (char_data / "train.bin").write_bytes((char_data / "train.bin").read_bytes()[:-2])
    with pytest.raises(GptcliError, match="train.bin"):
        TokenDataset(char_data)
    (char_data / "meta.json").write_text("{not json")
    with pytest.raises(GptcliError, match="corrupt"):
        TokenDataset(char_data)


def test_block_size_larger_than_a_split(char_data):
    data = TokenDataset(char_data)
    n_val = json.loads((char_data / "meta.json").read_text())["tokens"]["val"]
    with pytest.raises(GptcliError, match="model.block_size"):
        data.check_block_size(n_val)
    data.check_block_size(n_val - 1)
