"""ForecastIntegrator: forecast jumps inside an OpenMM Context, through the C++ plugin in ``plugin/``.

The plugin's ``ForecastPlugin::ForecastIntegrator`` runs the cycle of :class:`~openmm_forecast.ForecastAccelerator`
(segments of LangevinMiddle dynamics, guarded forecast jumps, accept or restore) inside ``Integrator.step``, so a
plain ``openmm.app.Simulation`` (reporters, checkpoints, ``Simulation.step``) drives it unchanged.

Binding (no SWIG): the library is loaded with ctypes (``RTLD_GLOBAL``); its static initialiser registers an
XmlSerializer proxy, so :class:`ForecastIntegrator` builds the integrator's XML and lets ``openmm.XmlSerializer``
create the C++ object, which is then an ordinary ``openmm.Integrator`` for OpenMM's own SWIG wrappers.  Statistics
come back through one C function that takes the SWIG object's pointer (``int(integrator.this)``).

The library is looked up at ``$OPENMM_FORECAST_PLUGIN`` (a file), else at ``plugin/build/libOpenMMForecast.so`` of
this source tree (where ``cmake -S plugin -B plugin/build && cmake --build plugin/build`` puts it).
"""

import atexit
import ctypes
import json
import os
import tempfile
import xml.sax.saxutils

from openmm import unit

from ._runtime import openmm as mm
from .accelerator import AcceleratorStats
from .errors import PluginError
from .units import positive

LIBRARY_NAME = "libOpenMMForecast.so"
LIBRARY_ENVIRONMENT_VARIABLE = "OPENMM_FORECAST_PLUGIN"

OPTIONS = {
    # Python option: (XML attribute, converter to the C++ value, default)
    "segment_steps": ("segmentSteps", lambda v: 0 if v is None else _int(v, "segment_steps", 1), 0),
    "jumps_per_cycle": ("jumpsPerCycle", lambda v: _int(v, "jumps_per_cycle", 1), 4),
    "max_frames": ("maxFrames", lambda v: 0 if v is None else _int(v, "max_frames", 1), 0),
    "initial_frames": ("initialFrames", lambda v: 0 if v is None else _int(v, "initial_frames", 1), 0),
    "adapt_span": ("adaptSpan", lambda v: -1 if v is None else int(bool(v)), -1),
    "grow_after": ("growAfter", lambda v: _int(v, "grow_after", 1), 4),
    "energy_tolerance_kT": ("energyTolerance", lambda v: _number(v, "energy_tolerance_kT"), 1.0),
    "drift_tolerance_kT": ("driftTolerance", lambda v: _number(v, "drift_tolerance_kT"), 5.0),
    "temperature_sigmas": ("temperatureSigmas", lambda v: -1.0 if v is None else _number(v, "temperature_sigmas"), 4.0),
    "reequilibration_steps": ("reequilibrationSteps", lambda v: _int(v, "reequilibration_steps", 0), 500),
    "metropolis": ("metropolis", lambda v: int(bool(v)), 0),
    "seed": ("randomSeed", lambda v: 0 if v is None else _int(v, "seed", 0), 0),
    "bond_stretch": ("bondStretch", lambda v: _number(v, "bond_stretch", minimum=1.0), 1.5),
    "thermostat_jumps": ("thermostatJumps", lambda v: int(bool(v)), 1),
    "thermostatted": ("thermostatted", lambda v: -1 if v is None else int(bool(v)), -1),
    "constraint_tolerance": ("constraintTolerance", lambda v: _number(v, "constraint_tolerance"), 1e-5),
}
"""Options of :class:`ForecastIntegrator`, named as :class:`~openmm_forecast.accelerator.AcceleratorOptions`."""

NOT_IN_PLUGIN = ("clash_fraction", "clash_distance", "check_chirality", "temperature", "allow_custom_integrator",
                 "progress", "max_dh_samples")
"""AcceleratorOptions the plugin does not have (its guards are non-finite values, bond stretch and dH)."""

_library = None
_temporary_files = []


def _int(value, name, minimum):
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return value


