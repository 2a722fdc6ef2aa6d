"""Barrier-lowered surrogates: the bias is what it says, and with it the exact cycle crosses a barrier that the
unlowered surrogate does not cross in the same number of jumps, at the exact populations."""

import numpy as np
import pytest
from openmm import app, unit

from openmm_forecast import ForecastAccelerator, GHMCCycle, SurrogateForecaster, build_system
from openmm_forecast._runtime import openmm as mm
from openmm_forecast.analysis import phi_psi_from_positions
from openmm_forecast.barriers import (
    FreeEnergySurface,
    load_surface,
    lower_barriers,
    save_surface,
    surrogate_free_energy,
)
from openmm_forecast.systems import PHI_ATOMS, PSI_ATOMS
from openmm_forecast.units import kT_kJ
from forecast_helpers import wells_system, wells_topology
from test_cycles import batch_mean

KT = kT_kJ(300.0)
GRID = np.linspace(-np.pi, np.pi, 72)


def energy(system, positions):
    context = mm.Context(system, mm.VerletIntegrator(0.001), mm.Platform.getPlatformByName("Reference"))
    context.setPositions(positions)
    return context.getState(getEnergy=True).getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole)


@pytest.mark.parametrize("axis", [0, 1], ids=["phi", "psi"])
def test_the_lowered_surrogate_differs_by_minus_strength_times_the_surface(vacuum_system, rng, axis):
    """A smooth surface along phi only (or psi only), on Metadynamics' grid layout F[i_psi, i_phi]: the lowered
    System's energy differs from the original by -strength * F(angle) at random configurations (bicubic
    interpolation of 10 (1 - cos) on a 5-degree grid is exact to ~1e-3 kJ/mol; 0.01 allows for it)."""
    along = 10.0 * (1.0 - np.cos(GRID))
    table = np.tile(along, (72, 1)) if axis == 0 else np.tile(along[:, None], (1, 72))
    surface = FreeEnergySurface((PHI_ATOMS, PSI_ATOMS), table, 0.0)
    lowered = lower_barriers(vacuum_system.system, surface, 0.6)
    assert lowered.getNumForces() == vacuum_system.system.getNumForces() + 1
    base = np.array(vacuum_system.positions.value_in_unit(unit.nanometer))
    for _ in range(4):
        positions = base + rng.normal(scale=0.02, size=base.shape)
        angle = np.radians(phi_psi_from_positions(positions[None])[0, axis])
        difference = energy(lowered, positions) - energy(vacuum_system.system, positions)
        assert difference == pytest.approx(-0.6 * 10.0 * (1.0 - np.cos(angle)), abs=0.01)


def test_strength_outside_zero_to_one_is_refused(vacuum_system):
    surface = FreeEnergySurface((PHI_ATOMS, PSI_ATOMS), np.zeros((72, 72)), 0.0)
    with pytest.raises(ValueError, match="strength"):
        lower_barriers(vacuum_system.system, surface, 1.5)


def test_surrogate_metadynamics_gives_a_surface_with_basins_below_the_phi_barrier(vacuum_system, tmp_path):
    """0.2 ns of well-tempered metadynamics on amber14 in vacuum: F is zero at its minimum and, on the layout
    F[i_psi, i_phi], the beta basin lies below the phi = 0 barrier; the surface survives a file round trip."""
    surface = surrogate_free_energy(vacuum_system.system, vacuum_system.positions, (PHI_ATOMS, PSI_ATOMS),
                                    simulated_time=0.2 * unit.nanosecond, progress=False)
    assert surface.free_energy_kJ.shape == (72, 72) and surface.free_energy_kJ.min() == 0.0
    beta, barrier = surface(np.radians([[-80.0, 150.0], [0.0, 150.0]]))
    assert beta + 10.0 < barrier
    save_surface(tmp_path / "surface.npz", surface)
    again = load_surface(tmp_path / "surface.npz")
    np.testing.assert_array_equal(again.free_energy_kJ, surface.free_energy_kJ)
    assert again.torsions == (PHI_ATOMS, PSI_ATOMS)


# ---- a rare basin: an 8 kT barrier ---------------------------------------------------------------------------

