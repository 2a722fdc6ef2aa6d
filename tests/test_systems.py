"""Named setups: composition, physics and argument checking."""

import numpy as np
import pytest
import torch
from openmm import app, unit

import openmm_forecast as of
from openmm_forecast._runtime import openmm as mm
from openmm_forecast.systems import (
    PHI_ATOMS,
    PSI_ATOMS,
    build_system,
    removes_com_motion,
    system_fingerprint,
    without_com_velocity,
)

ALA2_ELEMENTS = list("HCHHCONHCHCHHHCONHCHHH")


def _energy(molecular_system):
    integrator = mm.VerletIntegrator(0.001)
    context = mm.Context(molecular_system.system, integrator, mm.Platform.getPlatformByName("Reference"))
    context.setPositions(molecular_system.positions)
    return context.getState(getEnergy=True).getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole)


def test_vacuum_setup_is_capped_alanine_with_hbond_constraints(vacuum_system):
    assert vacuum_system.elements == ALA2_ELEMENTS
    residues = [r.name for r in vacuum_system.topology.residues()]
    assert residues == ["ACE", "ALA", "NME"]
    # 12 hydrogens, each bonded to a heavy atom -> 12 HBonds constraints.
    assert vacuum_system.system.getNumConstraints() == 12
    assert vacuum_system.system.usesPeriodicBoundaryConditions() is False
    assert np.isclose(vacuum_system.masses.sum(), 144.17, atol=0.05)  # C6H12N2O2


def test_dihedral_atoms_are_backbone_phi_psi(vacuum_system):
    names = [a.name for a in vacuum_system.topology.atoms()]
    assert [names[i] for i in PHI_ATOMS] == ["C", "N", "CA", "C"]
    assert [names[i] for i in PSI_ATOMS] == ["N", "CA", "C", "N"]


def test_implicit_solvent_lowers_energy_by_solvation():
    vacuum = build_system("amber14-vacuum", constraints=None)
    obc2 = build_system("amber14-obc2", constraints=None)
    assert any(isinstance(f, (mm.GBSAOBCForce, mm.CustomGBForce)) for f in obc2.system.getForces())
    # Solvation free energy of a polar dipeptide is large and negative (tens of kJ/mol).
    assert _energy(obc2) < _energy(vacuum) - 20.0


def test_explicit_solvent_is_periodic_with_waters_after_the_solute():
    tip3p = build_system("amber14-tip3p")
    assert tip3p.system.usesPeriodicBoundaryConditions()
    assert tip3p.solute_atoms == 22 and tip3p.n_atoms > 22 and (tip3p.n_atoms - 22) % 3 == 0
    assert [a.residue.name for a in tip3p.topology.atoms()][22:25] == ["HOH"] * 3
    nonbonded = [f for f in tip3p.system.getForces() if isinstance(f, mm.NonbondedForce)][0]
    assert nonbonded.getNonbondedMethod() == mm.NonbondedForce.PME


def test_constraints_argument_changes_the_system():
    assert build_system("amber14-vacuum", constraints=None).system.getNumConstraints() == 0
    assert build_system("amber14-vacuum", constraints=app.AllBonds).system.getNumConstraints() == 21
    assert build_system("amber14-vacuum", constraints="HBonds").constraints == "HBonds"


def test_fingerprint_identifies_the_physics(vacuum_system):
    same = build_system("amber14-vacuum")
    other = build_system("amber14-vacuum", constraints=None)
    assert same.fingerprint() == vacuum_system.fingerprint()
    assert other.fingerprint() != vacuum_system.fingerprint()
    assert system_fingerprint(vacuum_system.system) == vacuum_system.fingerprint()


