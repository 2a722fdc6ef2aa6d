"""Learned surrogates: the amber-form energy in torch, its fit to a target, and the fitted System as a proposal.

The synthetic target is amber14-vacuum with perturbed parameters (bond lengths, angle and torsion force
constants, charges): a fit that starts from amber14-vacuum must find its way back, which only a correct
energy, correct forces and a working optimiser can do.
"""

import copy
import dataclasses
import math
import os

import numpy as np
import pytest
import torch
from openmm import unit

from openmm_forecast import ForecastAccelerator, SurrogateForecaster, build_system, load_forecaster
from openmm_forecast._runtime import openmm as mm
from openmm_forecast.cli import main
from openmm_forecast.errors import UnitError
from openmm_forecast.forecasters.surrogate import load_surrogate_system
from openmm_forecast.potential_training import label_configurations
from openmm_forecast.surrogate_fitting import (
    FAMILIES,
    AmberSurrogateEnergy,
    _LinearTerms,
    _write_system,
    constraint_projectors,
    fit_surrogate,
    long_jump_acceptance,
    predict_acceptance,
    sample_target,
    self_learning_refinement,
)


def _positions(molecular_system, rng, n=6, scale=0.01):
    x0 = np.asarray(molecular_system.positions.value_in_unit(unit.nanometer))
    return x0 + rng.normal(0.0, scale, (n,) + x0.shape)


def test_energy_and_forces_equal_openmm_before_and_after_a_parameter_change(vacuum_system, rng):
    x = _positions(vacuum_system, rng)
    model = AmberSurrogateEnergy(vacuum_system.system)
    energies, forces = label_configurations(vacuum_system.system, x)
    e, f = model.energies_and_forces(torch.as_tensor(x))
    np.testing.assert_allclose(e.detach().numpy(), energies, rtol=1e-9, atol=1e-5)
    np.testing.assert_allclose(f.numpy(), forces, rtol=1e-8, atol=1e-4)
    with torch.no_grad():  # every parameter moved, extra torsions with sin terms (phases other than 0 and pi)
        for parameter in model.parameters():
            parameter.normal_(0.0, 0.5, generator=torch.Generator().manual_seed(parameter.numel()))
    fitted = model.to_system(vacuum_system.system)
    energies, forces = label_configurations(fitted, x)
    e, f = model.energies_and_forces(torch.as_tensor(x))
    difference = e.detach().numpy() - energies  # written torsions k (1 + cos) add a constant, nothing else
    np.testing.assert_allclose(difference - difference.mean(), 0.0, atol=1e-5)
    np.testing.assert_allclose(f.numpy(), forces, rtol=1e-8, atol=1e-4)
    assert fitted.getNumConstraints() == vacuum_system.system.getNumConstraints()
    nonbonded = next(force for force in fitted.getForces() if isinstance(force, mm.NonbondedForce))
    total = sum(nonbonded.getParticleParameters(i)[0].value_in_unit(unit.elementary_charge) for i in range(22))
    assert abs(total) < 1e-9  # the fitted charges keep the molecule's total charge (0)


def test_refuses_a_system_that_is_not_amber_form_in_vacuum():
    with pytest.raises(ValueError, match="CustomGBForce"):
        AmberSurrogateEnergy(build_system("amber14-obc2").system)
    bare = mm.System()
    bare.addParticle(1.0)
    with pytest.raises(ValueError, match="lacks"):
        AmberSurrogateEnergy(bare)


