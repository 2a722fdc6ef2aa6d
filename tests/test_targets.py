"""The user's own molecule (issue 19): targets from a Simulation, System XML + PDB and AMBER files, the derived
surrogate, and every entry point on molecules the project did not ship.

Molecules: tests/data/ala4-zwitterion.pdb (NALA-ALA-ALA-CALA, 43 atoms), ace-ala3-nme.pdb (42 atoms) and
ace-gly-nme.pdb (alanine dipeptide mutated to glycine, 19 atoms), written by scripts/make_test_peptides.py; their
Systems (amber14 + OBC2) are built here, and an AMBER prmtop/inpcrd of ACE-(ALA)3-NME is written here with
parmed (mbondi2 radii), so the prmtop path meets a file OpenMM's force field did not write.
"""

import json
import os

import numpy as np
import pytest
from openmm import app, unit

from openmm_forecast import ForecastAccelerator, MolecularSystem, build_system
from openmm_forecast._runtime import openmm as mm
from openmm_forecast.cli import main
from openmm_forecast.errors import TargetInputError
from openmm_forecast.systems import ani1x_force
from openmm_forecast.forecasters.surrogate import SCREENING_DIELECTRIC, derived_surrogate_system

DATA = os.path.join(os.path.dirname(__file__), "data")
REFERENCE = mm.Platform.getPlatformByName("Reference")


def pdb_path(name):
    return os.path.join(DATA, f"{name}.pdb")


def obc2_system(topology, constraints=app.HBonds):
    return app.ForceField("amber14-all.xml", "implicit/obc2.xml").createSystem(
        topology, nonbondedMethod=app.NoCutoff, constraints=constraints)


def energy_and_forces(system, positions):
    """(kJ/mol, kJ/mol/nm array (n, 3)) of ``system`` at ``positions`` on the Reference platform."""
    context = mm.Context(system, mm.VerletIntegrator(0.001), REFERENCE)
    context.setPositions(positions)
    state = context.getState(getEnergy=True, getForces=True)
    return (state.getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole),
            state.getForces(asNumpy=True).value_in_unit(unit.kilojoule_per_mole / unit.nanometer))


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """System XML (amber14 + OBC2, HBonds) of every test peptide, and a prmtop/inpcrd of ACE-(ALA)3-NME."""
    import parmed

    directory = tmp_path_factory.mktemp("targets")
    paths = {}
    for name in ("ala4-zwitterion", "ace-ala3-nme", "ace-gly-nme"):
        pdb = app.PDBFile(pdb_path(name))
        paths[name] = str(directory / f"{name}.xml")
        with open(paths[name], "w") as handle:
            handle.write(mm.XmlSerializer.serialize(obc2_system(pdb.topology)))
    pdb = app.PDBFile(pdb_path("ace-ala3-nme"))
    vacuum = app.ForceField("amber14-all.xml").createSystem(pdb.topology, nonbondedMethod=app.NoCutoff,
                                                             constraints=None, rigidWater=False)
    structure = parmed.openmm.load_topology(pdb.topology, vacuum, xyz=pdb.positions)
    parmed.tools.changeRadii(structure, "mbondi2").execute()  # OBC2's radii (amber14's implicit/obc2.xml uses them)
    paths["prmtop"], paths["inpcrd"] = str(directory / "ace-ala3-nme.prmtop"), str(directory / "ace-ala3-nme.inpcrd")
    structure.save(paths["prmtop"])
    structure.save(paths["inpcrd"])
    return paths


# ---- one input model ----------------------------------------------------------------------------------------


