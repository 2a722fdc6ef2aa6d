"""Import torch before openmm, and repair openmm plugins that failed to load.

openmm loads its plugins when it is first imported.  The openmm-torch plugins (``TorchForce``) link
against torch's shared libraries (the CUDA build of torch, which also runs on CPU), so they load only
if torch was imported first.  Every module of openmm_forecast imports openmm through this module.
If the user imported openmm before torch, the plugins that failed are loaded again here, from
``openmm.version.openmm_library_path + '/plugins'``, now that torch's libraries are in the process.
"""

import os
import re

import torch  # noqa: F401  (must come first: TorchForce's plugin needs torch's libraries)
import openmm


def _reload_failed_plugins():
    """Load again the OpenMM plugins whose first load failed (for example, before torch was imported).

    Returns
    -------
    list of str
        Load failures that persist after the retry (empty when every plugin now loads).
    """
    remaining = []
    for failure in openmm.Platform.getPluginLoadFailures():
        # Messages read "Error loading library /path/libX.so: reason".
        match = re.match(r"Error loading library (.+?\.so[.0-9]*): ", failure)
        path = match.group(1) if match else None
        if path is None or not os.path.isfile(path):
            remaining.append(failure)
            continue
        try:
            openmm.Platform.loadPluginLibrary(path)
        except Exception as error:  # still missing a library (e.g. libOpenCL.so.1 on a machine with no GPU)
            remaining.append(str(error))
    return remaining


PLUGIN_LOAD_FAILURES = _reload_failed_plugins()
