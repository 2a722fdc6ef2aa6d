"""The gfn2-xtb setup: tblite's GFN2-xTB through an openmm.PythonForce.

Without tblite only the missing-dependency error is tested; everything else skips.  Energies and forces
are compared with tblite called directly, converted with CODATA 2018 constants written out here (not the
module's), so a unit slip in the module fails.  Reference platform.
"""

import importlib.util
import pickle
import sys

import numpy as np
import pytest
from openmm import unit

from openmm_forecast import ForecastAccelerator, build_system
from openmm_forecast._runtime import openmm as mm
from openmm_forecast.errors import OptionalDependencyError, PotentialEvaluationError
from openmm_forecast.forecasters import ConstantForecaster
from openmm_forecast.systems import system_fingerprint

NM_PER_BOHR = 0.0529177210903  # CODATA 2018
KJ_PER_MOL_PER_HARTREE = 2625.4996394799  # CODATA 2018 hartree energy x Avogadro constant
REFERENCE = mm.Platform.getPlatformByName("Reference")
FAR_NM = 5.0  # the molecule's centroid is this far from the origin only after the test's translated forecasts


def test_setup_without_tblite_says_how_to_install_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "tblite", None)  # makes `import tblite...` raise ImportError
    monkeypatch.setitem(sys.modules, "tblite.interface", None)
    with pytest.raises(OptionalDependencyError, match=r"pip install 'openmm-forecast\[xtb\]'"):
        build_system("gfn2-xtb")


requires_tblite = pytest.mark.skipif(
    importlib.util.find_spec("tblite") is None, reason="tblite not installed (pip install 'openmm-forecast[xtb]')"
)


@pytest.fixture(scope="module")
def xtb_system():
    return build_system("gfn2-xtb")


class TranslatedForecaster(ConstantForecaster):
    """Forecasts the current state moved 10 nm away: sane, and of the same energy for xTB."""

    def _forecast(self, positions, velocities, n_frames):
        x, v = super()._forecast(positions, velocities, n_frames)
        return x + FAR_NM + 5.0, v


def direct_tblite(molecular_system, positions_nm):
    """GFN2-xTB energy (kJ/mol) and forces (kJ/mol/nm) from tblite itself, default settings."""
    import tblite.interface as tblite

    numbers = np.array([atom.element.atomic_number for atom in molecular_system.topology.atoms()])
    calculator = tblite.Calculator("GFN2-xTB", numbers, np.asarray(positions_nm) / NM_PER_BOHR)
    calculator.set("verbosity", 0)
    result = calculator.singlepoint()
    return (result.get("energy") * KJ_PER_MOL_PER_HARTREE,
            -result.get("gradient") * KJ_PER_MOL_PER_HARTREE / NM_PER_BOHR)


def energy_and_forces(context, positions_nm):
    context.setPositions(positions_nm)
    state = context.getState(getEnergy=True, getForces=True)
    return (state.getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole),
            state.getForces(asNumpy=True).value_in_unit(unit.kilojoule_per_mole / unit.nanometer))


@requires_tblite
def test_setup_is_gfn2_xtb_in_openmm_units(xtb_system, rng):
    assert xtb_system.system.getNumConstraints() == 12 and xtb_system.system.getNumForces() == 1
    context = mm.Context(xtb_system.system, mm.VerletIntegrator(0.001), REFERENCE)
    start = np.array(xtb_system.positions.value_in_unit(unit.nanometer))
    for positions in (start, start + rng.normal(scale=0.005, size=start.shape)):
        energy, forces = energy_and_forces(context, positions)
        direct_energy, direct_forces = direct_tblite(xtb_system, positions)
        assert energy == pytest.approx(direct_energy, rel=1e-12)  # kJ/mol, ~ -86,500
        assert np.abs(forces - direct_forces).max() < 1e-8  # kJ/mol/nm, of forces ~ 1000
    # Forces are minus the gradient of the energy, in the same units: central difference along a direction.
    direction = rng.normal(size=start.shape)
    direction /= np.linalg.norm(direction)
    h = 1e-4  # nm
    _, forces = energy_and_forces(context, start)
    e_plus, _ = energy_and_forces(context, start + h * direction)
    e_minus, _ = energy_and_forces(context, start - h * direction)
    assert (e_plus - e_minus) / (2 * h) == pytest.approx(-np.sum(forces * direction), rel=0.01)