def test_xml_and_prmtop_targets_agree_with_each_other(files):
    """Two independent routes to one physics: amber14 XML + CustomGBForce, and a parmed prmtop + GBSAOBCForce."""
    xml = MolecularSystem.from_xml(files["ace-ala3-nme"], pdb_path("ace-ala3-nme"))
    amber = MolecularSystem.from_amber(files["prmtop"], files["inpcrd"], implicit_solvent="OBC2")
    assert xml.n_atoms == amber.n_atoms == 42 and xml.elements == amber.elements
    assert xml.setup is None and xml.constraints == amber.constraints == "HBonds" and "CustomGBForce" in xml.potential
    energy_xml, forces_xml = energy_and_forces(xml.system, xml.positions)
    energy_amber, forces_amber = energy_and_forces(amber.system, xml.positions)
    # The prmtop holds charges to 8 significant digits (scaled by 18.2223) and OBC2's two implementations sum in
    # different orders: measured 1e-4 kJ/mol and ~1e-3 kJ/mol/nm; 0.01 and 0.1 leave room, far below one force
    # term (an unscreened charge pair alone moves the energy by >10 kJ/mol).
    assert energy_amber == pytest.approx(energy_xml, abs=0.01)
    assert np.abs(forces_amber - forces_xml).max() < 0.1
    vacuum = MolecularSystem.from_amber(files["prmtop"], files["inpcrd"], constraints=None)
    assert vacuum.constraints == "none" and vacuum.system.getNumConstraints() == 0
    assert abs(energy_and_forces(vacuum.system, xml.positions)[0] - energy_xml) > 10.0  # the solvent is really in


def test_named_setups_go_through_the_same_path():
    """A named test system read back from its XML and PDB is the same target (same fingerprint)."""
    named = build_system("amber14-obc2")
    from openmm_forecast.systems import resource_path

    xml = os.path.join(os.environ.get("TMPDIR", "/tmp"), f"ala2-obc2-{os.getpid()}.xml")
    with open(xml, "w") as handle:
        handle.write(mm.XmlSerializer.serialize(named.system))
    try:
        read = MolecularSystem.from_xml(xml, resource_path("alanine-dipeptide.pdb"))
    finally:
        os.remove(xml)
    assert read.fingerprint() == named.fingerprint() and read.constraints == named.constraints == "HBonds"
    assert read.solute_atoms == named.solute_atoms == 22 and named.setup == "amber14-obc2" and read.setup is None


def test_structure_may_be_pdbx(files, tmp_path):
    pdb = app.PDBFile(pdb_path("ala4-zwitterion"))
    cif = tmp_path / "ala4.cif"
    with open(cif, "w") as handle:
        app.PDBxFile.writeFile(pdb.topology, pdb.positions, handle)
    from_cif = MolecularSystem.from_xml(files["ala4-zwitterion"], cif)
    from_pdb = MolecularSystem.from_xml(files["ala4-zwitterion"], pdb_path("ala4-zwitterion"))
    assert from_cif.elements == from_pdb.elements and from_cif.n_atoms == 43
    np.testing.assert_allclose(from_cif.positions.value_in_unit(unit.nanometer),  # PDB's 3 decimals in angstrom
                               from_pdb.positions.value_in_unit(unit.nanometer), atol=1e-4)


def test_constraint_set_is_read_from_the_system():
    pdb = app.PDBFile(pdb_path("ace-gly-nme"))
    for constraints, name in ((None, "none"), (app.HBonds, "HBonds"), (app.AllBonds, "AllBonds")):
        target = MolecularSystem.from_openmm(obc2_system(pdb.topology, constraints), pdb.topology, pdb.positions)
        assert target.constraints == name
    angles = MolecularSystem.from_openmm(obc2_system(pdb.topology, app.HAngles), pdb.topology, pdb.positions)
    assert angles.constraints.endswith(" constraints")  # not a set it can name: counted


def test_from_simulation_reads_the_simulation_as_it_is():
    pdb = app.PDBFile(pdb_path("ace-gly-nme"))
    integrator = mm.LangevinMiddleIntegrator(310 * unit.kelvin, 2 / unit.picosecond, 1.5 * unit.femtosecond)
    simulation = app.Simulation(pdb.topology, obc2_system(pdb.topology), integrator, REFERENCE)
    simulation.context.setPositions(pdb.positions)
    simulation.minimizeEnergy(maxIterations=20)
    target = MolecularSystem.from_simulation(simulation)
    assert target.system is simulation.system and target.topology is simulation.topology
    assert target.temperature.value_in_unit(unit.kelvin) == pytest.approx(310)
    assert target.timestep.value_in_unit(unit.femtosecond) == pytest.approx(1.5)
    assert target.friction.value_in_unit(unit.picosecond**-1) == pytest.approx(2)
    now = simulation.context.getState(getPositions=True).getPositions(asNumpy=True).value_in_unit(unit.nanometer)
    np.testing.assert_array_equal(target.positions.value_in_unit(unit.nanometer), now)  # the Context's, not the PDB's
    assert not np.allclose(now, np.array(pdb.positions.value_in_unit(unit.nanometer)))
    verlet = app.Simulation(pdb.topology, obc2_system(pdb.topology), mm.VerletIntegrator(0.001), REFERENCE)
    verlet.context.setPositions(pdb.positions)
    assert MolecularSystem.from_simulation(verlet).temperature is None  # no thermostat: nothing invented


