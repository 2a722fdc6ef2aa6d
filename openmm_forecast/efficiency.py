"""Sampling efficiency: effective samples per second of slow observables, with intervals.

How fast a sampler converges an average is its *effective sample size* (ESS) per second: ``N`` samples whose
statistical inefficiency is ``g`` (``g = 1 + 2 tau``-like: the integrated autocorrelation time in samples,
counted both ways) carry ``N / g`` independent ones.  Simulated nanoseconds per day do not measure it (a
Metropolis chain's rejected jumps reverse momenta and count as simulated time), and a time to a JS bar reads
one noisy curve at one point.

Estimator.  ``g`` of an observable (here: the indicator of a basin, the slowest thing a conformational
sampler must get right) sampled by several independent walkers is pymbar's
``timeseries.statistical_inefficiency_multiple`` (Chodera et al. 2007), a maintained estimator that
centres every walker on the POOLED mean and variance: a walker that sits in one basin for its whole run
is strongly correlated with itself, not a white-noise series (an estimator that centres each walker on its
own mean, such as emcee's per-walker ``integrated_time``, counts a walker with one brief excursion as
hundreds of independent samples).  The arm's ESS is ``N / g``; its ESS per second divides by the arm's
wall-clock (or CPU) seconds, all walkers together.  The interval is a leave-one-walker-out jackknife of
the ESS per second, Student-t with ``n_walkers - 1`` degrees of freedom (95 % by default): it carries the
walker-to-walker spread of the dynamics and of the estimator.  Runs much shorter than the slowest
process give ``g`` biased low (pymbar warns of this too); compare arms at equal budgets, and read the
intervals.

Units: seconds; ``g`` in samples.
"""

import dataclasses
import logging

import numpy as np

DEFAULT_CONFIDENCE = 0.95
"""Coverage of the intervals."""


def statistical_inefficiency(series):
    """Statistical inefficiency ``g`` (samples) of an observable sampled by independent walkers.

    Parameters
    ----------
    series : array_like, shape (n_walkers, n_samples)

    Returns
    -------
    float
        pymbar's ``statistical_inefficiency_multiple`` (pooled mean and variance, correlation summed up to its
        first non-positive lag), >= 1; ``n_samples`` when the observable never changes in any walker (each walker
        then counts as one sample).
    """
    x = np.asarray(series, dtype=float)
    if x.ndim != 2 or x.shape[1] < 2:
        raise ValueError(f"series needs shape (n_walkers, n_samples >= 2), got {x.shape}")
    if np.ptp(x) == 0:
        return float(x.shape[1])
    for name in ("pymbar", "numexpr"):  # import-time notices (JAX missing, long timescales, numexpr's threads)
        logging.getLogger(name).setLevel(logging.WARNING if name == "numexpr" else logging.ERROR)
    from pymbar.timeseries import statistical_inefficiency_multiple

    return float(min(statistical_inefficiency_multiple(x), x.shape[1]))


def kish_ess(weights):
    """Kish's effective sample size of weights: ``(sum w)^2 / sum w^2`` (samples; ``len(w)`` for equal weights)."""
    w = np.asarray(weights, dtype=float).reshape(-1)
    if w.size == 0 or np.any(w < 0) or not np.all(np.isfinite(w)) or w.sum() <= 0:
        raise ValueError("weights must be finite, non-negative and not all zero")
    return float(w.sum() ** 2 / np.sum(w * w))


def weighted_inefficiency(series, weights):
    """Samples per effective sample of the weighted average of an indicator sampled by independent walkers.

    Parameters
    ----------
    series : array_like, shape (n_walkers, n_samples)
        The indicator (0 or 1; any observable with values in [0, 1] works, its variance bound ``p (1 - p)``
        then being the scale).
    weights : array_like, shape (n_walkers, n_samples)
        Non-negative weights of the samples (any overall scale).

    Returns
    -------
    float
        ``p (1 - p) / (g_z Var(z))`` inverted: ``g_z Var(z) / (p (1 - p))`` with ``z = w (x - p) / mean(w)``, ``p``
        the weighted mean and ``g_z`` :func:`statistical_inefficiency` of ``z`` (see the module docstring);
        ``n_samples`` when the observable never changes (one sample per walker, as unweighted).
    """
    x = np.asarray(series, dtype=float)
    w = np.asarray(weights, dtype=float)
    if w.shape != x.shape:
        raise ValueError(f"weights have shape {w.shape}, the series {x.shape}")
    kish_ess(w)  # validation
    if x.ndim != 2 or x.shape[1] < 2:
        raise ValueError(f"series needs shape (n_walkers, n_samples >= 2), got {x.shape}")
    w = w / w.mean()
    p = float(np.sum(w * x) / np.sum(w))
    if np.ptp(x) == 0 or p * (1.0 - p) <= 0:
        return float(x.shape[1])
    z = w * (x - p)
    return statistical_inefficiency(z) * float(np.mean(z * z)) / (p * (1.0 - p))


