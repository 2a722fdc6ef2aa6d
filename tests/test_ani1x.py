"""The ``ani1x`` setup and :func:`ani1x_force`: torchani 2.2.4's own ANI-1x numbers, MD, refusals, other molecules.

``tests/data/ani1x_reference.npz`` (made by ``scripts/make_ani1x.py``) holds torchani 2.2.4's float64
evaluation of its own ANI-1x model, built from the wheel's NeuroChem files, for alanine dipeptide (the PDB
structure and 4 perturbations) and glycine (2 configurations): energies in Hartree, forces in Hartree/A,
positions in A, and torchani 2.2.4's kJ/mol per Hartree.
"""

import hashlib
import json
import os

import numpy as np
import pytest
import torch
from openmm import app, unit

from openmm_forecast import ModelMismatchError, build_system
from openmm_forecast._runtime import openmm as mm
from openmm_forecast.potentials import ANI1X_DTYPE, ANI1X_STATE_DICT, ani1x_module
from openmm_forecast.systems import ani1x_force, resource_path

FIXTURE = os.path.join(os.path.dirname(__file__), "data", "ani1x_reference.npz")
KJ_MOL_NM = unit.kilojoule_per_mole / unit.nanometer


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def reference():
    """Per molecule: elements, positions (nm, (n_conf, n_atoms, 3)), energies (kJ/mol), forces (kJ/mol/nm)."""
    with np.load(FIXTURE) as data:
        kj = float(data["kj_per_mol_per_hartree"])
        return {
            name: (
                [str(symbol) for symbol in data[f"{name}_elements"]],
                data[f"{name}_positions_A"] / 10.0,
                data[f"{name}_energies_hartree"] * kj,
                data[f"{name}_forces_hartree_per_A"] * kj * 10.0,
            )
            for name in ("ala2", "glycine")
        }


def tolerances(dtype, energies, forces):
    """Energy and force tolerances (kJ/mol, kJ/mol/nm) of a ``dtype`` evaluation against float64 torchani 2.2.4.

    float64: both compute the same float64 arithmetic on the same float32 parameters; the energies agree to
    the last bits of ~1e6 kJ/mol (1e-12 relative) and the forces to ~1e-10 kJ/mol/nm.  float32: the absolute
    energy (~1.3e6 kJ/mol, self energies included) is a float32 number, whose spacing there is 0.125 kJ/mol:
    4 spacings; forces: ~1e-7 relative rounding summed over 384-wide layers and 8 models, 2e-5 of the largest
    force (measured: 3e-6).  A wrong weight, self energy or unit is off by orders of magnitude more.
    """
    if dtype == "float64":
        return 1e-12 * np.abs(energies).max(), 1e-6
    return 4 * np.spacing(np.float32(np.abs(energies).max())), 2e-5 * np.abs(forces).max()


def molecule_topology(elements):
    """A one-residue Topology of ``elements`` (no bonds: ANI-1x needs none)."""
    topology = app.Topology()
    residue = topology.addResidue("MOL", topology.addChain())
    for index, symbol in enumerate(elements):
        topology.addAtom(f"{symbol}{index}", app.Element.getBySymbol(symbol), residue)
    return topology


def ani1x_context(topology, platform, dtype=None):
    """A Context of a System holding only ``ani1x_force(topology)``, element masses."""
    system = mm.System()
    for atom in topology.atoms():
        system.addParticle(atom.element.mass)
    system.addForce(ani1x_force(topology, dtype))
    return mm.Context(system, mm.VerletIntegrator(0.001), mm.Platform.getPlatformByName(platform))


def evaluate(context, positions_nm):
    """Energies (kJ/mol, (n_conf,)) and forces (kJ/mol/nm, (n_conf, n_atoms, 3)) of each configuration."""
    energies, forces = [], []
    for frame in positions_nm:
        context.setPositions(frame)
        state = context.getState(getEnergy=True, getForces=True)
        energies.append(state.getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole))
        forces.append(state.getForces(asNumpy=True).value_in_unit(KJ_MOL_NM))
    return np.array(energies), np.array(forces)


def temperature_K(state, system):
    """Instantaneous kinetic temperature of ``state`` (no CMMotionRemover: 3N minus constraints)."""
    dof = 3 * system.getNumParticles() - system.getNumConstraints()
    kinetic = state.getKineticEnergy().value_in_unit(unit.kilojoule_per_mole)
    return 2 * kinetic / (dof * unit.MOLAR_GAS_CONSTANT_R.value_in_unit(unit.kilojoule_per_mole / unit.kelvin))


def test_fixture_was_made_from_the_shipped_weights():
    """scripts/make_ani1x.py wrote both files in one run: the fixture names the weights' SHA-256."""
    with np.load(FIXTURE) as data:
        provenance = json.loads(str(data["provenance"]))
    with open(resource_path(ANI1X_STATE_DICT), "rb") as handle:
        assert hashlib.sha256(handle.read()).hexdigest() == provenance["weights_sha256"]