def test_bad_target_input_names_the_file(files, tmp_path):
    with pytest.raises(TargetInputError, match="43 particles, the topology 19 atoms"):
        MolecularSystem.from_xml(files["ala4-zwitterion"], pdb_path("ace-gly-nme"))
    with pytest.raises(TargetInputError, match="'nothing.xml' does not exist"):
        MolecularSystem.from_xml("nothing.xml", pdb_path("ace-gly-nme"))
    integrator_xml = tmp_path / "integrator.xml"
    integrator_xml.write_text(mm.XmlSerializer.serialize(mm.VerletIntegrator(0.001)))
    with pytest.raises(TargetInputError, match="not a System"):
        MolecularSystem.from_xml(integrator_xml, pdb_path("ace-gly-nme"))
    with pytest.raises(TargetInputError, match="could not be read"):
        MolecularSystem.from_xml(pdb_path("ace-gly-nme"), pdb_path("ace-gly-nme"))
    with pytest.raises(TargetInputError, match="AMBER coordinate file .* could not be read"):
        MolecularSystem.from_amber(files["prmtop"], pdb_path("ace-ala3-nme"))


# ---- the derived surrogate ------------------------------------------------------------------------------------


def test_derived_surrogate_is_the_target_without_implicit_solvent_and_screened():
    """Energy of the derived surrogate = the target's bonded + Lennard-Jones terms + Coulomb / 4, no GB term."""
    pdb = app.PDBFile(pdb_path("ala4-zwitterion"))
    target = obc2_system(pdb.topology)
    surrogate, description = derived_surrogate_system(target, pdb.topology)
    assert "CustomGBForce" in description and not any(isinstance(f, mm.CustomGBForce) for f in surrogate.getForces())
    vacuum = app.ForceField("amber14-all.xml").createSystem(pdb.topology, nonbondedMethod=app.NoCutoff,
                                                             constraints=app.HBonds)
    for force in vacuum.getForces():  # the expected value, built independently: scale the charges by hand
        if isinstance(force, mm.NonbondedForce):
            for i in range(force.getNumParticles()):
                charge, sigma, epsilon = force.getParticleParameters(i)
                force.setParticleParameters(i, charge / SCREENING_DIELECTRIC**0.5, sigma, epsilon)
            for k in range(force.getNumExceptions()):
                i, j, product, sigma, epsilon = force.getExceptionParameters(k)
                force.setExceptionParameters(k, i, j, product / SCREENING_DIELECTRIC, sigma, epsilon)
    energy, forces = energy_and_forces(surrogate, pdb.positions)
    expected_energy, expected_forces = energy_and_forces(vacuum, pdb.positions)
    assert energy == pytest.approx(expected_energy, abs=1e-6)  # same terms, same order: round-off only
    np.testing.assert_allclose(forces, expected_forces, atol=1e-6)
    assert surrogate.getNumConstraints() == target.getNumConstraints()


def test_derived_surrogate_of_an_ml_target_is_amber14_for_its_topology():
    pdb = app.PDBFile(pdb_path("ace-gly-nme"))
    target = mm.System()
    for atom in pdb.topology.atoms():
        target.addParticle(atom.element.mass * 1.5 if atom.element.symbol == "H" else atom.element.mass)
    target.addConstraint(0, 1, 0.109)
    target.addForce(ani1x_force(pdb.topology))
    surrogate, description = derived_surrogate_system(target, pdb.topology)
    assert "amber14" in description and "TorchForce" in description
    amber = app.ForceField("amber14-all.xml").createSystem(pdb.topology, nonbondedMethod=app.NoCutoff)
    assert energy_and_forces(surrogate, pdb.positions)[0] == pytest.approx(
        energy_and_forces(amber, pdb.positions)[0], abs=1e-6)
    # masses and constraints are the target's (hydrogen masses changed, one odd constraint), not amber14's
    assert surrogate.getParticleMass(1) == target.getParticleMass(1) and surrogate.getNumConstraints() == 1


