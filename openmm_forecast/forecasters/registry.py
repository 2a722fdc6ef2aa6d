"""Forecasters by name: a registry of learned architectures, the baselines, shipped models and files.

Like openmm-ml's ``MLPotential``: each learned architecture registers a *builder* under a name, so a
user's own architecture plugs in without editing openmm-forecast, either by calling
:func:`register_architecture` or through the entry-point group ``openmm_forecast.architectures``
(each entry point names a builder).

A builder is a callable ``builder(elements, stride_ps, history, **hyperparameters) -> torch.nn.Module``
returning a module that satisfies the contract in :mod:`openmm_forecast.forecasters.torch_forecaster`;
a module whose forecasts commute with rotations by construction says so with the class attribute
``rotation_equivariant = True`` (recorded in the metadata as ``extra['rotation_equivariant']``, and
checked by the tests); one that is symplectic and time-reversible by construction (for which the
accelerator's Metropolis mode is exact) says ``structure_preserving = True`` (``extra['structure_preserving']``,
read by :func:`~openmm_forecast.forecasters.base.is_structure_preserving`); a module that reads the start forces (a fourth ``forward`` argument) has the
attribute ``uses_forces = True`` (recorded as ``extra['uses_forces']``).
Its hyperparameters must be JSON-serialisable: they are stored in the metadata
(``extra['hyperparameters']``) so that a trained model can be rebuilt from its metadata and weights.
"""

import dataclasses
import importlib.metadata
import inspect
import json
import os

import torch

from ..errors import ModelFileError, ModelMismatchError
from ..shipped import resource_path
from .base import ForecasterMetadata
from .baselines import BallisticForecaster, ConstantForecaster, VerletForecaster
from .surrogate import SurrogateForecaster, is_surrogate_file
from .torch_forecaster import TorchForecaster, load_model_file

BASELINES = {
    "constant": ConstantForecaster,
    "ballistic": BallisticForecaster,
    "verlet": VerletForecaster,
    "surrogate": SurrogateForecaster,
}
"""Baseline forecasters by name (not learned; built from their constructor arguments)."""

DEFAULT_SURROGATE_STRIDE_PS = 0.1
"""``stride_ps`` of the ``'surrogate'`` baseline when none is given (ps).  Measured with the default (derived)
surrogate on alanine dipeptide in amber14 + OBC2 (its vacuum part), metropolis, 32 jumps each, 2-core CPU under
load: 20/32 accepted at 0.1 ps, 6/32 at 0.2 ps, 3/32 at 0.5 ps; a fitted surrogate keeps far longer jumps
(``fit_surrogate``).  A whole number of steps of 0.5, 1, 2 or 4 fs integrators."""

_INTEGRATING = ("verlet", "surrogate")
"""Baselines that integrate a System: built from the MolecularSystem itself, not only its elements."""

ENTRY_POINT_GROUP = "openmm_forecast.architectures"

MODEL_SUFFIX = ".pt"

CARD_SUFFIX = ".json"
"""A shipped model that is a learned surrogate System, not a TorchScript file: ``NAME.json`` in the models
directory names the surrogate (:func:`~.surrogate.shipped_surrogates`), the setup it was learned for and the
default ``stride_ps``, ``max_frames`` and ``timestep_ps`` of the velocity Verlet proposal built on it."""

_BUILDERS = {}
_entry_points_loaded = False
_METADATA_FIELDS = {field.name for field in dataclasses.fields(ForecasterMetadata)} - {"architecture"}
_DTYPES = {"float32": torch.float32, "float64": torch.float64}


def register_architecture(name, builder, replace=False):
    """Register a learned architecture.

    Parameters
    ----------
    name : str
        Architecture name (stored in model metadata).
    builder : callable
        ``builder(elements, stride_ps, history, **hyperparameters) -> torch.nn.Module``.
    replace : bool
        Allow replacing an architecture registered under the same name.

    Raises
    ------
    ValueError
        If the name is a baseline's, or already registered and ``replace`` is False.
    """
    if name in BASELINES:
        raise ValueError(f"{name!r} is a baseline forecaster name; choose another architecture name")
    if name in _BUILDERS and not replace and _BUILDERS[name] is not builder:
        raise ValueError(f"architecture {name!r} is already registered (pass replace=True to replace it)")
    _BUILDERS[name] = builder


