"""Configuration files: YAML mappings read into (possibly nested) dataclasses and written back.

Shared by the forecaster training (:class:`openmm_forecast.training.TrainingConfig`) and the potential
fitting (:class:`openmm_forecast.potential_training.PotentialFitConfig`) so that both refuse unknown keys,
name the offending key in every error, and write their effective configuration the same way.
"""

import dataclasses
import json

from ._io import atomic_write_path

_REQUIRED = object()  # the default of a field without one


def checked(value, kind, where, ok=None, requirement=None, optional=False):
    """Check one setting and return it (an int given for a float becomes a float).

    Parameters
    ----------
    value : object
        The setting as read.
    kind : type
        Required type; ``True``/``False`` pass only for ``bool`` (never as numbers).
    where : str
        Name of the setting in messages, e.g. ``'stride_ps'`` or ``'config.training.batch_size'``.
    ok : callable, optional
        ``ok(value) -> bool``: the allowed range.
    requirement : str, optional
        What ``ok`` requires, for the message (default: the type's name).
    optional : bool
        Whether None is allowed.

    Raises
    ------
    ValueError
        ``'<where> must be <requirement>, got <value>'``.
    """
    if value is None and optional:
        return None
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    wrong_type = not isinstance(value, kind) or (isinstance(value, bool) and kind is not bool)
    if wrong_type or (ok is not None and not ok(value)):
        got = f"{value!r} ({type(value).__name__})" if wrong_type else repr(value)
        hint = ""
        if wrong_type and kind is float and isinstance(value, str) and _parses_as_float(value):
            hint = " (YAML reads an exponent without a decimal point as text: write 1.0e-3, not 1e-3)"
        raise ValueError(f"{where} must be {requirement or kind.__name__}, got {got}{hint}")
    return value


def _parses_as_float(text):
    try:
        float(text)
    except ValueError:
        return False
    return True


def check_field(config, name, kind, ok=None, requirement=None, optional=False, where=None):
    """:func:`checked` on the attribute ``name`` of ``config``, storing the (coerced) value back."""
    value = checked(getattr(config, name), kind, where or name, ok, requirement, optional)
    setattr(config, name, value)


def from_mapping(cls, values, where, check_types=False):
    """Build the dataclass ``cls`` from a mapping, refusing unknown and missing required keys.

    Fields whose default is a dataclass are read recursively from nested mappings (their messages name
    ``<where>.<field>``); keys left out take their defaults.

    Parameters
    ----------
    cls : type
        A dataclass.
    values : dict
        Settings by field name.
    where : str
        Name of this mapping in messages (``'training config'``, ``'config.sampling'``).
    check_types : bool
        Also require each value to have the type of its field's default (see :func:`checked`); for
        dataclasses whose ``__post_init__`` does not check types itself.

    Raises
    ------
    ValueError
        Naming the unknown, missing or mistyped keys (unknown ones with the list of known keys).
    """
    if not isinstance(values, dict):
        raise ValueError(f"{where} must be a mapping, got {values!r}")
    fields = {field.name: field for field in dataclasses.fields(cls)}
    unknown = sorted(set(values) - set(fields))
    if unknown:
        raise ValueError(f"unknown {where} keys {unknown}; known keys: {', '.join(fields)}")
    missing = [name for name, field in fields.items() if name not in values and _default(field) is _REQUIRED]
    if missing:
        raise ValueError(f"the {where} lacks the required keys {missing}")
    converted = {}
    for name, value in values.items():
        default = _default(fields[name])
        if dataclasses.is_dataclass(default):
            converted[name] = from_mapping(type(default), value, f"{where}.{name}", check_types)
        elif check_types and default is not _REQUIRED and default is not None:
            converted[name] = checked(value, type(default), f"{where}.{name}")
        else:
            converted[name] = value
    return cls(**converted)


def _default(field):
    if field.default is not dataclasses.MISSING:
        return field.default
    if field.default_factory is not dataclasses.MISSING:
        return field.default_factory()
    return _REQUIRED


def to_plain_dict(config):
    """Plain-Python nested copy of a dataclass (lists, dicts, str, numbers: JSON/YAML serialisable)."""
    return json.loads(json.dumps(dataclasses.asdict(config)))


def read_yaml_mapping(path, what):
    """The mapping in a YAML file (an empty file gives ``{}``).

    Parameters
    ----------
    path : str or os.PathLike
    what : str
        What the mapping holds, for the message (``'training settings'``).

    Raises
    ------
    ValueError
        If the file holds something other than a mapping.
    """
    import yaml

    with open(path) as handle:
        values = yaml.safe_load(handle)
    if values is None:
        return {}
    if not isinstance(values, dict):
        raise ValueError(f"{path} must hold a YAML mapping of {what}")
    return values


def write_yaml(path, values):
    """Write a mapping as YAML (keys in their order) atomically, e.g. a run's effective ``config.yaml``."""
    import yaml

    with atomic_write_path(path) as temporary, open(temporary, "w") as handle:
        yaml.safe_dump(values, handle, sort_keys=False)
