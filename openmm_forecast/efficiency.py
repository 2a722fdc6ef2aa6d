"""Sampling efficiency: effective samples per second of slow observables, with intervals.

How fast a sampler converges an average is its *effective sample size* (ESS) per second: a chain of ``n``
samples whose integrated autocorrelation time is ``tau`` samples carries ``n / tau`` independent ones.  Simulated
nanoseconds per day do not measure it (a Metropolis chain's rejected jumps reverse momenta and count as
simulated time), and a time to a JS bar reads one noisy curve at one point.

Estimator.  Each walker's ``tau`` of an observable (here: the indicator of a basin, the slowest thing a
conformational sampler must get right) is ``emcee.autocorr.integrated_time`` (Sokal's automated window,
``c = 5``; Goodman and Weare 2010, Foreman-Mackey et al. 2013), a maintained estimator.  A walker whose
observable never changes has no autocorrelation to estimate: it is counted as ONE effective sample (it
tells in which basin it sat, nothing about the populations).  An arm's ESS is the sum over its walkers
(they are independent replicas); its ESS per second divides by the arm's wall-clock (or CPU) seconds.
The interval is a Student-t interval of the mean per-walker ESS across walkers (95 % by default), scaled the
same way: it carries the walker-to-walker spread of both the dynamics and the estimator.  Short chains with
few transitions make ``tau`` estimates biased low; compare arms at equal budgets, and read the intervals.

Units: seconds; ``tau`` in samples.
"""

import dataclasses

import numpy as np

DEFAULT_CONFIDENCE = 0.95
"""Coverage of the intervals."""

SOKAL_WINDOW = 5.0
"""``c`` of Sokal's automated window: the sum of the autocorrelation function stops at the first lag
``M >= c * tau(M)`` (emcee's default)."""


def integrated_autocorrelation_time(series):
    """Integrated autocorrelation time of one series, in samples (``emcee.autocorr.integrated_time``).

    Parameters
    ----------
    series : array_like, shape (n_samples,)

    Returns
    -------
    float
        As estimated (below 1 for an anticorrelated series); NaN for a constant series (nothing to estimate).
    """
    from emcee.autocorr import integrated_time

    x = np.asarray(series, dtype=float)
    if x.ndim != 1 or len(x) < 2:
        raise ValueError(f"a series needs shape (n_samples,) with n_samples >= 2, got {x.shape}")
    if np.ptp(x) == 0:
        return float("nan")
    return float(integrated_time(x, c=SOKAL_WINDOW, tol=0, quiet=True)[0])


def _t_quantile(confidence, dof):
    """Two-sided Student-t quantile (scipy comes with mdtraj)."""
    from scipy.stats import t

    return float(t.ppf(0.5 + confidence / 2.0, dof))


@dataclasses.dataclass
class Efficiency:
    """Effective samples of one observable in one arm, per second, with an interval across walkers.

    Attributes
    ----------
    observable : str
    mean : float
        The observable's average over all walkers and samples (a basin's population).
    tau_samples : list of float
        Integrated autocorrelation time of every walker, samples (NaN: the walker's observable never changed).
    ess_per_walker : list of float
        ``n_samples / tau`` of every walker, clipped to [1, n_samples]; 1 for a constant walker.
    seconds : float
        The arm's wall-clock (or CPU) seconds the ESS is divided by.
    confidence : float
    """

    observable: str
    mean: float
    tau_samples: list
    ess_per_walker: list
    seconds: float
    confidence: float = DEFAULT_CONFIDENCE

    @property
    def ess(self):
        """Effective samples of the arm (sum over walkers)."""
        return float(np.sum(self.ess_per_walker))

    @property
    def ess_per_second(self):
        return self.ess / self.seconds

    @property
    def interval(self):
        """(low, high) of the ESS per second; None with one walker.  The low end is clipped at 0."""
        values = np.asarray(self.ess_per_walker, dtype=float)
        n = len(values)
        if n < 2:
            return None
        half = _t_quantile(self.confidence, n - 1) * values.std(ddof=1) / np.sqrt(n)
        scale = n / self.seconds
        return (max(0.0, (values.mean() - half) * scale), (values.mean() + half) * scale)

    @property
    def standard_error(self):
        """Standard error of :attr:`mean` from the ESS (``sqrt(p (1 - p) / ESS)`` for an indicator)."""
        variance = self.mean * (1.0 - self.mean) if 0.0 <= self.mean <= 1.0 else float("nan")
        return float(np.sqrt(variance / self.ess))

    @classmethod
    def from_dict(cls, data):
        """The inverse of :meth:`as_dict`."""
        taus = [float("nan") if t is None else t for t in data["tau_samples"]]
        return cls(data["observable"], data["mean"], taus, data["ess_per_walker"], data["seconds"], data["confidence"])

    def as_dict(self):
        interval = self.interval
        return {"observable": self.observable, "mean": self.mean, "standard_error": self.standard_error,
                "ess": self.ess, "ess_per_second": self.ess_per_second,
                "interval": None if interval is None else list(interval), "confidence": self.confidence,
                "seconds": self.seconds,
                "walkers_without_change": int(np.sum(np.isnan(self.tau_samples))),
                "tau_samples": [None if np.isnan(t) else float(t) for t in self.tau_samples],
                "ess_per_walker": [float(e) for e in self.ess_per_walker]}


def efficiency(series, seconds, observable="observable", confidence=DEFAULT_CONFIDENCE):
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

    Returns
    -------
    Efficiency
    """
    x = np.asarray(series, dtype=float)
    if x.ndim != 2 or x.shape[1] < 2:
        raise ValueError(f"series needs shape (n_walkers, n_samples >= 2), got {x.shape}")
    if not seconds > 0:
        raise ValueError(f"seconds must be > 0, got {seconds}")
    n_samples = x.shape[1]
    taus = [integrated_autocorrelation_time(walker) for walker in x]
    # a tau at or below 1 / n_samples (very short, anticorrelated series) means every sample counts
    ess = [1.0 if np.isnan(tau) else float(np.clip(n_samples / max(tau, 1.0 / n_samples), 1.0, n_samples))
           for tau in taus]
    return Efficiency(observable, float(x.mean()), taus, ess, float(seconds), confidence)


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
