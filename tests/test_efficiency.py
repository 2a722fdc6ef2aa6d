"""Effective samples per second: known autocorrelation times recovered, intervals that cover them."""

import numpy as np
import pytest

from openmm_forecast.efficiency import compare, efficiency, statistical_inefficiency, winner


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
