"""ForecastIntegrator: proposed jumps judged on the target's energy, inside an OpenMM Context (C++ plugin in ``plugin/``).

The plugin's ``ForecastPlugin::ForecastIntegrator`` runs the cycle of :class:`~openmm_forecast.ForecastAccelerator`
inside ``Integrator.step``, so a plain ``openmm.app.Simulation`` (reporters, checkpoints, ``Simulation.step``) drives
it unchanged.  The proposal is a surrogate System (velocity Verlet on it over the whole jump, in a private Context)
or a TorchScript forecaster; the rule is ``'tolerance'``, ``'metropolis'`` or ``'ghmc'`` (:mod:`openmm_forecast.cycles`).
A jump longer than a ``step`` call (``Simulation.step`` hands the integrator at most 10 steps at a time) is carried
out in the call that reaches its end; until then the Context holds the state before it while its clock advances
(docs/guide/plugin.md).

Binding (no SWIG): the library is loaded with ctypes (``RTLD_GLOBAL``); its static initialiser registers an
XmlSerializer proxy, so :class:`ForecastIntegrator` builds the integrator's XML and lets ``openmm.XmlSerializer``
create the C++ object, which is then an ordinary ``openmm.Integrator`` for OpenMM's own SWIG wrappers.  Statistics
come back through one C function that takes the SWIG object's pointer (``int(integrator.this)``); the options'
defaults through another (the XML of a default integrator, whose defaults CMake generates from
:class:`~openmm_forecast.options.AcceleratorOptions`: one source).

The library is looked up at ``$OPENMM_FORECAST_PLUGIN`` (a file), else in the package (``openmm_forecast/lib``, where
``cmake -S plugin -B plugin/build && cmake --build plugin/build`` copies it, so that ``pip install .`` after the
build installs it with the package), else at ``plugin/build/libOpenMMForecast.so`` of the source tree.
"""

import atexit
import ctypes
import json
import os
import tempfile
import xml.etree.ElementTree
import xml.sax.saxutils

from openmm import unit

from ._runtime import openmm as mm
from .errors import PluginError
from .stats import AcceleratorStats
from .units import positive

LIBRARY_NAME = "libOpenMMForecast.so"
LIBRARY_ENVIRONMENT_VARIABLE = "OPENMM_FORECAST_PLUGIN"
RULES = ("tolerance", "metropolis", "ghmc")
"""Acceptance rules of the plugin (``acceptance=``)."""


def _int(value, name, minimum):
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return value


def _number(value, name, minimum=0.0):
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not minimum < value < float("inf"):
        raise ValueError(f"{name} must be a finite number > {minimum:g}, got {value!r}")
    return float(value)


def _rule(value):
    if value not in RULES:
        raise ValueError(f"acceptance must be one of {', '.join(RULES)}, got {value!r}")
    return value


def _memory(value):
    if value is None:
        return -1.0
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value <= 1.0:
        raise ValueError(f"velocity_memory must be a number in [0, 1] or None, got {value!r}")
    return float(value)


def _platform(value):
    if not isinstance(value, str) or not value:
        raise ValueError(f"surrogate_platform must be an OpenMM platform's name, got {value!r}")
    return value


OPTIONS = {
    # Python option: (XML attribute, converter to the C++ value); defaults are the plugin's (default_attributes)
    "segment_steps": ("segmentSteps", lambda v: 0 if v is None else _int(v, "segment_steps", 1)),
    "jumps_per_cycle": ("jumpsPerCycle", lambda v: _int(v, "jumps_per_cycle", 1)),
    "max_frames": ("maxFrames", lambda v: 0 if v is None else _int(v, "max_frames", 1)),
    "initial_frames": ("initialFrames", lambda v: 0 if v is None else _int(v, "initial_frames", 1)),
    "adapt_span": ("adaptSpan", lambda v: -1 if v is None else int(bool(v))),
    "grow_after": ("growAfter", lambda v: _int(v, "grow_after", 1)),
    "energy_tolerance_kT": ("energyTolerance", lambda v: _number(v, "energy_tolerance_kT")),
    "drift_tolerance_kT": ("driftTolerance", lambda v: _number(v, "drift_tolerance_kT")),
    "temperature_sigmas": ("temperatureSigmas", lambda v: -1.0 if v is None else _number(v, "temperature_sigmas")),
    "reequilibration_steps": ("reequilibrationSteps", lambda v: _int(v, "reequilibration_steps", 0)),
    "acceptance": ("acceptance", _rule),
    "allow_inexact_metropolis": ("allowInexactMetropolis", lambda v: int(bool(v))),
    "velocity_memory": ("velocityMemory", _memory),
    "jump": ("jump", lambda v: positive(v, unit.picosecond, "jump")),
    "surrogate_step": ("surrogateStepSize", lambda v: positive(v, unit.picosecond, "surrogate_step")),
    "surrogate_platform": ("surrogatePlatform", _platform),
    "seed": ("randomSeed", lambda v: 0 if v is None else _int(v, "seed", 0)),
    "bond_stretch": ("bondStretch", lambda v: _number(v, "bond_stretch", minimum=1.0)),
    "thermostat_jumps": ("thermostatJumps", lambda v: int(bool(v))),
    "thermostatted": ("thermostatted", lambda v: -1 if v is None else int(bool(v))),
    "constraint_tolerance": ("constraintTolerance", lambda v: _number(v, "constraint_tolerance")),
}
"""Options of :class:`ForecastIntegrator`, named as :class:`~openmm_forecast.options.AcceleratorOptions` where it has
them (``metropolis=True`` is accepted as an alias of ``acceptance='metropolis'``)."""

