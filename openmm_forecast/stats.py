"""Statistics of an accelerated run: jumps, rejections by reason, time covered, wall clock and ``dH``.

Units: ps for simulated time, s for wall clock, kJ/mol for energies.
"""

import contextlib
import dataclasses
import time

import numpy as np

from .guards import REJECTION_REASONS

WALL_CLOCK_KEYS = ("integration", "forecast", "guard", "transfer")
"""Where the wall clock of a run goes (keys of :attr:`AcceleratorStats.wall_s`)."""


@dataclasses.dataclass
class AcceleratorStats:
    """What an accelerator did: jumps, rejections and their reasons, time covered, wall clock, energy.

    Attributes
    ----------
    jumps_attempted, jumps_accepted : int
    rejections : dict
        Reason (see :data:`~openmm_forecast.guards.REJECTION_REASONS`) -> count.
    attempted_by_frames, accepted_by_frames : dict
        Jump length in frames -> count.
    jumped_ps, integrated_ps : float
        Simulated time covered by accepted jumps and by the simulation's own integrator, in ps.
    kept_ps : float
        Metropolis and ghmc: simulated time covered by rejected jumps, whose configuration was kept (and, for
        ghmc, by remainders shorter than a stride), in ps.
    reequilibrations : int
    wall_s : dict
        Wall-clock seconds spent in 'integration', 'forecast', 'guard' (sanity checks, constraint
        projection, energy evaluation) and 'transfer' (reading and restoring Context states).
    dh_kJ : list of float
        ``dH`` in kJ/mol of the most recent energy-checked jumps, accepted or rejected (bounded).
    max_dh_samples : int
    """

    jumps_attempted: int = 0
    jumps_accepted: int = 0
    rejections: dict = dataclasses.field(default_factory=lambda: dict.fromkeys(REJECTION_REASONS, 0))
    attempted_by_frames: dict = dataclasses.field(default_factory=dict)
    accepted_by_frames: dict = dataclasses.field(default_factory=dict)
    jumped_ps: float = 0.0
    integrated_ps: float = 0.0
    kept_ps: float = 0.0
    reequilibrations: int = 0
    wall_s: dict = dataclasses.field(default_factory=lambda: dict.fromkeys(WALL_CLOCK_KEYS, 0.0))
    dh_kJ: list = dataclasses.field(default_factory=list)
    max_dh_samples: int = 10000

    @classmethod
    def merge(cls, parts):
        """Statistics of several walkers together: every count, time and table summed, ``dH`` samples pooled."""
        total = cls(max_dh_samples=sum(part.max_dh_samples for part in parts))
        for part in parts:
            for field in dataclasses.fields(cls):
                if field.name == "max_dh_samples":
                    continue
                mine, theirs = getattr(total, field.name), getattr(part, field.name)
                if isinstance(mine, dict):
                    for key, value in theirs.items():
                        mine[key] = mine.get(key, 0) + value
                elif isinstance(mine, list):
                    mine.extend(theirs)
                else:
                    setattr(total, field.name, mine + theirs)
        return total

    def record_attempt(self, n_frames):
        self.jumps_attempted += 1
        self.attempted_by_frames[n_frames] = self.attempted_by_frames.get(n_frames, 0) + 1

    def record_dh(self, dh_kJ):
        if np.isfinite(dh_kJ):
            self.dh_kJ.append(float(dh_kJ))
            del self.dh_kJ[: -self.max_dh_samples]

    def record_accept(self, n_frames, span_ps):
        self.jumps_accepted += 1
        self.accepted_by_frames[n_frames] = self.accepted_by_frames.get(n_frames, 0) + 1
        self.jumped_ps += span_ps

    def record_reject(self, reason):
        self.rejections[reason] = self.rejections.get(reason, 0) + 1  # a user's rule may add reasons

    @contextlib.contextmanager
    def timing(self, key):
        """Add the wall-clock time of the ``with`` block to ``wall_s[key]``."""
        start = time.perf_counter()
        try:
            yield
        finally:
            self.wall_s[key] += time.perf_counter() - start

    def as_dict(self):
        """Summary as plain JSON types: counts, rates, time split and ``dH`` percentiles."""
        total_ps = self.jumped_ps + self.integrated_ps + self.kept_ps
        dh = np.asarray(self.dh_kJ)
        percentiles = (1, 5, 25, 50, 75, 95, 99)
        return {
            "jumps_attempted": self.jumps_attempted,
            "jumps_accepted": self.jumps_accepted,
            "acceptance_rate": self.jumps_accepted / self.jumps_attempted if self.jumps_attempted else None,
            "rejections": dict(self.rejections),
            "acceptance_by_frames": {
                str(n): {"attempted": count, "accepted": self.accepted_by_frames.get(n, 0),
                         "rate": self.accepted_by_frames.get(n, 0) / count}
                for n, count in sorted(self.attempted_by_frames.items())
            },
            "jumped_ps": self.jumped_ps,
            "integrated_ps": self.integrated_ps,
            "kept_ps": self.kept_ps,
            "jumped_fraction": self.jumped_ps / total_ps if total_ps else None,
            "reequilibrations": self.reequilibrations,
            "wall_s": dict(self.wall_s),
            "dh_kJ": {
                "n": int(dh.size),
                "mean": float(dh.mean()) if dh.size else None,
                "percentiles": {str(p): float(np.percentile(dh, p)) for p in percentiles} if dh.size else {},
                "abs_percentiles": {str(p): float(np.percentile(abs(dh), p)) for p in percentiles} if dh.size else {},
            },
        }

    def to_state(self):
        """Everything, as JSON types (for checkpoints; see :meth:`from_state`)."""
        state = dataclasses.asdict(self)
        for key in ("attempted_by_frames", "accepted_by_frames"):
            state[key] = {str(n): count for n, count in state[key].items()}
        return state

    @classmethod
    def from_state(cls, state):
        """Inverse of :meth:`to_state`."""
        state = dict(state)
        for key in ("attempted_by_frames", "accepted_by_frames"):
            state[key] = {int(n): count for n, count in state[key].items()}
        return cls(**state)
