"""Make ANI-1x's shipped weights and its test fixture from the parameter files of the torchani 2.2.4 wheel.

Usage: python scripts/make_ani1x.py [--work-dir DIR] [--no-ship]

1. ``pip download --no-deps torchani==2.2.4`` (PyPI) and extract ``torchani/resources/ani-1x_8x/`` from the
   wheel (NeuroChem files: AEV constants, ``sae_linfit.dat`` self energies, ``train0..7/networks``);
2. torchani 2.9's ``neurochem`` reader builds the 8-model ensemble from them (under a float64 default dtype,
   so that the self energies stay exact; the network parameters are float32 in the files).  Its AEV constants
   must equal those of :func:`~openmm_forecast.potentials.ani1x_architecture` (torchani 2.9's own ANI-1x
   architecture), and the state dict must load into it.  Written to
   ``openmm_forecast/resources/potentials/ani1x_state_dict.pt``: float32 network parameters (the published
   values, bit for bit), float64 self energies;
3. torchani 2.2.4 itself, installed with ``pip install --no-deps --target`` into the work directory on top of
   this environment's torch (a throwaway layer, not a second torch), builds its own model from the same files
   and evaluates, in float64, energies (Hartree) and forces (Hartree/Angstrom) of alanine dipeptide (the
   shipped PDB structure and 4 random perturbations of it) and of glycine (a second H/C/N/O molecule: its
   ANI-1x minimum, made here, and a perturbation), with its own kJ/mol per Hartree.  Written to
   ``tests/data/ani1x_reference.npz``;
4. the converted weights, loaded as ``ani1x_module`` loads them (float64 and float32), are compared with that
   reference and the differences printed.

``--no-ship`` writes both files into the work directory only.  Takes about a minute (downloads ~11 MB).
"""

import argparse
import glob
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile

import numpy as np
import torch
from openmm import unit

from openmm_forecast.potentials import (
    ANGSTROM_PER_NM,
    ANI1X_STATE_DICT,
    _pretrained_module,
    ani1x_architecture,
)
from openmm_forecast.systems import load_alanine_dipeptide, resource_path

TORCHANI_WHEEL = "torchani==2.2.4"
# torchani 2.2.4's imports beside torch (its neurochem module imports lark and requests; importlib_metadata
# newer than 6.8 pulls in more).  Pinned to the versions the shipped files were made with.
REFERENCE_LAYER = [TORCHANI_WHEEL, "lark==1.3.1", "importlib_metadata==6.8.0", "zipp==4.1.2", "requests==2.34.2",
                   "urllib3==2.8.0", "idna==3.21", "certifi==2026.10.19.post1", "charset_normalizer==3.5.3"]
RESOURCES = "torchani/resources/ani-1x_8x/"
CONSTANTS_FILE = "rHCNO-5.2R_16-3.5A_a4-8.params"
SAE_FILE = "sae_linfit.dat"
FIXTURE = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "data",
                                        "ani1x_reference.npz"))

GLYCINE_ELEMENTS = ["N", "C", "C", "O", "O", "H", "H", "H", "H", "H"]
"""Neutral glycine NH2-CH2-COOH: N, CA, C, O (carbonyl), O (hydroxyl), 2 H on N, 2 H on CA, H on O."""
GLYCINE_START_A = np.array([
    [-0.50, 1.38, 0.00], [0.00, 0.00, 0.00], [1.52, 0.00, 0.00], [2.12, 1.06, 0.00], [2.15, -1.18, 0.00],
    [-0.95, 1.83, 0.77], [-0.95, 1.83, -0.77], [-0.38, -0.60, 0.83], [-0.38, -0.60, -0.83], [3.10, -1.05, 0.00],
])
"""A rough hand-made glycine geometry in Angstrom, shape (10, 3): the start of its ANI-1x minimisation."""