NOT_IN_PLUGIN = ("clash_fraction", "clash_distance", "check_chirality", "temperature", "allow_custom_integrator",
                 "progress", "max_dh_samples")
"""AcceleratorOptions the plugin does not have (its guards are non-finite values, bond stretch and dH)."""

_library = None
_temporary_files = []


def library_candidates():
    """Where the plugin library is looked for, in order (list of str): the package's own copy
    (``openmm_forecast/lib``, where the CMake build puts it and a non-editable install carries it), then the source
    tree's ``plugin/build``."""
    package = os.path.dirname(os.path.abspath(__file__))
    return [os.path.join(package, "lib", LIBRARY_NAME),
            os.path.join(os.path.dirname(package), "plugin", "build", LIBRARY_NAME)]


def plugin_library_path():
    """The plugin library to load (str; it may not exist): ``$OPENMM_FORECAST_PLUGIN``, else the first of
    :func:`library_candidates` that exists, else the first."""
    path = os.environ.get(LIBRARY_ENVIRONMENT_VARIABLE)
    if path:
        return path
    candidates = library_candidates()
    return next((candidate for candidate in candidates if os.path.isfile(candidate)), candidates[0])


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
        defaults = library.openmm_forecast_default_xml
    except (OSError, AttributeError) as error:
        raise PluginError(f"the ForecastIntegrator plugin library {path} failed to load: {error}") from error
    statistics.restype = defaults.restype = ctypes.c_longlong
    statistics.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_longlong]
    defaults.argtypes = [ctypes.c_char_p, ctypes.c_longlong]
    _library = library
    return library


def _temporary_file(suffix):
    handle, path = tempfile.mkstemp(prefix="forecast-proposal-", suffix=suffix)
    os.close(handle)
    _temporary_files.append(path)
    return path


