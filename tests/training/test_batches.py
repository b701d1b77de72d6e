import pytest
import torch

from gptcli.config import config_from_dict
from gptcli.data.dataset import TokenDataset
from gptcli.training.batches import TrainBatches, train_generator


def _batches(char_data, order, batch_size=4, block_size=16, seed=7, n_micro=2):
    cfg = config_from_dict({
        "data": {"dir": str(char_data), "order": order},
        "model": {"block_size": block_size},
        "train": {"batch_size": batch_size, "seed": seed},
    })  # fmt: skip
    return TrainBatches(cfg, TokenDataset(char_data), n_micro)


def _first_tokens(batches, steps, n_micro=2):
    return [x[:, 0] for s in range(steps) for m in range(n_micro) for x in [batches(s, m)[0]]]


def test_epoch_order_reads_every_window_once_a_pass_in_a_new_order_each_pass(char_data):
    b = _batches(char_data, "epoch", batch_size=1, n_micro=1)
    data = torch.from_numpy(b.data.splits["train"].astype("int64"))
    per_pass = b.windows
    assert per_pass == (len(data) - 1) // 16
    seen = [b(s, 0) for s in range(2 * per_pass)]
    for p in range(2):
        xs = torch.cat([x for x, _ in seen[p * per_pass : (p + 1) * per_pass]])
        # Each window of the split exactly once in the pass: x rows are the split cut in 16s.
        assert sorted(map(tuple, xs.tolist())) == sorted(
            map(tuple, data[: per_pass * 16].view(per_pass, 16).tolist())
        )
    first, second = (torch.cat([x for x, _ in seen[p * per_pass : (p + 1) * per_pass]])
                     for p in range(2))  # fmt: skip
    assert not torch.equal(first, second)  # each pass draws its own order
    x, y = seen[0]
    assert torch.equal(x[:, 1:], y[:, :-1])  # y is x shifted by one
    assert b.passes(per_pass) == 1.0


def test_epoch_order_depends_on_the_sequence_index_alone(char_data):
    # The same sequences whatever the split into micro-batches, and any step on its own:
    # what resume and torchrun need.
    two = _batches(char_data, "epoch", batch_size=4, n_micro=2)
    one = _batches(char_data, "epoch", batch_size=8, n_micro=1)
    for step in (0, 3, 50):
        together = one(step, 0)[0]
        assert torch.equal(torch.cat([two(step, 0)[0], two(step, 1)[0]]), together)
    fresh = _batches(char_data, "epoch", batch_size=8, n_micro=1)
    assert torch.equal(fresh(50, 0)[0], one(50, 0)[0])
    other_seed = _batches(char_data, "epoch", batch_size=8, n_micro=1, seed=8)
    assert not torch.equal(other_seed(0, 0)[0], one(0, 0)[0])


def test_random_order_is_nanogpts_random_windows(char_data):
    b = _batches(char_data, "random")
    x, y = b(5, 1)
    gen = train_generator(7, 5, 1)
    expect_x, expect_y = TokenDataset(char_data).batch("train", 4, 16, gen)
    assert torch.equal(x, expect_x) and torch.equal(y, expect_y)


def test_an_unknown_order_is_refused():
    from gptcli.errors import GptcliError

    with pytest.raises(GptcliError, match=r"data\.order: 'shuffled' is not a choice"):
        config_from_dict({"data": {"order": "shuffled"}})