N = 4
TARGET = "h*((dx/b)^2-1)^2 + c*dx/b + 0.5*k*(y^2+z^2)"
TARGET_PARAMETERS = dict(h=8.0 * KT, b=0.05, c=1.0 * KT, k=2000.0)  # barrier 8 kT, the right well 2 kT higher
LOWERED = dict(TARGET_PARAMETERS, h=2.0 * KT)  # the same surface with its barrier lowered to 2 kT
CENTRES = np.array([[i, 0.0, 0.0] for i in range(N)], dtype=float)


def exact_right_population():
    x = np.linspace(-0.2, 0.2, 200001)
    h, b, c = (TARGET_PARAMETERS[name] for name in "hbc")
    weight = np.exp(-(h * ((x / b) ** 2 - 1) ** 2 + c * x / b) / KT)
    return float(weight[x > 0].sum() / weight.sum())


def ghmc_chain(surrogate, n_jumps=4000, seed=1):
    """Fraction of particles in the right well after every jump, and the number of well changes."""
    target = wells_system(TARGET, N, **TARGET_PARAMETERS)
    forecaster = SurrogateForecaster((wells_system(TARGET, N, **TARGET_PARAMETERS), ["C"] * N), stride_ps=0.2,
                                     surrogate=wells_system(TARGET, N, **surrogate), timestep=5 * unit.femtosecond)
    simulation = app.Simulation(wells_topology(N), target, mm.LangevinMiddleIntegrator(300, 1.0, 0.001),
                                mm.Platform.getPlatformByName("Reference"))
    simulation.context.setPositions(CENTRES + [TARGET_PARAMETERS["b"], 0.0, 0.0])
    simulation.context.setVelocitiesToTemperature(300, seed)
    accelerator = ForecastAccelerator(simulation, forecaster, acceptance=GHMCCycle(velocity_memory=0.0), seed=seed,
                                      temperature_sigmas=None, progress=False)
    sides = []
    for _ in range(n_jumps):
        accelerator.step(accelerator.stride_steps)
        x = simulation.context.getState(getPositions=True).getPositions(asNumpy=True).value_in_unit(unit.nanometer)
        sides.append(x[:, 0] - CENTRES[:, 0] > 0)
    sides = np.array(sides)
    return sides.mean(axis=1), int(np.sum(sides[1:] != sides[:-1])), accelerator.stats.as_dict()["acceptance_rate"]


def test_a_barrier_lowered_surrogate_crosses_more_and_samples_the_rare_basin_exactly():
    """Target: four particles, each in a tilted double well with an 8 kT barrier, started in the minor (right)
    well.  4,000 ghmc jumps of 200 fs (full refresh) driven by the surface with its barrier lowered to 2 kT
    (acceptance ~0.31) reach the exact population of the right well, P = 0.125, within 4 batch-mean standard
    errors (seeds 1-3: z = 1.2, -0.9, 0.4), changing wells ~100 times; the same chain driven by the target's own
    surface (the control: plain HMC on the target) changed wells 2-5 times in as many jumps."""
    right, crossings, acceptance = ghmc_chain(LOWERED)
    population, error = batch_mean(right[400:])
    exact = exact_right_population()
    assert error < 0.05 and abs(population - exact) < 4 * error
    assert acceptance > 0.2
    _, control_crossings, _ = ghmc_chain(TARGET_PARAMETERS)
    assert crossings > 5 * max(control_crossings, 1)


def test_the_lower_barriers_command_writes_a_loadable_lowered_surrogate(tmp_path, capsys):
    import json

    from openmm_forecast.cli import main
    from openmm_forecast.forecasters.surrogate import load_surrogate_system

    out = tmp_path / "flat"
    assert main(["lower-barriers", "--setup", "amber14-obc2", "--surrogate", "amber14-vacuum", "--ns", "0.05",
                 "--strength", "0.5", "--out", str(out), "--no-progress"]) == 0
    lowered = load_surrogate_system(str(out / "surrogate.xml"))
    plain = build_system("amber14-vacuum")
    assert lowered.getNumForces() == plain.system.getNumForces() + 1
    report = json.loads((out / "report.json").read_text())
    assert report["strength"] == 0.5 and report["max_bias_kJ"] > 0
    assert load_surface(out / "surface.npz").free_energy_kJ.shape == (72, 72)
    assert (out / "surface.png").read_bytes()[:4] == b"\x89PNG"
    assert "ghmc" in capsys.readouterr().out
    with pytest.raises(SystemExit) as refused:  # a strength outside [0, 1] is a usage error before any work
        main(["lower-barriers", "--setup", "amber14-obc2", "--surrogate", "amber14-vacuum", "--strength", "2",
              "--out", str(tmp_path / "never")])
    assert refused.value.code == 2 and not (tmp_path / "never").exists()