def test_constraint_projector_removes_exactly_what_the_constraints_cancel(vacuum_system, rng):
    x = _positions(vacuum_system, rng, n=3)
    system = vacuum_system.system
    constraints = [tuple(system.getConstraintParameters(c)[:2]) for c in range(system.getNumConstraints())]
    masses = np.array([system.getParticleMass(i).value_in_unit(unit.dalton) for i in range(22)])
    projectors = constraint_projectors(x, constraints, masses)
    force = rng.normal(size=(3, 66))
    projected = np.einsum("bij,bj->bi", projectors, force)
    for frame in range(3):
        accel = (projected[frame].reshape(22, 3) / masses[:, None])
        for i, j in constraints:  # the constrained acceleration keeps every constraint length (to first order)
            bond = x[frame, i] - x[frame, j]
            assert abs(np.dot(bond, accel[i] - accel[j])) < 1e-9 * np.abs(accel).max()
        np.testing.assert_allclose(projectors[frame] @ projectors[frame], projectors[frame], atol=1e-10)
    assert np.allclose(constraint_projectors(x, [], masses), np.eye(66))


def test_long_jump_acceptance_of_gaussian_differences_has_its_closed_form():
    """D ~ N(0, s^2) under the target is N(s^2/kT, s^2) under the surrogate: acceptance erfc(s / (2 kT)).

    The unweighted average over pairs of target states (a mistake this guards against) would give
    1/2 + e^(s^2/kT^2) Phi(-sqrt(2) s/kT) instead: 0.74 here against the right 0.57.
    """
    kT, s = 2.5, 2.0
    d = np.random.default_rng(3).normal(0.0, s, 50000)
    assert long_jump_acceptance(d, kT, n_pairs=200000) == pytest.approx(math.erfc(s / (2 * kT)), abs=0.01)
    assert long_jump_acceptance(np.full(10, 7.0), kT) == 1.0


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_linear_terms_are_the_written_system_and_charges_linearise_to_second_order(vacuum_system, rng, family):
    """The fit's model ``U_fixed + features @ theta`` is the System it writes: energies up to a constant (the
    torsions' ``k (1 + cos)`` form), forces to round-off, for coefficients far from amber's; the charge features
    are the first derivative in the charges (what a charge step leaves out is second order in it)."""
    x = _positions(vacuum_system, rng, n=5)
    terms = _LinearTerms(vacuum_system.system, family, x)
    theta = terms.theta0.copy()
    for block, size in (("bond", 0.1), ("angle", 0.1), ("pair", 0.1), ("rbf", 0.1)):
        part = slice(*terms.blocks[block])
        theta[part] *= 1.0 + size * rng.normal(size=part.stop - part.start)
        theta[part] += np.abs(rng.normal(0.0, 100.0, part.stop - part.start))  # all powers, leading ones > 0
    part = slice(*terms.blocks["torsion"])
    theta[part] += rng.normal(0.0, 1.0, part.stop - part.start)
    charges = terms.amber.charge0 + torch.as_tensor(rng.normal(0.0, 0.05, 22))
    fixed_energy, fixed_forces, features, jacobian = terms.evaluate(torch.as_tensor(x), charges)
    energies = fixed_energy.numpy() + features.numpy() @ theta
    forces = fixed_forces.numpy() - np.einsum("bnip,p->bni", jacobian.numpy(), theta)
    written_energies, written_forces = label_configurations(_write_system(terms, theta, charges.numpy(),
                                                                          vacuum_system.system), x)
    difference = energies - written_energies
    np.testing.assert_allclose(difference - difference.mean(), 0.0, atol=1e-5)
    np.testing.assert_allclose(forces, written_forces, atol=1e-4)
    charge_block = slice(*terms.blocks["charge"])
    direction = np.zeros(terms.n_parameters)
    direction[charge_block] = rng.normal(0.0, 1e-3, 22)

    def linearisation_errors(scale):
        step = scale * direction
        moved = terms.evaluate(torch.as_tensor(x),
                               charges + torch.as_tensor(step[charge_block] - step[charge_block].mean()))
        energy_error = (moved[0] - fixed_energy).numpy() - features.numpy() @ step
        force_error = (moved[1] - fixed_forces).numpy() + np.einsum("bnip,p->bni", jacobian.numpy(), step)
        return np.abs(energy_error).max(), np.abs(force_error).max()

    # the Coulomb energy is quadratic in the charges: halving the step quarters what the linear model leaves out
    (energy_full, force_full), (energy_half, force_half) = linearisation_errors(1.0), linearisation_errors(0.5)
    assert energy_full / energy_half == pytest.approx(4.0, rel=0.01)
    assert force_full / force_half == pytest.approx(4.0, rel=0.01)


