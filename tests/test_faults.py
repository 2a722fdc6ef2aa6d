"""The standing fault and bad-input suite: what a hostile user can do, and what each gets.

Every case is an entry of one of the fixed lists below (one list per category of the table "What
happens when things go wrong" in docs/guide/reliability.md); ``test_reliability_table_counts_the_suite`` keeps the table's counts equal to the
lengths of these lists.  Cases reuse tiny runs (vacuum alanine dipeptide, tenths of a ps on the Reference
platform); the signal cases run ``openmm-forecast run`` in a subprocess.
"""

import json
import logging
import os
import pathlib
import re
import signal
import subprocess
import sys
import time
import types

import mdtraj
import numpy as np
import pytest
import torch
from openmm import app, unit

from openmm_forecast import (
    DataFileError,
    ForecastAccelerator,
    ForecastWalkers,
    Forecaster,
    ModelFileError,
    ModelMismatchError,
    UnsupportedSystemError,
    build_system,
    load_forecaster,
    load_phi_psi,
)
from openmm_forecast._io import atomic_write_path, write_json
from openmm_forecast._runtime import openmm as mm
from openmm_forecast.analysis import check_phi_psi
from openmm_forecast.benchmark import load_reference_runs
from openmm_forecast.cli import main
from openmm_forecast.cli._common import MAX_STRIDE_FS
from openmm_forecast.forecasters import VerletForecaster
from openmm_forecast.systems import resource_path

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
REFERENCE_FILE = resource_path("reference/ala2_vacuum_seed1_100ns_phipsi_1ps.npy")
SHIPPED_MODEL = "ala2-amber14-vacuum"
SHIPPED_POTENTIAL = resource_path("potentials/ala2-ani-amber14.pt")


# ---- shared tiny inputs ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """Bad phi/psi files and a finished tiny run, made once."""
    root = tmp_path_factory.mktemp("faults")
    degrees = np.load(REFERENCE_FILE)[:200]
    paths = {"good": root / "good.npy", "radians": root / "radians.npy", "radians5": root / "radians5.npy",
             "one": root / "one.npy", "text": root / "text.npy", "truncated": root / "truncated.npy",
             "shape": root / "shape.npy", "nan": root / "nan.npy"}
    np.save(paths["good"], degrees)
    np.save(paths["radians"], np.radians(degrees))
    np.save(paths["radians5"], np.radians(degrees[:5]))
    np.save(paths["one"], degrees[:1])
    np.savetxt(paths["text"], degrees)
    paths["truncated"].write_bytes(paths["good"].read_bytes()[:200])
    np.save(paths["shape"], degrees[:, :1])
    nan = degrees.copy()
    nan[3, 1] = np.nan
    np.save(paths["nan"], nan)
    paths["run"] = root / "run"
    assert main(_run_arguments(paths["run"], 0.2)) == 0
    paths["file"] = root / "a-file"
    paths["file"].write_text("not a directory")
    return paths


def _run_arguments(out, time_ps, *extra):
    return ["run", "--model", "verlet", "--time", str(time_ps), "--report-interval", "0.1", "--checkpoint-interval",
            "0.5", "--platform", "Reference", "--seed", "2", "--no-progress", "--out", str(out), *extra]


def _benchmark(out, reference, *extra):
    return ["benchmark", "--model", "verlet", "--walkers", "1", "--wall-seconds", "1", "--platform", "Reference",
            "--no-progress", "--reference", str(reference), "--out", str(out), *extra]


def _compare(a, b, out, *extra):
    return ["compare", str(a), str(b), "--out", str(out), *extra]


# ---- 1. bad command-line input: one line naming the problem, nothing written or overwritten -------

