"""Barrier-lowered surrogates: proposals that cross the slow torsions' barriers, judged exactly by the target.

Velocity Verlet on ANY fixed potential, followed by the momentum flip, is volume-preserving and an
involution, so the Metropolis test on the target's ``H`` keeps the chain exact whatever the surrogate is
(:class:`~openmm_forecast.cycles.GHMCCycle`, or the ``metropolis`` rule).  Over a jump the surrogate keeps
its own ``H``, so the target's ``dH`` is about ``D(end) - D(start)`` with ``D = U_target - U_surrogate``: only
the endpoints matter.  A surrogate ``U_fit + B(phi, psi)`` whose bias ``B`` lowers the barriers along the
slow torsions crosses them in its own dynamics; with ``B = -strength * F``, ``F`` the surrogate's own free
energy surface along those torsions, shifted to zero at its minimum, the jumps visit every basin while the
acceptance pays ``exp(-strength * dF / kT)`` for moving between basins of different free energy (at
``strength`` 1 a walk on the flattened surface, accepted by the target's population ratio).

``F`` is cheap to learn: the surrogate costs microseconds per step, so well-tempered metadynamics ON THE
SURROGATE (OpenMM's ``app.Metadynamics``) over a few nanoseconds takes a minute or two
(:func:`surrogate_free_energy`); :func:`lower_barriers` writes ``B`` into a copy of the surrogate System as a
``CustomCVForce`` holding a periodic ``Continuous2DFunction`` table, so it stays an ordinary OpenMM System
(serialise it to XML and give it wherever a surrogate is taken).

Units: kJ/mol, radians inside, nm, ps.
"""

import dataclasses
import time

import numpy as np
from openmm import unit

from ._runtime import openmm as mm

DEFAULT_GRID = 72
"""Grid points per torsion of the free energy surface and of the bias table (5 degrees)."""


@dataclasses.dataclass
class FreeEnergySurface:
    """A free energy surface along one pair of torsions.

    Attributes
    ----------
    torsions : tuple of tuple of int
        The two torsions' atom quadruples (first: x of the grid, e.g. phi; second: y, e.g. psi).
    free_energy_kJ : numpy.ndarray, shape (n_y, n_x)
        kJ/mol, zero at its minimum, on the periodic grid ``-pi + 2 pi i / (n - 1)`` (OpenMM Metadynamics'
        layout: ``free_energy_kJ[i_y, i_x]``, first and last points the same angle).
    simulated_ns : float
        Length of the metadynamics run that estimated it.
    """

    torsions: tuple
    free_energy_kJ: np.ndarray
    simulated_ns: float

    def __call__(self, angles_rad):
        """Free energy (kJ/mol) at torsion pairs ``angles_rad`` (n, 2), nearest grid point."""
        n_y, n_x = self.free_energy_kJ.shape
        wrapped = (np.asarray(angles_rad, dtype=float) + np.pi) % (2 * np.pi)
        i_x = np.rint(wrapped[:, 0] / (2 * np.pi) * (n_x - 1)).astype(int) % (n_x - 1)
        i_y = np.rint(wrapped[:, 1] / (2 * np.pi) * (n_y - 1)).astype(int) % (n_y - 1)
        return self.free_energy_kJ[i_y, i_x]


def torsion_force(atoms):
    """A ``CustomTorsionForce`` whose energy is the torsion angle (radians) of one atom quadruple: a collective
    variable for ``CustomCVForce`` and ``Metadynamics``."""
    force = mm.CustomTorsionForce("theta")
    force.addTorsion(*[int(a) for a in atoms])
    return force


def tabulated_torsion_bias(table_kJ, torsions, force_group=None):
    """A ``CustomCVForce`` adding a fixed energy table over two torsions (periodic, bicubic).

    Parameters
    ----------
    table_kJ : numpy.ndarray, shape (n_y, n_x)
        kJ/mol on the grid of :class:`FreeEnergySurface` (Metadynamics' layout).
    torsions : pair of atom quadruples
    force_group : int, optional

    Returns
    -------
    openmm.CustomCVForce
    """
    table = np.asarray(table_kJ, dtype=float)
    if table.ndim != 2 or min(table.shape) < 4:
        raise ValueError(f"a bias table needs shape (n_y, n_x) with n >= 4, got {table.shape}")
    force = mm.CustomCVForce("bias(a, b)")
    force.addCollectiveVariable("a", torsion_force(torsions[0]))
    force.addCollectiveVariable("b", torsion_force(torsions[1]))
    n_y, n_x = table.shape
    force.addTabulatedFunction("bias", mm.Continuous2DFunction(n_x, n_y, table.flatten(), -np.pi, np.pi, -np.pi,
                                                               np.pi, True))
    if force_group is not None:
        force.setForceGroup(int(force_group))
    return force