REFERENCE_PROGRAM = r'''
"""Run under torchani 2.2.4: energies and forces of its own ANI-1x model built from the NeuroChem files."""
import sys

import numpy as np
import torch
from openmm import unit
import torchani
from torchani import neurochem

resources, inputs, output = sys.argv[1:4]
assert torchani.__file__.startswith(sys.argv[4]), torchani.__file__  # 2.2.4 from the layer, not 2.9
torch.set_num_threads(1)
constants = neurochem.Constants(resources + "/rHCNO-5.2R_16-3.5A_a4-8.params")
model = torch.nn.Sequential(
    torchani.AEVComputer(**constants),
    neurochem.load_model_ensemble(constants.species, resources + "/train", 8),
    neurochem.load_sae(resources + "/sae_linfit.dat"),
).double()
results = {}
with np.load(inputs) as data:
    for name in ("ala2", "glycine"):
        positions = torch.tensor(data[name + "_positions_A"], dtype=torch.float64, requires_grad=True)
        species = constants.species_to_tensor(list(data[name + "_elements"])).unsqueeze(0)
        energies = model((species.expand(positions.shape[0], -1), positions)).energies
        forces = -torch.autograd.grad(energies.sum(), positions)[0]
        results[name + "_energies_hartree"] = energies.detach().numpy()
        results[name + "_forces_hartree_per_A"] = forces.numpy()
results["kj_per_mol_per_hartree"] = np.float64(torchani.units.hartree2kjoulemol(1.0))
np.savez(output, **results)
'''


def sha256(path):
    """SHA-256 hex digest of a file."""
    with open(path, "rb") as handle:
        return hashlib.sha256(handle.read()).hexdigest()


def fetch_parameter_files(work_dir):
    """Download the torchani 2.2.4 wheel and extract its ``ani-1x_8x`` directory.

    Returns
    -------
    resources : str
        The extracted ``ani-1x_8x`` directory.
    wheel : str
        Path of the wheel.
    """
    subprocess.run([sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", TORCHANI_WHEEL, "-d", work_dir],
                   check=True)
    (wheel,) = glob.glob(os.path.join(work_dir, "torchani-2.2.4-*.whl"))
    with zipfile.ZipFile(wheel) as archive:
        members = [name for name in archive.namelist() if name.startswith(RESOURCES)]
        archive.extractall(work_dir, members)
    return os.path.join(work_dir, RESOURCES), wheel


def convert(resources):
    """State dict of :func:`ani1x_architecture` with the NeuroChem files' parameters.

    Returns
    -------
    dict of str to torch.Tensor
        Network parameters float32 (as in the files), self energies (Hartree) float64, integer buffers as built.

    Raises
    ------
    RuntimeError
        The files' AEV constants differ from torchani 2.9's ANI-1x architecture, or a parameter is not exactly
        float32.
    """
    from torchani import neurochem
    from torchani.arch import ANI

    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)  # the self energies are parsed into torch.tensor(list of floats)
    try:
        aev_computer, symbols = neurochem.load_aev_computer_and_symbols(os.path.join(resources, CONSTANTS_FILE))
        model = ANI(symbols, aev_computer, neurochem.load_ensemble(symbols, os.path.join(resources, "train"), 8),
                    neurochem.load_sae(os.path.join(resources, SAE_FILE)), periodic_table_index=True)
    finally:
        torch.set_default_dtype(previous)
    architecture = ani1x_architecture().double()
    expected = architecture.state_dict()
    state = {}
    for key, value in model.state_dict().items():
        if key.startswith("potentials.nnp.aev_computer.") and not torch.equal(value, expected[key].to(value.dtype)):
            raise RuntimeError(f"AEV constant {key} of the files differs from torchani 2.9's ANI-1x architecture")
        if key.startswith("potentials.nnp.neural_networks."):
            if not torch.equal(value.float().double(), value):
                raise RuntimeError(f"parameter {key} is not exactly float32")
            value = value.float()
        state[key] = value.detach().clone()
    architecture.load_state_dict(state)  # strict: same keys and shapes
    return state


def ani1x(elements, dtype, weights):
    """What :func:`~openmm_forecast.potentials.ani1x_module` returns, with the weights at ``weights``."""
    return _pretrained_module(ani1x_architecture(), weights, elements, dtype, "ANI-1x")


def glycine_minimum_A(weights):
    """Glycine's ANI-1x minimum near :data:`GLYCINE_START_A` (float64, L-BFGS), in Angstrom, shape (10, 3)."""
    module = ani1x(GLYCINE_ELEMENTS, "float64", weights)
    positions = torch.tensor(GLYCINE_START_A / ANGSTROM_PER_NM, requires_grad=True)
    optimizer = torch.optim.LBFGS([positions], max_iter=500, tolerance_grad=1e-6, line_search_fn="strong_wolfe")

    def closure():
        optimizer.zero_grad()
        energy = module(positions)
        energy.backward()
        return energy

    optimizer.step(closure)
    return positions.detach().numpy() * ANGSTROM_PER_NM


