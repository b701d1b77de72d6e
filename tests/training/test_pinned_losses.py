"""Regression pin: the exact losses of two fixed-seed tiny runs.

First recorded before the package restructuring (issue 15), which reproduced them, as did the
switch to fused LayerNorm/RMSNorm kernels; re-recorded when prepare's split began rounding the
train split down like nanoGPT (the tiny corpus' splits moved by one token, so the batches
moved). A change meant to keep behaviour must reproduce them; a change meant to alter the
numbers updates them in the same commit and says why.
"""

import json

import pytest

from gptcli.training.loop import train

from ..conftest import tiny_config

BASELINE = [
    (0, None, 3.3931212425231934),
    (5, 3.182504177093506, None),
    (10, 2.9356720447540283, None),
    (15, 2.7956578731536865, None),
    (20, 2.6151766777038574, None),
    (20, None, 2.5885254740715027),
    (25, 2.5123167037963867, None),
    (30, 2.4302494525909424, None),
    (35, 2.4354348182678223, None),
    (40, 2.4359078407287598, None),
    (40, None, 2.3888697028160095),
]
# Dropout and the two other code paths (rotated q/k, a norm without bias) included.
ROPE_RMSNORM_DROPOUT = [
    (0, None, 3.40384840965271),
    (5, 3.171635150909424, None),
    (10, 2.9178872108459473, None),
    (15, 2.721898078918457, None),
    (20, 2.536975145339966, None),
    (20, None, 2.4610743522644043),
    (25, 2.4394516944885254, None),
    (30, 2.298537254333496, None),
    (35, 2.2869062423706055, None),
    (40, 2.3337812423706055, None),
    (40, None, 2.2323405742645264),
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
    records = [r for r in map(json.loads, lines) if "loss" in r or "val_loss" in r]
    got = [(r["step"], r.get("loss"), r.get("val_loss")) for r in records]
    assert [g[0] for g in got] == [e[0] for e in expected]
    for (step, loss, val), (_, want_loss, want_val) in zip(got, expected, strict=True):
        for value, want in ((loss, want_loss), (val, want_val)):
            assert (value is None) == (want is None), step
            if want is not None:
                assert value == pytest.approx(want, abs=1e-5), step