def test_simulation_runs_at_the_requested_temperature():
    molecular_system = build_system("amber14-vacuum", temperature=400 * unit.kelvin)
    simulation = molecular_system.create_simulation(platform="Reference", seed=3)
    temperatures = []
    # 22 atoms, 66 - 12 constraints - 0 = 54 DOF (OpenMM removes 3 for CMMotionRemover: 51).
    dof = 3 * 22 - 12 - 3
    for _ in range(200):
        simulation.step(50)
        ke = simulation.context.getState(getEnergy=True).getKineticEnergy().value_in_unit(unit.kilojoule_per_mole)
        temperatures.append(2 * ke / (dof * of.units.MOLAR_GAS_CONSTANT_KJ))
    # 20 ps of Langevin at 1/ps: mean within ~8 % of the target (std of T for 51 DOF is ~20 %; 200 samples).
    assert abs(np.mean(temperatures[40:]) - 400.0) < 32.0


@pytest.mark.parametrize(
    "kwargs, error",
    [
        ({"setup": "amber99-vacuum"}, of.UnknownSetupError),
        ({"setup": "amber14-vacuum", "temperature": 300}, of.UnitError),
        ({"setup": "amber14-vacuum", "timestep": 2 * unit.kelvin}, of.UnitError),
        ({"setup": "amber14-vacuum", "friction": 1 * unit.picosecond}, of.UnitError),
        ({"setup": "amber14-vacuum", "timestep": -2 * unit.femtosecond}, ValueError),
        ({"setup": "amber14-vacuum", "constraints": "Hbond"}, ValueError),
        ({"setup": "ml"}, ValueError),
        ({"setup": "ml", "potential_file": "/nonexistent/model.pt"}, of.ModelFileError),
        ({"setup": "amber14-vacuum", "potential_file": "x.pt"}, ValueError),
    ],
)
def test_bad_arguments_raise_clear_errors(kwargs, error):
    setup = kwargs.pop("setup")
    with pytest.raises(error) as info:
        build_system(setup, **kwargs)
    assert str(info.value)  # a message, not a bare exception


def test_unknown_setup_lists_the_available_ones():
    with pytest.raises(of.UnknownSetupError, match="amber14-vacuum"):
        build_system("charmm36")


def test_corrupt_potential_file_is_refused(tmp_path):
    path = tmp_path / "broken.pt"
    path.write_bytes(b"not a torchscript archive")
    with pytest.raises(of.ModelFileError, match="TorchScript"):
        build_system("ml", potential_file=str(path))



class _NaNPotential(torch.nn.Module):
    def forward(self, positions):
        return torch.sum(positions**2) * float("nan")