def _perturbed_target(vacuum_system):
    """amber14-vacuum with shifted bond lengths, softer angles, other torsion barriers and moved charges."""
    system = copy.deepcopy(vacuum_system.system)
    for force in system.getForces():
        if isinstance(force, mm.HarmonicBondForce):
            for b in range(force.getNumBonds()):
                i, j, r0, k = force.getBondParameters(b)
                force.setBondParameters(b, i, j, r0 + 0.003 * unit.nanometer * (-1) ** b, k)
        elif isinstance(force, mm.HarmonicAngleForce):
            for a in range(force.getNumAngles()):
                i, j, k, theta, stiffness = force.getAngleParameters(a)
                force.setAngleParameters(a, i, j, k, theta + 0.03 * unit.radian * (-1) ** a, 0.8 * stiffness)
        elif isinstance(force, mm.PeriodicTorsionForce):
            for t in range(force.getNumTorsions()):
                i, j, k, l, n, phase, barrier = force.getTorsionParameters(t)
                force.setTorsionParameters(t, i, j, k, l, n, phase, barrier * 1.5 + 1.0 * unit.kilojoule_per_mole)
        elif isinstance(force, mm.NonbondedForce):
            for p in range(force.getNumParticles()):
                q, sigma, epsilon = force.getParticleParameters(p)
                force.setParticleParameters(p, q * 1.1, sigma, epsilon)
    return dataclasses.replace(vacuum_system, system=system, setup="perturbed-amber14-vacuum")


@pytest.fixture(scope="module")
def perturbed_samples(vacuum_system):
    target = _perturbed_target(vacuum_system)
    return target, sample_target(target, 240, n_chains=2, frame_interval_ps=0.02, equilibration_ps=1.0)


@pytest.fixture(scope="module")
def fitted(perturbed_samples, vacuum_system):
    target, (positions, energies, forces) = perturbed_samples
    system, report = fit_surrogate(target, positions, energies, forces, vacuum_system.system, validation_fraction=0.25)
    return target, system, report


def _torsion_amplitudes(system):
    """Sum of |k| (kJ/mol) over the PeriodicTorsionForce terms of a System."""
    return sum(abs(force.getTorsionParameters(t)[6].value_in_unit(unit.kilojoule_per_mole))
               for force in system.getForces() if isinstance(force, mm.PeriodicTorsionForce)
               for t in range(force.getNumTorsions()))


def test_torsion_ridge_is_the_strongest_within_its_tolerance_of_the_least_held_out_loss(perturbed_samples,
                                                                                        vacuum_system):
    """From the held-out loss of every torsion ridge tried (the report's history): the chosen one is within the
    tolerance of the least, every stronger one is not, and the least is the least of all; a larger tolerance
    picks a ridge at least as strong and writes torsion amplitudes no larger (a ridge toward amber's torsions
    shrinks them); a negative tolerance is refused."""
    target, (positions, energies, forces) = perturbed_samples
    runs = {tolerance: fit_surrogate(target, positions, energies, forces, vacuum_system.system, iterations=1,
                                     validation_fraction=0.25, torsion_ridge_tolerance=tolerance)
            for tolerance in (0.0, 0.05, 1.0)}
    for tolerance, (_, report) in runs.items():
        entry = report["history"][0]
        losses = {float(ridge): loss for ridge, loss in entry["torsion_ridge_losses"].items()}
        bar = (1 + tolerance) * entry["least_validation_loss"]
        assert entry["least_validation_loss"] == min(losses.values())
        assert min(losses) == pytest.approx(entry["ridge"], rel=0.01)  # the sweep starts at the common ridge
        chosen = entry["torsion_ridge"]
        assert losses[float(f"{chosen:.0e}")] == entry["validation_loss"] <= bar
        assert all(loss > bar for ridge, loss in losses.items() if ridge > chosen * 1.01), (tolerance, losses)
    ridges = [runs[t][1]["history"][0]["torsion_ridge"] for t in (0.0, 0.05, 1.0)]
    assert ridges == sorted(ridges) and ridges[-1] > ridges[0]  # this data: the tolerance matters
    amplitudes = [_torsion_amplitudes(runs[t][0]) for t in (0.0, 0.05, 1.0)]
    assert amplitudes[-1] < amplitudes[0]
    with pytest.raises(ValueError, match="torsion_ridge_tolerance"):
        fit_surrogate(target, positions, energies, forces, vacuum_system.system, torsion_ridge_tolerance=-0.1)