def test_no_surrogate_can_be_derived_says_what_to_pass():
    pdb = app.PDBFile(pdb_path("ace-gly-nme"))
    radical = app.Modeller(pdb.topology, pdb.positions)  # one hydrogen less: no amber14 template fits
    radical.delete([next(atom for atom in radical.topology.atoms() if atom.element.symbol == "H")])
    target = mm.System()
    for atom in radical.topology.atoms():
        target.addParticle(atom.element.mass)
    target.addForce(ani1x_force(radical.topology))
    with pytest.raises(ValueError, match="cannot parameterise its topology.*pass surrogate="):
        derived_surrogate_system(target, radical.topology)
    with pytest.raises(ValueError, match="no topology.*pass surrogate="):
        derived_surrogate_system(target)


# ---- the Python API on a Simulation the user built -------------------------------------------------------------


def user_simulation(name, seed=1):
    """What a user writes: amber14 + OBC2 from a PDB, LangevinMiddleIntegrator, minimised, thermalised."""
    pdb = app.PDBFile(pdb_path(name))
    integrator = mm.LangevinMiddleIntegrator(300 * unit.kelvin, 1 / unit.picosecond, 2 * unit.femtosecond)
    integrator.setRandomNumberSeed(seed)
    simulation = app.Simulation(pdb.topology, obc2_system(pdb.topology), integrator, REFERENCE)
    simulation.context.setPositions(pdb.positions)
    simulation.minimizeEnergy(maxIterations=100)
    simulation.context.setVelocitiesToTemperature(300 * unit.kelvin, seed)
    return simulation


@pytest.mark.parametrize("name", ["ace-ala3-nme", "ace-gly-nme", "ala4-zwitterion"])
def test_accelerator_on_a_users_simulation_with_nothing_else_passed(name):
    """``ForecastAccelerator(simulation, "surrogate", acceptance="metropolis")`` runs and accepts.

    Measured (0.1 ps jumps, 48 each): 17/48 (ACE-(ALA)3-NME), 11/48 (zwitterion); 15 jumps accepting none has
    probability < 0.01 at those rates.
    """
    simulation = user_simulation(name)
    accelerator = ForecastAccelerator(simulation, "surrogate", acceptance="metropolis", seed=1, progress=False)
    assert accelerator.forecaster.metadata.extra["surrogate"].startswith("derived: the target without CustomGBForce")
    accelerator.step(30 * 50)  # 30 strides of the default 0.1 ps, a fifth of them or so integrated between jumps
    stats = accelerator.stats.as_dict()
    assert stats["jumps_attempted"] >= 15 and stats["jumps_accepted"] >= 1, stats
    state = simulation.context.getState(getPositions=True, getEnergy=True)
    assert np.isfinite(state.getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole))


def test_checkpoint_of_a_users_target_keys_on_its_system_not_a_name(files, tmp_path):
    """A checkpoint of a run on System XML + PDB loads into a simulation rebuilt from the same files, and is refused
    for another System of the same atoms (vacuum instead of OBC2)."""
    from openmm_forecast.errors import CheckpointError

    def accelerator_for(system_xml):
        target = MolecularSystem.from_xml(system_xml, pdb_path("ace-gly-nme"))
        simulation = target.create_simulation(platform="Reference", seed=4, minimize=False)
        return ForecastAccelerator(simulation, "surrogate", acceptance="metropolis", seed=4, progress=False)

    first = accelerator_for(files["ace-gly-nme"])
    first.step(200)
    path = tmp_path / "run.chk"
    first.save_checkpoint(path)
    again = accelerator_for(files["ace-gly-nme"])
    again.load_checkpoint(path)
    assert again.simulation.currentStep == 200
    np.testing.assert_array_equal(
        again.simulation.context.getState(getPositions=True).getPositions(asNumpy=True)._value,
        first.simulation.context.getState(getPositions=True).getPositions(asNumpy=True)._value)
    pdb = app.PDBFile(pdb_path("ace-gly-nme"))
    vacuum = tmp_path / "vacuum.xml"
    vacuum.write_text(mm.XmlSerializer.serialize(app.ForceField("amber14-all.xml").createSystem(
        pdb.topology, nonbondedMethod=app.NoCutoff, constraints=app.HBonds)))
    with pytest.raises(CheckpointError, match="different System"):
        accelerator_for(vacuum).load_checkpoint(path)


