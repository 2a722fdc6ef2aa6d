"""GFN2-xTB (the tblite library) as an OpenMM force: the potential of the ``gfn2-xtb`` setup.

:class:`GFN2xTBComputation` is the computation of an ``openmm.PythonForce``: OpenMM hands it a State,
it returns the GFN2-xTB energy (kJ/mol) and forces (kJ/mol/nm) of the molecule in vacuum (no periodic
boundaries).  tblite works in atomic units, positions in Bohr, energy in Hartree, gradient in
Hartree/Bohr; the conversions use OpenMM's own constants (CODATA 2018, as tblite):
:data:`NM_PER_BOHR` and :data:`KJ_PER_MOL_PER_HARTREE`.

tblite is optional (``pip install 'openmm-forecast[xtb]'``); it is imported only when a computation
first runs or :func:`require_tblite` is called.  It parallelises with OpenMP: set ``OMP_NUM_THREADS``
before the process starts (one thread is fastest for 22 atoms on a busy machine).

Every evaluation starts the SCF from tblite's atomic guess, so the energy is a function of the positions
alone (starting from the previous wavefunction was measured 17-25 % faster, but then a rejected jump, having
been evaluated, changes the forces of the next MD step by ~1e-4 relative, and a rerun is not reproducible).

SCF failures.  If the SCF does not converge, or the energy is not finite, the computation raises
:class:`~openmm_forecast.errors.PotentialEvaluationError`.  OpenMM passes only the message of an
exception raised inside a PythonForce (it arrives as ``openmm.OpenMMException``); the message starts
with :data:`~openmm_forecast.errors.POTENTIAL_EVALUATION_FAILED`, which
:func:`~openmm_forecast.errors.is_potential_evaluation_failure` recognises: the accelerator then
rejects the jump (reason ``"evaluation"``), :meth:`MolecularSystem.create_simulation` raises the named
error.
"""

import numpy as np
from openmm import unit

from .errors import POTENTIAL_EVALUATION_FAILED, OptionalDependencyError, PotentialEvaluationError

NM_PER_BOHR = (1.0 * unit.bohr).value_in_unit(unit.nanometer)
"""Bohr radius in nm (OpenMM's constant, CODATA 2018: 0.0529177210903)."""
KJ_PER_MOL_PER_HARTREE = (1.0 * unit.hartree * unit.AVOGADRO_CONSTANT_NA).value_in_unit(unit.kilojoule_per_mole)
"""Hartree in kJ/mol (OpenMM's constants, CODATA 2018: 2625.49963948)."""

TBLITE_VERSION = "0.8.0"
"""The tblite release the ``xtb`` extra pins and the measurements in the README were made with."""


def require_tblite():
    """Import tblite's calculator, or say how to install it.

    Returns
    -------
    type
        ``tblite.interface.Calculator``.

    Raises
    ------
    OptionalDependencyError
        If tblite is not installed.
    """
    try:
        from tblite.interface import Calculator
    except ImportError as error:
        raise OptionalDependencyError(
            "the gfn2-xtb setup needs tblite (GFN2-xTB): pip install 'openmm-forecast[xtb]' "
            f"(or pip install tblite=={TBLITE_VERSION}); its parameters ship with it, nothing is downloaded"
        ) from error
    return Calculator