def _t_quantile(confidence, dof):
    """Two-sided Student-t quantile (scipy comes with mdtraj)."""
    from scipy.stats import t

    return float(t.ppf(0.5 + confidence / 2.0, dof))


@dataclasses.dataclass
class Efficiency:
    """Effective samples of one observable in one arm, per second, with a jackknife interval across walkers.

    Attributes
    ----------
    observable : str
    mean : float
        The observable's average over all walkers and samples (a basin's population).
    samples : int
        All samples of all walkers.
    inefficiency : float
        ``g`` of all walkers together, samples (:func:`statistical_inefficiency`).
    jackknife_ess : list of float
        ESS with each walker left out in turn, scaled up to all walkers (``n / (n - 1)``).
    seconds : float
        The arm's wall-clock (or CPU) seconds the ESS is divided by.
    confidence : float
    varied : bool
        False when the observable never changed in any walker (a basin never visited, or never left): then the
        ESS is one sample per walker by convention and there is no interval (nothing was measured).
    weighted : bool
        True when the samples carried weights (:func:`weighted_inefficiency`); :attr:`mean` is then the weighted
        mean and :attr:`inefficiency` includes the weights' cost.
    walker_means : list of float or None
        The observable's mean in each walker (unweighted arms): the batch-means interval of :attr:`interval` when
        ``g`` sits at its floor.
    """

    observable: str
    mean: float
    samples: int
    inefficiency: float
    jackknife_ess: list
    seconds: float
    confidence: float = DEFAULT_CONFIDENCE
    varied: bool = True
    weighted: bool = False
    walker_means: list = None

    @property
    def ess(self):
        """Effective samples of the arm."""
        return self.samples / self.inefficiency

    @property
    def ess_per_second(self):
        return self.ess / self.seconds

    @property
    def at_bound(self):
        """True when ``g`` (unweighted, observable changed, several walkers) sits at its floor 1: pymbar's sum
        stopped at lag 1, so the correlation was not resolved (independent samples, or an indicator whose few
        changes were isolated frames), and the leave-one-walker-out jackknife, whose subsets mostly sit at the
        floor too, can have no spread at all (an ANI-1x HMR arm: [0.665, 0.665])."""
        return bool(self.varied and not self.weighted and len(self.jackknife_ess) >= 2
                    and self.inefficiency <= 1.0 + 1e-12)

    @property
    def interval(self):
        """(low, high) of the ESS per second; None with one walker or an observable that never changed.  The low
        end is clipped at 0.

        The jackknife across walkers; when :attr:`at_bound`, batch means with one batch per walker instead:
        independent walkers of ``m`` samples each have ``Var(walker mean) = p (1 - p) g / m``, so ``ESS = n p (1
        - p) / s^2`` (``s^2`` the variance of the walkers' means, ``n - 1`` degrees of freedom), its interval
        from the chi-square distribution of ``s^2``; no ESS exceeds the samples (``g >= 1``), and the low end
        scales the point estimate capped at the samples (walkers with equal means give no zero-width interval)."""
        values = np.asarray(self.jackknife_ess, dtype=float)
        n = len(values)
        if n < 2 or not self.varied:
            return None
        if self.at_bound and self.walker_means is not None:
            from scipy.stats import chi2

            p = self.mean
            spread = float(np.var(np.asarray(self.walker_means, dtype=float), ddof=1))
            point = n * p * (1.0 - p) / spread if spread > 0 else np.inf
            tail = (1.0 - self.confidence) / 2.0
            low = min(point, self.samples) * chi2.ppf(tail, n - 1) / (n - 1)
            high = min(point * chi2.ppf(1.0 - tail, n - 1) / (n - 1), self.samples)
            return (low / self.seconds, high / self.seconds)  # low < high: chi2 quantiles over n - 1 straddle 1
        error = np.sqrt((n - 1) / n * np.sum((values - values.mean()) ** 2))
        half = _t_quantile(self.confidence, n - 1) * error
        return (max(0.0, (self.ess - half) / self.seconds), (self.ess + half) / self.seconds)

    @property
    def standard_error(self):
        """Standard error of :attr:`mean` from the ESS (``sqrt(p (1 - p) / ESS)`` for an indicator)."""
        variance = self.mean * (1.0 - self.mean) if 0.0 <= self.mean <= 1.0 else float("nan")
        return float(np.sqrt(variance / self.ess))

    @classmethod
    def from_dict(cls, data):
        """The inverse of :meth:`as_dict`."""
        return cls(data["observable"], data["mean"], data["samples"], data["statistical_inefficiency"],
                   data["jackknife_ess"], data["seconds"], data["confidence"], data["varied"],
                   data.get("weighted", False), data.get("walker_means"))

    def as_dict(self):
        interval = self.interval
        return {"observable": self.observable, "mean": self.mean, "standard_error": self.standard_error,
                "samples": self.samples, "statistical_inefficiency": self.inefficiency, "ess": self.ess,
                "ess_per_second": self.ess_per_second, "interval": None if interval is None else list(interval),
                "confidence": self.confidence, "seconds": self.seconds, "varied": self.varied, "at_bound": self.at_bound,
                "weighted": self.weighted, "jackknife_ess": [float(e) for e in self.jackknife_ess],
                "walker_means": None if self.walker_means is None else [float(m) for m in self.walker_means]}