def _load_entry_points():
    global _entry_points_loaded
    if _entry_points_loaded:
        return
    _entry_points_loaded = True
    for entry_point in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
        if entry_point.name not in _BUILDERS:
            _BUILDERS[entry_point.name] = entry_point.load()


def available_architectures(include_baselines=False):
    """Names of the registered learned architectures (sorted list of str).

    Parameters
    ----------
    include_baselines : bool
        Also list the baselines ('ballistic', 'constant', 'surrogate', 'verlet').
    """
    _load_entry_points()
    names = set(_BUILDERS)
    if include_baselines:
        names |= set(BASELINES)
    return sorted(names)


def _builder(name):
    _load_entry_points()
    if name not in _BUILDERS:
        raise ValueError(
            f"unknown forecaster architecture {name!r}; learned: {', '.join(available_architectures()) or 'none'}; "
            f"baselines: {', '.join(BASELINES)}"
        )
    return _BUILDERS[name]


def build_forecaster(architecture, metadata_kwargs, device="cpu", dtype="float32", **hyperparameters):
    """Build an untrained (freshly initialised) learned forecaster.

    Parameters
    ----------
    architecture : str
        A registered learned architecture (see :func:`available_architectures`).
    metadata_kwargs : dict
        :class:`ForecasterMetadata` fields: at least ``elements`` and ``stride_ps`` (ps); optionally
        ``max_frames``, ``history``, ``setup``, ``constraints``, ``temperature_K``, ...
    device : str or torch.device
        Where the model runs.
    dtype : {'float32', 'float64'}
        Precision of the model's parameters and arithmetic.
    **hyperparameters
        Passed to the architecture's builder (``bonds``, ``d_model``, ``layers``, ...); recorded in
        ``metadata.extra['hyperparameters']``.  A builder that takes ``bonds`` and gets neither
        ``bonds`` nor ``reference_positions`` receives the bonds of alanine dipeptide when the elements
        are alanine dipeptide's.

    Returns
    -------
    TorchForecaster
        Its ``module`` is a trainable ``torch.nn.Module``; save it with :func:`save_forecaster`.
    """
    builder = _builder(architecture)
    if dtype not in _DTYPES:
        raise ValueError(f"dtype must be one of {sorted(_DTYPES)}, got {dtype!r}")
    metadata_kwargs = dict(metadata_kwargs)
    extra = dict(metadata_kwargs.pop("extra", None) or {})
    metadata = ForecasterMetadata(architecture=architecture, extra=extra, **metadata_kwargs)
    hyperparameters = _with_default_bonds(builder, metadata.elements, hyperparameters)
    extra["hyperparameters"] = _jsonable(hyperparameters)
    extra["dtype"] = dtype
    # Build under the target default dtype, so that buffers computed in float64 (masses, graph bases)
    # are not rounded to float32 on the way.
    default_dtype = torch.get_default_dtype()
    torch.set_default_dtype(_DTYPES[dtype])
    try:
        module = builder(metadata.elements, metadata.stride_ps, metadata.history, **hyperparameters)
    finally:
        torch.set_default_dtype(default_dtype)
    metadata.extra["rotation_equivariant"] = bool(getattr(module, "rotation_equivariant", False))
    metadata.extra["structure_preserving"] = bool(getattr(module, "structure_preserving", False))
    metadata.extra["uses_forces"] = bool(getattr(module, "uses_forces", False))
    return TorchForecaster(module.to(_DTYPES[dtype]), metadata, device=device)


def _with_default_bonds(builder, elements, hyperparameters):
    """Fill in ``bonds`` for a builder that takes a molecular graph and was given none.

    The bonds of the shipped alanine dipeptide topology are used when the elements are those of alanine
    dipeptide (every setup's solute); otherwise the builder is left to ask for bonds itself.
    """
    if "bonds" in hyperparameters or hyperparameters.get("reference_positions") is not None:
        return hyperparameters
    if "bonds" not in inspect.signature(builder).parameters:
        return hyperparameters
    from ..systems import load_alanine_dipeptide
    from ._layers import bonds_from_topology

    topology = load_alanine_dipeptide().topology
    if [atom.element.symbol for atom in topology.atoms()] != list(elements):
        return hyperparameters
    return {**hyperparameters, "bonds": bonds_from_topology(topology)}


