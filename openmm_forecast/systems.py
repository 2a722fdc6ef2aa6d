"""OpenMM setups of alanine dipeptide (ACE-ALA-NME, 22 atoms) under named potentials.

Setups
------
``amber14-vacuum``
    amber14-all.xml, no cutoff, no periodic box.
``amber14-obc2``
    amber14-all.xml with the OBC2 implicit-solvent model (implicit/obc2.xml), no cutoff.
``amber14-tip3p``
    amber14-all.xml with TIP3P water (amber14/tip3p.xml), 1.2 nm padding (a 2.4 nm cube, 1291 atoms), PME
    with a 1.0 nm cutoff, periodic.  The molecule is atoms 0-21; waters follow.  (1.0 nm padding gave a
    2.0 nm box, exactly twice the cutoff, on which OpenMM refuses any barostat: the density could not be
    equilibrated at constant pressure.)
``ml``
    An openmm-torch ``TorchForce`` from a TorchScript potential file (positions in nm, shape (n_atoms, 3),
    to energy in kJ/mol).  Masses and constraints come from the amber14 topology; every other force is
    removed.  ``potential_file="ani2x"`` uses torchani's ANI-2x when its weights exist locally (never
    downloaded).
``ani1x``
    The published ANI-1x (8-model ensemble, H/C/N/O, wB97X/6-31G(d)) as an openmm-torch ``TorchForce``
    (:func:`ani1x_force`, which serves any H/C/N/O molecule), from weights shipped with the package (converted
    from torchani 2.2.4's files, docs/ani1x.md), vacuum.  Masses and constraints come from the amber14 topology;
    every other force is removed.
``gfn2-xtb``
    GFN2-xTB from tblite (optional: ``pip install 'openmm-forecast[xtb]'``) through an ``openmm.PythonForce``
    (:class:`~openmm_forecast.xtb.GFN2xTBComputation`), vacuum.  Masses and constraints come from the amber14
    topology; every other force is removed.  The starting positions are the amber14-vacuum energy minimum
    (xTB's SCF can fail at the raw PDB geometry); :meth:`MolecularSystem.create_simulation` then lowers the
    xTB energy with :func:`~openmm_forecast.xtb.relax` (OpenMM's minimiser steps into SCF failures).  An SCF that does not converge raises :class:`~openmm_forecast.errors.PotentialEvaluationError`.

Every builder returns a :class:`MolecularSystem`; its integrator and Simulation helpers use
``LangevinMiddleIntegrator`` with the setup's temperature, friction and time step.

Hydrogen mass repartitioning (``build_system(..., hydrogen_mass=1.5 * unit.amu, timestep=4 * unit.femtosecond)``)
applies to every setup the same way (:func:`repartition_hydrogen_mass`, OpenMM's own rule): each hydrogen bonded
to a heavy atom gets ``hydrogen_mass`` and the heavy atom loses what it gained, so every bonded pair, and the
molecule, keeps its total mass.  Masses do not enter the Boltzmann distribution of positions: configurational
averages (phi/psi, the references) are unchanged; only the dynamics and the stable time step change.
"""

import dataclasses
import hashlib
import io
import logging
import os
import re
import zipfile

import numpy as np
from openmm import app, unit

from ._runtime import openmm as mm
from .errors import (
    ModelFileError,
    ModelMismatchError,
    PotentialEvaluationError,
    TargetInputError,
    UnknownSetupError,
    is_potential_evaluation_failure,
)
from .shipped import resource_path
from .units import positive

SETUPS = ("amber14-vacuum", "amber14-obc2", "amber14-tip3p", "ml", "ani1x", "gfn2-xtb")
"""Names accepted by :func:`build_system`."""

ALANINE_DIPEPTIDE_PDB = "alanine-dipeptide.pdb"
PHI_ATOMS = (4, 6, 8, 14)
"""0-based atom indices of the phi dihedral (C-N-CA-C) of alanine dipeptide."""
PSI_ATOMS = (6, 8, 14, 16)
"""0-based atom indices of the psi dihedral (N-CA-C-N) of alanine dipeptide."""

TIP3P_PADDING = 1.2 * unit.nanometer
"""Water padding of ``amber14-tip3p``: its box must exceed twice the 1.0 nm cutoff, so that a barostat may shrink it."""

_CONSTRAINTS = {None: None, "none": None, "hbonds": app.HBonds, "allbonds": app.AllBonds, "hangles": app.HAngles}