# (id, argv(files, tmp_path), exit code, text the one-line error must contain)
CLI_CASES = [
    ("run --time inf", lambda f, t: _run_arguments(t / "r", "inf"), 2, "argument --time: must be a finite number"),
    ("run --time nan", lambda f, t: _run_arguments(t / "r", "nan"), 2, "argument --time: must be a finite number"),
    ("run --temperature inf", lambda f, t: _run_arguments(t / "r", 1, "--temperature", "inf"), 2,
     "argument --temperature"),
    ("simulate --report-interval nan", lambda f, t: ["simulate", "--time", "1", "--report-interval", "nan",
                                                      "--out", str(t / "s")], 2, "argument --report-interval"),
    ("benchmark --stride -inf", lambda f, t: _benchmark(t / "b", f["good"], "--stride", "-inf"), 2, "argument --stride"),
    ("demo --wall-seconds inf", lambda f, t: ["demo", "--wall-seconds", "inf", "--out", str(t / "d")], 2,
     "argument --wall-seconds"),
    ("run --model <potential file>", lambda f, t: _run_arguments(t / "r", 0.1, "--model", SHIPPED_POTENTIAL), 1,
     "is a potential"),
    ("run --out <a file>", lambda f, t: _run_arguments(f["file"], 0.1), 1, "is a file, not a directory"),
    ("compare radians", lambda f, t: _compare(f["good"], f["radians"], t / "c"), 1, "look like radians"),
    ("compare 5-frame radians", lambda f, t: _compare(f["good"], f["radians5"], t / "c"), 1, "look like radians"),
    ("compare 1 frame", lambda f, t: _compare(f["good"], f["one"], t / "c"), 1, "at least 2"),
    ("compare text named .npy", lambda f, t: _compare(f["good"], f["text"], t / "c"), 1, "not a NumPy .npy file"),
    ("compare truncated .npy", lambda f, t: _compare(f["good"], f["truncated"], t / "c"), 1, "damaged"),
    ("compare wrong shape", lambda f, t: _compare(f["good"], f["shape"], t / "c"), 1, "shape"),
    ("compare NaN", lambda f, t: _compare(f["good"], f["nan"], t / "c"), 1, "NaN"),
    ("benchmark radians reference", lambda f, t: _benchmark(t / "b", f["radians"]), 1, "look like radians"),
    ("benchmark 1-frame reference", lambda f, t: _benchmark(t / "b", f["one"]), 1, "at least 2"),
    ("benchmark text reference", lambda f, t: _benchmark(t / "b", f["text"]), 1, "not a NumPy .npy file"),
    ("demo radians reference", lambda f, t: ["demo", "--wall-seconds", "1", "--reference", str(f["radians"]),
                                             "--out", str(t / "d")], 1, "look like radians"),
    # Issue 21: every flag validated by its type before any work, exit 2, the flag named (not stride_ps, max_frames,
    # energy_tolerance_kT or n_walkers), absurd sizes refused with the limit.
    ("run --time -1", lambda f, t: _run_arguments(t / "r", -1), 2, "argument --time: must be > 0"),
    ("run --time off the time step", lambda f, t: _run_arguments(t / "r", 0.0031), 2, "multiple of the time step"),
    ("run --stride 0", lambda f, t: _run_arguments(t / "r", 1, "--stride", "0"), 2, "argument --stride"),
    ("run --max-frames 0", lambda f, t: _run_arguments(t / "r", 1, "--max-frames", "0"), 2, "argument --max-frames"),
    ("run --energy-tolerance 0", lambda f, t: _run_arguments(t / "r", 1, "--energy-tolerance", "0"), 2,
     "argument --energy-tolerance"),
    ("run --seed 0", lambda f, t: _run_arguments(t / "r", 1, "--seed", "0"), 2, "argument --seed"),
    ("benchmark --walkers 0", lambda f, t: _benchmark(t / "b", f["good"], "--walkers", "0"), 2, "argument --walkers"),
    ("benchmark --walkers 100000", lambda f, t: _benchmark(t / "b", f["good"], "--walkers", "100000"), 2,
     "between 1 and 1000"),
    ("benchmark --arm verlet:metropolis@1e9", lambda f, t: _benchmark(t / "b", f["good"], "--arm",
                                                                     "verlet:metropolis@1e9"), 2,
     f"<= {MAX_STRIDE_FS:g}"),
    ("fit-surrogate --frames 0", lambda f, t: _fit(t / "f", "--frames", "0"), 2, "argument --frames"),
    ("fit-surrogate --frames 1000000000", lambda f, t: _fit(t / "f", "--frames", "1000000000"), 2,
     "between 1 and 1000000"),
    ("fit-surrogate --frame-interval 0", lambda f, t: _fit(t / "f", "--frame-interval", "0"), 2,
     "argument --frame-interval"),
    ("fit-surrogate --frame-interval -1", lambda f, t: _fit(t / "f", "--frame-interval", "-1"), 2,
     "argument --frame-interval"),
    ("fit-surrogate --base amber14-obc2", lambda f, t: _fit(t / "f", "--base", "amber14-obc2"), 2, "argument --base"),
]


def _fit(out, *extra):
    return ["fit-surrogate", "--frames", "20", "--equilibration", "0", "--iterations", "2", "--no-progress",
            "--out", str(out), *extra]


def _exit_code(arguments):
    try:
        return main(arguments)
    except SystemExit as exit:  # argparse's refusals
        return exit.code


@pytest.mark.parametrize("case", CLI_CASES, ids=[case[0] for case in CLI_CASES])
def test_bad_command_line_input(case, files, tmp_path, capsys):
    _, arguments, code, message = case
    assert _exit_code(arguments(files, tmp_path)) == code
    error = capsys.readouterr().err.strip()
    assert message in error and "Traceback" not in error, error
    assert len(error.splitlines()) == 1, error
    assert not any(tmp_path.iterdir()), "nothing may be written for refused input"


# ---- 2. outputs that exist: never destroyed -------------------------------------------------------


def _fake_outputs(directory, names):
    directory.mkdir(parents=True, exist_ok=True)
    for name in names:
        (directory / name).write_text("earlier result")


# (id, prepare(files, tmp_path) -> out, argv(files, out), text of the error)
OUTPUT_CASES = [
    ("run into a finished run", lambda f, t: f["run"], lambda f, o: _run_arguments(o, 0.4), "--resume"),
    ("run --resume without checkpoint", lambda f, t: _copy_run(f["run"], t / "r", drop="checkpoint.chk"),
     lambda f, o: _run_arguments(o, 0.4, "--resume"), "no checkpoint.chk"),
    ("benchmark into a benchmark", lambda f, t: _fake_outputs(t / "b", ["report.json"]) or t / "b",
     lambda f, o: _benchmark(o, f["good"]), "--overwrite"),
    ("demo into a demo", lambda f, t: _fake_outputs(t / "d", ["report.json"]) or t / "d",
     lambda f, o: ["demo", "--wall-seconds", "1", "--out", str(o)], "--overwrite"),
    ("compare into a comparison", lambda f, t: _fake_outputs(t / "c", ["ramachandran.png"]) or t / "c",
     lambda f, o: _compare(f["good"], f["good"], o), "--overwrite"),
    ("simulate into a simulation", lambda f, t: _fake_outputs(t / "s", ["trajectory.dcd"]) or t / "s",
     lambda f, o: ["simulate", "--time", "0.1", "--report-interval", "0.1", "--out", str(o)], "already holds"),
]