@pytest.mark.parametrize("platform", ["Reference", "CPU"])
def test_setup_equals_torchani_224(reference, platform):
    """The ``ani1x`` setup's TorchForce gives torchani 2.2.4's own energies and forces of alanine dipeptide."""
    elements, positions, energies, forces = reference["ala2"]
    setup = build_system("ani1x", constraints=None)
    assert setup.elements == elements
    simulation = setup.create_simulation(platform=platform, minimize=False)
    got_energies, got_forces = evaluate(simulation.context, positions)
    energy_tol, force_tol = tolerances(ANI1X_DTYPE, energies, forces)
    np.testing.assert_allclose(got_energies, energies, rtol=0, atol=energy_tol)
    np.testing.assert_allclose(got_forces, forces, rtol=0, atol=force_tol)


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("name", ["ala2", "glycine"])
def test_each_precision_equals_torchani_224(reference, name, dtype):
    """Both precisions, for alanine dipeptide and for glycine (a second molecule, a hand-written Topology)."""
    elements, positions, energies, forces = reference[name]
    context = ani1x_context(molecule_topology(elements), "Reference", dtype)
    got_energies, got_forces = evaluate(context, positions)
    energy_tol, force_tol = tolerances(dtype, energies, forces)
    np.testing.assert_allclose(got_energies, energies, rtol=0, atol=energy_tol)
    np.testing.assert_allclose(got_forces, forces, rtol=0, atol=force_tol)


def test_module_gives_energies_and_forces_in_openmm_units(reference):
    """The TorchScript module alone: nm in, kJ/mol out, forces by autograd (what the TorchForce wraps)."""
    elements, positions, energies, forces = reference["glycine"]
    module = ani1x_module(elements, "float64")
    x = torch.tensor(positions, requires_grad=True)
    got = module.energies(x)
    got_forces = -torch.autograd.grad(got.sum(), x)[0]
    np.testing.assert_allclose(got.detach().numpy(), energies, rtol=1e-12)
    np.testing.assert_allclose(got_forces.numpy(), forces, rtol=0, atol=1e-6)


def test_langevin_md_stays_finite_near_300K():
    """300 steps of 1 fs Langevin MD (HBonds) from the PDB structure: finite, and thermalised near 300 K.

    Friction 10/ps thermalises within ~0.1 ps.  The mean of 20 samples over the last 0.2 ps had a spread of
    37 K over 8 seeds (257-369 K: the unminimised start heats, 54 degrees of freedom fluctuate by 19 %); the
    band 180-420 K is 3.3 of those.  Forces of the wrong sign or units explode or heat far beyond it.
    """
    setup = build_system("ani1x", timestep=1.0 * unit.femtosecond, friction=10.0 / unit.picosecond)
    simulation = setup.create_simulation(platform="Reference", seed=17, minimize=False)
    simulation.step(100)
    temperatures = []
    for _ in range(20):
        simulation.step(10)
        state = simulation.context.getState(getEnergy=True, getPositions=True)
        assert np.isfinite(state.getPositions(asNumpy=True).value_in_unit(unit.nanometer)).all()
        assert np.isfinite(state.getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole))
        temperatures.append(temperature_K(state, setup.system))
    assert 180.0 < np.mean(temperatures) < 420.0, temperatures


def test_verlet_conserves_energy():
    """200 steps of 0.5 fs velocity Verlet (no constraints): the total energy stays within a 1.5 kJ/mol band.

    Checks that the forces OpenMM integrates are the gradient of the energy it reports.  Measured band: 0.19-0.53
    kJ/mol over 3 seeds (integration error from the unminimised start, and the float32 default's rounding of
    ~0.05 kJ/mol); forces inconsistent with the energy make it drift by the work they do (tens of kJ/mol).
    """
    setup = build_system("ani1x", constraints=None)
    simulation = setup.create_simulation(platform="Reference", integrator=mm.VerletIntegrator(0.0005), seed=3,
                                         minimize=False)
    totals = []
    for _ in range(20):
        simulation.step(10)
        state = simulation.context.getState(getEnergy=True)
        totals.append((state.getPotentialEnergy() + state.getKineticEnergy()).value_in_unit(unit.kilojoule_per_mole))
    assert np.ptp(totals) < 1.5, totals


def test_other_elements_are_refused():
    """Sulfur, chlorine or an atom without element: ModelMismatchError naming the atoms."""
    with pytest.raises(ModelMismatchError, match=r"ANI-1x supports only H, C, N, O; this molecule has S \(atom 1\)"):
        ani1x_force(molecule_topology(["C", "S", "H", "H", "H", "H"]))
    with pytest.raises(ModelMismatchError, match=r"Cl \(atom 0\)"):
        ani1x_module(["Cl", "C", "H", "H", "H"])
    topology = molecule_topology(["O", "H", "H"])
    topology.addAtom("X", None, next(topology.residues()))
    with pytest.raises(ModelMismatchError, match=r"no element \(atom 3\)"):
        ani1x_force(topology)


def test_setup_takes_no_potential_file():
    with pytest.raises(ValueError, match="only used by the 'ml' setup"):
        build_system("ani1x", potential_file="ani1x.pt")
