"""Regression pin: the exact losses of two fixed-seed tiny runs.

The values were recorded from the code before the package restructuring (issue 15); a change
that is meant to keep behaviour (moving code, splitting functions) must reproduce them. A change
that is meant to alter the numbers (a new default, another kernel) updates them in the same
commit and says why.
"""

import json

import pytest

from gptcli.training.loop import train

from ..conftest import tiny_config

BASELINE = [
    (0, None, 3.398113489151001),
    (5, 3.1686999797821045, None),
    (10, 2.9662652015686035, None),
    (15, 2.7618119716644287, None),
    (20, 2.6416802406311035, None),
    (20, None, 2.5917198061943054),
    (25, 2.5386645793914795, None),
    (30, 2.436249256134033, None),
    (35, 2.428901195526123, None),
    (40, 2.355461359024048, None),
    (40, None, 2.356564939022064),
]
# Dropout and the two other code paths (rotated q/k, a norm without bias) included.
ROPE_RMSNORM_DROPOUT = [
    (0, None, 3.4124284386634827),
    (5, 3.160250663757324, None),
    (10, 2.9371414184570312, None),
    (15, 2.6995487213134766, None),
    (20, 2.557126522064209, None),
    (20, None, 2.4857450127601624),
    (25, 2.466657876968384, None),
    (30, 2.3663225173950195, None),
    (35, 2.3108479976654053, None),
    (40, 2.2508809566497803, None),
    (40, None, 2.248422920703888),
]


@pytest.mark.parametrize(
    ("model", "expected"),
    [
        ({}, BASELINE),
        ({"position": "rope", "norm": "rmsnorm", "dropout": 0.1}, ROPE_RMSNORM_DROPOUT),
    ],
    ids=["learned-layernorm", "rope-rmsnorm-dropout"],
)
def test_fixed_seed_run_logs_the_pinned_losses(tmp_path, char_data, model, expected):
    train(tiny_config(char_data, tmp_path / "run", model=model))
    lines = (tmp_path / "run" / "metrics.jsonl").read_text(encoding="utf-8").splitlines()
    got = [(r["step"], r.get("loss"), r.get("val_loss")) for r in map(json.loads, lines)]
    assert [g[0] for g in got] == [e[0] for e in expected]
    for (step, loss, val), (_, want_loss, want_val) in zip(got, expected, strict=True):
        for value, want in ((loss, want_loss), (val, want_val)):
            assert (value is None) == (want is None), step
            if want is not None:
                assert value == pytest.approx(want, abs=1e-5), step
