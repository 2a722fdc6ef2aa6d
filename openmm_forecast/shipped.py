"""Files shipped with openmm-forecast: the one place that finds them.

Everything the package ships lies under ``openmm_forecast/resources`` (package data, so it is installed
with a wheel as with an editable install): ``alanine-dipeptide.pdb``, ``models/`` (trained forecasters),
``surrogates/`` (fitted surrogate Systems), ``potentials/`` (fitted and converted ML potentials) and
``reference/`` (converged reference runs with their provenance).  Modules name what they want relative to
that directory and get an absolute path from :func:`resource_path`.
"""

import importlib.resources


def resource_path(name=""):
    """Absolute path of a file or directory shipped in ``openmm_forecast/resources``.

    Parameters
    ----------
    name : str
        Path relative to the resources directory, ``/``-separated (``''``: the directory itself).

    Returns
    -------
    str
    """
    return str(importlib.resources.files("openmm_forecast") / "resources" / name)
