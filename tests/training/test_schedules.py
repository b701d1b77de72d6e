import signal

import pytest
import torch

from gptcli import checkpoint
from gptcli.config import TrainConfig, config_from_dict
from gptcli.errors import GptcliError
from gptcli.training import loop as train_module
from gptcli.training.loop import train
from gptcli.training.schedules import check_schedule, cooldown_steps, lr_at

from ..conftest import tiny_config


def _lrs(**keys):
    tc = TrainConfig(lr=1.0, min_lr=0.1, warmup_iters=10, max_iters=110, **keys)
    return [lr_at(s, tc) for s in range(120)]


def test_each_schedule_after_the_same_warmup():
    cosine, linear, constant = (_lrs(schedule=s) for s in ("cosine", "linear", "constant"))
    assert cosine[:10] == linear[:10] == constant[:10] and cosine[9] < 1.0
    assert linear[60] == pytest.approx(0.55) and cosine[60] == pytest.approx(0.55)
    assert linear[35] == pytest.approx(0.775) and cosine[35] > linear[35]  # cosine stays high
    assert linear[110] == linear[119] == pytest.approx(0.1)
    assert set(constant[10:]) == {1.0}
    # The horizon is lr_decay_iters for the decaying ones.
    assert _lrs(schedule="linear", lr_decay_iters=60)[60] == pytest.approx(0.1)


@pytest.mark.parametrize(("cooldown", "steps"), [(0.2, 22), (30, 30)])
def test_wsd_is_flat_until_its_cooldown_then_straight_to_min_lr(cooldown, steps):
    tc = TrainConfig(lr=1.0, min_lr=0.1, warmup_iters=10, max_iters=110, schedule="wsd",
                     cooldown=cooldown)  # fmt: skip
    assert cooldown_steps(tc) == steps
    lrs = [lr_at(s, tc) for s in range(110)]
    start = 110 - steps
    assert set(lrs[10:start]) == {1.0}
    assert all(a > b for a, b in zip(lrs[start - 1 :], lrs[start:], strict=False))
    assert lrs[109] == pytest.approx(0.1)  # the last step runs at min_lr
    # The stable part does not depend on the length: a longer run has the same start.
    longer = TrainConfig(**{**tc.__dict__, "max_iters": 400})
    assert [lr_at(s, longer) for s in range(start)] == lrs[:start]


def test_bad_schedules_are_one_line_naming_the_key():
    with pytest.raises(GptcliError, match=r"train\.schedule: 'cosin' is not a choice"):
        config_from_dict({"train": {"schedule": "cosin"}})
    for bad in (0, 1.5, -2):
        with pytest.raises(GptcliError, match=r"train\.cooldown: .*a fraction"):
            config_from_dict({"train": {"cooldown": bad}})
    tc = TrainConfig(max_iters=100, warmup_iters=20, schedule="wsd", cooldown=90)
    with pytest.raises(GptcliError, match=r"train\.cooldown: a decay of 90 steps does not fit"):
        check_schedule(tc)
    check_schedule(TrainConfig(max_iters=100, warmup_iters=20, schedule="cosine", cooldown=90))


def test_a_wsd_run_resumed_longer_before_its_decay_is_the_longer_run(tmp_path, char_data,
                                                                     monkeypatch):  # fmt: skip
    # A 30-step wsd run (decay from step 20) stopped at step 12 and resumed with max_iters 40 ends
    # where a 40-step run does, bit for bit.
    def cfg(out, max_iters):
        keys = {"max_iters": max_iters, "schedule": "wsd", "cooldown": 10, "eval_interval": 100}
        return tiny_config(char_data, tmp_path / out, train=keys)

    train(cfg("full", 40))
    real_lr_at = train_module.lr_at

    def stop_at_12(step, tc):
        if step == 11:
            signal.raise_signal(signal.SIGTERM)  # the loop's handler: stop after this step
        return real_lr_at(step, tc)

    monkeypatch.setattr(train_module, "lr_at", stop_at_12)
    assert train(cfg("cut", 30)).step == 12
    monkeypatch.setattr(train_module, "lr_at", real_lr_at)
    assert train(cfg("cut", 40), resume=True).steps == 28
    a = checkpoint.load(tmp_path / "full", "latest").model_state()
    b = checkpoint.load(tmp_path / "cut", "latest").model_state()
    assert all(torch.equal(a[k], b[k]) for k in a)