def stereocentres(topology):
    """Carbon atoms bonded to four atoms, at most one of them a hydrogen (alanine's CA, for instance).

    Parameters
    ----------
    topology : openmm.app.Topology

    Returns
    -------
    numpy.ndarray, shape (n_centres, 4), int
        Each row: the centre and three of its neighbours (by index), whose signed volume
        :func:`chirality_signs` follows.  Empty when the Topology has no bonds or no such carbon.
    """
    neighbours = {atom.index: [] for atom in topology.atoms()}
    for a, b in topology.bonds():
        neighbours[a.index].append(b)
        neighbours[b.index].append(a)
    rows = []
    for atom in topology.atoms():
        bonded = sorted(neighbours[atom.index], key=lambda other: other.index)
        if (atom.element is not None and atom.element.symbol == "C" and len(bonded) == 4
                and sum(other.element is not None and other.element.symbol == "H" for other in bonded) <= 1):
            rows.append([atom.index] + [other.index for other in bonded[:3]])
    return np.array(rows, dtype=int).reshape(-1, 4)


def chirality_signs(positions_nm, centres):
    """Sign (+1 or -1) of the signed volume of each :func:`stereocentres` row in ``positions_nm`` (n_atoms, 3)."""
    x = np.asarray(positions_nm, dtype=float)
    c = x[centres[:, 0]]
    volume = np.einsum("ij,ij->i", x[centres[:, 1]] - c, np.cross(x[centres[:, 2]] - c, x[centres[:, 3]] - c))
    return np.sign(volume)


def surrogate_free_energy(surrogate_system, positions, torsions, temperature=300.0 * unit.kelvin,
                          simulated_time=5.0 * unit.nanosecond, timestep=2.0 * unit.femtosecond, bias_factor=6.0,
                          height=1.0 * unit.kilojoule_per_mole, width_rad=0.35, grid=DEFAULT_GRID, seed=1,
                          platform="Reference", progress=None, topology=None):
    """The surrogate's own free energy surface along two torsions, by well-tempered metadynamics on it.

    Parameters
    ----------
    surrogate_system : openmm.System
        Not modified (a copy gets the bias).
    positions : openmm.unit.Quantity or numpy.ndarray, shape (n_atoms, 3)
        Starting positions (nm when plain numbers).
    torsions : pair of atom quadruples
    temperature, simulated_time, timestep : openmm.unit.Quantity
    bias_factor : float
        Well-tempered bias factor (6: crosses 30 kJ/mol barriers at 300 K within nanoseconds).
    height : openmm.unit.Quantity
        Initial Gaussian height, deposited every picosecond.
    width_rad : float
        Gaussian width, radians.
    grid : int
        Grid points per torsion.
    seed : int
    platform : str
        Platform of the run (the surrogate is a small vacuum System: Reference by default).
    progress : bool, optional
        A tqdm bar (default: only on a terminal).
    topology : openmm.app.Topology, optional
        The molecule's bonds: given, its :func:`stereocentres` are checked every 10 ps of the run.

    Returns
    -------
    FreeEnergySurface

    Raises
    ------
    BlowUpError
        A stereocentre of ``topology`` was inverted (a soft surrogate pushed by the growing bias can turn L-alanine
        into D-alanine; the surface would then be the mirror molecule's, and the lowered surrogate would propose
        jumps the target never accepts).  The message names the atom and the time.
    """
    from .errors import BlowUpError

    from openmm import app
    from tqdm.auto import tqdm

    from .platforms import get_platform

    if len(torsions) != 2:
        raise ValueError(f"give exactly two torsions (e.g. phi and psi), got {len(torsions)}")
    system = mm.XmlSerializer.clone(surrogate_system)
    variables = [app.BiasVariable(torsion_force(atoms), -np.pi, np.pi, width_rad, periodic=True, gridWidth=grid)
                 for atoms in torsions]
    dt_ps = timestep.value_in_unit(unit.picosecond)
    steps_per_ps = max(1, int(round(1.0 / dt_ps)))
    meta = app.Metadynamics(system, variables, temperature, bias_factor, height, steps_per_ps)
    integrator = mm.LangevinMiddleIntegrator(temperature, 1.0 / unit.picosecond, timestep)
    integrator.setRandomNumberSeed(int(seed))
    simulation = app.Simulation(app.Topology(), system, integrator, get_platform(platform))
    simulation.context.setPositions(positions)
    simulation.minimizeEnergy()
    simulation.context.setVelocitiesToTemperature(temperature, int(seed))
    total_ps = simulated_time.value_in_unit(unit.picosecond)
    chunk_ps = 10.0
    centres = stereocentres(topology) if topology is not None else np.zeros((0, 4), dtype=int)

    def signs():
        state = simulation.context.getState(getPositions=True)
        return chirality_signs(state.getPositions(asNumpy=True).value_in_unit(unit.nanometer), centres)

    start_signs = signs()
    with tqdm(total=total_ps / 1000.0, unit="ns", desc="surrogate metadynamics", disable=None if progress is None
              else not progress, bar_format="{l_bar}{bar}| {n:.2f}/{total:.2f} ns [{elapsed}<{remaining}]") as bar:
        done = 0.0
        while done < total_ps - 1e-9:
            span = min(chunk_ps, total_ps - done)
            meta.step(simulation, int(round(span * steps_per_ps)))
            done += span
            bar.update(span / 1000.0)
            flipped = np.flatnonzero(signs() != start_signs)
            if flipped.size:
                atoms = list(topology.atoms())
                names = ", ".join(f"{atoms[i].residue.name}{atoms[i].residue.id} {atoms[i].name} (atom {i})"
                                  for i in centres[flipped, 0])
                raise BlowUpError(f"the surrogate's metadynamics inverted the stereocentre {names} within {done:g} ps: "
                                  "its surface would be the mirror molecule's. The surrogate is too soft there: fit "
                                  "one with stiffer angles, or lower the bias (--bias-factor, --height, --ns)",
                                  int(round(done * steps_per_ps)))
    free_energy = meta.getFreeEnergy().value_in_unit(unit.kilojoule_per_mole)
    return FreeEnergySurface(tuple(tuple(int(a) for a in atoms) for atoms in torsions),
                             free_energy - free_energy.min(), total_ps / 1000.0)