def test_fit_to_a_perturbed_amber_recovers_what_the_guard_needs(fitted):
    """On held-out frames: std(U_t - U_s) and the projected force error shrink, the acceptance estimate rises."""
    _, _, report = fitted
    before, after = report["before"]["validation"], report["after"]["validation"]
    assert after["energy_std"] < 0.25 * before["energy_std"], (before, after)
    assert after["force_rmse"] < 0.25 * before["force_rmse"], (before, after)
    assert after["long_jump_acceptance"] > before["long_jump_acceptance"] + 0.2, (before, after)
    assert report["n_validation"] == 60 and 1 <= report["rounds"] <= 10


def test_fitted_surrogate_is_accepted_more_often_in_metropolis_mode(fitted, tmp_path):
    """The proposal the accelerator builds from the fitted file beats amber14-vacuum on the perturbed target."""
    target, system, _ = fitted
    path = tmp_path / "fitted.xml"
    path.write_text(mm.XmlSerializer.serialize(system))
    rates = {}
    for name, surrogate in (("base", "amber14-vacuum"), ("fitted", os.fspath(path))):
        simulation = target.create_simulation(platform="Reference", seed=7)
        accelerator = ForecastAccelerator(
            simulation, "surrogate", molecular_system=target, acceptance="metropolis", seed=7, progress=False,
            forecaster_options={"stride_ps": 0.05, "max_frames": 1, "surrogate": surrogate},
            segment_steps=1, jumps_per_cycle=1,
        )
        accelerator.step(2000)
        stats = accelerator.stats.as_dict()
        assert stats["jumps_attempted"] >= 40, stats
        rates[name] = stats["acceptance_rate"]
    assert rates["fitted"] > rates["base"] + 0.2, rates


def _ghmc_acceptance(target, surrogate, jump_fs, starts, n_jumps, seed):
    """Acceptance of ghmc chains (the accelerator's cycle, default velocity memory) started at ``starts``.

    Returns the pooled acceptance and its standard error from the spread between the independent chains.
    """
    rates = []
    for index, x in enumerate(starts):
        simulation = target.create_simulation(platform="Reference", seed=seed + index, minimize=False)
        simulation.context.setPositions(x)
        simulation.context.setVelocitiesToTemperature(target.temperature, seed + index)
        accelerator = ForecastAccelerator(simulation, SurrogateForecaster(target, jump_fs / 1000.0, surrogate=surrogate),
                                          acceptance="ghmc", seed=seed + index, progress=False)
        accelerator.step(n_jumps * accelerator.stride_steps)
        stats = accelerator.stats.as_dict()
        assert stats["jumps_attempted"] == n_jumps, stats
        rates.append(stats["acceptance_rate"])
    return float(np.mean(rates)), float(np.std(rates, ddof=1) / np.sqrt(len(rates)))