def tblite_version():
    """Installed tblite version (str), or None when it is not installed."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("tblite")
    except PackageNotFoundError:
        return None


class GFN2xTBComputation:
    """GFN2-xTB energy and forces of one molecule in OpenMM units; the computation of a PythonForce.

    Parameters
    ----------
    atomic_numbers : sequence of int
        Atomic number of each particle, in System order, length n_atoms.
    charge : int
        Total charge (elementary charges).
    accuracy : float
        tblite's numerical accuracy (1.0: its default SCF thresholds; smaller is tighter).
    max_iterations : int
        Most SCF iterations per attempt.

    Notes
    -----
    Instances pickle without their tblite calculator (it is rebuilt on the next evaluation), so a
    System holding one serializes (``XmlSerializer``) and has a stable fingerprint.  One instance may
    serve several Contexts of the same molecule (walkers).
    """

    method = "GFN2-xTB"

    def __init__(self, atomic_numbers, charge=0, accuracy=1.0, max_iterations=250):
        self.atomic_numbers = [int(z) for z in atomic_numbers]
        self.charge = int(charge)
        self.accuracy = float(accuracy)
        self.max_iterations = int(max_iterations)
        self._calculator = None

    def __getstate__(self):
        return {"atomic_numbers": self.atomic_numbers, "charge": self.charge, "accuracy": self.accuracy,
                "max_iterations": self.max_iterations}

    def __setstate__(self, state):
        self.__dict__.update(state)
        self._calculator = None

    def describe(self):
        """One-line description of the potential (method, tblite version, settings)."""
        return (f"{self.method} (tblite {tblite_version()}), vacuum, charge {self.charge}, "
                f"accuracy {self.accuracy:g}, at most {self.max_iterations} SCF iterations")

    def __call__(self, state):
        """PythonForce entry point: energy (kJ/mol) and forces (kJ/mol/nm, shape (n_atoms, 3)) of a State."""
        return self.energy_and_forces(state.getPositions(asNumpy=True).value_in_unit(unit.nanometer))

    def energy_and_forces(self, positions_nm):
        """GFN2-xTB potential energy and forces at one configuration.

        Parameters
        ----------
        positions_nm : numpy.ndarray, shape (n_atoms, 3)
            Positions in nm.

        Returns
        -------
        energy : float
            kJ/mol.
        forces : numpy.ndarray, shape (n_atoms, 3)
            kJ/mol/nm (minus the gradient).

        Raises
        ------
        PotentialEvaluationError
            The SCF did not converge, or the energy or gradient is not finite.
        """
        from tblite.exceptions import TBLiteRuntimeError

        bohr = np.asarray(positions_nm, dtype=np.float64) / NM_PER_BOHR
        if bohr.shape != (len(self.atomic_numbers), 3) or not np.isfinite(bohr).all():
            raise PotentialEvaluationError(
                f"{POTENTIAL_EVALUATION_FAILED}: {self.method} needs finite positions of shape "
                f"({len(self.atomic_numbers)}, 3), got shape {bohr.shape}"
            )
        try:
            result = self._calculator_at(bohr).singlepoint()
        except TBLiteRuntimeError as error:
            failure = str(error)
        else:
            energy = float(result.get("energy")) * KJ_PER_MOL_PER_HARTREE
            forces = -np.asarray(result.get("gradient")) * (KJ_PER_MOL_PER_HARTREE / NM_PER_BOHR)
            if np.isfinite(energy) and np.isfinite(forces).all():
                return energy, forces
            failure = "non-finite energy or gradient"
        raise PotentialEvaluationError(
            f"{POTENTIAL_EVALUATION_FAILED}: {self.method} (tblite): {failure} at this configuration "
            "(a distorted geometry? minimise with amber14 first)"
        )

    def _calculator_at(self, bohr):
        """The tblite calculator, created on first use, with its geometry set to ``bohr``."""
        if self._calculator is None:
            Calculator = require_tblite()
            calculator = Calculator(self.method, np.array(self.atomic_numbers), bohr, charge=float(self.charge))
            calculator.set("verbosity", 0)
            calculator.set("accuracy", self.accuracy)
            calculator.set("max-iter", self.max_iterations)
            self._calculator = calculator
        else:
            self._calculator.update(bohr)
        return self._calculator


def relax(context, max_iterations=100, max_step_nm=0.002, tolerance=1e-6):
    """Lower the energy of a Context by steepest descent with a capped step (for SCF potentials).

    OpenMM's L-BFGS minimiser tries steps that bring atoms to 0.01-0.03 nm of each other, where the SCF
    can fail (measured on alanine dipeptide with ``gfn2-xtb``, from the amber14 minimum).  Here no atom
    moves more than ``max_step_nm`` per iteration: the step grows 1.2x after a lower energy and halves
    otherwise; constraints are applied after every move.  The Context ends at the lowest energy found.

    Parameters
    ----------
    context : openmm.Context
    max_iterations : int
        Energy evaluations at most.
    max_step_nm : float
        Largest displacement of any atom per iteration, nm.
    tolerance : float
        Constraint tolerance (relative).

    Returns
    -------
    dict
        ``start_kJ_per_mol``, ``end_kJ_per_mol`` (potential energies) and ``iterations``.

    Raises
    ------
    openmm.OpenMMException
        From a failed evaluation (see :func:`~openmm_forecast.errors.is_potential_evaluation_failure`).
    """
    def evaluate():
        state = context.getState(getEnergy=True, getForces=True, getPositions=True)
        return (state.getPositions(asNumpy=True).value_in_unit(unit.nanometer),
                state.getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole),
                state.getForces(asNumpy=True).value_in_unit(unit.kilojoule_per_mole / unit.nanometer))

    has_constraints = context.getSystem().getNumConstraints() > 0
    if has_constraints:
        context.applyConstraints(tolerance)
    x, energy, forces = evaluate()
    start, step, iterations = energy, max_step_nm, 0
    while iterations < max_iterations and step > 1e-3 * max_step_nm:
        iterations += 1
        context.setPositions(x + step * forces / np.linalg.norm(forces, axis=1).max())
        if has_constraints:
            context.applyConstraints(tolerance)
        trial = evaluate()
        if trial[1] < energy:
            x, energy, forces = trial
            step = min(1.2 * step, max_step_nm)
        else:
            step *= 0.5
    context.setPositions(x)
    return {"start_kJ_per_mol": start, "end_kJ_per_mol": energy, "iterations": iterations}