def test_every_residue_of_a_tetrapeptide_gets_its_own_bias_and_torsion_pairs_replace_them(tmp_path, capsys):
    """ACE-ALA3-NME: three residues, three surfaces and three bias forces; the file of several surfaces reads back;
    two --torsion give one surface on exactly those atoms; an odd number is a usage error before any work."""
    import json
    import os

    from openmm_forecast.barriers import load_surfaces
    from openmm_forecast.cli import main
    from openmm_forecast.forecasters.surrogate import load_surrogate_system
    from test_benchmark import tetrapeptide_system

    molecule = tetrapeptide_system()
    vacuum = tmp_path / "vacuum.xml"
    vacuum.write_text(mm.XmlSerializer.serialize(molecule.system))
    pdb = os.path.join(os.path.dirname(__file__), "data", "ace-ala3-nme.pdb")
    common = ["lower-barriers", "--system", str(vacuum), "--pdb", pdb, "--surrogate", str(vacuum), "--ns", "0.01",
              "--no-progress"]
    assert main(common + ["--out", str(tmp_path / "all")]) == 0
    surfaces = load_surfaces(tmp_path / "all" / "surface.npz")
    assert [s.torsions[0] for s in surfaces] == [(4, 6, 8, 10), (10, 16, 18, 20), (20, 26, 28, 30)]
    lowered = load_surrogate_system(str(tmp_path / "all" / "surrogate.xml"))
    assert lowered.getNumForces() == molecule.system.getNumForces() + 3
    report = json.loads((tmp_path / "all" / "report.json").read_text())
    assert [s["label"] for s in report["surfaces"]] == ["ALA2", "ALA3", "ALA4"]
    assert main(common + ["--torsion", "omega=8,10,16,18", "--torsion", "psi3=16,18,20,26", "--out",
                          str(tmp_path / "pair")]) == 0
    (surface,) = load_surfaces(tmp_path / "pair" / "surface.npz")
    assert surface.torsions == ((8, 10, 16, 18), (16, 18, 20, 26))
    assert main(common + ["--torsion", "8,10,16,18", "--out", str(tmp_path / "odd")]) != 0
    assert not (tmp_path / "odd").exists()


def test_the_stereocentre_of_alanine_is_found_and_its_mirror_image_has_the_other_sign(vacuum_system):
    from openmm_forecast.barriers import chirality_signs, stereocentres

    centres = stereocentres(vacuum_system.topology)
    assert centres[:, 0].tolist() == [8]  # CA; the methyl carbons (three hydrogens) are not stereocentres
    x = np.array(vacuum_system.positions.value_in_unit(unit.nanometer))
    np.testing.assert_array_equal(chirality_signs(x * [-1, 1, 1], centres), -chirality_signs(x, centres))


def test_metadynamics_of_a_surrogate_that_inverts_alanine_is_stopped_naming_the_atom(vacuum_system):
    """Without its angle terms (and with no other interaction around CA), the surrogate lets CA's substituents flop
    through each other within picoseconds: the run stops at the first 10 ps check with a BlowUpError naming CA;
    the same run of the whole System (the control) goes through."""
    from openmm_forecast.errors import BlowUpError

    floppy = mm.System()
    for i in range(vacuum_system.system.getNumParticles()):
        floppy.addParticle(vacuum_system.system.getParticleMass(i))
    for i in range(vacuum_system.system.getNumConstraints()):
        floppy.addConstraint(*vacuum_system.system.getConstraintParameters(i))
    for force in vacuum_system.system.getForces():
        if isinstance(force, mm.HarmonicBondForce):
            floppy.addForce(mm.XmlSerializer.clone(force))
    run = dict(simulated_time=0.05 * unit.nanosecond, topology=vacuum_system.topology, progress=False)
    with pytest.raises(BlowUpError, match=r"stereocentre ALA2 CA \(atom 8\)"):
        surrogate_free_energy(floppy, vacuum_system.positions, (PHI_ATOMS, PSI_ATOMS), **run)
    surrogate_free_energy(vacuum_system.system, vacuum_system.positions, (PHI_ATOMS, PSI_ATOMS), **run)
