"""Scaling-law fits on data drawn from known laws: the parameters, predictions, crossings and
IsoFLOP optima are recovered within their intervals, and the intervals cover the truth as often
as they say."""

import numpy as np
import pytest

from gptcli.errors import GptcliError
from gptcli.study.fits import Interval, crossing, fit_power_law, held_out, isoflop

E, A, ALPHA = 1.7, 400.0, 0.3
BUDGETS = np.repeat(np.geomspace(1e11, 1e14, 8), 2)  # 8 budgets over 1000x, 2 seeds each


def draw(rng, noise=0.003, e=E, a=A, alpha=ALPHA, flops=BUDGETS):
    return (e + a * flops**-alpha) * np.exp(rng.normal(0, noise, len(flops)))


def covers(interval: Interval, truth: float) -> bool:
    return interval.low <= truth <= interval.high


def test_a_planted_law_is_recovered():
    # One draw: the estimates near the truth, each inside an interval of some width (how often
    # the intervals hold the truth is the next test's question).
    law = fit_power_law(BUDGETS, draw(np.random.default_rng(0)))
    assert abs(law.alpha.value - ALPHA) < 0.05 and abs(law.E.value - E) < 0.05
    assert abs(np.log(law.A.value / A)) < 1.0
    for p in (law.E, law.A, law.alpha):
        assert p.low < p.value < p.high
    assert law.points == 16 and law.flops == (1e11, 1e14)
    # A prediction past the fitted range lands near the true loss.
    at = 1e15
    assert law.predict(at).value == pytest.approx(E + A * at**-ALPHA, rel=0.01)
    assert law.record()["alpha"]["ci95"] == [law.alpha.low, law.alpha.high]


@pytest.mark.slow
def test_the_95_percent_intervals_cover_the_truth_in_88_of_100_draws():
    # 100 draws, not more, for make test's time. A calibrated 95% interval misses 88 with
    # probability ~0.001 (3.2 sd below 95); one that covers 80% passes with ~0.02.
    rng = np.random.default_rng(1)
    hits = np.zeros(3)
    for i in range(100):
        law = fit_power_law(BUDGETS, draw(rng), boot=100, seed=i)
        hits += [covers(law.E, E), covers(law.A, A), covers(law.alpha, ALPHA)]
    assert np.all(hits >= 88), hits


def test_too_few_points_or_budgets_are_refused():
    with pytest.raises(GptcliError, match="at least 4 runs at 3 or more compute budgets; got 3"):
        fit_power_law([1e12, 2e12, 4e12], [3.0, 2.9, 2.8])
    with pytest.raises(GptcliError, match="got 6 at 2"):
        fit_power_law([1e12] * 3 + [2e12] * 3, [3.0] * 6)
    with pytest.raises(GptcliError, match="positive FLOP counts and finite, positive losses"):
        fit_power_law([1e12, 2e12, 4e12, 8e12], [3.0, 2.9, float("nan"), 2.7])


def test_two_curves_cross_where_the_planted_laws_do():
    rng = np.random.default_rng(2)
    # b starts worse (larger A) but falls faster (larger alpha): they cross at C* where
    # A_a C^-0.3 = A_b C^-0.4, i.e. C* = (A_b / A_a)^(1 / 0.1).
    a = fit_power_law(BUDGETS, draw(rng, a=400.0, alpha=0.3))
    b = fit_power_law(BUDGETS, draw(rng, a=400.0 * 10**0.15 * 1e12**0.1, alpha=0.4))
    truth = (1e12**0.1 * 10**0.15) ** 10
    found = crossing(a, b)
    assert isinstance(found, Interval) and covers(found, truth), (found, truth)
    apart = fit_power_law(BUDGETS, draw(rng, e=2.0))
    said = crossing(a, apart)
    assert isinstance(said, str) and "do not cross" in said and "the first is lower" in said


def test_the_held_out_budget_is_predicted_within_its_interval():
    result = held_out(BUDGETS, draw(np.random.default_rng(3)))
    assert result["flops"] == 1e14 and result["inside"]
    assert abs(result["error"]) < 0.02 and result["ci95"][0] < result["predicted"]