def resolve_proposal(proposal):
    """The proposal's file and the options it implies.

    Parameters
    ----------
    proposal : str, os.PathLike, openmm.System or TorchForecaster
        A shipped surrogate's name (``'fit-amber14-obc2'``, resolved to its XML under
        ``openmm_forecast/resources/surrogates``), a shipped model card naming one (``'ala2-amber14-obc2'``: its
        surrogate, jump ``stride_ps * max_frames`` and time step), a serialized System file (``.xml``), an
        ``openmm.System`` (written to a temporary file for the process's lifetime), a TorchScript model file, a
        shipped TorchScript model's name, or a TorchForecaster (saved to a temporary file).

    Returns
    -------
    path : str
        Absolute path of the file the XML records.
    implied : dict
        ``jump`` and ``surrogate_step`` (Quantities) of a model card; empty otherwise.
    """
    from .forecasters.registry import MODEL_SUFFIX, models_directory, shipped_model_card, shipped_models
    from .forecasters.surrogate import SURROGATE_SUFFIX, shipped_surrogates, surrogates_directory
    from .forecasters.torch_forecaster import TorchForecaster, save_forecaster

    if isinstance(proposal, mm.System):
        path = _temporary_file(SURROGATE_SUFFIX)
        with open(path, "w") as handle:
            handle.write(mm.XmlSerializer.serialize(proposal))
        return path, {}
    if isinstance(proposal, TorchForecaster):
        path = _temporary_file(MODEL_SUFFIX)
        save_forecaster(proposal, path)
        return path, {}
    if isinstance(proposal, str) or hasattr(proposal, "__fspath__"):
        name = os.fspath(proposal)
        if os.path.isfile(name):
            return os.path.abspath(name), {}
        if name in shipped_surrogates():
            return os.path.join(surrogates_directory(), name + SURROGATE_SUFFIX), {}
        card = shipped_model_card(name)
        if card is not None:
            implied = {"jump": card["stride_ps"] * card["max_frames"] * unit.picosecond,
                       "surrogate_step": card["timestep_ps"] * unit.picosecond}
            return os.path.join(surrogates_directory(), card["surrogate"] + SURROGATE_SUFFIX), implied
        if name in shipped_models():
            return os.path.join(models_directory(), name + MODEL_SUFFIX), {}
        raise FileNotFoundError(
            f"proposal {name!r} is neither a file nor a shipped surrogate ({', '.join(shipped_surrogates()) or 'none'}) "
            f"nor a shipped model ({', '.join(shipped_models()) or 'none'})"
        )
    raise TypeError(
        f"the ForecastIntegrator's proposal is a surrogate System (a shipped name, a .xml file or an openmm.System) or "
        f"a TorchScript forecaster (a model file, a shipped model's name or a TorchForecaster), got "
        f"{type(proposal).__name__}"
    )


@atexit.register
def _remove_temporary_files():
    for path in _temporary_files:
        try:
            os.remove(path)
        except OSError:
            pass


def default_attributes():
    """The XML attributes of a ForecastIntegrator with every option at its default (dict of str), from the plugin."""
    function = load_plugin().openmm_forecast_default_xml
    size = function(None, 0)
    buffer = ctypes.create_string_buffer(size + 1)
    function(buffer, size + 1)
    return dict(xml.etree.ElementTree.fromstring(buffer.value.decode()).attrib)


def integrator_xml(proposal_file, step_size_ps, temperature_K, friction_per_ps, options):
    """The XmlSerializer text of a ForecastIntegrator (str); ``options`` as for :class:`ForecastIntegrator`."""
    options = dict(options)
    if options.pop("metropolis", False):
        if options.get("acceptance", "metropolis") != "metropolis":
            raise ValueError(f"metropolis=True contradicts acceptance={options['acceptance']!r}; pass one of them")
        options["acceptance"] = "metropolis"
    unknown = set(options) - set(OPTIONS)
    if unknown & set(NOT_IN_PLUGIN):
        raise ValueError(f"the plugin's ForecastIntegrator has no option {sorted(unknown & set(NOT_IN_PLUGIN))} "
                         "(use the Python ForecastAccelerator for these)")
    if unknown:
        raise TypeError(f"unknown ForecastIntegrator options {sorted(unknown)}; known: {', '.join(OPTIONS)}, metropolis")
    attributes = default_attributes()
    attributes.update({"forecasterFile": proposal_file, "stepSize": repr(step_size_ps),
                       "temperature": repr(temperature_K), "friction": repr(friction_per_ps)})
    for name, value in options.items():
        attribute, convert = OPTIONS[name]
        converted = convert(value)
        attributes[attribute] = repr(converted) if isinstance(converted, float) else str(converted)
    text = " ".join(f"{key}={xml.sax.saxutils.quoteattr(value)}" for key, value in attributes.items() if key != "type")
    return f'<?xml version="1.0" ?>\n<Integrator type="ForecastIntegrator" {text}/>\n'


