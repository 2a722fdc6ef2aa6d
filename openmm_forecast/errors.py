"""Named exceptions of openmm-forecast.

Each says what is wrong and what to do; each derives from a standard exception type so that callers
catching ``ValueError`` or ``RuntimeError`` keep working.
"""


class ForecastError(Exception):
    """Base class of all openmm-forecast errors."""


class UsageError(ForecastError, ValueError):
    """Command-line arguments that contradict each other or the run they continue (the CLI exits 2, as argparse
    does for a single bad flag); the message names the flags."""


class UnitError(ForecastError, TypeError):
    """A quantity was given without units, or with units of the wrong dimension."""


class UnknownSetupError(ForecastError, ValueError):
    """A named system setup does not exist."""


class ModelMismatchError(ForecastError, ValueError):
    """A model (forecaster or potential) does not match the system it is asked to drive.

    Raised for a wrong atom count, wrong elements or order, or a setup the model was not trained for.
    """


class TargetInputError(ForecastError, ValueError):
    """The files or objects that describe a target (System XML, structure, prmtop/inpcrd) are missing, unreadable
    or disagree with each other (atom counts); the message names the file."""


class ModelFileError(ForecastError, OSError):
    """A model file is missing, unreadable, corrupt, or lacks the metadata openmm-forecast needs."""


class BadForecastError(ForecastError, ValueError):
    """A forecast contains NaN/Inf or is otherwise unusable; nothing of it was written to a Context."""


class CheckpointError(ForecastError, ValueError):
    """A checkpoint is corrupt, or belongs to a different System or forecaster."""


class UnsupportedSystemError(ForecastError, ValueError):
    """A System, integrator or Simulation that openmm-forecast cannot drive."""


class DataFileError(ForecastError, ValueError):
    """A trajectory data file is missing, corrupt, or incompatible with the requested operation."""


class OptionalDependencyError(ForecastError, ImportError):
    """An optional package that a feature needs is not installed; the message says how to install it."""


POTENTIAL_EVALUATION_FAILED = "potential evaluation failed"
"""First words of every :class:`PotentialEvaluationError` message (see :func:`is_potential_evaluation_failure`)."""


class PotentialEvaluationError(ForecastError, RuntimeError):
    """The potential could not be evaluated at a configuration (for example an SCF that does not converge).

    Raised inside an ``openmm.PythonForce`` computation, it reaches the caller of OpenMM as an
    ``openmm.OpenMMException`` carrying only its message, which starts with
    :data:`POTENTIAL_EVALUATION_FAILED`.
    """


def is_blow_up(error):
    """Whether an exception is OpenMM's refusal of non-finite coordinates ("Particle coordinate is NaN"):
    dynamics that blew up."""
    return "particle coordinate is nan" in str(error).lower()


def is_potential_evaluation_failure(error):
    """Whether an exception (an ``openmm.OpenMMException`` from a PythonForce, or the error itself) is a
    :class:`PotentialEvaluationError`."""
    return isinstance(error, PotentialEvaluationError) or str(error).lstrip().startswith(POTENTIAL_EVALUATION_FAILED)


class BlowUpError(ForecastError, RuntimeError):
    """A simulated state is no longer finite, or far hotter than its thermostat: the dynamics blew up.

    Attributes
    ----------
    step : int
        The step of the state that failed the check.
    """

    def __init__(self, message, step):
        super().__init__(message)
        self.step = int(step)


class RunInterrupted(KeyboardInterrupt):
    """A run stopped at a consistent point on request (a signal): every jump finished or undone.

    Attributes
    ----------
    signum : int
        The signal that asked (2: SIGINT, Ctrl-C; 15: SIGTERM).
    step : int
        ``simulation.currentStep`` where it stopped.
    """

    def __init__(self, signum, step):
        super().__init__(signum, step)
        self.signum, self.step = int(signum), int(step)


class SamplingInterrupted(KeyboardInterrupt):
    """Sampling stopped by a signal (Ctrl-C, SIGTERM), carrying what was measured before it.

    Attributes
    ----------
    signum : int
        The signal (2: SIGINT, 15: SIGTERM).
    samples : object
        What was sampled up to the last complete sample: a :class:`~openmm_forecast.walkers.WalkerSamples`
        from :meth:`~openmm_forecast.walkers.PlainWalkers.sample`, ``{arm: WalkerSamples}`` from
        :func:`~openmm_forecast.benchmark.run_interleaved`; None (or empty) when nothing was.
    """

    def __init__(self, signum, samples):
        super().__init__(signum)
        self.signum, self.samples = int(signum), samples

    @classmethod
    def signal_of(cls, interruption):
        """The signal number a ``KeyboardInterrupt`` carries (the CLI's SIGTERM handler passes it; Ctrl-C: 2)."""
        return int(interruption.args[0]) if interruption.args and isinstance(interruption.args[0], int) else 2


class PluginError(ForecastError, RuntimeError):
    """The C++ plugin (``plugin/``, library ``libOpenMMForecast.so``) is not built or failed to load."""