@pytest.mark.slow
def test_predicted_acceptance_matches_the_ghmc_chain_then_run(fitted):
    """fit -> predict -> run: the acceptance predicted from thermal frames of the target (400 frames, 8 short
    chains) matches that of 8 ghmc chains of 150 jumps started among them, within the issue's 0.1.

    Tolerance: the prediction's standard error (frames taken as independent) and the chains' (from their
    spread) are asserted to combine below 0.1 / 3, so a correct prediction fails this about once in 400 and a
    prediction off by 0.15 passes about once in 20.  The frames and the chains are drawn from the same few
    picoseconds of the target: the acceptance depends on the conformations visited (measured: frames from
    30 ps of one pair of runs predicted 0.67 for a 40 ps chain elsewhere that accepted 0.49), which is what
    held-out frames must cover.  The chain must accept between 0.2 and 0.95 of its jumps, where a prediction
    that ignored the surrogate's integration error or the target's energy change would be off by more than 0.1.
    """
    target, system, _ = fitted
    positions, energies, _ = sample_target(target, 400, n_chains=8, frame_interval_ps=0.05, equilibration_ps=1.0,
                                           seed=11)
    predicted = predict_acceptance(target, system, positions, energies, 40 * unit.femtosecond, seed=3)
    observed, observed_stderr = _ghmc_acceptance(target, system, 40.0, positions[25::50], n_jumps=150, seed=21)
    combined = math.hypot(predicted["stderr"], observed_stderr)
    assert combined < 0.1 / 3, (predicted, observed, observed_stderr)
    assert 0.2 < observed < 0.95, observed  # a regime where a wrong prediction would show
    assert abs(predicted["acceptance"] - observed) <= 0.1, (predicted, observed, observed_stderr)


def test_surrogate_file_is_a_forecaster_and_a_surrogate_argument(fitted, tmp_path, vacuum_system):
    target, system, _ = fitted
    path = os.fspath(tmp_path / "fitted.xml")
    with open(path, "w") as handle:
        handle.write(mm.XmlSerializer.serialize(system))
    by_name = load_forecaster(path, target, stride_ps=0.01)
    assert isinstance(by_name, SurrogateForecaster) and by_name.structure_preserving
    assert by_name.metadata.extra["surrogate"] == path
    direct = SurrogateForecaster(target, 0.01, surrogate=path)
    assert direct.metadata.extra["surrogate_fingerprint"] == by_name.metadata.extra["surrogate_fingerprint"]
    with pytest.raises(ValueError, match="does not exist"):
        load_surrogate_system(tmp_path / "missing.xml")
    (tmp_path / "bad.xml").write_text("<System nonsense")
    with pytest.raises(ValueError, match="not a serialized OpenMM System"):
        load_surrogate_system(tmp_path / "bad.xml")
    with pytest.raises(ValueError, match="unknown surrogate"):
        SurrogateForecaster(vacuum_system, 0.01, surrogate="amber99")


def test_fit_refuses_bad_labels_and_too_few_frames(fitted, vacuum_system, caplog):
    target = fitted[0]
    x = np.zeros((20, 22, 3))
    with pytest.raises(ValueError, match="shape"):
        fit_surrogate(target, x, np.zeros(19), x, vacuum_system.system, iterations=1)
    with pytest.raises(ValueError, match="too few"):
        fit_surrogate(target, x[:5], np.zeros(5), x[:5], vacuum_system.system, iterations=1)
    unconstrained = build_system("amber14-vacuum", constraints=None).system
    positions, energies, forces = sample_target(target, 16, n_chains=1, frame_interval_ps=0.01, equilibration_ps=0.1)
    with pytest.raises(ValueError, match="constraints"):
        fit_surrogate(target, positions, energies, forces, unconstrained, iterations=1, validation_fraction=0.2)
    energies[3] = np.nan
    energies[7] += 1000.0  # 400 kT above the others: a trajectory that blew up
    _, report = fit_surrogate(target, positions, energies, forces, vacuum_system.system, iterations=2,
                              validation_fraction=0.2)
    assert report["n_frames"] == 14 and report["n_left_out"] == 2
    assert "non-finite" in caplog.text and "from the median energy" in caplog.text
    with pytest.raises(UnitError, match="jump"):
        predict_acceptance(target, fitted[1], positions[:2], energies[:2], 40.0)


