"""Velocity Verlet of surrogates from given states: how often a 500 fs jump breaks a bond.

    .venv/bin/python scripts/check_stuck_states.py docs/results/2026-12-07-ani1x-torsion-ridge/stuck_states.npz \
        openmm_forecast/resources/surrogates/fit-ani1x.xml [more surrogate XML files]

The states file holds ``positions`` (k, N, 3) nm and ``names`` (k,) of ``ani1x`` alanine dipeptide; the shipped
one has two states where a ghmc walker of run C sat for 175 ps (frames 560 and 700 of benchmark seed 7 with the
fit-ani1x of 05e072e) and one it left at once (frame 300).  From each state, ``--seeds`` jumps of 250 velocity
Verlet steps of 2 fs (the jumps' integrator, Reference platform) with fresh Maxwell-Boltzmann velocities at 300 K:
a jump breaks when a bond of the molecule changes by more than 0.05 nm or the integration fails.  Prints, per
surrogate, the sum of its torsion amplitudes |k| (kJ/mol) and the broken jumps per state.
"""

import argparse

import numpy as np
from openmm import unit

from openmm_forecast import build_system
from openmm_forecast._runtime import openmm as mm
from openmm_forecast.integrators import velocity_verlet_integrator

BOND_CHANGE_NM = 0.05


def largest_bond_change(system, x, bonds, seed, steps=250):
    """Largest change (nm) of a bond length over ``steps`` 2 fs Verlet steps from ``x``; inf if it fails."""
    integrator = velocity_verlet_integrator(2 * unit.femtosecond, update_context_state=False)
    context = mm.Context(system, integrator, mm.Platform.getPlatformByName("Reference"))
    context.setPositions(x)
    context.setVelocitiesToTemperature(300 * unit.kelvin, seed)
    context.applyVelocityConstraints(1e-6)
    start = np.linalg.norm(x[bonds[:, 0]] - x[bonds[:, 1]], axis=1)
    worst = 0.0
    for _ in range(steps // 10):
        try:
            integrator.step(10)
        except mm.OpenMMException:
            return np.inf
        p = context.getState(getPositions=True).getPositions(asNumpy=True).value_in_unit(unit.nanometer)
        if not np.all(np.isfinite(p)):
            return np.inf
        worst = max(worst, float(np.abs(np.linalg.norm(p[bonds[:, 0]] - p[bonds[:, 1]], axis=1) - start).max()))
    return worst


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("states", help=".npz with positions (k, N, 3) nm and names (k,)")
    parser.add_argument("surrogates", nargs="+", help="surrogate System XML files")
    parser.add_argument("--seeds", type=int, default=10)
    args = parser.parse_args()
    states = np.load(args.states)
    bonds = np.array([(a.index, b.index) for a, b in build_system("ani1x").topology.bonds()])
    for path in args.surrogates:
        system = mm.XmlSerializer.deserialize(open(path).read())
        amplitudes = [abs(force.getTorsionParameters(t)[6].value_in_unit(unit.kilojoule_per_mole))
                      for force in system.getForces() if isinstance(force, mm.PeriodicTorsionForce)
                      for t in range(force.getNumTorsions())]
        broken = {str(name): sum(largest_bond_change(system, x, bonds, seed) > BOND_CHANGE_NM
                                 for seed in range(1, args.seeds + 1))
                  for name, x in zip(states["names"], states["positions"])}
        print(f"{path}: {len(amplitudes)} torsion terms, sum |k| {sum(amplitudes):.0f} kJ/mol, largest "
              f"{max(amplitudes):.0f}; jumps that break a bond, of {args.seeds}: {broken}", flush=True)


if __name__ == "__main__":
    main()