def _number(value, name, minimum=0.0):
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not minimum < value < float("inf"):
        raise ValueError(f"{name} must be a finite number > {minimum:g}, got {value!r}")
    return float(value)


def plugin_library_path():
    """Where the plugin library is looked for (str; it may not exist)."""
    path = os.environ.get(LIBRARY_ENVIRONMENT_VARIABLE)
    if path:
        return path
    source_tree = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    return os.path.join(source_tree, "plugin", "build", LIBRARY_NAME)


def load_plugin():
    """Load the plugin library once (registers its XmlSerializer proxy and its kernels); return the ctypes handle.

    Raises
    ------
    PluginError
        The library is not built, or the dynamic loader refused it (the message says which file and why).
    """
    global _library
    if _library is not None:
        return _library
    path = plugin_library_path()
    if not os.path.isfile(path):
        raise PluginError(
            f"the ForecastIntegrator plugin library {path} does not exist: build it with "
            "'cmake -S plugin -B plugin/build -DPython_EXECUTABLE=$(which python) && cmake --build plugin/build' "
            f"(see plugin/README.md), or set ${LIBRARY_ENVIRONMENT_VARIABLE} to the built {LIBRARY_NAME}"
        )
    try:
        library = ctypes.CDLL(path, mode=ctypes.RTLD_GLOBAL)
        statistics = library.openmm_forecast_statistics_json
    except (OSError, AttributeError) as error:
        raise PluginError(f"the ForecastIntegrator plugin library {path} failed to load: {error}") from error
    statistics.restype = ctypes.c_longlong
    statistics.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_longlong]
    _library = library
    return library


def _forecaster_file(forecaster):
    """Absolute path of a TorchScript model file for ``forecaster`` (a path, a shipped name or a TorchForecaster)."""
    from .forecasters.registry import MODEL_SUFFIX, models_directory, shipped_model_card, shipped_models
    from .forecasters.torch_forecaster import TorchForecaster, save_forecaster

    if isinstance(forecaster, TorchForecaster):
        handle, path = tempfile.mkstemp(prefix="forecaster-", suffix=MODEL_SUFFIX)
        os.close(handle)
        _temporary_files.append(path)
        save_forecaster(forecaster, path)
        return path
    if isinstance(forecaster, str) or hasattr(forecaster, "__fspath__"):
        path = os.fspath(forecaster)
        if os.path.isfile(path):
            return os.path.abspath(path)
        card = shipped_model_card(path)
        if card is not None:
            raise TypeError(
                f"{path!r} is velocity Verlet on the learned surrogate System {card['surrogate']!r}, not a TorchScript "
                "model: it runs with the Python ForecastAccelerator"
            )
        if path in shipped_models():
            return os.path.join(models_directory(), path + MODEL_SUFFIX)
        raise FileNotFoundError(
            f"forecaster {path!r} is neither a model file nor a shipped model ({', '.join(shipped_models()) or 'none'})"
        )
    raise TypeError(
        f"the ForecastIntegrator needs a TorchScript forecaster (a model file, a shipped model's name or a "
        f"TorchForecaster), got {type(forecaster).__name__}; baselines run with the Python ForecastAccelerator"
    )


@atexit.register
def _remove_temporary_files():
    for path in _temporary_files:
        try:
            os.remove(path)
        except OSError:
            pass


def integrator_xml(forecaster_file, step_size_ps, temperature_K, friction_per_ps, options):
    """The XmlSerializer text of a ForecastIntegrator (str); ``options`` as for :class:`ForecastIntegrator`."""
    unknown = set(options) - set(OPTIONS)
    if unknown & set(NOT_IN_PLUGIN):
        raise ValueError(f"the plugin's ForecastIntegrator has no option {sorted(unknown & set(NOT_IN_PLUGIN))} "
                         "(use the Python ForecastAccelerator for these)")
    if unknown:
        raise TypeError(f"unknown ForecastIntegrator options {sorted(unknown)}; known: {', '.join(OPTIONS)}")
    attributes = {
        "version": 1, "forecasterFile": forecaster_file, "stepSize": step_size_ps, "temperature": temperature_K,
        "friction": friction_per_ps, "integrationForceGroups": -1,
    }
    for name, (attribute, convert, default) in OPTIONS.items():
        attributes[attribute] = convert(options[name]) if name in options else default
    text = " ".join(f"{key}={xml.sax.saxutils.quoteattr(repr(value) if isinstance(value, float) else str(value))}"
                    for key, value in attributes.items())
    return f'<?xml version="1.0" ?>\n<Integrator type="ForecastIntegrator" {text}/>\n'


