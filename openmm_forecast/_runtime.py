"""Import torch before openmm, and repair openmm plugins that failed to load.

openmm loads its plugins when it is first imported.  The openmm-torch plugins (``TorchForce``) link
against torch's shared libraries (the CUDA build of torch, which also runs on CPU), so they load only
if torch was imported first.  Every module of openmm_forecast imports openmm through this module.
If the user imported openmm before torch, the plugins that failed are loaded again here, from
``openmm.version.openmm_library_path + '/plugins'``, now that torch's libraries are in the process.
"""

import os
import platform
import re

import torch  # (must come first: TorchForce's plugin needs torch's libraries)
import openmm
import numpy as np

from ._version import __version__


def _reload_failed_plugins():
    """Load again the OpenMM plugins whose first load failed (for example, before torch was imported).

    A plugin that still fails (e.g. the OpenCL one on a machine without ``libOpenCL.so.1``) is left out, as
    OpenMM itself leaves it out; :func:`openmm.Platform.getPluginLoadFailures` still lists it.
    """
    for failure in openmm.Platform.getPluginLoadFailures():
        # Messages read "Error loading library /path/libX.so: reason".
        match = re.match(r"Error loading library (.+?\.so[.0-9]*): ", failure)
        path = match.group(1) if match else None
        if path is None or not os.path.isfile(path):
            continue
        try:
            openmm.Platform.loadPluginLibrary(path)
        except Exception:  # still missing a library (e.g. libOpenCL.so.1 on a machine with no GPU)
            continue


_reload_failed_plugins()


def package_versions():
    """Versions of the packages a trained model or a result depends on (dict of str)."""
    return {
        "openmm_forecast": __version__,
        "torch": str(torch.__version__),
        "openmm": openmm.__version__,
        "numpy": np.__version__,
        "python": platform.python_version(),
    }