class ForecastIntegrator(mm.Integrator):
    """An ``openmm.Integrator`` whose steps are proposed jumps judged on the target's energy (C++ plugin).

    Parameters
    ----------
    proposal : str, os.PathLike, openmm.System or TorchForecaster
        A surrogate System (a shipped surrogate's name such as ``'fit-amber14-obc2'``, a shipped model card naming
        one, a ``.xml`` file or an ``openmm.System``: velocity Verlet, RATTLE with constraints, on it over the whole
        jump) or a TorchScript forecaster (history 1); see :func:`resolve_proposal`.
    stepSize : openmm.unit.Quantity
        Time step of the clock and of the Langevin segments; must divide the jump.
    temperature : openmm.unit.Quantity
    friction : openmm.unit.Quantity
        Friction coefficient (1/time): of the Langevin segments and of the thermostat step over jumps; with
        ``acceptance='ghmc'`` it sets the momentum refresh ``a = exp(-friction * jump)`` (0: full refresh).
    acceptance : str
        ``'tolerance'`` (default), ``'metropolis'`` or ``'ghmc'``; the exact ones refuse a proposal not certified
        structure-preserving unless ``allow_inexact_metropolis=True`` (then a warning on stderr).
    jump : openmm.unit.Quantity
        Length of a surrogate jump (required for a surrogate System, implied by a model card).
    surrogate_step : openmm.unit.Quantity, optional
        The surrogate's velocity Verlet time step (default: ``stepSize``).
    surrogate_platform : str
        Platform of the surrogate's private Context (default ``'Reference'``: fastest for a small molecule).
    **options
        ``velocity_memory`` (ghmc's ``a``, None: from the friction), ``segment_steps``, ``jumps_per_cycle``,
        ``max_frames``, ``initial_frames``, ``adapt_span``, ``grow_after``, ``energy_tolerance_kT``,
        ``drift_tolerance_kT``, ``temperature_sigmas``, ``reequilibration_steps``, ``metropolis`` (alias of
        ``acceptance='metropolis'``), ``allow_inexact_metropolis``, ``seed``, ``bond_stretch``,
        ``thermostat_jumps``, ``thermostatted`` (as in :class:`~openmm_forecast.options.AcceleratorOptions`, whose
        defaults the plugin's are) and ``constraint_tolerance``.

    Raises
    ------
    PluginError
        The plugin library is not built or does not load.
    ValueError, TypeError, FileNotFoundError
        Invalid options or proposal.  At Context creation (``openmm.OpenMMException``): a System with a barostat,
        virtual sites or Drude particles; a proposal for other atoms (a surrogate: other masses or constraints); a
        jump that is not a whole number of steps; an exact rule with an uncertified proposal.

    Notes
    -----
    ``step(n)`` advances time and step count by exactly ``n`` steps.  A jump is carried out whole in the ``step``
    call that reaches its last step; before that the Context holds the state the jump starts from while its clock
    advances, so reporters between see that state (for ghmc a sample of the chain, as a rejected jump's).  The guards
    are non-finite values, bond stretch and dH; the Python driver's clash and chirality checks are not in the plugin.
    The jumps' random stream is NumPy's PCG64 bit generator with polar-method normals (``seed``), not NumPy's
    ziggurat: the Python driver equals it only when given that stream (as tests/test_plugin.py does).
    """

    def __init__(self, proposal, stepSize, temperature, friction, **options):
        load_plugin()
        step_ps = positive(stepSize, unit.picosecond, "stepSize")
        temperature_K = positive(temperature, unit.kelvin, "temperature")
        friction_per_ps = positive(friction, unit.picosecond**-1, "friction", allow_zero=True)
        path, implied = resolve_proposal(proposal)
        text = integrator_xml(path, step_ps, temperature_K, friction_per_ps, {**implied, **options})
        integrator = mm.XmlSerializer.deserialize(text)
        self.this = integrator.this  # the C++ ForecastIntegrator, owned by this Python object from now on

    def getSettings(self):
        """Every parameter of the integrator as its XML attribute (dict of str: ``acceptance``, ``jump`` in ps,
        ``forecasterFile``, ``surrogatePlatform``, ...), read back from the C++ object."""
        return dict(xml.etree.ElementTree.fromstring(mm.XmlSerializer.serialize(self)).attrib)

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
        """The loop's state: ``span_frames``, ``accepted_in_row``, ``drift_kJ`` (kJ/mol), ``jumps_switched_off``,
        ``pending_ps`` (time the clock has run into a jump not yet carried out) and ``random_stream`` (the jumps'
        PCG64 state and increment, hexadecimal, at Context creation or the last checkpoint load)."""
        state = self._statistics()
        keys = ("span_frames", "accepted_in_row", "drift_kJ", "jumps_switched_off", "pending_ps", "random_stream")
        return {key: state[key] for key in keys}

    def _statistics(self):
        function = load_plugin().openmm_forecast_statistics_json
        pointer = ctypes.c_void_p(int(self.this))
        size = function(pointer, None, 0)
        if size < 0:
            raise PluginError("this object is not a ForecastIntegrator of the loaded plugin")
        buffer = ctypes.create_string_buffer(size + 1)
        function(pointer, buffer, size + 1)
        return json.loads(buffer.value.decode())
