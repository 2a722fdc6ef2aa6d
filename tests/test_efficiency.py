"""Effective samples per second: known autocorrelation times recovered, intervals that cover them."""

import numpy as np
import pytest

from openmm_forecast.efficiency import (
    compare,
    efficiency,
    kish_ess,
    statistical_inefficiency,
    weighted_inefficiency,
    winner,
)


def ar1(rng, a, n_walkers, n_samples):
    """AR(1) series x_t = a x_{t-1} + noise, started in equilibrium: tau = (1 + a) / (1 - a) exactly."""
    x = np.empty((n_walkers, n_samples))
    x[:, 0] = rng.normal(size=n_walkers) / np.sqrt(1 - a * a)
    noise = rng.normal(size=(n_walkers, n_samples))
    for t in range(1, n_samples):
        x[:, t] = a * x[:, t - 1] + noise[:, t]
    return x


def two_state(rng, switch, n_walkers, n_samples):
    """Indicator of a symmetric two-state Markov chain switching with probability ``switch`` per sample:
    autocorrelation (1 - 2 switch)^k, tau = (1 - switch) / switch; started in equilibrium."""
    flips = rng.random((n_walkers, n_samples)) < switch
    flips[:, 0] = rng.random(n_walkers) < 0.5
    return (np.cumsum(flips, axis=1) % 2).astype(float)


@pytest.mark.parametrize("a", [0.5, 0.9])
def test_ar1_autocorrelation_time_is_recovered_and_the_interval_covers_the_true_ess(rng, a):
    tau = (1 + a) / (1 - a)
    series = ar1(rng, a, n_walkers=16, n_samples=20_000)
    # 320,000 samples: the estimate's standard error is ~2 % at a = 0.9 (sum stopped at the first negative lag)
    assert statistical_inefficiency(series) == pytest.approx(tau, rel=0.06)
    result = efficiency(series, seconds=10.0)
    true_ess_per_second = 16 * 20_000 / tau / 10.0
    low, high = result.interval
    assert low <= true_ess_per_second <= high
    assert result.ess_per_second == pytest.approx(true_ess_per_second, rel=0.05)


def test_the_interval_of_a_basin_indicator_covers_its_known_ess_95_percent_of_the_time(rng):
    """20 independent runs of 8 walkers of a two-state chain: a 95 % interval covers the true ESS in >= 15 of
    them unless it is wrong (binomial(20, 0.95) falls below 15 with probability 3e-4)."""
    switch = 0.02  # tau = 49 samples
    true = 8 * 10_000 * switch / (1 - switch)
    covered, highs = 0, []
    for _ in range(20):
        result = efficiency(two_state(rng, switch, n_walkers=8, n_samples=10_000), seconds=1.0, observable="state 1")
        low, high = result.interval
        covered += low <= true <= high
        highs.append(high)
        assert result.mean == pytest.approx(0.5, abs=0.15)
    assert covered >= 15
    # the control: every interval excludes what uncorrelated samples of the same length would give
    assert max(highs) < 8 * 10_000 / 10


def test_walkers_stuck_in_their_basins_are_a_few_samples_not_hundreds(rng):
    """Four walkers of 600 samples: two stay in the basin, one never enters, one leaves once with a brief return.
    Centred on the pooled mean, each is one long correlated stretch: a handful of effective samples.  The
    control: the same frames shuffled in time are nearly independent."""
    series = np.zeros((4, 600))
    series[0] = series[1] = 1.0
    series[3, :300] = 1.0
    series[3, 400:403] = 1.0
    stuck = efficiency(series, seconds=1.0)
    assert stuck.ess < 12
    shuffled = efficiency(rng.permuted(series.reshape(-1)).reshape(4, 600), seconds=1.0)
    assert shuffled.ess > 1000
    constant = efficiency(np.ones((3, 50)), seconds=1.0)
    assert constant.ess == 3.0 and constant.interval is None  # nothing ever changes: one sample per walker
    # ... and nothing is declared about arms whose observable never changed (a basin none of them visited)
    assert winner({"a": constant, "b": efficiency(np.zeros((3, 50)), seconds=2.0)}) is None