def test_fitted_surrogate_keeps_no_com_motion_remover_the_target_lacks(fitted, vacuum_system):
    """A target without a CMMotionRemover (an ML potential's System) gets a surrogate without one: the chain does
    not zero its centre-of-mass velocity, so the surrogate's remover would take ~3/2 kT out of every jump."""
    target = fitted[0]
    system = copy.deepcopy(target.system)
    for index in reversed(range(system.getNumForces())):
        if isinstance(system.getForce(index), mm.CMMotionRemover):
            system.removeForce(index)
    bare = dataclasses.replace(target, system=system)
    positions, energies, forces = sample_target(bare, 16, n_chains=1, frame_interval_ps=0.01, equilibration_ps=0.1)
    fitted_bare, _ = fit_surrogate(bare, positions, energies, forces, vacuum_system.system, iterations=1)
    assert not any(isinstance(f, mm.CMMotionRemover) for f in fitted_bare.getForces())
    fitted_with, _ = fit_surrogate(target, positions, energies, forces, vacuum_system.system, iterations=1)
    assert any(isinstance(f, mm.CMMotionRemover) for f in fitted_with.getForces())


def test_cli_fits_writes_reuses_samples_and_refuses_to_overwrite(tmp_path, capsys):
    out = os.fspath(tmp_path / "fit")
    argv = ["fit-surrogate", "--setup", "amber14-vacuum", "--frames", "30", "--chains", "2", "--frame-interval",
            "0.01", "--equilibration", "0.2", "--iterations", "5", "--out", out, "--no-progress"]
    assert main(argv) == 0
    for name in ("surrogate.xml", "report.json", "fit.png", "samples.npz"):
        assert os.path.exists(os.path.join(out, name)), name
    assert isinstance(load_surrogate_system(os.path.join(out, "surrogate.xml")), mm.System)
    capsys.readouterr()
    assert main(argv) == 1
    assert "already holds" in capsys.readouterr().err
    assert main(argv + ["--overwrite"]) == 0
    assert "reusing 30 target frames" in capsys.readouterr().out
    assert main(["fit-surrogate", "--setup", "amber14-vacuum", "--constraints", "none", "--out", out,
                 "--overwrite", "--no-progress"]) == 1
    assert "another target" in capsys.readouterr().err


def test_cli_surrogate_flag_names_what_it_accepts(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["run", "--model", "surrogate", "--surrogate", "amber99", "--steps", "10", "--out", "unused"])
    assert exit_info.value.code == 2
    assert "is neither" in capsys.readouterr().err


BUMP = {"atoms": (0, 5), "height_kJ": 5.0, "centre_nm": 0.58, "width_nm": 0.05}
"""The known pair correction of the toy target: a Gaussian bump on the distance of the chain's end atoms."""