class _TenAtomPotential(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.weights = torch.nn.Parameter(torch.ones(10, 3))

    def forward(self, positions):
        return torch.sum(positions * self.weights)


def test_potentials_that_give_nan_or_fit_another_molecule_are_refused_when_built(tmp_path):
    """Without metadata.json nothing else catches them; a NaN potential used to hang energy minimisation."""
    nan_file, other_file = str(tmp_path / "nan.pt"), str(tmp_path / "ten_atoms.pt")
    torch.jit.script(_NaNPotential()).save(nan_file)
    torch.jit.script(_TenAtomPotential()).save(other_file)
    with pytest.raises(of.ModelFileError, match="non-finite energy"):
        build_system("ml", potential_file=nan_file)
    with pytest.raises(of.ModelMismatchError, match=r"22 atoms.*size of tensor"):
        build_system("ml", potential_file=other_file)


def test_ml_setup_takes_the_shipped_potential_by_name():
    by_name = build_system("ml", potential_file="ala2-ani-amber14")
    by_path = build_system("ml", potential_file=of.systems.resource_path("potentials/ala2-ani-amber14.pt"))
    assert "ala2-ani-amber14.pt" in by_name.potential and by_name.potential == by_path.potential
    assert by_name.fingerprint() == by_path.fingerprint()


def test_fingerprint_of_ml_systems_follows_the_model_not_its_serialization(tmp_path, vacuum_system):
    """TorchForce serializes its archive under a random directory name; the fingerprint must not see it,
    and must still tell two different models apart."""
    import json

    import torch

    class Constant(torch.nn.Module):
        def __init__(self, value: float):
            super().__init__()
            self.value = value

        def forward(self, positions):
            return torch.sum(positions) * 0.0 + self.value

    metadata = {"metadata.json": json.dumps({"elements": vacuum_system.elements})}
    paths = []
    for value in (0.0, 1.0):
        paths.append(str(tmp_path / f"constant{value}.pt"))
        torch.jit.script(Constant(value)).save(paths[-1], _extra_files=metadata)
    first, again, other = (build_system("ml", potential_file=p) for p in (paths[0], paths[0], paths[1]))
    assert first.fingerprint() == again.fingerprint()
    assert first.fingerprint() != other.fingerprint()


def _torchscript_like_archive(directory, serialization_id, code, data):
    """Hex of a zip laid out as TorchScript saves one (a top-level directory, code, data, a serialization id)."""
    import io
    import zipfile

    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr(f"{directory}/.data/serialization_id", serialization_id)
        archive.writestr(f"{directory}/code/__torch__/model.py", code)
        archive.writestr(f"{directory}/data/0", data)
    return buffer.getvalue().hex()


def test_archive_digest_ignores_what_changes_between_saves_of_one_model():
    """Measured with ANI-1x: two processes saved the same module with different serialization ids and with its
    ``Final`` constants in different orders (Python's per-process hash seed), so resuming a checkpoint of an
    ani1x run in a new process was refused as "a different System".  Weights and code must still count."""
    from openmm_forecast.systems import _archive_digest

    code = "class Model(Module):\n  out_dim : Final[int] = 384\n  radial_len : Final[int] = 64\n"
    reordered = "class Model(Module):\n  radial_len : Final[int] = 64\n  out_dim : Final[int] = 384\n"
    first = _archive_digest(_torchscript_like_archive("fileAb", "0717", code, b"weights"))
    assert _archive_digest(_torchscript_like_archive("fileCd", "9912", reordered, b"weights")) == first
    assert _archive_digest(_torchscript_like_archive("fileAb", "0717", code, b"other weights")) != first
    assert _archive_digest(_torchscript_like_archive("fileAb", "0717", code.replace("384", "385"), b"weights")) != first


def test_com_velocity_removal_zeroes_momentum_and_keeps_relative_motion(rng):
    masses = rng.uniform(1.0, 16.0, 22)
    velocities = rng.normal(size=(22, 3)) + np.array([0.3, -1.0, 2.0])  # drifting as a whole
    removed = without_com_velocity(velocities, masses)
    np.testing.assert_allclose(masses @ removed, 0.0, atol=1e-12)
    np.testing.assert_allclose(removed[1:] - removed[0], velocities[1:] - velocities[0])
    system = mm.System()
    assert not removes_com_motion(system)
    system.addForce(mm.CMMotionRemover())
    assert removes_com_motion(system)


@pytest.mark.parametrize("setup", ["amber14-vacuum", "amber14-obc2"])
def test_hydrogen_mass_repartitioning_matches_openmm_and_keeps_the_total_mass(setup):
    plain = build_system(setup)
    hmr = build_system(setup, hydrogen_mass=1.5 * unit.amu, timestep=4 * unit.femtosecond)
    hydrogens = np.array([e == "H" for e in hmr.elements])
    np.testing.assert_allclose(hmr.masses[hydrogens], 1.5)
    assert hmr.masses.sum() == pytest.approx(plain.masses.sum(), abs=1e-9)
    # Each heavy atom lost exactly what its hydrogens gained (every hydrogen here is bonded to a heavy atom).
    for heavy in np.nonzero(~hydrogens)[0]:
        bonded_h = [a2.index if a1.index == heavy else a1.index for a1, a2 in hmr.topology.bonds()
                    if heavy in (a1.index, a2.index) and hydrogens[a2.index if a1.index == heavy else a1.index]]
        gained = sum(1.5 - plain.masses[h] for h in bonded_h)
        assert hmr.masses[heavy] == pytest.approx(plain.masses[heavy] - gained, abs=1e-12)
    # The same masses as OpenMM's own createSystem(hydrogenMass=...).
    files = ["amber14-all.xml"] + (["implicit/obc2.xml"] if setup == "amber14-obc2" else [])
    reference = app.ForceField(*files).createSystem(hmr.topology, nonbondedMethod=app.NoCutoff, constraints=app.HBonds,
                                                    hydrogenMass=1.5 * unit.amu)
    np.testing.assert_array_equal(of.systems.particle_masses(reference), hmr.masses)
    assert hmr.hydrogen_mass == 1.5 * unit.amu and "hydrogen mass 1.5 amu" in hmr.potential
    assert hmr.fingerprint() != plain.fingerprint()
    assert _energy(hmr) == pytest.approx(_energy(plain), abs=1e-9)  # masses do not change the potential


def test_hmr_at_4_fs_is_stable_and_at_temperature():
    hmr = build_system("amber14-obc2", hydrogen_mass=1.5 * unit.amu, timestep=4 * unit.femtosecond)
    simulation = hmr.create_simulation(platform="Reference", seed=3)
    temperatures = []
    for _ in range(30):
        simulation.step(10)
        state = simulation.context.getState(getEnergy=True, getPositions=True)
        kinetic = state.getKineticEnergy().value_in_unit(unit.kilojoule_per_mole)
        temperatures.append(2 * kinetic / (of.guards.degrees_of_freedom(hmr.system) * of.units.MOLAR_GAS_CONSTANT_KJ))
    positions = state.getPositions(asNumpy=True).value_in_unit(unit.nanometer)
    assert np.isfinite(positions).all()
    assert np.isfinite(state.getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole))
    # Bonds intact after 300 steps (1.2 ps): every bonded distance within 20 % of its starting length.
    start = hmr.positions.value_in_unit(unit.nanometer)
    for a1, a2 in hmr.topology.bonds():
        d0 = np.linalg.norm(np.subtract(start[a1.index], start[a2.index]))
        assert abs(np.linalg.norm(positions[a1.index] - positions[a2.index]) / d0 - 1) < 0.2
    # Heated from the minimum by the thermostat, not blowing up: the mean of the last 20 samples is near 300 K.
    assert 150 < np.mean(temperatures[10:]) < 450