@requires_tblite
def test_start_is_the_amber_minimum_and_relax_lowers_the_xtb_energy_within_the_constraints(xtb_system):
    amber = build_system("amber14-vacuum")
    context = mm.Context(amber.system, mm.VerletIntegrator(0.001), REFERENCE)

    def amber_energy(positions):
        context.setPositions(positions)
        return context.getState(getEnergy=True).getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole)

    start = amber_energy(xtb_system.positions)
    assert start < amber_energy(amber.positions) - 10.0  # the PDB structure is not amber's minimum, this is
    mm.LocalEnergyMinimizer.minimize(context)
    assert context.getState(getEnergy=True).getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole) > start - 0.5
    from openmm_forecast.xtb import relax

    xtb = mm.Context(xtb_system.system, mm.VerletIntegrator(0.001), REFERENCE)
    xtb.setPositions(xtb_system.positions)
    report = relax(xtb, max_iterations=20)
    assert report["end_kJ_per_mol"] < report["start_kJ_per_mol"] - 1.0
    assert report["end_kJ_per_mol"] == pytest.approx(energy_and_forces(xtb, xtb.getState(getPositions=True).getPositions())[0])
    x = xtb.getState(getPositions=True).getPositions(asNumpy=True).value_in_unit(unit.nanometer)
    for index in range(xtb_system.system.getNumConstraints()):
        i, j, length = xtb_system.system.getConstraintParameters(index)
        assert np.linalg.norm(x[i] - x[j]) == pytest.approx(length.value_in_unit(unit.nanometer), rel=1e-5)


@requires_tblite
def test_system_serializes_with_a_stable_fingerprint(xtb_system):
    from openmm_forecast.xtb import GFN2xTBComputation

    again = build_system("gfn2-xtb")
    assert system_fingerprint(again.system) == system_fingerprint(xtb_system.system)
    assert system_fingerprint(build_system("gfn2-xtb", constraints=None).system) != system_fingerprint(xtb_system.system)
    computation = pickle.loads(pickle.dumps(GFN2xTBComputation([1, 1])))
    energy, forces = computation.energy_and_forces(np.array([[0.0, 0.0, 0.0], [0.074, 0.0, 0.0]]))  # H2
    assert energy < 0 and forces[0, 0] == pytest.approx(-forces[1, 0])


@requires_tblite
def test_scf_failure_is_a_named_error(xtb_system):
    from openmm_forecast.xtb import GFN2xTBComputation

    numbers = [atom.element.atomic_number for atom in xtb_system.topology.atoms()]
    computation = GFN2xTBComputation(numbers, max_iterations=2)  # a real SCF failure: 2 iterations never converge
    start = np.array(xtb_system.positions.value_in_unit(unit.nanometer))
    with pytest.raises(PotentialEvaluationError, match="SCF not converged"):
        computation.energy_and_forces(start)
    with pytest.raises(PotentialEvaluationError, match="shape"):
        GFN2xTBComputation(numbers).energy_and_forces(start[:5])
    failing = build_system("gfn2-xtb")
    failing.system.removeForce(0)
    failing.system.addForce(mm.PythonForce(computation))
    with pytest.raises(PotentialEvaluationError, match="SCF not converged.*while minimising"):
        failing.create_simulation(platform="Reference", seed=1)


@requires_tblite
@pytest.mark.parametrize("metropolis", [False, True], ids=["tolerance", "metropolis"])
def test_scf_failure_inside_a_jump_is_a_rejection(xtb_system, monkeypatch, metropolis):
    """tblite fails only 10 nm from the origin, where the forecasts (and nothing else) go."""
    import tblite.interface as tblite
    from tblite.exceptions import TBLiteRuntimeError

    def run(fail_far_away):
        update, singlepoint = tblite.Calculator.update, tblite.Calculator.singlepoint
        where = {}

        def recording_update(self, positions, *args, **kwargs):
            where["far"] = np.linalg.norm(np.mean(positions, axis=0)) * NM_PER_BOHR > FAR_NM
            return update(self, positions, *args, **kwargs)

        def failing_singlepoint(self, *args, **kwargs):
            if fail_far_away and where.get("far"):
                raise TBLiteRuntimeError("SCF not converged in 250 cycles")
            return singlepoint(self, *args, **kwargs)

        with monkeypatch.context() as patch:
            patch.setattr(tblite.Calculator, "update", recording_update)
            patch.setattr(tblite.Calculator, "singlepoint", failing_singlepoint)
            simulation = xtb_system.create_simulation(platform="Reference", seed=2, minimize=False)
            forecaster = TranslatedForecaster(xtb_system.elements, 0.004, max_frames=2)
            accelerator = ForecastAccelerator(simulation, forecaster, molecular_system=xtb_system, progress=False,
                                              metropolis=metropolis, seed=3, jumps_per_cycle=1, segment_steps=2,
                                              allow_inexact_metropolis=metropolis)  # a translation: not certified
            accelerator.step(12)
        x = simulation.context.getState(getPositions=True).getPositions(asNumpy=True).value_in_unit(unit.nanometer)
        return accelerator.stats, x

    stats, x = run(fail_far_away=True)
    assert stats.jumps_attempted >= 2 and stats.jumps_accepted == 0
    assert stats.rejections["evaluation"] == stats.jumps_attempted
    assert np.isfinite(x).all() and np.linalg.norm(x.mean(axis=0)) < FAR_NM  # the failed candidates are gone
    control, x = run(fail_far_away=False)  # the same forecasts are accepted when xTB evaluates them
    assert control.jumps_accepted >= 1 and control.rejections["evaluation"] == 0
