"""Write the small peptides of tests/data that the project's tests use as molecules it did not ship.

Heavy atoms from ideal geometry (Engh-Huber bond lengths and angles, trans peptide bonds, the phi/psi given
below), hydrogens from ``openmm.app.Modeller.addHydrogens`` at pH 7, then 200 steps of energy minimisation in
amber14-all.xml + implicit/obc2.xml so that MD starts from a relaxed structure.  Run from the repository root:

    .venv/bin/python scripts/make_test_peptides.py

Writes tests/data/ala4-zwitterion.pdb (NALA-ALA-ALA-CALA, 43 atoms), tests/data/ace-ala3-nme.pdb (42 atoms) and
tests/data/ace-gly-nme.pdb (alanine dipeptide with alanine mutated to glycine, 19 atoms).
"""

import os

import numpy as np
import openmm
from openmm import app, unit

BOND = {("C", "N"): 1.329, ("N", "CA"): 1.458, ("CA", "C"): 1.525, ("CH3", "C"): 1.52, ("C", "O"): 1.231,
        ("CA", "CB"): 1.53}
"""Bond lengths, angstrom."""

BETA = (-80.0, 150.0)
"""phi, psi (degrees) of every residue: an extended (beta) backbone, far from clashes."""


def place(a, b, c, length, angle_deg, torsion_deg):
    """Position of d with |cd| = length, angle b-c-d and dihedral a-b-c-d (natural extension of reference frame)."""
    angle, torsion = np.radians(angle_deg), np.radians(torsion_deg)
    bc = (c - b) / np.linalg.norm(c - b)
    normal = np.cross(b - a, bc)
    normal /= np.linalg.norm(normal)
    m = np.array([bc, np.cross(normal, bc), normal]).T
    d = length * np.array([-np.cos(angle), np.sin(angle) * np.cos(torsion), np.sin(angle) * np.sin(torsion)])
    return c + m @ d


def backbone(residues, caps):
    """Heavy atoms [(residue index, residue name, atom name, element, xyz angstrom)] of a peptide."""
    phi, psi = BETA
    atoms = []
    chain = []  # (atom name, xyz) along the backbone
    if caps:
        chain += [("CH3", np.zeros(3)), ("C", np.array([1.52, 0.0, 0.0]))]
        n = place(np.array([0.0, 1.0, 0.0]), chain[0][1], chain[1][1], BOND[("C", "N")], 116.2, 180.0)
    else:
        n = np.zeros(3)
    ca = place(chain[0][1], chain[1][1], n, BOND[("N", "CA")], 121.7, 180.0) if caps else np.array([1.458, 0, 0])
    previous_c = chain[1][1] if caps else place(np.array([0.0, 1.0, 0.0]), ca, n, 1.329, 121.7, 180.0)
    if caps:
        atoms += [(0, "ACE", "CH3", "C", chain[0][1]), (0, "ACE", "C", "C", chain[1][1]),
                  (0, "ACE", "O", "O", place(n, chain[0][1], chain[1][1], BOND[("C", "O")], 120.5, 180.0))]
    offset = 1 if caps else 0
    for index, name in enumerate(residues):
        c = place(previous_c, n, ca, BOND[("CA", "C")], 111.2, phi)
        next_n = place(n, ca, c, BOND[("C", "N")], 116.2, psi)
        residue = index + offset
        atoms += [(residue, name, "N", "N", n), (residue, name, "CA", "C", ca), (residue, name, "C", "C", c),
                  (residue, name, "O", "O", place(n, ca, c, BOND[("C", "O")], 120.5, psi + 180.0))]
        if name != "GLY":
            atoms.append((residue, name, "CB", "C", place(n, c, ca, BOND[("CA", "CB")], 109.5, 122.686)))
        if index == len(residues) - 1 and not caps:
            atoms.append((residue, name, "OXT", "O", next_n - (next_n - c) * (1 - 1.25 / 1.329)))
        next_ca = place(ca, c, next_n, BOND[("N", "CA")], 121.7, 180.0)
        previous_c, n, ca = c, next_n, next_ca
    if caps:
        residue = len(residues) + 1
        atoms += [(residue, "NME", "N", "N", n), (residue, "NME", "C", "C", ca)]
    return atoms


def write(path, residues, caps):
    topology = app.Topology()
    chain = topology.addChain()
    positions, current, by_residue = [], None, {}
    for residue_index, residue_name, name, element, xyz in backbone(residues, caps):
        if residue_index != current:
            current = residue_index
            by_residue[residue_index] = topology.addResidue(residue_name, chain)
        topology.addAtom(name, app.Element.getBySymbol(element), by_residue[residue_index])
        positions.append(openmm.Vec3(*xyz) * 0.1)
    topology.createStandardBonds()
    forcefield = app.ForceField("amber14-all.xml", "implicit/obc2.xml")
    modeller = app.Modeller(topology, positions * unit.nanometer)
    modeller.addHydrogens(forcefield, pH=7.0)
    system = forcefield.createSystem(modeller.topology, nonbondedMethod=app.NoCutoff, constraints=app.HBonds)
    context = openmm.Context(system, openmm.VerletIntegrator(0.001), openmm.Platform.getPlatformByName("Reference"))
    context.setPositions(modeller.positions)
    openmm.LocalEnergyMinimizer.minimize(context, maxIterations=200)
    minimised = context.getState(getPositions=True).getPositions()
    with open(path, "w") as handle:
        app.PDBFile.writeFile(modeller.topology, minimised, handle)
    print(f"{path}: {modeller.topology.getNumAtoms()} atoms")


if __name__ == "__main__":
    os.makedirs("tests/data", exist_ok=True)
    write("tests/data/ala4-zwitterion.pdb", ["ALA"] * 4, caps=False)
    write("tests/data/ace-ala3-nme.pdb", ["ALA"] * 3, caps=True)
    write("tests/data/ace-gly-nme.pdb", ["GLY"], caps=True)