def test_accelerator_on_a_torchforce_target_derives_amber14(one_torch_thread):
    """ANI-1x on the glycine dipeptide, nothing but the Simulation given: amber14 proposals, judged by ANI-1x.

    13 s with one torch thread under load (11 minutes with torch's default threads on the shared 2 cores).
    amber14 proposals for ANI-1x were accepted 0/16 times at 20 fs (fit a surrogate for an ML target), so what is
    checked is the derivation and a finite state after the jumps, not acceptance.
    """
    pdb = app.PDBFile(pdb_path("ace-gly-nme"))
    system = app.ForceField("amber14-all.xml").createSystem(pdb.topology, constraints=app.HBonds)
    while system.getNumForces():
        system.removeForce(0)
    system.addForce(ani1x_force(pdb.topology))
    integrator = mm.LangevinMiddleIntegrator(300 * unit.kelvin, 1 / unit.picosecond, 1 * unit.femtosecond)
    simulation = app.Simulation(pdb.topology, system, integrator, mm.Platform.getPlatformByName("CPU"),
                                {"Threads": "1"})
    simulation.context.setPositions(pdb.positions)
    simulation.minimizeEnergy(maxIterations=50)
    simulation.context.setVelocitiesToTemperature(300 * unit.kelvin, 3)
    accelerator = ForecastAccelerator(simulation, "surrogate", acceptance="metropolis", seed=3, progress=False,
                                      forecaster_options={"stride_ps": 0.02})
    assert "amber14" in accelerator.forecaster.metadata.extra["surrogate"]
    accelerator.step(10 * 20)
    stats = accelerator.stats.as_dict()
    assert stats["jumps_attempted"] >= 5, stats
    energy = simulation.context.getState(getEnergy=True).getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole)
    assert np.isfinite(energy)


# ---- the command line -----------------------------------------------------------------------------------------


def cli(argv, capsys):
    code = main(argv)
    captured = capsys.readouterr()
    return code, captured.out + captured.err


def test_cli_refuses_bad_target_input_before_any_work(files, tmp_path, capsys):
    out = str(tmp_path / "out")
    base = ["simulate", "--time", "1", "--out", out]
    cases = [
        (["--system", files["ace-gly-nme"]], "--system needs --pdb"),
        (["--prmtop", files["prmtop"]], "--prmtop needs --inpcrd"),
        (["--setup", "amber14-obc2", "--system", files["ace-gly-nme"], "--pdb", pdb_path("ace-gly-nme")],
         "--setup and --system"),
        (["--system", files["ala4-zwitterion"], "--pdb", pdb_path("ace-gly-nme")], "43 particles, the topology 19"),
        (["--system", str(tmp_path / "missing.xml"), "--pdb", pdb_path("ace-gly-nme")], "missing.xml' does not exist"),
        (["--system", files["ace-gly-nme"], "--pdb", pdb_path("ace-gly-nme"), "--constraints", "none"],
         "--constraints does not apply to --system"),
        (["--implicit-solvent", "OBC2"], "--implicit-solvent applies to --prmtop only"),
    ]
    for flags, message in cases:
        code, output = cli(base + flags, capsys)
        assert code == 2 and message in output, (flags, output)
    assert not os.path.exists(out)


def test_cli_run_and_resume_on_system_xml_and_pdb(files, tmp_path, capsys):
    """run from --system/--pdb; its resume compares the files by content; another System is refused."""
    out = str(tmp_path / "run")
    argv = ["run", "--system", files["ace-gly-nme"], "--pdb", pdb_path("ace-gly-nme"), "--model", "surrogate",
            "--stride", "100", "--max-frames", "1", "--metropolis", "--report-interval", "0.5",
            "--checkpoint-interval", "1", "--out", out, "--no-progress", "--platform", "Reference"]
    code, output = cli(argv + ["--time", "1"], capsys)
    assert code == 0, output
    with open(os.path.join(out, "run.json")) as handle:
        settings = json.load(handle)
    assert settings["setup"] is None and settings["system"] == files["ace-gly-nme"]
    assert settings["surrogate"] == "derived"
    assert set(settings["file_sha256"]) == {"system", "pdb"}
    copy = tmp_path / "copy.xml"  # the same System by another path: the same run
    copy.write_text(open(files["ace-gly-nme"]).read())
    resumed = [str(copy) if item == files["ace-gly-nme"] else item for item in argv]
    code, output = cli(resumed + ["--time", "2", "--resume"], capsys)
    assert code == 0, output
    with open(os.path.join(out, "stats.json")) as handle:
        assert json.load(handle)["step"] == 1000
    other = tmp_path / "other.xml"  # same atoms, other physics: refused, naming the flag
    pdb = app.PDBFile(pdb_path("ace-gly-nme"))
    other.write_text(mm.XmlSerializer.serialize(app.ForceField("amber14-all.xml").createSystem(
        pdb.topology, nonbondedMethod=app.NoCutoff, constraints=app.HBonds)))
    changed = [str(other) if item == files["ace-gly-nme"] else item for item in argv]
    code, output = cli(changed + ["--time", "3", "--resume"], capsys)
    assert code == 1 and "--system" in output and "compared by content" in output, output