def test_hydrogen_mass_is_checked():
    with pytest.raises(of.UnitError):
        build_system("amber14-vacuum", hydrogen_mass=1.5)
    with pytest.raises(ValueError, match="finite and > 0"):
        build_system("amber14-vacuum", hydrogen_mass=-1 * unit.amu)
    with pytest.raises(ValueError, match="leaves atom .* mass"):
        build_system("amber14-vacuum", hydrogen_mass=5.5 * unit.amu)  # a methyl carbon: 12.01 - 3 x 4.49 < 0


@pytest.mark.parametrize("setup", ["ml", "gfn2-xtb"])
def test_hmr_repartitions_systems_without_a_force_field_directly(setup):
    if setup == "gfn2-xtb":
        pytest.importorskip("tblite")
    kwargs = {"potential_file": "ala2-ani-amber14"} if setup == "ml" else {}
    hmr = build_system(setup, hydrogen_mass=1.5 * unit.amu, **kwargs)
    # The same masses as amber14's createSystem(hydrogenMass=...) gives the same atoms.
    reference = app.ForceField("amber14-all.xml").createSystem(hmr.topology, nonbondedMethod=app.NoCutoff,
                                                               constraints=app.HBonds, hydrogenMass=1.5 * unit.amu)
    np.testing.assert_array_equal(hmr.masses, of.systems.particle_masses(reference))