def test_resume_to_a_time_already_reached_changes_nothing(files, tmp_path, capsys):
    # Issue 21: it exited 0 silently and overwrote stats.json's wall_s_this_session.
    out = _copy_run(files["run"], tmp_path / "r", drop="")
    before = {path.name: path.read_bytes() for path in out.iterdir()}
    assert main(_run_arguments(out, 0.2, "--resume")) == 0
    assert "already at --time 0.2 ps (step 100): nothing to do" in capsys.readouterr().out
    assert _exit_code(_run_arguments(out, 0.1, "--resume")) == 2
    error = capsys.readouterr().err
    assert "already at 0.2 ps (step 100), beyond --time 0.1" in error and len(error.splitlines()) == 1, error
    assert {path.name: path.read_bytes() for path in out.iterdir()} == before


REACHED_CASES = 2
"""The two resumes above, counted with OUTPUT_CASES in the table of docs/guide/reliability.md."""


def _copy_run(source, target, drop):
    target.mkdir()
    for path in source.iterdir():
        if path.name != drop:
            (target / path.name).write_bytes(path.read_bytes())
    return target


@pytest.mark.parametrize("case", OUTPUT_CASES, ids=[case[0] for case in OUTPUT_CASES])
def test_existing_outputs_are_never_destroyed(case, files, tmp_path, capsys):
    _, prepare, arguments, message = case
    out = prepare(files, tmp_path)
    before = {path.name: path.read_bytes() for path in out.iterdir()}
    assert main(arguments(files, out)) == 1
    error = capsys.readouterr().err
    assert message in error and "Traceback" not in error, error
    assert {path.name: path.read_bytes() for path in out.iterdir()} == before


# ---- 3. bad library input: a named exception at the entry point --------------------------------------


def _with_force(system, force):
    copy = mm.XmlSerializer.deserialize(mm.XmlSerializer.serialize(system))
    copy.addForce(force)
    return copy


def _with_virtual_site(system):
    copy = mm.XmlSerializer.deserialize(mm.XmlSerializer.serialize(system))
    index = copy.addParticle(0.0)
    copy.setVirtualSite(index, mm.TwoParticleAverageSite(0, 1, 0.5, 0.5))
    return copy


def _accelerator_on(system_of):
    """ForecastAccelerator on a stand-in Simulation holding ``system_of(vacuum)``: refusals come before any use."""
    def build(vacuum):
        simulation = types.SimpleNamespace(system=system_of(vacuum.system))
        return ForecastAccelerator(simulation, "verlet", molecular_system=vacuum, forecaster_options={"stride_ps": 0.01})
    return build


# (id, call(vacuum_system), exception, text)
API_CASES = [
    ("MonteCarloBarostat", _accelerator_on(lambda s: _with_force(s, mm.MonteCarloBarostat(1.0, 300.0))),
     UnsupportedSystemError, "MonteCarloBarostat"),
    ("anisotropic barostat", _accelerator_on(
        lambda s: _with_force(s, mm.MonteCarloAnisotropicBarostat(mm.Vec3(1, 1, 1), 300.0))),
     UnsupportedSystemError, "constant-pressure"),
    ("virtual site", _accelerator_on(_with_virtual_site), UnsupportedSystemError, "virtual sites"),
    ("Drude particles", _accelerator_on(lambda s: _with_force(s, mm.DrudeForce())), UnsupportedSystemError, "Drude"),
    ("stride_ps=10 (meant fs)", lambda v: load_forecaster("verlet", molecular_system=v, stride_ps=10),
     ValueError, "implausible"),
    ("stride_ps='10 fs'", lambda v: load_forecaster("constant", molecular_system=v, stride_ps="10 fs"),
     TypeError, "Quantity"),
    ("potential file as forecaster", lambda v: load_forecaster(SHIPPED_POTENTIAL), ModelFileError, "is a potential"),
    ("phi/psi array in radians", lambda v: check_phi_psi(np.radians(np.load(REFERENCE_FILE)[:50])),
     DataFileError, "radians"),
    ("phi/psi array of wrong shape", lambda v: check_phi_psi(np.zeros((4, 3))), DataFileError, "shape"),
    ("phi/psi text file as .npy", lambda v: load_phi_psi(_text_npy()), DataFileError, "not a NumPy .npy file"),
    ("reference directory with radians", lambda v: load_reference_runs(_radians_directory()), DataFileError,
     "radians"),
    ("a second accelerator on one Simulation", lambda v: _two_accelerators(v), UnsupportedSystemError,
     "already driven by a ForecastAccelerator"),  # issue 21: accepted without a word
]


def _two_accelerators(vacuum):
    simulation = vacuum.create_simulation(platform="Reference", seed=1, minimize=False)
    options = {"molecular_system": vacuum, "forecaster_options": {"stride_ps": 0.01}, "progress": False}
    first = ForecastAccelerator(simulation, "verlet", **options)
    return first, ForecastAccelerator(simulation, "verlet", **options)


def _text_npy():
    path = os.path.join(_scratch(), "text.npy")
    np.savetxt(path, np.load(REFERENCE_FILE)[:10])
    return path


def _radians_directory():
    directory = os.path.join(_scratch(), "reference")
    os.makedirs(directory, exist_ok=True)
    np.save(os.path.join(directory, "run.npy"), np.radians(np.load(REFERENCE_FILE)[:100]))
    return directory


def _scratch():
    import tempfile

    return tempfile.mkdtemp(prefix="faults-")


@pytest.mark.parametrize("case", API_CASES, ids=[case[0] for case in API_CASES])
def test_bad_library_input(case, vacuum_system):
    _, call, exception, message = case
    with pytest.raises(exception, match=message):
        call(vacuum_system)


# ---- 4. failing forecasters and potentials: rejected jumps with a reason, never a crash ----------------