def test_cli_simulate_from_prmtop_and_inpcrd(files, tmp_path, capsys):
    out = str(tmp_path / "md")
    code, output = cli(["simulate", "--prmtop", files["prmtop"], "--inpcrd", files["inpcrd"], "--implicit-solvent",
                        "OBC2", "--time", "0.2", "--report-interval", "0.1", "--equilibration", "0", "--out", out,
                        "--platform", "Reference"],
                       capsys)
    assert code == 0, output
    assert app.PDBFile(os.path.join(out, "topology.pdb")).topology.getNumAtoms() == 42
    with open(os.path.join(out, "summary.json")) as handle:
        summary = json.load(handle)
    assert summary["setup"] is None and summary["source"].endswith("ace-ala3-nme.inpcrd")
    assert "GBSAOBCForce" in summary["potential"]


@pytest.mark.slow
def test_cli_fit_surrogate_then_benchmark_on_system_xml_and_pdb(files, tmp_path, capsys):
    """The issue's flow on the glycine dipeptide from --system/--pdb: fit a surrogate, then plain MD, HMR and the
    fitted surrogate with metropolis at 500 fs in one benchmark, every arm on the user's System.

    Slow: 52 s on the loaded 2-core machine (sampling the target for the fit, and each arm's platform timing)."""
    target = ["--system", files["ace-gly-nme"], "--pdb", pdb_path("ace-gly-nme")]
    fit = str(tmp_path / "fit")
    code, output = cli(["fit-surrogate", *target, "--frames", "60", "--chains", "2", "--equilibration", "0",
                        "--frame-interval", "0.02", "--platform", "CPU", "--predict-frames", "10", "--out", fit,
                        "--no-progress"], capsys)
    assert code == 0, output
    with open(os.path.join(fit, "report.json")) as handle:
        report = json.load(handle)
    read = MolecularSystem.from_xml(files["ace-gly-nme"], pdb_path("ace-gly-nme"))
    assert report["target"]["fingerprint"] == read.fingerprint() and report["target"]["setup"] is None
    surrogate = mm.XmlSerializer.deserialize(open(os.path.join(fit, "surrogate.xml")).read())
    assert surrogate.getNumParticles() == 19 and not any(isinstance(f, mm.CustomGBForce) for f in surrogate.getForces())
    out = str(tmp_path / "bench")
    code, output = cli(["benchmark", *target, "--arm", "plain", "--arm", "hmr", "--arm",
                        f"fitted={fit}/surrogate.xml:metropolis@500", "--max-frames", "1", "--no-reference",
                        "--wall-seconds", "2", "--slice-seconds", "0", "--walkers", "1", "--pin", "no", "--out", out,
                        "--no-progress"], capsys)
    assert code == 0, output
    with open(os.path.join(out, "report.json")) as handle:
        report = json.load(handle)
    arms = report["arms"]
    assert set(arms) == {"plain", "hmr", "fitted"} and report["setup"] is None and "CustomGBForce" in report["potential"]
    assert arms["hmr"]["hydrogen_mass_amu"] == 1.5 and arms["hmr"]["timestep_fs"] == 4.0
    assert all(arm["platform"] for arm in arms.values()) and arms["fitted"]["acceptance"] == "metropolis"
    assert arms["fitted"]["forecast_calls"] >= 1 and 0.0 <= arms["fitted"]["acceptance_rate"] <= 1.0
