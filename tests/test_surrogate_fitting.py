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
    for block, size in (("bond", 0.1), ("angle", 0.1), ("pair", 0.1)):
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
def fitted(vacuum_system):
    target = _perturbed_target(vacuum_system)
    positions, energies, forces = sample_target(target, 240, n_chains=2, frame_interval_ps=0.02, equilibration_ps=1.0)
    system, report = fit_surrogate(target, positions, energies, forces, vacuum_system.system, validation_fraction=0.25)
    return target, system, report


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