class Faulty(Forecaster):
    """The exact ``inner`` forecast passed through ``fault(positions, velocities)``."""

    def __init__(self, inner, fault):
        self.inner, self.fault, self.metadata = inner, fault, inner.metadata

    def _forecast(self, positions, velocities, n_frames):
        return self.fault(*self.inner._forecast(positions, velocities, n_frames))


def _raise(exception):
    def fault(x, v):
        raise exception
    return fault


class FarAwayFails(torch.nn.Module):
    """A potential that is zero where the molecule is and fails (raises, or gives NaN) 10 nm away."""

    def __init__(self, nan):
        super().__init__()
        self.nan = nan

    def forward(self, positions):
        if bool(torch.any(positions.abs() > 10.0)):
            if self.nan:
                return torch.sum(positions) * float("nan")
            raise RuntimeError("potential evaluation failed")
        return torch.sum(positions) * 0.0


def _with_failing_potential(vacuum, nan):
    from openmm_forecast.systems import _import_openmmtorch

    force = _import_openmmtorch().TorchForce(torch.jit.script(FarAwayFails(nan)))
    return _with_force(vacuum.system, force)


def _translated(x, v):
    return x + 20.0, v  # a rigid shift: sane geometry, but where the potential fails


# (id, fault of the exact forecast, potential fails there: None, "raise" or "nan", expected rejection reason)
MODEL_CASES = [
    ("forecaster returns NaN positions", lambda x, v: (x * np.nan, v), None, "nonfinite"),
    ("forecaster returns Inf velocities", lambda x, v: (x, v * np.inf), None, "nonfinite"),
    ("forecaster raises RuntimeError", _raise(RuntimeError("model failed")), None, "forecast_error"),
    ("forecaster raises FloatingPointError", _raise(FloatingPointError("overflow")), None, "forecast_error"),
    ("potential raises during a jump", _translated, "raise", "nonfinite"),
    ("potential gives NaN during a jump", _translated, "nan", "energy"),  # a non-finite dH fails the energy check
]


@pytest.mark.parametrize("case", MODEL_CASES, ids=[case[0] for case in MODEL_CASES])
def test_failing_models_are_rejected_jumps(case, vacuum_system, caplog):
    _, fault, potential, reason = case
    system = vacuum_system.system if potential is None else _with_failing_potential(vacuum_system, potential == "nan")
    integrator = vacuum_system.integrator(seed=3)
    simulation = app.Simulation(vacuum_system.topology, system, integrator, mm.Platform.getPlatformByName("Reference"))
    simulation.context.setPositions(vacuum_system.positions)
    simulation.context.setVelocitiesToTemperature(300.0, 3)
    exact = VerletForecaster((system, vacuum_system.elements), stride_ps=0.01, max_frames=2)
    accelerator = ForecastAccelerator(simulation, Faulty(exact, fault), molecular_system=vacuum_system,
                                      progress=False, segment_steps=5)
    with caplog.at_level(logging.WARNING, logger="openmm_forecast.accelerator"):
        accelerator.step(60)
    stats = accelerator.stats
    assert simulation.currentStep == 60 and stats.jumps_attempted > 0
    assert stats.jumps_accepted == 0 and stats.rejections[reason] == stats.jumps_attempted
    state = simulation.context.getState(getPositions=True, getEnergy=True)
    assert np.isfinite(state.getPositions(asNumpy=True)._value).all()
    assert np.abs(state.getPositions(asNumpy=True)._value).max() < 10.0  # no failed candidate stayed
    if reason == "forecast_error":
        assert sum("forecast_error" in record.getMessage() for record in caplog.records) <= 1  # warned once


def test_a_failing_batched_forecast_is_a_rejected_jump_of_every_walker(vacuum_system):
    exact = VerletForecaster(vacuum_system, stride_ps=0.01, max_frames=2)
    walkers = ForecastWalkers(vacuum_system, Faulty(exact, _raise(RuntimeError("batch failed"))), 2,
                              platform="Reference", minimize=False, segment_steps=5)
    walkers.step(40)
    stats = walkers.stats()
    assert stats.jumps_attempted > 0 and stats.rejections["forecast_error"] == stats.jumps_attempted
    assert all(w.simulation.currentStep == 40 for w in walkers.walkers)


MODEL_CASES_BATCHED = 1
"""The walkers case above, counted with MODEL_CASES in the table of docs/guide/reliability.md."""


# ---- 5. mismatched physical settings: refused, or warned once naming both values ----------------------


def _shipped_at(temperature_K=300.0, constraints="HBonds"):
    molecular_system = build_system("amber14-vacuum", temperature=temperature_K * unit.kelvin, constraints=constraints)
    simulation = molecular_system.create_simulation(platform="Reference", seed=1, minimize=False)
    return ForecastAccelerator(simulation, SHIPPED_MODEL, molecular_system=molecular_system, progress=False)


def _verlet_at(temperature_K):
    molecular_system = build_system("amber14-vacuum", temperature=temperature_K * unit.kelvin)
    simulation = molecular_system.create_simulation(platform="Reference", seed=1, minimize=False)
    return ForecastAccelerator(simulation, "verlet", molecular_system=molecular_system,
                               forecaster_options={"stride_ps": 10 * unit.femtosecond}, progress=False)


# (id, call, exception or None, warning text or None)
SETTINGS_CASES = [
    ("forecaster at 300 K, simulation at 500 K", lambda: _shipped_at(500.0), None, "trained at 300 K but the "
     "simulation runs at 500 K"),
    ("HBonds forecaster, no constraints", lambda: _shipped_at(constraints=None), ModelMismatchError,
     "trained with constraints 'HBonds', but the simulation has constraints 'none'"),
    ("HBonds forecaster, AllBonds", lambda: _shipped_at(constraints="AllBonds"), ModelMismatchError, "'AllBonds'"),
    ("verlet baseline at 500 K: its own conditions", lambda: _verlet_at(500.0), None, None),
    ("barostat on amber14-tip3p (real Simulation)", lambda: _tip3p_accelerator(barostat=True), UnsupportedSystemError,
     "MonteCarloBarostat"),
    ("barostat on amber14-tip3p walkers", lambda: _tip3p_walkers_with_barostat(), UnsupportedSystemError,
     "MonteCarloBarostat"),
]