def _constraints(value):
    """Map a constraints argument (None, 'HBonds', app.HBonds, ...) to OpenMM's constant."""
    if value in (app.HBonds, app.AllBonds, app.HAngles):
        return value
    key = value.lower() if isinstance(value, str) else value
    if key not in _CONSTRAINTS:
        raise ValueError(
            f"constraints must be one of None, 'HBonds', 'AllBonds', 'HAngles' (or app.HBonds, ...), got {value!r}"
        )
    return _CONSTRAINTS[key]


def constraints_name(value):
    """Canonical name ('HBonds', 'AllBonds', 'HAngles' or 'none') of a constraints argument."""
    names = {app.HBonds: "HBonds", app.AllBonds: "AllBonds", app.HAngles: "HAngles", None: "none"}
    return names[_constraints(value)]


def force_class_name(force):
    """Class name of an OpenMM force ('NonbondedForce', 'CustomGBForce', ...); a plugin's force that Python sees
    as a bare ``openmm.Force`` (openmm-torch's ``TorchForce``) by the name it gives itself."""
    return force.getName() if type(force) is mm.Force else type(force).__name__


def _constraint_set(system, topology):
    """Name of the constraint set of a System: 'none', 'HBonds' or 'AllBonds' when its constrained pairs are
    exactly those bonds of ``topology``, else ``'<n> constraints'``."""
    pairs = {frozenset(system.getConstraintParameters(k)[:2]) for k in range(system.getNumConstraints())}
    if not pairs:
        return "none"
    bonds = {frozenset((a.index, b.index)) for a, b in topology.bonds()}
    hydrogen = app.element.hydrogen
    h_bonds = {frozenset((a.index, b.index)) for a, b in topology.bonds() if hydrogen in (a.element, b.element)}
    water = {atom.index for residue in topology.residues() if residue.name in _WATER for atom in residue.atoms()}
    solute_pairs = {pair for pair in pairs if not pair <= water}  # rigid water comes with any set
    for name, candidates in (("HBonds", h_bonds), ("AllBonds", bonds)):
        if solute_pairs == {pair for pair in candidates if not pair <= water}:
            return name
    return f"{len(pairs)} constraints"


_WATER = frozenset({"HOH", "WAT", "SOL", "TIP3", "TIP4", "TIP5", "SPC"})
"""Residue names of water, which follows the molecule in a solvated target."""


def _solute_atoms(topology):
    """Atoms before the first water residue (all of them in vacuum or implicit solvent)."""
    for residue in topology.residues():
        if residue.name in _WATER:
            return next(residue.atoms()).index
    return topology.getNumAtoms()


