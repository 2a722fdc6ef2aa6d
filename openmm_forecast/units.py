"""Unit checking at the public boundary.

Public functions take ``openmm.unit.Quantity`` arguments; internally openmm-forecast works in plain
floats in OpenMM's MD units: nm, ps, kJ/mol, K, amu.  This module converts one to the other and
refuses plain numbers and wrong dimensions with a message that names the argument.
"""

import numpy as np
from openmm import unit

from .errors import UnitError


def strip_units(value, target_unit, name):
    """Return ``value`` in ``target_unit`` as a float (or array), refusing missing or wrong units.

    Parameters
    ----------
    value : openmm.unit.Quantity
        The quantity given by the caller.
    target_unit : openmm.unit.Unit
        Unit to express it in (for example ``unit.picosecond``).
    name : str
        Argument name, used in the error message.

    Returns
    -------
    float or numpy.ndarray
        The magnitude in ``target_unit``.

    Raises
    ------
    UnitError
        If ``value`` has no units or units incompatible with ``target_unit``.
    """
    example = f"1.0*unit.{target_unit.get_name()}"
    if not unit.is_quantity(value):
        raise UnitError(
            f"{name} must be an openmm.unit.Quantity in units compatible with {target_unit}, "
            f"got the plain value {value!r}; write for example {example}"
        )
    if not value.unit.is_compatible(target_unit):
        raise UnitError(
            f"{name} must be in units compatible with {target_unit}, got {value} "
            f"(units {value.unit}); write for example {example}"
        )
    return value.value_in_unit(target_unit)


def require_int(name, value, minimum):
    """Refuse ``value`` unless it is an integer (not a bool) >= ``minimum``.

    Raises
    ------
    ValueError
        Naming ``name``.
    """
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")


def positive(value, target_unit, name, allow_zero=False):
    """Like :func:`strip_units`, and also require a finite value > 0 (or >= 0 with ``allow_zero``)."""
    magnitude = strip_units(value, target_unit, name)
    ok = magnitude >= 0 if allow_zero else magnitude > 0
    if not ok or magnitude != magnitude or magnitude == float("inf"):
        bound = ">= 0" if allow_zero else "> 0"
        raise ValueError(f"{name} must be finite and {bound}, got {value}")
    return magnitude


# Boltzmann constant times Avogadro's number, in kJ/mol/K.
MOLAR_GAS_CONSTANT_KJ = (unit.MOLAR_GAS_CONSTANT_R).value_in_unit(unit.kilojoule_per_mole / unit.kelvin)


def kT_kJ(temperature_K):
    """Thermal energy kT in kJ/mol for a temperature in K."""
    return MOLAR_GAS_CONSTANT_KJ * temperature_K


def whole_steps(span_ps, step_ps, name, step_name="the time step", allow_zero=False):
    """Number of steps of ``step_ps`` in ``span_ps``, refusing spans that are not a whole number of them.

    Parameters
    ----------
    span_ps, step_ps : float
        Span and step, in ps.
    name, step_name : str
        What they are, for the error message.
    allow_zero : bool
        Accept a span of zero steps.

    Returns
    -------
    int

    Raises
    ------
    ValueError
        A negative span, zero steps (unless ``allow_zero``), or a span off a whole number of steps by more
        than 1e-6 of a step.
    """
    steps = round(span_ps / step_ps)
    if abs(steps * step_ps - span_ps) > 1e-6 * step_ps or steps < (0 if allow_zero else 1):
        raise ValueError(
            f"{name} ({span_ps * 1000:g} fs) must be a {'' if allow_zero else 'positive '}whole number of time "
            f"steps: a multiple of {step_name} ({step_ps * 1000:g} fs)"
        )
    return int(steps)