def _tip3p_walkers_with_barostat():
    import dataclasses

    _tip3p_system()
    molecular_system = dataclasses.replace(
        _TIP3P["system"], system=_with_force(_TIP3P["system"].system, mm.MonteCarloBarostat(1.0, 300.0, 10)))
    return ForecastWalkers(molecular_system, "verlet", 1, platform="CPU", minimize=False,
                           forecaster_options={"stride_ps": 0.004, "timestep": 1 * unit.femtosecond})


def _tip3p_system():
    if "system" not in _TIP3P:
        _TIP3P["system"] = build_system("amber14-tip3p")
    return _TIP3P["system"]


@pytest.mark.parametrize("case", SETTINGS_CASES, ids=[case[0] for case in SETTINGS_CASES])
def test_mismatched_physical_settings(case, caplog):
    _, call, exception, message = case
    from openmm_forecast import _logging

    _logging._warned.clear()
    with caplog.at_level(logging.WARNING, logger="openmm_forecast.accelerator"):
        if exception is not None:
            with pytest.raises(exception, match=re.escape(message)):
                call()
            return
        call()
        call()  # a second accelerator (a walker) does not warn again
    warnings = [record.getMessage() for record in caplog.records if record.levelno >= logging.WARNING]
    if message is None:
        assert warnings == []
    else:
        assert len(warnings) == 1 and message in warnings[0], warnings


_TIP3P = {}


def _tip3p_accelerator(barostat=False, metropolis=False):
    molecular_system = _tip3p_system()
    system = molecular_system.system
    if barostat:
        system = _with_force(system, mm.MonteCarloBarostat(1.0 * unit.bar, 300.0 * unit.kelvin, 10))
    simulation = app.Simulation(molecular_system.topology, system, molecular_system.integrator(seed=1),
                                mm.Platform.getPlatformByName("CPU"))
    simulation.context.setPositions(molecular_system.positions)
    simulation.minimizeEnergy(maxIterations=100)
    simulation.context.setVelocitiesToTemperature(300.0 * unit.kelvin, 1)
    forecaster = VerletForecaster(molecular_system, stride_ps=0.004, max_frames=2, timestep=0.5 * unit.femtosecond,
                                  platform="CPU")
    return ForecastAccelerator(simulation, forecaster, molecular_system=molecular_system, progress=False,
                               metropolis=metropolis, segment_steps=4, temperature_sigmas=None)  # minimised: cold


def test_the_tip3p_box_admits_a_barostat_in_plain_openmm():
    molecular_system = build_system("amber14-tip3p")
    box = molecular_system.system.getDefaultPeriodicBoxVectors()[0][0].value_in_unit(unit.nanometer)
    assert box > 2.0 * 1.0 * 1.1  # more than twice the 1 nm cutoff, with room to shrink
    system = _with_force(molecular_system.system, mm.MonteCarloBarostat(1.0 * unit.bar, 300.0 * unit.kelvin, 1))
    simulation = app.Simulation(molecular_system.topology, system, molecular_system.integrator(seed=1),
                                mm.Platform.getPlatformByName("CPU"))
    simulation.context.setPositions(molecular_system.positions)
    simulation.minimizeEnergy(maxIterations=50)
    simulation.step(20)  # 20 volume moves


@pytest.mark.parametrize("metropolis", [False, True], ids=["tolerance", "metropolis"])
def test_the_exact_proposal_keeps_accepting_on_supported_solvated_systems(metropolis):
    accelerator = _tip3p_accelerator(metropolis=metropolis)
    accelerator.step(200)  # ~40 jumps: Metropolis accepts ~94 % of them here, so 80 % is a safe bar
    stats = accelerator.stats
    assert stats.jumps_attempted >= 4
    assert stats.jumps_accepted >= 0.8 * stats.jumps_attempted, stats.as_dict()


# ---- 6. kills, signals and files of another run ---------------------------------------------------------