def configurations(weights):
    """The fixture's configurations: (elements, positions in Angstrom, shape (n_configurations, n_atoms, 3))."""
    rng = np.random.default_rng(1717)
    pdb = load_alanine_dipeptide()
    ala2_elements = [atom.element.symbol for atom in pdb.topology.atoms()]
    ala2 = np.array(pdb.positions.value_in_unit(unit.angstrom))
    ala2_set = [ala2] + [ala2 + rng.normal(0.0, sigma, ala2.shape) for sigma in (0.03, 0.06, 0.1, 0.15)]
    glycine = glycine_minimum_A(weights)
    glycine_set = [glycine, glycine + rng.normal(0.0, 0.08, glycine.shape)]
    return {"ala2": (ala2_elements, np.array(ala2_set)), "glycine": (GLYCINE_ELEMENTS, np.array(glycine_set))}


def reference(work_dir, resources, sets):
    """Energies (Hartree) and forces (Hartree/A) of ``sets`` from torchani 2.2.4's own float64 model."""
    layer = os.path.join(work_dir, "torchani224")
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--target", layer,
                    *REFERENCE_LAYER], check=True)
    inputs, output, program = (os.path.join(work_dir, name) for name in ("inputs.npz", "outputs.npz", "ref.py"))
    np.savez(inputs, **{f"{name}_{key}": value for name, (elements, positions) in sets.items()
                        for key, value in (("elements", np.array(elements)), ("positions_A", positions))})
    with open(program, "w") as handle:
        handle.write(REFERENCE_PROGRAM)
    environment = dict(os.environ, PYTHONPATH=layer, PYTHONWARNINGS="ignore")
    subprocess.run([sys.executable, program, resources, inputs, output, layer], check=True, env=environment,
                   cwd=work_dir)
    with np.load(output) as data:
        return {key: data[key] for key in data.files}


def compare(sets, labels, weights):
    """Largest differences of the converted ANI-1x (float64, float32) from the reference, in kJ/mol and kJ/mol/nm."""
    report = {}
    for dtype in ("float64", "float32"):
        for name, (elements, positions_A) in sets.items():
            module = ani1x(elements, dtype, weights)
            positions = torch.tensor(positions_A / ANGSTROM_PER_NM, requires_grad=True)
            energies = module.energies(positions)
            forces = -torch.autograd.grad(energies.sum(), positions)[0].double().numpy()
            energy_ref = labels[f"{name}_energies_hartree"] * labels["kj_per_mol_per_hartree"]
            forces_ref = labels[f"{name}_forces_hartree_per_A"] * labels["kj_per_mol_per_hartree"] * ANGSTROM_PER_NM
            report[f"{name} {dtype}"] = {
                "max_abs_energy_error_kJ_per_mol": float(np.abs(energies.detach().double().numpy() - energy_ref).max()),
                "max_abs_force_error_kJ_per_mol_nm": float(np.abs(forces - forces_ref).max()),
                "max_abs_force_kJ_per_mol_nm": float(np.abs(forces_ref).max()),
            }
    return report


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work-dir", default=None, help="keep the download and layer here (default: a temp dir)")
    parser.add_argument("--no-ship", action="store_true", help="write the outputs into the work dir only")
    args = parser.parse_args()
    torch.set_num_threads(1)
    work_dir = args.work_dir or tempfile.mkdtemp(prefix="make_ani1x_")
    os.makedirs(work_dir, exist_ok=True)
    try:
        resources, wheel = fetch_parameter_files(work_dir)
        weights = os.path.join(work_dir, "ani1x_state_dict.pt") if args.no_ship else resource_path(ANI1X_STATE_DICT)
        fixture = os.path.join(work_dir, "ani1x_reference.npz") if args.no_ship else FIXTURE
        torch.save(convert(resources), weights)
        sets = configurations(weights)
        labels = reference(work_dir, resources, sets)
        provenance = {"wheel": os.path.basename(wheel), "wheel_sha256": sha256(wheel), "weights_sha256": sha256(weights),
                      "reference": "torchani 2.2.4 neurochem model of ani-1x_8x, float64, torch " + torch.__version__}
        np.savez_compressed(fixture, provenance=json.dumps(provenance), **labels,
                            **{f"{name}_{key}": value for name, (elements, positions) in sets.items()
                               for key, value in (("elements", np.array(elements)), ("positions_A", positions))})
        report = dict(provenance, weights=weights, weights_bytes=os.path.getsize(weights), fixture=fixture,
                      agreement=compare(sets, labels, weights))
        print(json.dumps(report, indent=1))
    finally:
        if args.work_dir is None:
            shutil.rmtree(work_dir, ignore_errors=True)


if __name__ == "__main__":
    main()