def _toy_chain():
    """A six-atom amber-form chain in vacuum (bonds, angles, threefold torsions, charges and Lennard-Jones; no
    constraints) as the base System, the same plus :data:`BUMP` as the target, and 400 thermal frames of the
    target's Langevin MD (300 K, 40 fs apart) with its energies and forces."""
    from openmm import app

    from openmm_forecast.systems import MolecularSystem

    base = mm.System()
    topology = app.Topology()
    residue = topology.addResidue("TOY", topology.addChain())
    for _ in range(6):
        base.addParticle(12.0)
        topology.addAtom("C", app.element.carbon, residue)
    bonds, angles, torsions = mm.HarmonicBondForce(), mm.HarmonicAngleForce(), mm.PeriodicTorsionForce()
    for i in range(5):
        bonds.addBond(i, i + 1, 0.153, 2.0e5)
    for i in range(4):
        angles.addAngle(i, i + 1, i + 2, 1.94, 400.0)
    for i in range(3):
        torsions.addTorsion(i, i + 1, i + 2, i + 3, 3, 0.0, 3.0)
    nonbonded = mm.NonbondedForce()
    nonbonded.setNonbondedMethod(mm.NonbondedForce.NoCutoff)
    for charge in (0.2, -0.1, 0.0, 0.0, -0.1, 0.0):
        nonbonded.addParticle(charge, 0.35, 0.3)
    nonbonded.createExceptionsFromBonds([(i, i + 1) for i in range(5)], 1.0 / 1.2, 0.5)
    for force in (bonds, angles, torsions, nonbonded):
        base.addForce(force)
    system = copy.deepcopy(base)
    bump = mm.CustomBondForce("height * exp(-((r - centre) / width)^2)")
    for name in ("height", "centre", "width"):
        bump.addPerBondParameter(name)
    bump.addBond(*BUMP["atoms"], [BUMP["height_kJ"], BUMP["centre_nm"], BUMP["width_nm"]])
    system.addForce(bump)
    x0 = np.array([[0.153 * i, 0.05 * (i % 2), 0.01 * i * (i % 3 == 0)] for i in range(6)])
    target = MolecularSystem.from_openmm(system, topology, x0)
    integrator = mm.LangevinMiddleIntegrator(300 * unit.kelvin, 5 / unit.picosecond, 1 * unit.femtosecond)
    integrator.setRandomNumberSeed(3)
    context = mm.Context(system, integrator, mm.Platform.getPlatformByName("Reference"))
    context.setPositions(x0)
    context.setVelocitiesToTemperature(300 * unit.kelvin, 3)
    integrator.step(2000)
    frames = []
    for _ in range(400):
        integrator.step(40)
        frames.append(context.getState(getPositions=True).getPositions(asNumpy=True).value_in_unit(unit.nanometer))
    frames = np.array(frames)
    return target, base, frames, *label_configurations(system, frames)


@pytest.fixture(scope="module")
def toy_chain():
    return _toy_chain()


def test_pair_correction_features_and_gradients_match_finite_differences(toy_chain, rng):
    _, base, frames, _, _ = toy_chain
    terms = _LinearTerms(base, "rbf", frames[:300])
    block = slice(*terms.blocks["rbf"])
    x = torch.as_tensor(frames[300:303])
    charges = terms.amber.charge0
    _, _, features, jacobian = terms.evaluate(x, charges)  # jacobian (B, N, 3, P)
    assert (features[:, block].abs() > 1e-3).any()
    h = 1e-6
    for atom, axis in ((0, 0), (3, 1), (5, 2)):
        step = torch.zeros_like(x)
        step[:, atom, axis] = h
        plus = terms.evaluate(x + step, charges)[2][:, block]
        minus = terms.evaluate(x - step, charges)[2][:, block]
        np.testing.assert_allclose(((plus - minus) / (2 * h)).numpy(), jacobian[:, atom, axis, block].numpy(),
                                   atol=1e-5 * float(jacobian[:, :, :, block].abs().max()))