def test_at_the_floor_of_g_the_interval_comes_from_the_walkers_means(rng):
    """An ANI-1x benchmark's HMR arm (8 walkers of 40 samples, three isolated frames outside beta in three
    walkers): g sat at its floor 1 for every leave-one-out subset, and the jackknife gave [0.665, 0.665].  At g's
    floor the interval is batch means across walkers instead: two-sided, and never above all the samples.
    Controls: genuinely independent samples (g at its floor about half the time) are covered at the stated rate,
    and such an arm still wins outside the intervals against a slow one (the old rule, (0, N], let it win half
    the time)."""
    blips = np.ones((8, 40))
    blips[0, 10] = blips[3, 30] = blips[5, 5] = 0.0
    floor = efficiency(blips, seconds=10.0)
    assert floor.inefficiency == 1.0 and floor.at_bound
    assert max(floor.jackknife_ess) == min(floor.jackknife_ess)  # the jackknife alone has no spread here
    low, high = floor.interval
    assert 0.0 < low < high <= floor.ess_per_second
    covered, wins, at_floor = 0, 0, 0
    slow = efficiency(two_state(rng, 0.01, n_walkers=8, n_samples=300), seconds=1.0)
    for _ in range(40):
        independent = efficiency((rng.random((8, 300)) < 0.3).astype(float), seconds=1.0)
        at_floor += independent.at_bound
        low, high = independent.interval
        covered += low <= 8 * 300 <= high + 1e-9  # the true ESS: every sample
        wins += winner({"independent": independent, "slow": slow}) == "independent"
    assert at_floor >= 5  # the floor path was exercised
    assert covered >= 32  # binomial(40, 0.95) falls below 32 with probability ~1e-4
    assert wins == 40, wins


def test_a_winner_only_outside_the_intervals(rng):
    fast = efficiency(ar1(rng, 0.5, 8, 5_000), seconds=1.0, observable="x")
    slow = efficiency(ar1(rng, 0.95, 8, 5_000), seconds=1.0, observable="x")
    assert compare(fast, slow)["distinct"] and compare(fast, slow)["ratio"] > 5
    assert winner({"fast": fast, "slow": slow}) == "fast"
    twin = efficiency(ar1(rng, 0.5, 8, 5_000), seconds=1.0, observable="x")
    assert not compare(fast, twin)["distinct"]
    assert winner({"fast": fast, "twin": twin, "slow": slow}) is None


def test_bad_shapes_and_times_are_refused():
    with pytest.raises(ValueError, match="n_walkers"):
        efficiency(np.zeros(10), seconds=1.0)
    with pytest.raises(ValueError, match="seconds"):
        efficiency(np.zeros((2, 10)), seconds=0.0)


def test_equal_weights_change_nothing(rng):
    series = two_state(rng, 0.05, n_walkers=4, n_samples=3_000)
    plain = efficiency(series, seconds=1.0)
    weighted = efficiency(series, seconds=1.0, weights=np.full(series.shape, 3.7))
    assert weighted.weighted and not plain.weighted
    assert weighted.mean == pytest.approx(plain.mean, rel=1e-12)
    assert weighted.ess == pytest.approx(plain.ess, rel=1e-9)
    assert weighted.jackknife_ess == pytest.approx(plain.jackknife_ess, rel=1e-9)


def test_independent_weights_and_samples_give_kish(rng):
    """Uncorrelated indicator, weights independent of it: the weighted ESS is Kish's ESS.  400,000 samples: the
    ratio's sampling error is ~1 %; 5 % allows for pymbar's g of white noise (1 plus noise, cut at its first
    non-positive lag)."""
    x = (rng.random((8, 50_000)) < 0.3).astype(float)
    w = rng.exponential(size=x.shape)
    assert kish_ess(w) == pytest.approx(x.size / 2.0, rel=0.02)  # mean(w^2) = 2 for an exponential
    assert x.size / weighted_inefficiency(x, w) == pytest.approx(kish_ess(w), rel=0.05)
    assert kish_ess(np.ones(10)) == 10.0
    with pytest.raises(ValueError, match="non-negative"):
        kish_ess([1.0, -1.0])


def test_weighted_ess_predicts_the_spread_of_a_reweighted_biased_chain(rng):
    """A two-state chain sampled at 50/50 (the biased ensemble), reweighted to a 5 % rare state, correlated over
    ~19 samples: across 300 independent runs the variance of the reweighted estimate is p (1 - p) / ESS.  300 runs
    estimate a variance within ~8 % (1 sigma); 25 % also allows for the bias of g over 2,000 samples.  The controls,
    each outside that tolerance: Kish's ESS (blind to autocorrelation and to the weights' correlation with the
    state) and the unweighted ``N / g`` of the indicator (blind to the weights)."""
    switch, rare = 0.05, 0.05
    estimates, predicted, kish_predicted, unweighted_predicted = [], [], [], []
    for _ in range(300):
        x = two_state(rng, switch, n_walkers=4, n_samples=2_000)
        w = np.where(x == 1.0, rare / 0.5, (1 - rare) / 0.5)
        estimates.append(np.sum(w * x) / np.sum(w))
        predicted.append(rare * (1 - rare) / (x.size / weighted_inefficiency(x, w)))
        kish_predicted.append(rare * (1 - rare) / kish_ess(w))
        unweighted_predicted.append(rare * (1 - rare) * statistical_inefficiency(x) / x.size)
    assert np.mean(estimates) == pytest.approx(rare, rel=0.05)
    assert np.var(estimates) == pytest.approx(np.mean(predicted), rel=0.25)
    for control in (kish_predicted, unweighted_predicted):
        assert np.var(estimates) != pytest.approx(np.mean(control), rel=0.5)