def efficiency(series, seconds, observable="observable", confidence=DEFAULT_CONFIDENCE, weights=None):
    """Effective samples per second of an observable sampled by several independent walkers.

    Parameters
    ----------
    series : array_like, shape (n_walkers, n_samples)
        The observable of every walker at equal intervals (e.g. 1 for frames in a basin, else 0).
    seconds : float
        Wall-clock (or CPU) seconds the whole arm took: all walkers together.
    observable : str
        Name, for reports.
    confidence : float
        Coverage of :attr:`Efficiency.interval`.
    weights : array_like, shape (n_walkers, n_samples), optional
        Weights of reweighted samples (:func:`weighted_inefficiency`); default: all equal.

    Returns
    -------
    Efficiency
    """
    x = np.asarray(series, dtype=float)
    w = None if weights is None else np.asarray(weights, dtype=float)

    def inefficiency(rows):
        """g of the walkers ``rows`` (weighted when there are weights)."""
        return statistical_inefficiency(x[rows]) if w is None else weighted_inefficiency(x[rows], w[rows])

    g = inefficiency(slice(None))  # validates the shapes first
    mean = float(x.mean() if w is None else np.sum(w * x) / np.sum(w))
    if not seconds > 0:
        raise ValueError(f"seconds must be > 0, got {seconds}")
    n = len(x)
    jackknife = [] if n < 2 else [
        x[1:].size / inefficiency(np.arange(n) != i) * n / (n - 1) for i in range(n)]
    return Efficiency(observable, mean, int(x.size), g, jackknife, float(seconds), confidence,
                      bool(np.ptp(x) > 0), weights is not None, None if w is not None else x.mean(axis=1).tolist())


def compare(a, b):
    """How arm ``a``'s ESS per second compares with arm ``b``'s.

    Returns
    -------
    dict
        ``ratio`` (a over b), ``ratio_interval`` (low of a over high of b, high of a over low of b; None where an
        interval is missing, high None when b's low end is 0) and ``distinct``: True when the two intervals do not
        overlap (only then is one declared faster).
    """
    ratio = a.ess_per_second / b.ess_per_second
    ia, ib = a.interval, b.interval
    if ia is None or ib is None:
        return {"ratio": ratio, "ratio_interval": None, "distinct": False}
    return {"ratio": ratio, "ratio_interval": [ia[0] / ib[1], ia[1] / ib[0] if ib[0] > 0 else None],
            "distinct": bool(ia[0] > ib[1] or ib[0] > ia[1])}


def winner(efficiencies):
    """The arm whose ESS-per-second interval lies above every other arm's, or None.

    Parameters
    ----------
    efficiencies : dict
        ``{arm name: Efficiency}`` of one observable.
    """
    if len(efficiencies) < 2:
        return None
    best = max(efficiencies, key=lambda name: efficiencies[name].ess_per_second)
    others = [e for name, e in efficiencies.items() if name != best]
    return best if all(compare(efficiencies[best], other)["distinct"] for other in others) else None