def test_rbf_fit_recovers_a_known_pair_correction_and_vanishes_outside_the_data(toy_chain):
    """The toy target is the base System plus a Gaussian bump between the chain's ends: the ``rbf`` family can
    hold it (``amber`` can not), so on held-out frames it leaves a fraction of amber's std(D), and the fitted
    correction of that pair has the bump's shape over the distances sampled.  Outside the training frames'
    range of every pair the written correction is exactly zero."""
    target, base, frames, energies, forces = toy_chain
    stds = {}
    for family in ("amber", "rbf"):
        system, report = fit_surrogate(target, frames, energies, forces, base, family=family, validation_fraction=0.25,
                                       iterations=2)
        stds[family] = report["after"]["validation"]["energy_std"]
    assert stds["rbf"] < 0.2 * stds["amber"], stds  # measured: 0.055 against 0.80 kJ/mol
    assert stds["amber"] > 0.5, stds  # the bump is not something amber's terms absorb
    (correction,) = [f for f in system.getForces() if isinstance(f, mm.CustomBondForce)]
    bonds = {tuple(correction.getBondParameters(b)[:2]): correction.getBondParameters(b)[2]
             for b in range(correction.getNumBonds())}
    alone = mm.CustomBondForce(correction.getEnergyFunction())  # the fitted correction of the bump's pair alone
    for index in range(correction.getNumPerBondParameters()):
        alone.addPerBondParameter(correction.getPerBondParameterName(index))
    alone.addBond(0, 1, bonds[BUMP["atoms"]])
    pair = mm.System()
    for _ in range(2):
        pair.addParticle(12.0)
    pair.addForce(alone)
    context = mm.Context(pair, mm.VerletIntegrator(0.001), mm.Platform.getPlatformByName("Reference"))
    i, j = BUMP["atoms"]
    sampled = np.linalg.norm(frames[:300, i] - frames[:300, j], axis=-1)
    r = np.quantile(sampled, np.linspace(0.05, 0.95, 15))

    def energy(distance):
        context.setPositions([[0.0, 0.0, 0.0], [distance, 0.0, 0.0]])
        return context.getState(getEnergy=True).getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole)

    fitted = np.array([energy(d) for d in r])
    known = BUMP["height_kJ"] * np.exp(-(((r - BUMP["centre_nm"]) / BUMP["width_nm"]) ** 2))
    residual = np.std((fitted - fitted.mean()) - (known - known.mean()))
    assert residual < 0.2 * np.std(known), (fitted, known)  # measured: 0.12 of it (other pairs take some)
    assert energy(sampled.max() + 0.5) == 0.0 and energy(max(sampled.min() - 0.3, 0.01)) == 0.0


def test_cli_offers_every_family():
    from openmm_forecast.cli import build_parser

    parser = build_parser()
    command = next(a for a in parser._subparsers._group_actions[0].choices.values() if a.prog.endswith("fit-surrogate"))
    (family,) = [action for action in command._actions if action.dest == "family"]
    assert set(family.choices) == set(FAMILIES)


def test_self_learning_refinement_learns_from_the_chains_accepted_states(toy_chain):
    """Started from an ``rbf`` fit to 15 frames of the toy's MD (0.6 ps: its pair distances cover little of the
    held-out frames'), one warm-up round of 300 jumps adds exactly its accepted states to the training frames, and
    the refit leaves a fraction of the start's held-out std(D) (measured: 0.098 against 0.29 kJ/mol)."""
    target, base, frames, energies, forces = toy_chain
    train = (frames[:15], energies[:15], forces[:15])
    validation = (frames[300:], energies[300:], forces[300:])
    start, start_report = fit_surrogate(target, *(np.concatenate([a, b]) for a, b in zip(train, validation)), base,
                                        family="rbf", validation_fraction=100 / 115, iterations=2)
    system, report = self_learning_refinement(target, base, train, validation, 100 * unit.femtosecond,
                                              surrogate_system=start, rounds=1, jumps_per_round=300, n_chains=4,
                                              learn_from="accepted", predict_jumps=(), iterations=2)
    first, frozen = report["self_learning"]["rounds"]
    assert frozen["frozen"] and frozen["target_evaluations"] == 600
    assert 0.05 < first["acceptance"] < 1.0, first
    added = frozen["n_train"] - first["n_train"]
    assert added == pytest.approx(first["acceptance"] * 300, abs=0.5)
    assert report["n_train"] == frozen["n_train"] and isinstance(system, mm.System)
    before, after = start_report["after"]["validation"]["energy_std"], report["after"]["validation"]["energy_std"]
    assert after < 0.5 * before, (before, after)
