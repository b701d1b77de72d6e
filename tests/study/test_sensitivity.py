import pytest

from gptcli.errors import GptcliError
from gptcli.study.compare import Row
from gptcli.study.sensitivity import against, findings, plot_against


def _row(loss, **overrides):
    return Row(",".join(f"{k}={v}" for k, v in overrides.items()), overrides, [], loss, [])


def test_each_line_gets_its_values_in_order_and_its_best(tmp_path):
    rows = [_row([3.0, 3.2], size="w64", **{"train.lr": 1e-3}),
            _row([2.9], size="w64", **{"train.lr": 4e-3}),
            _row([3.5], size="w64", **{"train.lr": 2e-3}),
            _row([2.0], size="w128", **{"train.lr": 1e-3, "model.n_embd": 128}),
            _row([2.5], size="w128", **{"train.lr": 2e-3, "model.n_embd": 128}),
            _row([2.8], size="w128", **{"train.lr": 4e-3, "model.n_embd": 128})]  # fmt: skip
    result = against(rows, "train.lr")
    w64, w128 = result["lines"]
    assert w64["name"] == "size=w64" and w128["name"] == "size=w128"  # the size names its shape
    assert [p[0] for p in w64["points"]] == [1e-3, 2e-3, 4e-3]
    assert w64["points"][0][1:] == [pytest.approx(3.1), pytest.approx(0.1414, abs=1e-4)]
    assert (w64["best"], w64["best_index"], w128["best"]) == (4e-3, 2, 1e-3)
    assert findings(result) == ["size=w64: best train.lr = 0.004 (at the edge of the values tried)",
                                "size=w128: best train.lr = 0.001 (at the edge of the values "
                                "tried)"]  # fmt: skip
    out = plot_against(result, tmp_path / "lr.png")
    assert out.read_bytes()[:4] == b"\x89PNG"


def test_a_key_that_does_not_vary_or_is_not_a_number_is_one_line():
    rows = [_row([3.0], **{"model.position": "rope"}), _row([3.1], **{"model.position": "alibi"})]
    with pytest.raises(GptcliError, match=r"--against train.lr: the runs do not vary it; they "
                                          r"vary model.position"):  # fmt: skip
        against(rows, "train.lr")
    with pytest.raises(GptcliError, match="'rope', not a number"):
        against(rows, "model.position")


def test_compare_against_from_the_cli(tmp_path, monkeypatch):
    import json

    from typer.testing import CliRunner

    from gptcli.cli import app
    from gptcli.study import compare

    rows = [_row([2.0], **{"train.lr": 1e-3}), _row([1.9], **{"train.lr": 2e-3}),
            _row([2.2], **{"train.lr": 4e-3})]  # fmt: skip
    monkeypatch.setattr(compare, "compare", lambda paths, metric, baseline: rows)
    runner = CliRunner()
    done = runner.invoke(app, ["compare", str(tmp_path), "--against", "train.lr", "--format",
                               "json"])  # fmt: skip
    assert done.exit_code == 0, done.output
    assert json.loads(done.output)["lines"][0]["best"] == 2e-3
    table = runner.invoke(app, ["compare", str(tmp_path), "--against", "train.lr", "--plot",
                                str(tmp_path / "lr.png")])  # fmt: skip
    assert "*1.9000" in table.output and "best train.lr = 0.002" in table.output
    assert (tmp_path / "lr.png").read_bytes()[:4] == b"\x89PNG"
    bad = runner.invoke(app, ["compare", str(tmp_path), "--against", "model.n_layer"])
    assert bad.exit_code == 2 and "do not vary it" in bad.output