def lower_barriers(surrogate_system, surfaces, strength):
    """A copy of ``surrogate_system`` plus the bias ``-strength * F`` along each surface's torsions.

    Parameters
    ----------
    surrogate_system : openmm.System
    surfaces : FreeEnergySurface or list of FreeEnergySurface
        Several: one bias each (every residue's phi/psi of a peptide, for instance), added together.  Each surface
        estimated with the other torsions unbiased is a marginal one: their sum does not flatten the joint surface
        exactly, which costs acceptance, never exactness (the target's Metropolis test judges every jump).
    strength : float
        In [0, 1]: 0 leaves the surrogate as it is, 1 flattens its surface along the torsions.

    Returns
    -------
    openmm.System
        The surrogate with one more force (a ``CustomCVForce``) per surface; still an ordinary, serialisable System.
    """
    if not 0.0 <= float(strength) <= 1.0:
        raise ValueError(f"strength must be in [0, 1], got {strength}")
    system = mm.XmlSerializer.clone(surrogate_system)
    for surface in [surfaces] if isinstance(surfaces, FreeEnergySurface) else surfaces:
        system.addForce(tabulated_torsion_bias(-float(strength) * surface.free_energy_kJ, surface.torsions))
    return system


def save_surface(path, surfaces):
    """Write one :class:`FreeEnergySurface` or a list of them as ``.npz`` (``free_energy_kJ``, ``torsions``,
    ``simulated_ns``; a list stacks them along a first axis)."""
    many = not isinstance(surfaces, FreeEnergySurface)
    listed = list(surfaces) if many else [surfaces]

    def stack(values):
        return np.array(values) if many else np.array(values[0])

    np.savez(path, free_energy_kJ=stack([s.free_energy_kJ for s in listed]),
             torsions=stack([np.array(s.torsions) for s in listed]), simulated_ns=stack([s.simulated_ns for s in listed]),
             written=time.strftime("%Y-%m-%d %H:%M:%S"))


def load_surfaces(path):
    """Every :class:`FreeEnergySurface` of a file written by :func:`save_surface` (a list, one for a single one)."""
    from ._io import load_npz

    data = load_npz(path, ("free_energy_kJ", "torsions", "simulated_ns"),
                    "a free energy surface of save_surface (free_energy_kJ, torsions, simulated_ns)")
    free_energy = np.asarray(data["free_energy_kJ"], dtype=float)
    if free_energy.ndim == 2:
        return [FreeEnergySurface(tuple(tuple(int(a) for a in row) for row in data["torsions"]), free_energy,
                                  float(data["simulated_ns"]))]
    return [FreeEnergySurface(tuple(tuple(int(a) for a in row) for row in torsions), table, float(ns))
            for table, torsions, ns in zip(free_energy, data["torsions"], data["simulated_ns"])]


def load_surface(path):
    """The one :class:`FreeEnergySurface` of a file written by :func:`save_surface` (refuses a file of several:
    :func:`load_surfaces` reads those)."""
    surfaces = load_surfaces(path)
    if len(surfaces) != 1:
        raise ValueError(f"{path} holds {len(surfaces)} surfaces; read them with load_surfaces")
    return surfaces[0]