def _read_file(path, reader, what):
    """``reader(path)`` (an ``openmm.app`` file class); a missing or unreadable file is a TargetInputError."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise TargetInputError(f"{what} file {path!r} does not exist")
    try:
        return reader(path)
    except Exception as error:  # openmm.app raises anything from ValueError to IndexError on a bad file
        raise TargetInputError(f"{what} file {path!r} could not be read: {str(error).strip() or type(error).__name__}"
                               ) from error


def _read_structure(path):
    """Topology and positions of a PDB or PDBx/mmCIF file (``openmm.app.PDBFile`` or ``PDBxFile``)."""
    is_pdbx = os.fspath(path).lower().endswith((".cif", ".pdbx", ".mmcif"))
    structure = _read_file(path, app.PDBxFile if is_pdbx else app.PDBFile, "structure")
    if structure.topology.getNumAtoms() == 0:
        raise TargetInputError(f"structure file {os.fspath(path)!r} holds no atoms")
    return structure


def _read_system_xml(path):
    """The OpenMM System serialized in ``path``; anything else is a TargetInputError naming the file."""
    def deserialize(name):
        with open(name) as handle:
            return mm.XmlSerializer.deserialize(handle.read())

    system = _read_file(path, deserialize, "System XML")
    if not isinstance(system, mm.System):
        raise TargetInputError(f"System XML file {os.fspath(path)!r} holds a {type(system).__name__}, not a System")
    return system


@dataclasses.dataclass
class MolecularSystem:
    """A ready-to-simulate setup: topology, System, positions and thermodynamic parameters.

    Attributes
    ----------
    setup : str or None
        Name of the named test system (one of :data:`SETUPS`), or None for the user's own target (built by
        :meth:`from_simulation`, :meth:`from_xml`, :meth:`from_amber` or :meth:`from_openmm`): such a target is
        identified by :meth:`fingerprint`, never by a name.
    topology : openmm.app.Topology
    system : openmm.System
    positions : openmm.unit.Quantity
        Starting positions, shape (n_particles, 3), length units.
    temperature, timestep, friction : openmm.unit.Quantity
        Thermostat temperature, integration time step, Langevin friction coefficient (``temperature`` is None
        only for a target read from a Simulation whose integrator has no thermostat).
    constraints : str
        'HBonds', 'AllBonds', 'HAngles' or 'none'; for a System read as it is, the set its constraints match
        ('HBonds', 'AllBonds', 'none') or ``'<n> constraints'``.
    potential : str
        Description of the potential (force-field files, or the TorchScript file and its hash).
    solute_atoms : int
        Number of atoms of the molecule itself (the first atoms); waters, if any, follow.
    hydrogen_mass : openmm.unit.Quantity or None
        Mass given to every hydrogen bonded to a heavy atom (hydrogen mass repartitioning), or None for the
        force field's masses.
    source : str or None
        Where the target came from ('Simulation', the file names), for reports; None for a named test system.
    """

    setup: str
    topology: app.Topology
    system: mm.System
    positions: unit.Quantity
    temperature: unit.Quantity
    timestep: unit.Quantity
    friction: unit.Quantity
    constraints: str
    potential: str
    solute_atoms: int
    hydrogen_mass: unit.Quantity = None
    source: str = None

    @classmethod
    def from_openmm(cls, system, topology, positions, *, temperature=300.0 * unit.kelvin,
                    timestep=2.0 * unit.femtosecond, friction=1.0 / unit.picosecond, hydrogen_mass=None,
                    potential=None, source=None, setup=None, constraints=None):
        """A target from an OpenMM System, its Topology and positions: the one path every target takes.

        Parameters
        ----------
        system : openmm.System
            Used as it is (not copied); with ``hydrogen_mass``, its masses are changed in place.
        topology : openmm.app.Topology
            One atom per particle of ``system``, in the same order.
        positions : openmm.unit.Quantity or array_like
            Shape (n_particles, 3); length units (nm when a plain array).
        temperature, timestep, friction : openmm.unit.Quantity
            Of the LangevinMiddleIntegrator that :meth:`integrator` builds (K, fs, 1/ps by default 300, 2, 1).
        hydrogen_mass : openmm.unit.Quantity, optional
            Hydrogen mass repartitioning (:func:`repartition_hydrogen_mass`).
        potential : str, optional
            Description of the potential (default: the System's force classes).
        source : str, optional
            Where it came from, for reports.
        setup : str, optional
            Name of a named test system (:func:`build_system`); None for the user's own target.
        constraints : str, optional
            Name of the constraint set it was built with; default: read from the System (see the class).

        Returns
        -------
        MolecularSystem

        Raises
        ------
        TargetInputError
            The System, Topology and positions do not have the same number of atoms.
        UnitError
            A quantity without units or of the wrong dimension.
        """
        n_particles, n_atoms = system.getNumParticles(), topology.getNumAtoms()
        if not isinstance(positions, unit.Quantity):
            positions = np.asarray(positions, dtype=np.float64) * unit.nanometer
        n_positions = len(positions)
        if not n_particles == n_atoms == n_positions:
            raise TargetInputError(
                f"{source or 'the target'}: the System has {n_particles} particles, the topology {n_atoms} atoms and "
                f"the positions {n_positions} rows; they must describe the same atoms in the same order"
            )
        if temperature is not None:
            positive(temperature, unit.kelvin, "temperature")
        positive(timestep, unit.picosecond, "timestep")
        positive(friction, unit.picosecond**-1, "friction", allow_zero=True)
        if potential is None:
            potential = "+".join(force_class_name(force) for force in system.getForces()) or "no forces"
        if hydrogen_mass is not None:
            repartition_hydrogen_mass(system, topology, hydrogen_mass)
            potential += f", hydrogen mass {hydrogen_mass.value_in_unit(unit.dalton):g} amu"
        return cls(setup=setup, topology=topology, system=system, positions=positions, temperature=temperature,
                   timestep=timestep, friction=friction,
                   constraints=constraints if constraints is not None else _constraint_set(system, topology),
                   potential=potential, solute_atoms=_solute_atoms(topology), hydrogen_mass=hydrogen_mass,
                   source=source)

    @classmethod
    def from_simulation(cls, simulation, *, temperature=None):
        """The target an existing ``openmm.app.Simulation`` simulates: its System, Topology and current positions.

        Parameters
        ----------
        simulation : openmm.app.Simulation
        temperature : openmm.unit.Quantity, optional
            Default: the integrator's (``getTemperature``); None for an integrator without a thermostat.

        Returns
        -------
        MolecularSystem
            Time step and friction are the integrator's (friction 0 without one).  The System is the
            Simulation's own object, not a copy.
        """
        integrator = simulation.integrator
        if temperature is None and hasattr(integrator, "getTemperature"):
            temperature = integrator.getTemperature()
        friction = integrator.getFriction() if hasattr(integrator, "getFriction") else 0.0 / unit.picosecond
        positions = simulation.context.getState(getPositions=True).getPositions(asNumpy=True)
        return cls.from_openmm(simulation.system, simulation.topology, positions, temperature=temperature,
                               timestep=integrator.getStepSize(), friction=friction, source="Simulation")

    @classmethod
    def from_xml(cls, system_xml, structure, **options):
        """A target from a serialized System (``XmlSerializer.serialize``) and a structure file.

        Parameters
        ----------
        system_xml : str or os.PathLike
            The System XML file.
        structure : str or os.PathLike
            PDB (``.pdb``, ``.ent``) or PDBx/mmCIF (``.cif``, ``.pdbx``): topology and positions, one atom per
            particle in the System's order.
        **options
            :meth:`from_openmm` keywords (``temperature``, ``timestep``, ``friction``, ``hydrogen_mass``).

        Raises
        ------
        TargetInputError
            A missing or unreadable file, an XML file that is not a System, or a structure whose atom count is
            not the System's (the message names the file).
        """
        system = _read_system_xml(system_xml)
        structure_file = _read_structure(structure)
        return cls.from_openmm(system, structure_file.topology, structure_file.positions,
                               source=f"{os.fspath(system_xml)} + {os.fspath(structure)}", **options)

    @classmethod
    def from_amber(cls, prmtop, inpcrd, *, implicit_solvent=None, constraints="HBonds", **options):
        """A target from AMBER files: ``AmberPrmtopFile.createSystem`` without cutoff (PME with a periodic box).

        Parameters
        ----------
        prmtop : str or os.PathLike
            AMBER topology (``.prmtop``, ``.parm7``).
        inpcrd : str or os.PathLike
            AMBER coordinates (``.inpcrd``, ``.rst7``, ``.crd``).
        implicit_solvent : {None, 'HCT', 'OBC1', 'OBC2', 'GBn', 'GBn2'}
            OpenMM's generalized Born model from the prmtop's radii (None: vacuum or the file's explicit water).
        constraints : str or None
            None, 'HBonds', 'AllBonds' or 'HAngles'.
        **options
            :meth:`from_openmm` keywords (``temperature``, ``timestep``, ``friction``, ``hydrogen_mass``).

        Raises
        ------
        TargetInputError
            A missing or unreadable file, coordinates of another atom count, or an unknown ``implicit_solvent``.
        """
        models = {None: None, "none": None, "HCT": app.HCT, "OBC1": app.OBC1, "OBC2": app.OBC2, "GBn": app.GBn,
                  "GBn2": app.GBn2}
        if implicit_solvent not in models:
            raise TargetInputError(f"implicit_solvent must be one of {', '.join(k for k in models if k)} or None, "
                                   f"got {implicit_solvent!r}")
        constraint_type = _constraints(constraints)
        prmtop_file = _read_file(prmtop, app.AmberPrmtopFile, "AMBER prmtop")
        inpcrd_file = _read_file(inpcrd, app.AmberInpcrdFile, "AMBER coordinate")
        periodic = inpcrd_file.boxVectors is not None
        system = prmtop_file.createSystem(nonbondedMethod=app.PME if periodic else app.NoCutoff,
                                          constraints=constraint_type, implicitSolvent=models[implicit_solvent])
        if periodic:
            system.setDefaultPeriodicBoxVectors(*inpcrd_file.boxVectors)
        return cls.from_openmm(system, prmtop_file.topology, inpcrd_file.positions,
                               source=f"{os.fspath(prmtop)} + {os.fspath(inpcrd)}",
                               constraints=constraints_name(constraints), **options)

    @property
    def n_atoms(self):
        """Number of particles in the System."""
        return self.system.getNumParticles()

    @property
    def elements(self):
        """Element symbols of every atom, in topology order (list of str)."""
        return [atom.element.symbol for atom in self.topology.atoms()]

    @property
    def masses(self):
        """Particle masses in amu (daltons), shape (n_particles,)."""
        return particle_masses(self.system)

    def integrator(self, seed=0):
        """A ``LangevinMiddleIntegrator`` at this setup's temperature, friction and time step.

        Parameters
        ----------
        seed : int
            Random number seed of the thermostat (0 lets OpenMM pick one; pick a non-zero value for
            reproducible runs).
        """
        integrator = mm.LangevinMiddleIntegrator(self.temperature, self.friction, self.timestep)
        integrator.setRandomNumberSeed(int(seed))
        return integrator

    def create_simulation(self, platform=None, seed=0, integrator=None, minimize=True):
        """Create an ``openmm.app.Simulation`` for this setup.

        Parameters
        ----------
        platform : str or openmm.Platform or PlatformConfiguration, optional
            Platform name or object, or a configuration (its properties, e.g. the CPU platform's ``Threads``,
            go to the Context); default: :func:`~openmm_forecast.platforms.fastest_platform`.
        seed : int
            Thermostat seed (used when ``integrator`` is None); velocities are drawn with the same seed.
        integrator : openmm.Integrator, optional
            Integrator to use instead of :meth:`integrator`.
        minimize : bool
            Minimise the energy before drawing velocities (``gfn2-xtb``: 100 capped steepest-descent steps,
            :func:`~openmm_forecast.xtb.relax`).

        Raises
        ------
        PotentialEvaluationError
            The potential could not be evaluated during the minimisation (``gfn2-xtb``: an SCF failure).
        """
        from .platforms import fastest_platform, get_platform, platform_properties

        platform = platform if platform is not None else fastest_platform(self)
        integrator = integrator if integrator is not None else self.integrator(seed)
        simulation = app.Simulation(self.topology, self.system, integrator, get_platform(platform),
                                    platform_properties(platform) or None)
        simulation.context.setPositions(self.positions)
        if minimize:
            try:
                if self.setup == "gfn2-xtb":  # OpenMM's L-BFGS tries steps where the SCF fails
                    from .xtb import relax

                    relax(simulation.context)
                else:
                    simulation.minimizeEnergy()
            except mm.OpenMMException as error:
                if is_potential_evaluation_failure(error):
                    raise PotentialEvaluationError(f"{error} (while minimising setup {self.setup!r})") from error
                raise
        simulation.context.setVelocitiesToTemperature(self.temperature, int(seed))
        return simulation

    def fingerprint(self):
        """SHA-256 of the serialized System (forces, parameters, constraints, masses): identifies the physics."""
        return system_fingerprint(self.system)


def particle_masses(system):
    """Masses of every particle of an OpenMM System, in amu, shape (n_particles,)."""
    return np.array(
        [system.getParticleMass(i).value_in_unit(unit.dalton) for i in range(system.getNumParticles())]
    )


def removes_com_motion(system):
    """Whether an OpenMM System has a ``CMMotionRemover`` (its dynamics keep zero total momentum)."""
    return any(isinstance(force, mm.CMMotionRemover) for force in system.getForces())


def without_com_velocity(velocities_nm_ps, masses_amu):
    """Velocities less their centre-of-mass velocity, as a ``CMMotionRemover`` leaves them.

    Parameters
    ----------
    velocities_nm_ps : numpy.ndarray, shape (n_particles, 3)
    masses_amu : numpy.ndarray, shape (n_particles,)

    Returns
    -------
    numpy.ndarray, shape (n_particles, 3)
        nm/ps; total momentum zero.
    """
    masses = np.asarray(masses_amu, dtype=np.float64)
    return velocities_nm_ps - masses @ velocities_nm_ps / masses.sum()


def repartition_hydrogen_mass(system, topology, hydrogen_mass):
    """Hydrogen mass repartitioning, in place: what ``ForceField.createSystem(hydrogenMass=...)`` does, for any System.

    Every hydrogen bonded (in ``topology``) to a heavy atom gets the mass ``hydrogen_mass``; the heavy atom
    loses the mass its hydrogen gained, so the pair's total mass, and the System's, are kept.  Hydrogens of
    water (residue HOH) are left alone, as OpenMM does for rigid water.  Works for Systems not built by a
    ForceField (the ``ml`` setup's TorchForce, a PythonForce): only masses change.

    Parameters
    ----------
    system : openmm.System
        Modified in place (before any Context is created from it).
    topology : openmm.app.Topology
        Bonds and elements of the System's particles.
    hydrogen_mass : openmm.unit.Quantity
        Mass units; > 0.

    Raises
    ------
    UnitError
        ``hydrogen_mass`` without mass units.
    ValueError
        A heavy atom would be left with a mass <= 0 (too many hydrogens for that mass).
    """
    target = positive(hydrogen_mass, unit.dalton, "hydrogen_mass")
    hydrogen = app.element.hydrogen
    for atom1, atom2 in topology.bonds():
        if atom1.element is hydrogen:
            atom1, atom2 = atom2, atom1
        if atom2.element is not hydrogen or atom1.element in (hydrogen, None) or atom2.residue.name == "HOH":
            continue
        transfer = target - system.getParticleMass(atom2.index).value_in_unit(unit.dalton)
        heavy = system.getParticleMass(atom1.index).value_in_unit(unit.dalton) - transfer
        if heavy <= 0:
            raise ValueError(
                f"hydrogen_mass {target:g} amu leaves atom {atom1.index} ({atom1.name}, {atom1.element.symbol}) with "
                f"mass {heavy:g} amu; choose a smaller hydrogen mass"
            )
        system.setParticleMass(atom2.index, target * unit.dalton)
        system.setParticleMass(atom1.index, heavy * unit.dalton)


def system_fingerprint(system):
    """SHA-256 hex digest of ``XmlSerializer.serialize(system)``.

    Two Systems with the same fingerprint have identical forces, parameters, masses and constraints, in any
    process.  An openmm-torch ``TorchForce`` serializes its TorchScript archive with parts that change from one
    save to the next for the same model, so each embedded archive is replaced by :func:`_archive_digest`.
    """
    xml = mm.XmlSerializer.serialize(system)
    xml = re.sub(r'encodedFileContents="([0-9a-fA-F]*)"', lambda m: f'archive="{_archive_digest(m.group(1))}"', xml)
    return hashlib.sha256(xml.encode()).hexdigest()


def _archive_digest(hex_contents):
    """Digest of a hex-encoded TorchScript (zip) archive that is the same for every save of the same model.

    What varies between saves is left out or put in a canonical form: the random top-level directory name, zip
    metadata, the random ``.data/serialization_id``, and the order of lines in the generated code files
    (``code/**.py``: TorchScript writes a class's ``Final`` constants in the iteration order of a set of names,
    which depends on Python's per-process hash seed; measured with the ANI-1x module: two processes, two orders).
    Parameters and every other member are hashed byte for byte.
    """
    digest = hashlib.sha256()
    try:
        with zipfile.ZipFile(io.BytesIO(bytes.fromhex(hex_contents))) as archive:
            for name in sorted(archive.namelist(), key=lambda n: n.split("/", 1)[-1]):
                member = name.split("/", 1)[-1]
                if member == ".data/serialization_id":
                    continue
                contents = archive.read(name)
                if member.startswith("code/") and member.endswith(".py"):
                    contents = b"\n".join(sorted(contents.splitlines()))
                digest.update(member.encode() + b"\0" + hashlib.sha256(contents).digest())
    except (ValueError, zipfile.BadZipFile):  # not a zip archive: hash it as it is
        digest.update(hex_contents.encode())
    return digest.hexdigest()


def load_alanine_dipeptide():
    """Shipped alanine dipeptide structure (amber residue names ACE, ALA, NME).

    Returns
    -------
    openmm.app.PDBFile
    """
    return app.PDBFile(resource_path(ALANINE_DIPEPTIDE_PDB))


def build_system(
    setup,
    *,
    temperature=300.0 * unit.kelvin,
    timestep=2.0 * unit.femtosecond,
    friction=1.0 / unit.picosecond,
    constraints="HBonds",
    potential_file=None,
    hydrogen_mass=None,
):
    """Build a named alanine-dipeptide test system (through :meth:`MolecularSystem.from_openmm`, as every target).

    Parameters
    ----------
    setup : str
        One of :data:`SETUPS`.
    temperature : openmm.unit.Quantity
        Thermostat temperature (temperature units).
    timestep : openmm.unit.Quantity
        Integration time step (time units).
    friction : openmm.unit.Quantity
        Langevin friction coefficient (inverse time units).
    constraints : str or None
        None, 'HBonds', 'AllBonds' or 'HAngles' (or OpenMM's constants).
    potential_file : str, optional
        For ``ml`` only: path of a TorchScript potential, the name of a shipped one (``"ala2-ani-amber14"``),
        or ``"ani2x"`` (torchani's ANI-2x, only when its weights are already on this machine).
    hydrogen_mass : openmm.unit.Quantity, optional
        Hydrogen mass repartitioning (:func:`repartition_hydrogen_mass`): the mass of every hydrogen bonded
        to a heavy atom, taken from that atom (for example ``1.5 * unit.amu`` with a 4 fs ``timestep``, the
        combination openmm-setup offers for LangevinMiddleIntegrator; 3-4 amu in much of the literature).
        Default None: the force field's masses.

    Returns
    -------
    MolecularSystem

    Raises
    ------
    UnknownSetupError
        If ``setup`` is not one of :data:`SETUPS`.
    UnitError
        If a quantity lacks units or has the wrong dimension.
    ModelFileError, ModelMismatchError
        For ``ml``: a missing or unreadable potential, or one that does not fit alanine dipeptide.  For
        ``ani1x``: ModelFileError if the shipped weights are missing (a broken install).
    OptionalDependencyError
        For ``gfn2-xtb``: tblite is not installed (the message says how to install it).
    """
    if setup not in SETUPS:
        raise UnknownSetupError(f"unknown setup {setup!r}; available setups: {', '.join(SETUPS)}")
    positive(temperature, unit.kelvin, "temperature")
    positive(timestep, unit.picosecond, "timestep")
    positive(friction, unit.picosecond**-1, "friction", allow_zero=True)
    constraint_type = _constraints(constraints)
    if hydrogen_mass is not None:
        positive(hydrogen_mass, unit.dalton, "hydrogen_mass")
    if setup != "ml" and potential_file is not None:
        raise ValueError(f"potential_file is only used by the 'ml' setup, not by {setup!r}")

    pdb = load_alanine_dipeptide()
    topology, positions = pdb.topology, pdb.positions
    if setup == "amber14-vacuum":
        system = _amber14_vacuum(topology, constraint_type)
        potential = "amber14-all.xml"
    elif setup == "amber14-obc2":
        forcefield = app.ForceField("amber14-all.xml", "implicit/obc2.xml")
        system = forcefield.createSystem(topology, nonbondedMethod=app.NoCutoff, constraints=constraint_type)
        potential = "amber14-all.xml+implicit/obc2.xml"
    elif setup == "amber14-tip3p":
        forcefield = app.ForceField("amber14-all.xml", "amber14/tip3p.xml")
        modeller = app.Modeller(topology, positions)
        modeller.addSolvent(forcefield, model="tip3p", padding=TIP3P_PADDING)
        topology, positions = modeller.topology, modeller.positions
        system = forcefield.createSystem(
            topology,
            nonbondedMethod=app.PME,
            nonbondedCutoff=1.0 * unit.nanometer,
            constraints=constraint_type,
            rigidWater=True,
        )
        potential = "amber14-all.xml+amber14/tip3p.xml, PME 1.0 nm"
    elif setup == "gfn2-xtb":
        from .xtb import GFN2xTBComputation, require_tblite

        require_tblite()
        system = _amber14_vacuum(topology, constraint_type)
        positions = _energy_minimum(system, positions)
        _remove_forces(system)
        computation = GFN2xTBComputation([atom.element.atomic_number for atom in topology.atoms()])
        system.addForce(mm.PythonForce(computation))
        potential = computation.describe()
    elif setup == "ani1x":
        from .potentials import ANI1X_DTYPE

        system = _amber14_vacuum(topology, constraint_type)
        _remove_forces(system)  # the masses and constraints stay
        system.addForce(ani1x_force(topology))
        potential = f"ANI-1x (torchani 2.2.4 ani-1x_8x, {ANI1X_DTYPE})"
    else:
        if potential_file is None:
            raise ValueError("the 'ml' setup needs potential_file: a TorchScript potential file, or 'ani2x'")
        system = _amber14_vacuum(topology, constraint_type)
        _remove_forces(system)  # the masses and constraints stay
        elements = [atom.element.symbol for atom in topology.atoms()]
        force, potential = _torch_force(potential_file, elements)
        system.addForce(force)
        _check_potential_evaluates(system, positions, potential_file)
    return MolecularSystem.from_openmm(system, topology, positions, temperature=temperature, timestep=timestep,
                                       friction=friction, hydrogen_mass=hydrogen_mass, potential=potential,
                                       setup=setup, constraints=constraints_name(constraints))


def _amber14_vacuum(topology, constraint_type):
    """The amber14-all.xml System of ``topology`` without cutoff (the ``amber14-vacuum`` setup's)."""
    return app.ForceField("amber14-all.xml").createSystem(
        topology, nonbondedMethod=app.NoCutoff, constraints=constraint_type)


def _remove_forces(system):
    """Remove every force of an OpenMM System (its particles, masses and constraints stay)."""
    while system.getNumForces():
        system.removeForce(0)


def _energy_minimum(system, positions):
    """Positions (nm, Quantity) of the energy minimum of ``system`` nearest ``positions`` (Reference platform)."""
    context = mm.Context(system, mm.VerletIntegrator(0.001), mm.Platform.getPlatformByName("Reference"))
    context.setPositions(positions)
    mm.LocalEnergyMinimizer.minimize(context)
    return context.getState(getPositions=True).getPositions()


def _check_potential_evaluates(system, positions, potential_file):
    """Evaluate an ``ml`` System once (Reference platform) at ``positions``; refuse non-finite or failing output.

    A potential that gives NaN would otherwise hang the energy minimisation of every simulation built from
    it, and one made for another molecule (a file without openmm-forecast metadata) would fail deep inside
    OpenMM.

    Raises
    ------
    ModelMismatchError
        The potential cannot be evaluated on this topology (for example another atom count).
    ModelFileError
        Its energy or forces are NaN or infinite at the setup's starting structure.
    """
    try:
        context = mm.Context(system, mm.VerletIntegrator(0.001), mm.Platform.getPlatformByName("Reference"))
        context.setPositions(positions)
        state = context.getState(getEnergy=True, getForces=True)
    except Exception as error:
        lines = [line.strip() for line in str(error).splitlines() if line.strip()]
        raise ModelMismatchError(
            f"potential {potential_file!r} cannot be evaluated on this topology ({system.getNumParticles()} atoms, "
            f"Reference platform): "
            f"{lines[-1] if lines else type(error).__name__}"
        ) from error
    energy = state.getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole)
    forces = state.getForces(asNumpy=True).value_in_unit(unit.kilojoule_per_mole / unit.nanometer)
    if not (np.isfinite(energy) and np.isfinite(forces).all()):
        raise ModelFileError(
            f"potential {potential_file!r} gives a non-finite energy ({energy} kJ/mol) or forces at the starting "
            "structure of alanine dipeptide; it cannot drive a simulation"
        )


def _import_openmmtorch():
    """``import openmmtorch`` without the root-logger warning of the ``simtk.openmm`` alias it imports."""

    def not_simtk(record):
        return "importing 'simtk.openmm' is deprecated" not in record.getMessage()

    root = logging.getLogger()
    root.addFilter(not_simtk)
    try:
        import openmmtorch
    finally:
        root.removeFilter(not_simtk)
    return openmmtorch


def ani1x_force(topology, dtype=None):
    """An openmm-torch ``TorchForce`` of the published ANI-1x for any molecule made of H, C, N and O.

    Parameters
    ----------
    topology : openmm.app.Topology
        The molecule (vacuum, no periodic box); every atom's element must be H, C, N or O.  Its atoms become
        the force's particles 0..n_atoms-1, in topology order.
    dtype : {'float64', 'float32'}, optional
        Precision of the network; default :data:`~openmm_forecast.potentials.ANI1X_DTYPE` (chosen by
        measurement, see :func:`~openmm_forecast.potentials.ani1x_module`).

    Returns
    -------
    openmmtorch.TorchForce
        Absolute ANI-1x energy in kJ/mol (self energies included), forces in kJ/mol/nm.  Add it to a System
        whose particles have the molecule's masses, e.g. ``system.addParticle(atom.element.mass)`` per atom.

    Raises
    ------
    ModelMismatchError
        An atom without an element, or with an element ANI-1x does not cover (the message names the atoms).
    """
    from .potentials import ANI1X_DTYPE, ani1x_module

    elements = [atom.element.symbol if atom.element is not None else "no element" for atom in topology.atoms()]
    module = ani1x_module(elements, dtype or ANI1X_DTYPE)
    return _import_openmmtorch().TorchForce(module)


def _torch_force(potential_file, elements):
    """TorchForce for the ``ml`` setup, checked against the topology's elements."""
    openmmtorch = _import_openmmtorch()

    if potential_file == "ani2x":
        from .potentials import ani2x_module

        module = ani2x_module(elements)
        return openmmtorch.TorchForce(module), "torchani ANI-2x (local weights)"
    if not os.path.isfile(potential_file):
        from .potentials import shipped_potential

        try:
            potential_file = shipped_potential(potential_file)
        except ModelFileError:
            raise ModelFileError(
                f"potential file {potential_file!r} does not exist, nor is it the name of a shipped potential "
                "(such as 'ala2-ani-amber14')"
            ) from None
    import torch

    extra = {"metadata.json": ""}
    try:
        torch.jit.load(potential_file, _extra_files=extra)
    except Exception as error:
        raise ModelFileError(
            f"potential file {potential_file!r} is not a readable TorchScript module: {error}"
        ) from error
    if extra["metadata.json"]:
        import json

        metadata = json.loads(extra["metadata.json"])
        model_elements = metadata.get("elements")
        if model_elements is not None and list(model_elements) != list(elements):
            raise ModelMismatchError(
                f"potential {potential_file!r} was built for {len(model_elements)} atoms with elements "
                f"{''.join(model_elements)}, but the topology has {len(elements)} atoms with elements "
                f"{''.join(elements)}"
            )
    with open(potential_file, "rb") as handle:
        digest = hashlib.sha256(handle.read()).hexdigest()[:16]
    force = openmmtorch.TorchForce(potential_file)
    return force, f"TorchScript {os.path.basename(potential_file)} (sha256 {digest})"