class ForecastIntegrator(mm.Integrator):
    """An ``openmm.Integrator`` that runs guarded forecast jumps between LangevinMiddle segments (C++ plugin).

    Parameters
    ----------
    forecaster : str, os.PathLike or TorchForecaster
        A TorchScript model file written by :func:`~openmm_forecast.save_forecaster`, a shipped model's name, or a
        TorchForecaster (saved to a temporary file that lives as long as the process).  History 1 only.
    stepSize : openmm.unit.Quantity
        Time step of the Langevin dynamics; must divide the forecaster's stride.
    temperature : openmm.unit.Quantity
    friction : openmm.unit.Quantity
        Friction coefficient (1/time); 0 gives NVE segments.
    **options
        ``segment_steps``, ``jumps_per_cycle``, ``max_frames``, ``initial_frames``, ``adapt_span``, ``grow_after``,
        ``energy_tolerance_kT``, ``drift_tolerance_kT``, ``temperature_sigmas``, ``reequilibration_steps``,
        ``metropolis``, ``seed``, ``bond_stretch``, ``thermostat_jumps``, ``thermostatted`` (as in
        :class:`~openmm_forecast.accelerator.AcceleratorOptions`) and ``constraint_tolerance``.

    Raises
    ------
    PluginError
        The plugin library is not built or does not load.
    ValueError, TypeError, FileNotFoundError
        Invalid options or forecaster.  A forecaster for another atom count, or whose stride is not a whole
        number of steps, is refused with an ``openmm.OpenMMException`` when the Context is created.

    Notes
    -----
    The guards are non-finite values, bond stretch (bonds of the System's HarmonicBondForces and constraints,
    against their lengths in the Context's first state) and dH; the Python driver's clash and chirality checks
    are not in the plugin.  The jumps' random stream (thermostat O-step, Metropolis) is the plugin's own
    (``std::mt19937_64`` seeded by ``seed``), not the Python driver's.
    """

    def __init__(self, forecaster, stepSize, temperature, friction, **options):
        load_plugin()
        step_ps = positive(stepSize, unit.picosecond, "stepSize")
        temperature_K = positive(temperature, unit.kelvin, "temperature")
        friction_per_ps = positive(friction, unit.picosecond**-1, "friction", allow_zero=True)
        text = integrator_xml(_forecaster_file(forecaster), step_ps, temperature_K, friction_per_ps, options)
        integrator = mm.XmlSerializer.deserialize(text)
        self.this = integrator.this  # the C++ ForecastIntegrator, owned by this Python object from now on

    def getStatistics(self):
        """What the integrator did so far (AcceleratorStats: jumps, rejections by reason, time covered, dH)."""
        state = self._statistics()
        return AcceleratorStats.from_state({
            key: state[key] for key in (
                "jumps_attempted", "jumps_accepted", "rejections", "attempted_by_frames", "accepted_by_frames",
                "jumped_ps", "integrated_ps", "kept_ps", "reequilibrations", "wall_s", "dh_kJ", "max_dh_samples",
            )
        })

    def getJumpState(self):
        """The loop's state: ``span_frames``, ``accepted_in_row``, ``drift_kJ`` (kJ/mol), ``jumps_switched_off``."""
        state = self._statistics()
        return {key: state[key] for key in ("span_frames", "accepted_in_row", "drift_kJ", "jumps_switched_off")}

    def _statistics(self):
        function = load_plugin().openmm_forecast_statistics_json
        pointer = ctypes.c_void_p(int(self.this))
        size = function(pointer, None, 0)
        if size < 0:
            raise PluginError("this object is not a ForecastIntegrator of the loaded plugin")
        buffer = ctypes.create_string_buffer(size + 1)
        function(pointer, buffer, size + 1)
        return json.loads(buffer.value.decode())
