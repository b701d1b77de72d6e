"""Scaling-law fits: does a finding made small hold as compute grows?

Per variant, loss against training FLOPs: L(C) = E + A * C^(-alpha), fitted as Chinchilla's third
approach does (Hoffmann et al., 2022): least squares on the log of the loss with a Huber loss
(delta 1e-3), from several starting points, the best kept (scipy.optimize.least_squares). C is
scaled by its geometric mean while fitting, so the problem is well conditioned whatever the
FLOP counts; A is reported in the original units. The 95% intervals come from a bootstrap over
the runs (resampled with replacement, each refitted from the full fit), and so do the interval
of a prediction and of the compute where two variants' curves cross.

IsoFLOP (Chinchilla's second approach): at each budget with at least three model sizes, a
parabola of loss in log N gives the loss-optimal size N_opt (and D_opt = C / (6 N_opt) tokens);
across budgets, log N_opt against log C is a line whose slope a (N_opt ~ C^a) comes with its
t-interval (scipy.stats.linregress).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import optimize, stats

from gptcli.errors import GptcliError

HUBER_DELTA = 1e-3  # on log-loss, as Chinchilla
BOOTSTRAP = 200
STARTS_ALPHA = (0.05, 0.15, 0.35, 0.7)
STARTS_E = (0.3, 0.6, 0.9)  # fractions of the smallest loss seen


@dataclass(frozen=True)
class Interval:
    value: float
    low: float
    high: float

    def record(self) -> dict[str, float | list[float]]:
        return {"value": self.value, "ci95": [self.low, self.high]}


@dataclass(frozen=True)
class PowerLaw:
    """L(C) = E + A * C^(-alpha) with a bootstrap of its parameters."""

    E: Interval
    A: Interval
    alpha: Interval
    points: int
    flops: tuple[float, float]  # the fitted range
    boot: np.ndarray  # (draws, 3): E, A, alpha of each bootstrap refit

    def loss(self, flops: float | np.ndarray) -> float | np.ndarray:
        return self.E.value + self.A.value * np.power(flops, -self.alpha.value)

    def predict(self, flops: float) -> Interval:
        draws = self.boot[:, 0] + self.boot[:, 1] * np.power(flops, -self.boot[:, 2])
        return _interval(float(self.loss(flops)), draws)

    def record(self) -> dict:
        return {"E": self.E.record(), "A": self.A.record(), "alpha": self.alpha.record(),
                "points": self.points, "flops_range": list(self.flops)}  # fmt: skip


def fit_power_law(flops, losses, boot: int = BOOTSTRAP, seed: int = 0) -> PowerLaw:
    """The fit of losses (one per run) against their training FLOPs, or a one-line refusal
    when it cannot be made: fewer points than parameters plus one, or no convergence."""
    C, L = np.asarray(flops, dtype=float), np.asarray(losses, dtype=float)
    if len(C) < 4 or len(np.unique(C)) < 3:
        raise GptcliError(f"a fit of E, A and alpha needs at least 4 runs at 3 or more compute "
                          f"budgets; got {len(C)} at {len(np.unique(C))}")  # fmt: skip
    if not (np.all(C > 0) and np.all(L > 0) and np.all(np.isfinite(L))):
        raise GptcliError("a fit needs positive FLOP counts and finite, positive losses")
    scale = float(np.exp(np.mean(np.log(C))))
    best = _best_fit(C / scale, L)
    if best is None:
        raise GptcliError("the fit of L = E + A C^-alpha did not converge from any start")
    rng = np.random.default_rng(seed)
    draws, refits = [], {}
    for _ in range(boot):
        pick = np.sort(rng.integers(0, len(C), len(C)))
        if len(np.unique(C[pick])) < 3:
            continue  # too few budgets in this resample to pin three parameters
        # A refit depends on which runs were drawn how often, not on their order: of 200
        # resamples of 5 runs about 60 differ, of 4 about 13, and each refit can take 0.1 s.
        key = pick.tobytes()
        if key not in refits:
            refits[key] = _solve(C[pick] / scale, L[pick], best)
        if refits[key] is not None:
            draws.append(refits[key])
    if len(draws) < boot // 2:
        raise GptcliError("the bootstrap refits of L = E + A C^-alpha did not converge")
    unscale = lambda p: np.stack([p[..., 0], p[..., 1] * scale ** p[..., 2], p[..., 2]], -1)  # noqa: E731
    full, boots = unscale(np.asarray(best)), unscale(np.asarray(draws))
    E, A, alpha = (_interval(float(full[i]), boots[:, i]) for i in range(3))
    return PowerLaw(E, A, alpha, len(C), (float(C.min()), float(C.max())), boots)


def _residuals(params, C, L):
    log_e, log_a, alpha = params
    return np.log(np.exp(log_e) + np.exp(log_a) * np.power(C, -alpha)) - np.log(L)


def _jacobian(params, C, L):
    log_e, log_a, alpha = params
    e, power = np.exp(log_e), np.exp(log_a) * np.power(C, -alpha)
    total = e + power
    return np.stack([e / total, power / total, -power * np.log(C) / total], axis=1)


def _solve(C, L, start) -> tuple[float, float, float] | None:
    """E, A, alpha (C scaled) from one start (E, A, alpha), or None where it fails."""
    E, A, alpha = start
    x0 = (math.log(E), math.log(A), alpha)
    try:
        res = optimize.least_squares(_residuals, x0, jac=_jacobian, args=(C, L), loss="huber",
                                     f_scale=HUBER_DELTA, bounds=([-20, -20, 0], [5, 5, 3]),
                                     max_nfev=2000)  # fmt: skip
    except (ValueError, FloatingPointError):
        return None
    if not res.success or not np.all(np.isfinite(res.x)):
        return None
    return float(np.exp(res.x[0])), float(np.exp(res.x[1])), float(res.x[2])


def _best_fit(C, L) -> tuple[float, float, float] | None:
    best, cost = None, math.inf
    for e in STARTS_E:
        for alpha in STARTS_ALPHA:
            E = e * L.min()
            A = max(float(np.median(L)) - E, 1e-6)  # C is scaled: C^-alpha ~ 1 mid-range
            found = _solve(C, L, (E, A, alpha))
            if found is not None:
                c = float(np.sum(_huber(_residuals((math.log(found[0]), math.log(found[1]),
                                                    found[2]), C, L))))  # fmt: skip
                if c < cost:
                    best, cost = found, c
    return best


def _huber(r: np.ndarray) -> np.ndarray:
    a = np.abs(r)
    return np.where(a <= HUBER_DELTA, 0.5 * r**2, HUBER_DELTA * (a - 0.5 * HUBER_DELTA))


def _interval(value: float, draws: np.ndarray) -> Interval:
    low, high = np.percentile(draws, [2.5, 97.5])
    return Interval(value, float(low), float(high))


def crossing(a: PowerLaw, b: PowerLaw) -> Interval | str:
    """The compute where a's and b's fitted curves cross within the range both were fitted
    on, with its bootstrap interval; or a sentence saying they do not cross there."""
    lo, hi = max(a.flops[0], b.flops[0]), min(a.flops[1], b.flops[1])
    if lo >= hi:
        return "the two were fitted on compute ranges that do not overlap"
    grid = np.geomspace(lo, hi, 400)

    def where(pa, pb) -> float | None:
        diff = (pa[0] + pa[1] * grid ** -pa[2]) - (pb[0] + pb[1] * grid ** -pb[2])
        flips = np.nonzero(np.diff(np.sign(diff)))[0]
        return float(grid[flips[0]]) if len(flips) else None

    point = where((a.E.value, a.A.value, a.alpha.value), (b.E.value, b.A.value, b.alpha.value))
    if point is None:
        better = "first" if a.loss(hi) < b.loss(hi) else "second"
        return (f"they do not cross between {lo:.3g} and {hi:.3g} FLOPs: the {better} is lower "
                "throughout")  # fmt: skip
    n = min(len(a.boot), len(b.boot))
    draws = [c for i in range(n) if (c := where(a.boot[i], b.boot[i])) is not None]
    if len(draws) < n // 2:
        return (f"the fitted curves cross at {point:.3g} FLOPs, but most bootstrap refits do "
                "not: no interval can be given")  # fmt: skip
    return _interval(point, np.asarray(draws))


@dataclass(frozen=True)
class IsoFlop:
    """Per budget the loss-optimal size; across budgets N_opt ~ C^a."""

    optima: list[dict[str, float]]  # budget, n_opt, d_opt, tokens_per_param, loss at n_opt
    a: Interval | None  # None with fewer than 3 budgets

    def record(self) -> dict:
        return {"optima": self.optima, "a": self.a.record() if self.a else None}


def valleys(budgets, params, losses) -> list[tuple[float, np.ndarray, np.ndarray, np.ndarray]]:
    """(budget, parabola coefficients in log N, sizes, losses) of each budget whose 3 or more
    sizes make a valley (a parabola opening upwards)."""
    B, N, L = (np.asarray(x, dtype=float) for x in (budgets, params, losses))
    found = []
    for budget in sorted(set(B.tolist())):
        at = budget == B
        if len(np.unique(N[at])) < 3:
            continue
        coeffs = np.polyfit(np.log(N[at]), L[at], 2)
        if coeffs[0] > 0:  # else no valley: the sizes do not bracket the optimum
            found.append((budget, coeffs, N[at], L[at]))
    return found


def isoflop(budgets, params, losses, tokens=None) -> IsoFlop | None:
    """Chinchilla's second approach over runs given as (budget, parameters, loss); None where
    no budget has three sizes. With each run's training tokens, D_opt is read off the line of
    log tokens against log parameters at that budget (exact for the count the runs used, which
    for small models is far from 6N: the head and attention weigh); without, C / 6 N_opt."""
    optima = []
    N, D = np.asarray(params, dtype=float), None if tokens is None else np.asarray(tokens, float)
    for budget, (c2, c1, _), sizes, _ in valleys(budgets, params, losses):
        n_opt = float(np.exp(-c1 / (2 * c2)))
        if D is None:
            d_opt = budget / (6 * n_opt)
        else:
            at = np.asarray(budgets, dtype=float) == budget
            slope, icpt = np.polyfit(np.log(N[at]), np.log(D[at]), 1)
            d_opt = float(np.exp(icpt + slope * np.log(n_opt)))
        optima.append({"budget": budget, "n_opt": n_opt, "d_opt": d_opt,
                       "tokens_per_param": d_opt / n_opt,
                       "inside": bool(sizes.min() <= n_opt <= sizes.max())})  # fmt: skip
    if not optima:
        return None
    a = None
    if len(optima) >= 3:
        x = np.log([o["budget"] for o in optima])
        y = np.log([o["n_opt"] for o in optima])
        line = stats.linregress(x, y)
        t = stats.t.ppf(0.975, len(optima) - 2)
        a = Interval(float(line.slope), float(line.slope - t * line.stderr),
                     float(line.slope + t * line.stderr))  # fmt: skip
    return IsoFlop(optima, a)


def held_out(flops, losses, boot: int = BOOTSTRAP) -> dict[str, float | bool]:
    """Fit every budget but the largest and predict the largest: the out-of-sample check."""
    C, L = np.asarray(flops, dtype=float), np.asarray(losses, dtype=float)
    top = C.max()
    law = fit_power_law(C[top > C], L[top > C], boot)
    guess = law.predict(top)
    measured = float(np.mean(L[top == C]))
    return {"flops": float(top), "predicted": guess.value, "ci95": [guess.low, guess.high],
            "measured": measured, "error": guess.value - measured,
            "inside": bool(guess.low <= measured <= guess.high)}  # fmt: skip