def _spawn_run(out, *extra):
    environment = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=ROOT)
    arguments = _run_arguments(out, 1000, "--checkpoint-interval", "1000", *extra)
    return subprocess.Popen([sys.executable, "-m", "openmm_forecast.cli", *arguments], cwd=ROOT, env=environment,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _wait_for_frames(out, frames, process, timeout=120.0):
    log = out / "log.csv"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert process.poll() is None, process.communicate()
        if log.exists() and len(log.read_text().splitlines()) > frames:
            return
        time.sleep(0.2)
    raise AssertionError("the run wrote no frames in time")


def _frames(out):
    return mdtraj.load(str(out / "trajectory.dcd"), top=str(out / "topology.pdb")).n_frames


@pytest.mark.parametrize("signum, code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)], ids=["SIGINT", "SIGTERM"])
def test_a_signal_stops_run_with_a_final_checkpoint(signum, code, tmp_path):
    out = tmp_path / "run"
    process = _spawn_run(out)
    _wait_for_frames(out, 3, process)
    process.send_signal(signum)
    stdout, stderr = process.communicate(timeout=120)
    assert process.returncode == code, stderr
    assert "Traceback" not in stderr and "Resume with" in stdout and "--resume" in stdout, (stdout, stderr)
    step = json.loads((out / "stats.json").read_text())["step"]
    assert step > 0 and (out / "checkpoint.chk").exists()
    # The final checkpoint is where it stopped: resuming continues from there, frames neither lost nor doubled.
    total_ps = (step // 50 + 2) * 0.1
    assert main(_run_arguments(out, f"{total_ps:.1f}", "--resume")) == 0
    assert _frames(out) == round(total_ps / 0.1)


def test_sigkill_during_a_run_then_resume_continues(tmp_path):
    out = tmp_path / "run"
    environment = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=ROOT)
    arguments = _run_arguments(out, 1000, "--checkpoint-interval", "0.2")
    process = subprocess.Popen([sys.executable, "-m", "openmm_forecast.cli", *arguments], cwd=ROOT, env=environment,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    _wait_for_frames(out, 5, process)
    process.kill()
    process.communicate()
    # However far it got before the kill (a fast machine writes many frames per poll), resuming to three frames
    # beyond the last one written loses and repeats none.
    written = len((out / "log.csv").read_text().splitlines()) - 1
    total_frames = written + 3
    assert main(_run_arguments(out, f"{total_frames * 0.1:.1f}", "--resume")) == 0
    assert _frames(out) == total_frames


def test_a_kill_during_a_checkpoint_write_keeps_the_old_one_and_its_leftover_is_cleaned(tmp_path):
    path = tmp_path / "checkpoint.chk"
    path.write_bytes(b"the good checkpoint")
    child = os.fork()
    if child == 0:  # killed in the middle of writing the new one
        with atomic_write_path(path) as temporary:
            with open(temporary, "wb") as handle:
                handle.write(b"half of a new")
                handle.flush()
                os.kill(os.getpid(), signal.SIGKILL)
    os.waitpid(child, 0)
    leftovers = list(tmp_path.glob(".checkpoint.chk.partial-*"))
    assert path.read_bytes() == b"the good checkpoint" and len(leftovers) == 1
    write_json(path, {"new": True})
    assert json.loads(path.read_text()) == {"new": True} and not list(tmp_path.glob(".checkpoint.chk.partial-*"))


def _truncate(name, keep):
    def damage(out):
        path = out / name
        path.write_bytes(path.read_bytes()[:keep])
    return damage


def _replace(name, content):
    def damage(out):
        (out / name).write_bytes(content)
    return damage


def _remove(name):
    def damage(out):
        (out / name).unlink()
    return damage


def _other_model(out):
    settings = json.loads((out / "run.json").read_text())
    (out / "run.json").write_text(json.dumps({**settings, "model": "ballistic"}))


def _foreign_dcd(out):
    import shutil

    other = out.parent / "other"
    assert main(["simulate", "--setup", "amber14-vacuum", "--time", "0.2", "--report-interval", "0.1",
                 "--equilibration", "0", "--platform", "Reference", "--out", str(other)]) == 0
    header = bytearray((other / "trajectory.dcd").read_bytes())
    header[104 + int.from_bytes(header[92:96], "little") : 108 + int.from_bytes(header[92:96], "little")] = \
        (23).to_bytes(4, "little")  # a trajectory of 23 atoms
    (out / "trajectory.dcd").write_bytes(bytes(header))
    shutil.rmtree(other)


def _whole_frames(name, frames):
    def damage(out):
        from openmm_forecast.cli.run import dcd_frames

        layout = dcd_frames(out / name)
        path = out / name
        path.write_bytes(path.read_bytes()[:layout["header_bytes"] + frames * layout["frame_bytes"]])
    return damage


def _drop_log_line(index):
    def damage(out):
        lines = (out / "log.csv").read_text().splitlines(keepends=True)
        del lines[index]
        (out / "log.csv").write_text("".join(lines))
    return damage


def _reports_after_checkpoint(out):
    """An interrupted run's frame and line after its last checkpoint (here: the checkpoint of step 50)."""
    import shutil

    earlier = out.parent / "earlier"
    assert main(_run_arguments(earlier, 0.1)) == 0
    shutil.copy(earlier / "checkpoint.chk", out / "checkpoint.chk")
    shutil.copy(earlier / "stats.json", out / "stats.json")
    shutil.rmtree(earlier)


ALL = [50, 100, 150, 200]
# (id, damage(out) of a finished 0.2 ps run, extra flags, exit code, error text (refusals) or the frames and log
# steps after resuming to 0.4 ps)
FILE_CASES = [
    ("truncated checkpoint.chk", _truncate("checkpoint.chk", 100), [], 1, "checkpoint"),
    ("checkpoint.chk of another model", _other_model, ["--model", "ballistic"], 1, "checkpoint"),
    ("run.json not JSON", _replace("run.json", b"{half"), [], 1, "not valid JSON"),
    ("trajectory.dcd of another run", _foreign_dcd, [], 1, "another run"),
    ("trajectory.dcd not a DCD", _replace("trajectory.dcd", b"x" * 200), [], 1, "not a DCD file"),
    # Issue 21: frames or lines missing up to the checkpoint's step are refused (appending would hide the gap).
    ("trajectory.dcd cut mid-frame", _truncate("trajectory.dcd", -100), [], 1, "trajectory.dcd holds 1 whole frames"),
    ("trajectory.dcd cut to whole frames", _whole_frames("trajectory.dcd", 1), [], 1,
     "the frames of steps 100 are missing"),
    ("trajectory.dcd missing", _remove("trajectory.dcd"), [], 1, "trajectory.dcd is missing"),
    ("log.csv cut mid-line", _truncate("log.csv", -7), [], 1, "log.csv has 1 complete lines"),
    ("log.csv missing a line", _drop_log_line(1), [], 1, "missing: steps 50"),
    ("log.csv and trajectory.dcd past the checkpoint", _reports_after_checkpoint, [], 0, (4, ALL)),  # removed, re-run
    ("topology.pdb missing", _remove("topology.pdb"), [], 0, (4, ALL)),
]



@pytest.mark.parametrize("case", FILE_CASES, ids=[case[0] for case in FILE_CASES])
def test_resume_with_damaged_or_foreign_files(case, files, tmp_path, capsys, caplog):
    _, damage, extra, code, expected = case
    out = _copy_run(files["run"], tmp_path / "r", drop="")
    damage(out)
    before = {path.name: path.read_bytes() for path in out.iterdir()}
    with caplog.at_level(logging.WARNING):
        assert main(_run_arguments(out, 0.4, "--resume", *extra)) == code
    if code:
        error = capsys.readouterr().err
        assert expected in error and "Traceback" not in error, error
        assert {path.name: path.read_bytes() for path in out.iterdir()} == before  # nothing touched
    else:
        assert _frames(out) == expected[0]
        log = (out / "log.csv").read_text().splitlines()
        assert [int(float(line.split(",")[0])) for line in log if not line.startswith("#")] == expected[1]


def _model_copy(out, model):
    copy = out.parent / "copy.xml"
    copy.write_bytes(model.read_bytes())
    return copy


def _model_edited(out, model):
    model.write_text(model.read_text().replace("<System", "<!-- edited -->\n<System", 1))
    return model


# (id, model for the resume from (run directory, the model file it started with), exit code): files are compared
# by content, not by path (issue 21: an absolute path or a byte-identical copy was refused as "different: --model").
PROVENANCE_CASES = [
    ("same model by an absolute path", lambda out, model: model.resolve(), 0),
    ("byte-identical copy of the model", _model_copy, 0),
    ("model edited under the same name", _model_edited, 1),
]


@pytest.mark.parametrize("case", PROVENANCE_CASES, ids=[case[0] for case in PROVENANCE_CASES])
def test_resume_compares_model_files_by_content(case, tmp_path, capsys, monkeypatch):
    from openmm_forecast.forecasters.surrogate import shipped_surrogates, surrogates_directory

    _, resumed_model, code = case
    monkeypatch.chdir(tmp_path)
    name = shipped_surrogates()[0]
    model = tmp_path / "model.xml"
    model.write_bytes((pathlib.Path(surrogates_directory()) / f"{name}.xml").read_bytes())
    out = tmp_path / "r"
    assert main(_run_arguments("r", 0.2, "--model", "model.xml")) == 0
    assert main(_run_arguments(out, 0.4, "--resume", "--model", str(resumed_model(out, model)))) == code
    if code:
        assert "different: --model" in capsys.readouterr().err and _frames(out) == 2
    else:
        assert _frames(out) == 4


def _samples_npz(**arrays):
    import io

    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    return buffer.getvalue()


_SAMPLES = _samples_npz(positions=np.zeros((4, 22, 3)), energies=np.zeros(4), forces=np.zeros((4, 22, 3)),
                        sampling=np.array(json.dumps({"setup": "amber14-vacuum", "fingerprint": "x"})))

# (id, content of OUT/samples.npz, text of the one-line error): the cache of fit-surrogate, reused by a rerun
# (issue 21: a truncated one ended in a BadZipFile traceback, one of text or random bytes in "pickled data").
CACHE_CASES = [
    ("samples.npz truncated", _SAMPLES[: len(_SAMPLES) // 2], "damaged .npz archive"),
    ("samples.npz of random bytes", np.random.default_rng(0).bytes(3000), "not a NumPy .npz archive"),
    ("samples.npz of text", b"positions,energies\n1,2\n" * 50, "not a NumPy .npz archive"),
    ("samples.npz with a pickled array", _samples_npz(positions=np.array([{}], dtype=object), energies=np.zeros(3),
                                                      forces=np.zeros(3), sampling=np.array("{}")), "pickled objects"),
    ("samples.npz without forces", _samples_npz(positions=np.zeros(3)), "lacks the arrays energies, forces"),
    ("samples.npz with a broken record", _samples_npz(positions=np.zeros(3), energies=np.zeros(3),
                                                      forces=np.zeros(3), sampling=np.array("{half")),
     "no readable record of its sampling"),
]


@pytest.mark.parametrize("case", CACHE_CASES, ids=[case[0] for case in CACHE_CASES])
def test_a_corrupt_cache_is_refused_by_name(case, tmp_path, capsys):
    _, content, message = case
    out = tmp_path / "f"
    out.mkdir()
    (out / "samples.npz").write_bytes(content)
    assert _exit_code(_fit(out)) == 1
    error = capsys.readouterr().err.strip()
    assert "samples.npz" in error and message in error and "Traceback" not in error, error
    assert len(error.splitlines()) == 1, error
    assert [path.name for path in out.iterdir()] == ["samples.npz"]


def test_a_signal_during_benchmark_keeps_a_partial_report(files, tmp_path, monkeypatch):
    # Issue 21: the exit code was right but the output directory empty.  SIGTERM arrives (as the CLI's handler
    # raises it) in the hybrid arm's 5th sampling step, after the plain arm's first slice.
    from openmm_forecast.walkers import ForecastWalkers

    calls = []
    original = ForecastWalkers.step

    def step(self, n_steps):
        calls.append(n_steps)
        if len(calls) == 5:
            raise KeyboardInterrupt(signal.SIGTERM)
        return original(self, n_steps)

    monkeypatch.setattr(ForecastWalkers, "step", step)
    out = tmp_path / "b"
    arguments = _benchmark(out, files["good"], "--wall-seconds", "60", "--slice-seconds", "0.3", "--sample-interval",
                           "0.02", "--pin", "no", "--walkers", "2")
    assert main(arguments) == 143
    report = json.loads((out / "report.json").read_text())
    assert report["partial"] is True and report["interrupted_by"] == "SIGTERM" and report["arms_not_sampled"] == []
    hybrid = next(name for name in report["arms"] if name != "plain")
    assert report["arms"][hybrid]["samples_per_walker"] == 4  # the samples completed before the signal
    assert report["arms"]["plain"]["samples_per_walker"] >= 1
    for name, arm in report["arms"].items():
        assert np.load(out / f"{name}_phipsi.npy").shape == (2, arm["samples_per_walker"], 2)
    assert (out / "ramachandran.png").exists()


INTERRUPTION_CASES = 2 + 1 + 1 + 1
"""Signals during run (2), SIGKILL during a run, SIGKILL during a checkpoint write, a signal during benchmark."""


# ---- 7. dynamics that blow up: a non-zero exit naming it, nothing of the broken state written ---------------


def _log_temperatures(path):
    """Temperature column of a StateDataReporter CSV (empty when it holds no report)."""
    lines = path.read_text().splitlines() if path.exists() else []
    if not lines:
        return np.zeros(0)
    column = lines[0].lstrip("#").split(",").index('"Temperature (K)"')
    return np.array([float(line.split(",")[column]) for line in lines[1:]])


# (id, argv(out), the thermostat's temperature in K)
BLOW_UP_CASES = [
    ("run at 3e4 K", lambda out: _run_arguments(out, 1, "--temperature", "3e4", "--report-interval", "0.02"), 3e4),
    ("run at 1e6 K (issue 21)", lambda out: _run_arguments(out, 1, "--temperature", "1e6"), 1e6),
    ("simulate at 1e6 K, 4 fs, no constraints", lambda out: [
        "simulate", "--time", "1", "--temperature", "1e6", "--timestep", "4", "--constraints", "none",
        "--report-interval", "0.04", "--equilibration", "0", "--platform", "Reference", "--out", str(out)], 1e6),
]


@pytest.mark.parametrize("case", BLOW_UP_CASES, ids=[case[0] for case in BLOW_UP_CASES])
def test_a_run_that_blows_up_exits_1_and_writes_only_good_states(case, tmp_path, capsys):
    from openmm_forecast.cli.run import dcd_frames
    from openmm_forecast.reporters import MAX_TEMPERATURE_FACTOR

    _, arguments, temperature_K = case
    out = tmp_path / "out"
    assert main(arguments(out)) == 1
    error = capsys.readouterr().err.strip()
    assert "blew up at step" in error and "Traceback" not in error and len(error.splitlines()) == 1, error
    temperatures = _log_temperatures(out / "log.csv")
    assert np.isfinite(temperatures).all() and (temperatures <= MAX_TEMPERATURE_FACTOR * temperature_K).all()
    trajectory = out / "trajectory.dcd"  # empty when it blew up before its first report
    frames = dcd_frames(trajectory)["frames"] if trajectory.exists() and trajectory.stat().st_size else 0
    assert frames == len(temperatures)  # the trajectory and the log end at the same good report
    if frames:
        assert np.isfinite(mdtraj.load(str(out / "trajectory.dcd"), top=str(out / "topology.pdb")).xyz).all()
    assert not (out / "checkpoint.chk").exists() or "checkpoint.chk at step" in error


def test_the_blow_up_reporter_stops_a_simulation_before_the_reporters_after_it(vacuum_system, tmp_path):
    from openmm_forecast.errors import BlowUpError
    from openmm_forecast.reporters import BlowUpReporter

    simulation = vacuum_system.create_simulation(platform="Reference", seed=1, minimize=False)
    path = tmp_path / "trajectory.dcd"
    simulation.reporters += [BlowUpReporter(simulation.system, vacuum_system.temperature, 5),
                             app.DCDReporter(str(path), 5)]
    simulation.step(5)
    velocities = simulation.context.getState(getVelocities=True).getVelocities(asNumpy=True)
    simulation.context.setVelocities(velocities * 1e4)  # 3e10 K
    with pytest.raises(BlowUpError, match="kinetic temperature"):
        simulation.step(5)
    from openmm_forecast.cli.run import dcd_frames

    assert dcd_frames(path)["frames"] == 1


BLOW_UP_LIBRARY_CASES = 1
"""The reporter case above, counted with BLOW_UP_CASES in the table of docs/guide/reliability.md."""


# ---- the table of docs/guide/reliability.md ----------------------------------------------------------------------------------


def suite_counts():
    """Cases per category of the table in docs/guide/reliability.md, from the lists above."""
    return {
        "Bad command-line input": len(CLI_CASES),
        "Existing outputs": len(OUTPUT_CASES) + REACHED_CASES,
        "Bad library input": len(API_CASES),
        "Failing forecasters and potentials": len(MODEL_CASES) + MODEL_CASES_BATCHED,
        "Mismatched physical settings": len(SETTINGS_CASES) + 1 + 2,  # + plain-OpenMM barostat box, exactness x2
        "Kills and signals": INTERRUPTION_CASES,
        "Truncated and foreign files": len(FILE_CASES),
        "Files compared by content": len(PROVENANCE_CASES),
        "Corrupt caches": len(CACHE_CASES),
        "Dynamics that blow up": len(BLOW_UP_CASES) + BLOW_UP_LIBRARY_CASES,
    }


def test_reliability_table_counts_the_suite():
    with open(os.path.join(ROOT, "docs", "guide", "reliability.md")) as handle:
        text = handle.read()
    section = text.split("# What happens when things go wrong", 1)[1].split("\n## ", 1)[0]
    rows = {match.group(1).strip(): int(match.group(2)) for match in re.finditer(r"^\| ([^|]+) \| (\d+) \|", section,
                                                                                  re.MULTILINE)}
    assert rows == suite_counts()
