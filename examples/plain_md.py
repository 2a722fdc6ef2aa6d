"""Plain OpenMM MD of alanine dipeptide (amber14, vacuum): the baseline of examples/accelerated_md.py.

Run: .venv/bin/python examples/plain_md.py
"""

import sys

import openmm_forecast  # noqa: F401  (imports torch before openmm; harmless for plain OpenMM)
from openmm import LangevinMiddleIntegrator, Platform, app, unit

pdb = app.PDBFile(openmm_forecast.systems.resource_path("alanine-dipeptide.pdb"))
forcefield = app.ForceField("amber14-all.xml")
system = forcefield.createSystem(pdb.topology, nonbondedMethod=app.NoCutoff, constraints=app.HBonds)
integrator = LangevinMiddleIntegrator(300 * unit.kelvin, 1 / unit.picosecond, 2 * unit.femtosecond)
simulation = app.Simulation(pdb.topology, system, integrator, Platform.getPlatformByName("Reference"))
simulation.context.setPositions(pdb.positions)
simulation.minimizeEnergy()
simulation.context.setVelocitiesToTemperature(300 * unit.kelvin, 1)
simulation.reporters.append(app.DCDReporter("plain.dcd", 500))
simulation.reporters.append(app.StateDataReporter(sys.stdout, 5000, step=True, temperature=True, speed=True))

simulation.step(50_000)  # 100 ps