def _jsonable(value):
    """Hyperparameters as plain JSON types (tuples and arrays become lists)."""
    if isinstance(value, dict):
        return {str(key): _jsonable(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(item) for item in value]
    if hasattr(value, "tolist"):
        return value.tolist()
    return value


def create_forecaster(name, **kwargs):
    """Create a forecaster by name: a baseline, or an untrained learned architecture.

    Parameters
    ----------
    name : str
        'constant', 'ballistic', 'verlet', 'surrogate', or a registered learned architecture.
    **kwargs
        For a baseline: its constructor arguments.  For a learned architecture: metadata fields
        (``elements``, ``stride_ps``, ``max_frames``, ``history``, ...), ``device``, ``dtype`` and the
        builder's hyperparameters, all as keywords (see :func:`build_forecaster`).

    Returns
    -------
    Forecaster
    """
    if name in BASELINES:
        return BASELINES[name](**kwargs)
    metadata_kwargs = {key: kwargs.pop(key) for key in list(kwargs) if key in _METADATA_FIELDS}
    return build_forecaster(name, metadata_kwargs, **kwargs)


def models_directory():
    """Directory of the models shipped with openmm-forecast (``openmm_forecast/resources/models``)."""
    return resource_path("models")


def shipped_models():
    """Names of the shipped trained models (sorted list of str; may be empty): TorchScript files and model
    cards of learned surrogates (:func:`shipped_model_card`)."""
    directory = models_directory()
    if not os.path.isdir(directory):
        return []
    return sorted(
        os.path.splitext(name)[0] for name in os.listdir(directory) if name.endswith((MODEL_SUFFIX, CARD_SUFFIX))
    )


def shipped_model_card(name):
    """The card of a shipped model that is a learned surrogate (dict), or None for a TorchScript model or
    an unknown name.

    Keys: ``surrogate`` (a shipped surrogate name), ``setup``, ``stride_ps``, ``max_frames``,
    ``timestep_ps`` and ``description``.
    """
    if not isinstance(name, str) or os.sep in name:
        return None
    path = os.path.join(models_directory(), name + CARD_SUFFIX)
    if not os.path.isfile(path):
        return None
    with open(path) as handle:
        return json.load(handle)


def integrates_surrogate(name):
    """Whether ``name`` is a forecaster built by integrating a surrogate System for the target: a fitted
    surrogate (shipped name or ``.xml`` file) or a shipped model card naming one (the ``'surrogate'``
    baseline aside)."""
    return is_surrogate_file(name) or shipped_model_card(name) is not None


def _forecaster_from_card(name, card, molecular_system, kwargs):
    """The SurrogateForecaster a model card describes, for ``molecular_system`` (keywords override the card)."""
    from openmm import unit

    if molecular_system is None:
        raise ValueError(
            f"{name!r} is velocity Verlet on the learned surrogate {card['surrogate']!r}: it needs molecular_system "
            "(the system it will drive)"
        )
    if molecular_system.setup != card["setup"]:
        raise ModelMismatchError(
            f"{name!r} was learned for the {card['setup']!r} setup, not {molecular_system.setup!r}"
        )
    unknown = sorted(set(kwargs) - {"stride_ps", "max_frames", "timestep", "platform"})
    if unknown:
        raise TypeError(f"{unknown} are not options of {name!r} (stride_ps, max_frames, timestep, platform)")
    options = dict(stride_ps=card["stride_ps"], max_frames=card["max_frames"],
                   timestep=card["timestep_ps"] * unit.picosecond)
    options.update(kwargs)
    forecaster = SurrogateForecaster(molecular_system, surrogate=card["surrogate"], **options)
    forecaster.metadata.extra["model"] = name
    return forecaster


def load_forecaster(name_or_path, molecular_system=None, device="cpu", **baseline_kwargs):
    """Load a forecaster: a baseline by name, a shipped model by name, or a model file.

    Parameters
    ----------
    name_or_path : str or os.PathLike
        'constant', 'ballistic', 'verlet' or 'surrogate'; the name of a shipped model
        (:func:`shipped_models`; for a learned surrogate's card, :func:`shipped_model_card`, ``stride_ps``,
        ``max_frames``, ``timestep`` and ``platform`` may override the card's); the path of a model file written by :func:`save_forecaster`; or a
        fitted surrogate System, shipped (:func:`~.surrogate.shipped_surrogates`) or a ``.xml`` file: the
        'surrogate' proposal integrating it (``surrogate=`` set to it).
    molecular_system : MolecularSystem or openmm.app.Simulation, optional
        The target the forecaster will drive (a Simulation is read with
        :meth:`~openmm_forecast.systems.MolecularSystem.from_simulation`).  Required by the baselines; when
        given, a learned model is checked against it (atom count, elements, setup).
    device : str or torch.device
        Where a learned model runs.
    **baseline_kwargs
        Baselines only: ``stride_ps`` (required, except for 'surrogate': default
        :data:`DEFAULT_SURROGATE_STRIDE_PS`), ``max_frames``; for 'verlet' and 'surrogate' ``timestep`` and
        ``platform``; for 'surrogate' ``surrogate`` (default ``'derived'``: the target's System without its
        costly terms; a setup name, MolecularSystem or System; see :class:`~.surrogate.SurrogateForecaster`).

    Returns
    -------
    Forecaster

    Raises
    ------
    ModelFileError
        Unknown name, missing file, corrupt file, or a file without valid metadata.
    ModelMismatchError
        The model does not fit ``molecular_system``.
    """
    name_or_path = os.fspath(name_or_path)
    if hasattr(molecular_system, "context") and hasattr(molecular_system, "topology"):  # an openmm.app.Simulation
        from ..systems import MolecularSystem

        molecular_system = MolecularSystem.from_simulation(molecular_system)
    card = shipped_model_card(name_or_path) if not os.path.exists(name_or_path) else None
    if card is not None:
        return _forecaster_from_card(name_or_path, card, molecular_system, baseline_kwargs)
    if is_surrogate_file(name_or_path):
        baseline_kwargs = dict(baseline_kwargs, surrogate=name_or_path)
        name_or_path = "surrogate"
    if name_or_path in BASELINES:
        if molecular_system is None:
            raise ValueError(f"the {name_or_path!r} baseline needs molecular_system (the system it will drive)")
        if name_or_path == "surrogate":
            baseline_kwargs.setdefault("stride_ps", DEFAULT_SURROGATE_STRIDE_PS)
        if "stride_ps" not in baseline_kwargs:
            raise ValueError(f"the {name_or_path!r} baseline needs stride_ps (time between forecast frames)")
        if name_or_path in _INTEGRATING:
            return BASELINES[name_or_path](molecular_system, **baseline_kwargs)
        kwargs = dict(setup=molecular_system.setup, constraints=molecular_system.constraints, **baseline_kwargs)
        return BASELINES[name_or_path](molecular_system.elements, **kwargs)
    if baseline_kwargs:
        raise TypeError(f"{sorted(baseline_kwargs)} are only accepted for the baselines {', '.join(BASELINES)}")
    if os.path.exists(name_or_path):
        path = name_or_path
    elif name_or_path in shipped_models():
        path = os.path.join(models_directory(), name_or_path + MODEL_SUFFIX)
    elif os.sep in name_or_path or name_or_path.endswith(MODEL_SUFFIX):
        raise ModelFileError(f"forecaster model file {name_or_path!r} does not exist")
    else:
        raise ModelFileError(
            f"{name_or_path!r} is neither a forecaster model file, a shipped model "
            f"({', '.join(shipped_models()) or 'none shipped'}) nor a baseline ({', '.join(BASELINES)})"
        )
    forecaster = load_model_file(path, device=device)
    if molecular_system is not None:
        forecaster.check_compatible(molecular_system.elements, setup=molecular_system.setup)
    return forecaster