def test_isoflop_finds_the_planted_optimum_and_its_exponent(tmp_path):
    # Chinchilla's form L(N, D) = E + A/N^a + B/D^b with D = C / 6N: the optimum is
    # N_opt = G (C/6)^(b/(a+b)), G = (a A / (b B))^(1/(a+b)).
    e, a_n, b_d, alpha, beta = 1.69, 406.4, 410.7, 0.34, 0.28
    rng = np.random.default_rng(4)
    budgets, sizes, losses = [], [], []
    for c in np.geomspace(1e15, 1e18, 4):
        g = (alpha * a_n / (beta * b_d)) ** (1 / (alpha + beta))
        n_star = g * (c / 6) ** (beta / (alpha + beta))
        for n in n_star * np.geomspace(0.25, 4, 7):
            d = c / (6 * n)
            budgets.append(c)
            sizes.append(n)
            losses.append((e + a_n / n**alpha + b_d / d**beta) * np.exp(rng.normal(0, 1e-4)))
    iso = isoflop(budgets, sizes, losses)
    exponent = beta / (alpha + beta)
    assert covers(iso.a, exponent) and abs(iso.a.value - exponent) < 0.02
    assert all(o["inside"] for o in iso.optima) and len(iso.optima) == 4
    first = iso.optima[0]
    assert first["tokens_per_param"] == pytest.approx(first["d_opt"] / first["n_opt"])
    assert isoflop([1e15, 1e15], [1e6, 2e6], [3.0, 2.9]) is None  # no budget with 3 sizes
    # ... and its picture: the valleys and their optima; none without a valley.
    import matplotlib.image

    from gptcli.study.scaling import Fits, plot_isoflop

    points = {"gpt2": list(zip([0] * len(losses), losses, budgets, sizes, strict=True))}
    out = plot_isoflop(Fits({"metric": "val_loss"}, {}, points), tmp_path / "iso.png")
    assert matplotlib.image.imread(out).shape[:2] == (500, 800)
    flat = {"gpt2": [(0, 3.0, 1e15, 1e6, "r"), (0, 2.9, 1e15, 2e6, "r")]}
    assert plot_isoflop(Fits({"metric": "val_loss"}, {}, flat), tmp_path / "none.png") is None
    assert not (tmp_path / "none.png").exists()


def test_the_fit_plot_draws_each_variant_s_points_curve_and_band(tmp_path):
    import matplotlib.image

    from gptcli.study.scaling import Fits, plot_fits

    rng = np.random.default_rng(5)
    losses = {"gpt2": draw(rng), "modern": draw(rng, a=300.0)}
    laws = {name: fit_power_law(BUDGETS, ls, boot=50) for name, ls in losses.items()}
    points = {name: [(c, v, c, 1, "run") for c, v in zip(BUDGETS, ls, strict=True)]
              for name, ls in losses.items()}  # fmt: skip
    out = plot_fits(Fits({"metric": "val_loss"}, laws, points), tmp_path / "fit.png")
    image = matplotlib.image.imread(out)
    assert image.shape[:2] == (500, 800)
    # Two colours of points and bands on a white page: more than one colour is drawn.
    assert len(np.unique(image.reshape(-1, image.shape[-1])[:, :3], axis=0)) > 50


def test_isoflop_reads_d_opt_off_the_runs_own_tokens():
    # Runs whose cost per token is not 6N (here 8N, as a head and attention make it for small
    # models): D_opt follows the tokens they trained on, not C / 6 N_opt.
    rng = np.random.default_rng(6)
    budgets, sizes, losses, tokens = [], [], [], []
    for c in (1e15, 1e16, 1e17):
        for n in np.geomspace(1e6, 1e8, 7):
            budgets.append(c)
            sizes.append(n)
            tokens.append(c / (8 * n))
            losses.append(1.7 + 400 / n**0.34 + 410 / (c / (8 * n)) ** 0.28 + rng.normal(0, 1e-5))
    six = isoflop(budgets, sizes, losses)
    eight = isoflop(budgets, sizes, losses, tokens)
    for o6, o8 in zip(six.optima, eight.optima, strict=True):
        assert o8["n_opt"] == o6["n_opt"]
        assert o8["d_opt"] == pytest.approx(o8["budget"] / (8 * o8["n_opt"]), rel=1e-9)
        assert o6["d_opt"] == pytest.approx(o6["budget"] / (6 * o6["n_opt"]))


def test_the_law_is_fitted_to_each_budgets_best_size():
    from gptcli.study.scaling import frontier

    # (FLOPs, loss, budget, parameters, run, tokens): at budget 1e12 the 2e5 size is best on
    # the mean of its two seeds though a 1e5 run has the lowest single loss.
    pts = [(1e12, 3.00, 1e12, 1e5, "a", 1), (1e12, 3.30, 1e12, 1e5, "b", 1),
           (1e12, 3.05, 1e12, 2e5, "c", 1), (1e12, 3.10, 1e12, 2e5, "d", 1),
           (1e12, 3.40, 1e12, 4e5, "e", 1), (3e12, 2.90, 3e12, 4e5, "f", 1),
           (5e12, 2.80, None, 4e5, "g", 1), (6e12, 2.70, None, 4e5, "h", 1)]  # fmt: skip
    assert sorted(p[4] for p in frontier(pts)) == ["c", "d", "f", "g", "h"]
    # At 1e12 the best size is the middle of three: no edge. Made the smallest, it is one.
    from gptcli.study.scaling import edges

    assert edges(pts, frontier(pts)) == []
    low = [(*p[:1], p[1] - 1 if p[4] == "a" else p[1], *p[2:]) for p in pts]
    assert edges(low, frontier(low)) == [1e12]
