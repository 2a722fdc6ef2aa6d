"""Learned forecasters: a torch module behind the :class:`Forecaster` interface, and its model file.

A learned architecture is a ``torch.nn.Module`` with

``forward(positions: Tensor[B, H, N, 3], velocities: Tensor[B, H, N, 3], n_frames: int)
-> (Tensor[B, K, N, 3], Tensor[B, K, N, 3])``

(a module whose metadata says ``extra['uses_forces']`` takes a fourth argument, the forces at the
current state, ``Tensor[B, N, 3]`` in kJ/mol/nm)

(positions in nm, velocities in nm/ps, ``K = n_frames`` frames at ``t + k * stride_ps``), the float
attribute ``stride_ps`` and the buffer ``atomic_numbers`` (int64, shape (N,)).  It must be scriptable
with ``torch.jit.script``.

A model file is that module, scripted, with its :class:`ForecasterMetadata` as JSON in the extra file
``metadata.json``: self-contained, loadable with ``torch.jit.load`` and no openmm-forecast training code.
"""

import json
import os

import numpy as np
import torch

from .._io import atomic_write_path
from ..errors import ModelFileError
from .base import Forecaster, ForecasterMetadata

METADATA_FILE = "metadata.json"
"""Name of the extra file holding the metadata inside a model file."""


def atomic_numbers_of(elements):
    """Atomic numbers of element symbols (list of int)."""
    from openmm.app import element

    try:
        return [element.Element.getBySymbol(symbol).atomic_number for symbol in elements]
    except KeyError as error:
        raise ValueError(f"unknown element symbol {error.args[0]!r}") from error


def masses_of(elements):
    """Standard atomic masses of element symbols, in amu (numpy array)."""
    from openmm import unit
    from openmm.app import element

    return np.array([element.Element.getBySymbol(symbol).mass.value_in_unit(unit.dalton) for symbol in elements])


def _module_dtype(module):
    for tensor in list(module.parameters()) + list(module.buffers()):
        if tensor.is_floating_point():
            return tensor.dtype
    return torch.float32


class TorchForecaster(Forecaster):
    """A torch module (plain or TorchScript) as a :class:`Forecaster`.

    Parameters
    ----------
    module : torch.nn.Module or torch.jit.ScriptModule
        The model (see the module docstring for its contract).
    metadata : ForecasterMetadata
        What the model is for; its elements and stride must match the module's.
    device : str or torch.device
        Where the model runs ('cpu', 'cuda', ...).

    Notes
    -----
    Inputs and outputs are float64 NumPy arrays; the model computes in the dtype of its parameters
    (float32 or float64), under ``torch.inference_mode``, batched over walkers.
    """

    def __init__(self, module, metadata, device="cpu"):
        self.device = torch.device(device)
        self.module = module.to(self.device).eval()
        self.metadata = metadata
        self.dtype = _module_dtype(module)
        numbers = getattr(module, "atomic_numbers", None)
        if numbers is None or [int(z) for z in numbers.cpu()] != atomic_numbers_of(metadata.elements):
            raise ValueError(
                f"the {metadata.architecture!r} module's atoms (buffer atomic_numbers) do not match its "
                f"metadata elements {''.join(metadata.elements)}"
            )
        stride = getattr(module, "stride_ps", None)
        if stride is None or not np.isclose(float(stride), metadata.stride_ps, rtol=1e-9, atol=0.0):
            raise ValueError(
                f"the {metadata.architecture!r} module's stride ({stride} ps) does not match its metadata "
                f"({metadata.stride_ps} ps)"
            )

    def _forecast(self, positions, velocities, n_frames, forces=None):
        x = torch.as_tensor(positions, dtype=self.dtype, device=self.device)
        v = torch.as_tensor(velocities, dtype=self.dtype, device=self.device)
        with torch.inference_mode():
            if forces is None:  # model files without a forces argument keep working
                new_x, new_v = self.module(x, v, int(n_frames))
            else:
                f = torch.as_tensor(forces, dtype=self.dtype, device=self.device)
                new_x, new_v = self.module(x, v, int(n_frames), f)
        return (
            new_x.to(torch.float64).cpu().numpy(),
            new_v.to(torch.float64).cpu().numpy(),
        )


def save_forecaster(forecaster, path):
    """Write a learned forecaster to a self-contained TorchScript model file.

    Parameters
    ----------
    forecaster : TorchForecaster
        The forecaster to save (its module is scripted with ``torch.jit.script``).
    path : str or os.PathLike
        Destination file (conventionally ``*.pt``).  Written to a temporary file first and moved into
        place, so an existing file is never left half-written.

    Raises
    ------
    TypeError
        If ``forecaster`` is not a :class:`TorchForecaster`.
    ModelFileError
        If the module cannot be scripted.
    """
    if not isinstance(forecaster, TorchForecaster):
        raise TypeError(
            f"only learned (torch) forecasters can be saved, got {type(forecaster).__name__} "
            f"({forecaster.metadata.architecture!r}); baselines are rebuilt by name with load_forecaster"
        )
    module = forecaster.module
    if not isinstance(module, torch.jit.ScriptModule):
        try:
            module = torch.jit.script(module)
        except Exception as error:
            raise ModelFileError(
                f"the {forecaster.metadata.architecture!r} module cannot be scripted with torch.jit.script: {error}"
            ) from error
    with atomic_write_path(path) as temporary:
        torch.jit.save(module, temporary, _extra_files={METADATA_FILE: forecaster.metadata.to_json()})


def load_model_file(path, device="cpu"):
    """Read a model file written by :func:`save_forecaster`.

    Parameters
    ----------
    path : str or os.PathLike
        The model file.
    device : str or torch.device
        Where the model runs.

    Returns
    -------
    TorchForecaster

    Raises
    ------
    ModelFileError
        The file does not exist, is not TorchScript, or lacks valid openmm-forecast metadata.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise ModelFileError(f"forecaster model file {path!r} does not exist")
    extra = {METADATA_FILE: ""}
    try:
        module = torch.jit.load(path, map_location=device, _extra_files=extra)
    except Exception as error:
        raise ModelFileError(
            f"{path!r} is not a readable TorchScript forecaster (corrupt or not a model file): {error}"
        ) from error
    text = extra[METADATA_FILE]
    if isinstance(text, bytes):
        text = text.decode()
    if not text:
        raise ModelFileError(
            f"{path!r} is a TorchScript module without openmm-forecast metadata ({METADATA_FILE}); "
            "save forecasters with openmm_forecast.save_forecaster"
        )
    if _is_potential_metadata(text):
        raise ModelFileError(
            f"{path!r} is a potential (an energy function, U(positions)), not a forecaster: use it with "
            "--setup ml --potential-file (build_system('ml', potential_file=...)), and give --model a forecaster"
        )
    try:
        metadata = ForecasterMetadata.from_json(text)
    except Exception as error:
        raise ModelFileError(f"the metadata of {path!r} is invalid: {error}") from error
    try:
        return TorchForecaster(module, metadata, device=device)
    except ValueError as error:
        raise ModelFileError(f"{path!r} is inconsistent: {error}") from error


def _is_potential_metadata(text):
    """Whether a ``metadata.json`` is that of an openmm-forecast potential (see :mod:`openmm_forecast.potentials`)."""
    from ..potentials import METADATA_FORMAT as POTENTIAL_FORMAT

    try:
        return json.loads(text).get("format") == POTENTIAL_FORMAT
    except (ValueError, AttributeError):
        return False
