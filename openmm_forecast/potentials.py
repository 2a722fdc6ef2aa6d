"""ANI-architecture machine-learned potentials as OpenMM ``TorchForce`` modules.

A potential here is a torchani ``ANI`` model (atomic environment vectors + one network per element,
optionally an ensemble of such networks) wrapped by :class:`TorchANIPotential`, which speaks OpenMM's
units: ``forward(positions)`` takes positions in nm, shape (n_atoms, 3), and returns the potential
energy in kJ/mol as a scalar tensor.  Inside, torchani works in Angstrom and Hartree; the wrapper
converts both ways, and the per-element self energies (the constant energy of each element, in
Hartree, torchani's ``energy_shifter``) are part of the returned energy.

Files written by :func:`save_potential` are TorchScript modules that ``openmmtorch.TorchForce`` loads
directly, with a ``metadata.json`` extra file holding at least ``"elements"`` (one symbol per atom, in
topology order); the ``ml`` setup of :func:`openmm_forecast.systems.build_system` reads it and refuses a
model whose elements do not match the topology.

Precision: the module computes in the dtype of its network weights (``"dtype"`` in the metadata).
Exported potentials default to float64, so that energies are exact to ~1e-10 kJ/mol relative and
energy-conservation checks are not limited by round-off; float32 is about as fast on a CPU for 22 atoms.
Positions passed in any floating dtype are cast to the model's dtype; the energy is returned in that
dtype.

:func:`ani1x_module` gives the published ANI-1x (H, C, N, O) from weights shipped in the package (converted
from torchani 2.2.4's files by ``scripts/make_ani1x.py``, docs/ani1x.md); :func:`ani2x_module` gives torchani's
pretrained ANI-2x, but only from weights already on disk: nothing is ever downloaded.

Fine-tuning hook: any :class:`TorchANIPotential` (a fresh one from :func:`build_ani_potential`, or the
unscripted module of a previous fit) can be trained further with
:func:`openmm_forecast.potential_training.train_potential`; the ``ml`` setup
(``build_system("ml", potential_file=...)``) then generates NVE data like any other setup.
"""

import json
import os
import warnings

import torch

from ._io import atomic_write_path
from .errors import ModelFileError, ModelMismatchError
from .shipped import resource_path

with warnings.catch_warnings():
    # torchani warns at import that its optional CUDA extensions are not compiled; they are not used here.
    warnings.filterwarnings("ignore", message=".*extensions.*not installed.*")
    from torchani.aev import AEVComputer, ANIAngular, ANIRadial
    from torchani.arch import ANI, Assembler
    from torchani.nn import ANINetworks, AtomicNetwork, Ensemble
    from torchani.sae import SelfEnergy
    from torchani.units import HARTREE_TO_KJOULEPERMOL
    from torchani.utils import SYMBOLS_1X, SYMBOLS_2X

ANGSTROM_PER_NM = 10.0
HARTREE_TO_KJ_PER_MOL = float(HARTREE_TO_KJOULEPERMOL)
"""kJ/mol per Hartree (torchani's CODATA value)."""

ANI_SYMBOLS = ("H", "C", "N", "O")
"""Elements of the potentials fitted by openmm-forecast (enough for peptides without sulfur)."""

METADATA_FORMAT = "openmm-forecast-potential"
ANI2X_STATE_DICT = "ani2x_state_dict.pt"
ANI1X_STATE_DICT = "potentials/ani1x_state_dict.pt"
"""ANI-1x's weights in ``openmm_forecast/resources``, converted by ``scripts/make_ani1x.py`` (see docs/ani1x.md)."""
ANI1X_DTYPE = "float32"
"""Default dtype of :func:`ani1x_module` and of the ``ani1x`` setup: ~25 % cheaper per MD step than float64."""

_ATOMIC_NUMBERS = {"H": 1, "C": 6, "N": 7, "O": 8, "F": 9, "S": 16, "Cl": 17}
_DTYPES = {"float32": torch.float32, "float64": torch.float64}


class TorchANIPotential(torch.nn.Module):
    """A torchani ``ANI`` model in OpenMM units for one molecule (fixed atoms and their order).

    Parameters
    ----------
    model : torchani.arch.ANI
        Model in Angstrom and Hartree, built with ``periodic_table_index=True`` (species given as atomic
        numbers).  Its energy includes its self energies.
    elements : sequence of str
        Element symbol of each atom, in topology order, length n_atoms.

    Notes
    -----
    ``atomic_numbers`` (shape (1, n_atoms), int64) and ``angstrom_per_nm`` (a scalar in the model's
    dtype, which also sets the dtype positions are cast to) are buffers, so they travel with the
    TorchScript file.  No periodic boundary conditions: for isolated molecules only.
    """

    def __init__(self, model, elements):
        super().__init__()
        elements = [str(symbol) for symbol in elements]
        unknown = sorted(set(elements) - set(model.symbols))
        if unknown:
            raise ModelMismatchError(
                f"the ANI model supports elements {', '.join(model.symbols)}, not {', '.join(unknown)}"
            )
        self.model = model
        dtype = next(model.parameters()).dtype
        self.register_buffer("atomic_numbers", torch.tensor([[_ATOMIC_NUMBERS[e] for e in elements]]))
        self.register_buffer("angstrom_per_nm", torch.tensor(ANGSTROM_PER_NM, dtype=dtype))
        self.hartree_to_kj_per_mol = HARTREE_TO_KJ_PER_MOL
        self.elements = elements

    @torch.jit.export
    def energies(self, positions):
        """Potential energies of a batch of configurations.

        Parameters
        ----------
        positions : torch.Tensor
            Positions in nm, shape (batch, n_atoms, 3).

        Returns
        -------
        torch.Tensor
            Energies in kJ/mol, shape (batch,), in the model's dtype.
        """
        coordinates = positions.to(self.angstrom_per_nm.dtype) * self.angstrom_per_nm
        species = self.atomic_numbers.expand(coordinates.shape[0], -1)
        hartree = self.model((species, coordinates)).energies
        return hartree * self.hartree_to_kj_per_mol

    def forward(self, positions):
        """Potential energy in kJ/mol (scalar tensor) of positions in nm, shape (n_atoms, 3)."""
        return self.energies(positions.unsqueeze(0))[0]


class ScaledAtomicNetwork(AtomicNetwork):
    """torchani's ``AtomicNetwork`` whose output (Hartree) is multiplied by a fixed ``output_scale``.

    Atomic energy variations are ~1e-3 Hartree; with the scale the weights stay of order 1, so that
    Adam's fixed-size steps move energies by small amounts (with tiny weights instead, each step changes
    the energy by tens of kJ/mol and training with an energy term stalls).
    """

    def __init__(self, layer_dims, activation="celu", bias=True, output_scale=1.0):
        super().__init__(layer_dims, activation=activation, bias=bias)
        self.output_scale = float(output_scale)

    def forward(self, features):
        for layer in self.layers:
            features = self.activation(layer(features))
        return self.final_layer(features) * self.output_scale


def build_ani_model(
    symbols=ANI_SYMBOLS,
    *,
    ensemble_size=1,
    hidden_layers=(128, 96, 64),
    activation="celu",
    radial_cutoff_A=5.2,
    angular_cutoff_A=3.5,
    radial_shifts=16,
    angular_shifts=8,
    angular_sections=4,
    self_energies_hartree=None,
    output_scale_hartree=0.01,
    seed=0,
):
    """A randomly initialised torchani ``ANI`` model (Angstrom, Hartree) built from torchani components.

    The atomic environment vectors are ANI-2x-like (smooth cutoff, radial and angular Gaussian shells
    spread linearly from 0.9 A to each cutoff); each element has its own fully connected network.

    Parameters
    ----------
    symbols : sequence of str
        Supported elements.
    ensemble_size : int
        Number of independent network sets whose energies are averaged (1 = no ensemble).
    hidden_layers : sequence of int
        Widths of the hidden layers of every atomic network.
    activation : {'celu', 'gelu'}
        ``'celu'`` is ANI's CELU(alpha=0.1).
    radial_cutoff_A, angular_cutoff_A : float
        Cutoffs of the radial and angular terms, in Angstrom (angular <= radial).
    radial_shifts, angular_shifts, angular_sections : int
        Numbers of radial shells, angular radial shells and angular sections.
    self_energies_hartree : dict of str to float, optional
        Constant energy per element, in Hartree (default 0 for each).
    output_scale_hartree : float
        Fixed factor on every atomic network's output (see :class:`ScaledAtomicNetwork`): the energy
        in Hartree that a unit network output stands for.
    seed : int
        Seed of the random initialisation.

    Returns
    -------
    torchani.arch.ANI
        float32 model; use ``.double()`` for float64.
    """
    if int(ensemble_size) < 1:
        raise ValueError(f"ensemble_size must be >= 1, got {ensemble_size}")
    if angular_cutoff_A > radial_cutoff_A:
        raise ValueError(f"angular_cutoff_A ({angular_cutoff_A}) must not exceed radial_cutoff_A ({radial_cutoff_A})")
    if activation not in ("celu", "gelu"):
        raise ValueError(f"activation must be 'celu' or 'gelu', got {activation!r}")
    symbols = tuple(symbols)
    generator_state = torch.random.get_rng_state()
    torch.manual_seed(int(seed))
    try:
        aev_computer = AEVComputer(
            radial=ANIRadial.cover_linearly(start=0.9, cutoff=radial_cutoff_A, eta=19.7, num_shifts=radial_shifts),
            angular=ANIAngular.cover_linearly(
                start=0.9, cutoff=angular_cutoff_A, eta=12.5, zeta=14.1,
                num_shifts=angular_shifts, num_sections=angular_sections,
            ),
            num_species=len(symbols),
            cutoff_fn="smooth",
            strategy="pyaev",
        )
        dims = (aev_computer.out_dim, *[int(width) for width in hidden_layers], 1)

        def member():
            networks = {s: ScaledAtomicNetwork(dims, activation, True, output_scale_hartree) for s in symbols}
            for network in networks.values():
                with torch.no_grad():
                    network.final_layer.bias.zero_()
            return ANINetworks(networks)

        members = [member() for _ in range(int(ensemble_size))]
    finally:
        torch.random.set_rng_state(generator_state)
    neural_networks = members[0] if len(members) == 1 else Ensemble(members)
    self_energies = self_energies_hartree or {}
    shifter = SelfEnergy(symbols, [float(self_energies.get(s, 0.0)) for s in symbols])
    return ANI(symbols, aev_computer, neural_networks, shifter, periodic_table_index=True)


def build_ani_potential(elements, *, dtype="float32", **architecture):
    """A fresh :class:`TorchANIPotential` for a molecule with ``elements``.

    Parameters
    ----------
    elements : sequence of str
        Element of each atom in topology order; must be among :data:`ANI_SYMBOLS`.
    dtype : {'float32', 'float64'}
        Dtype of the weights and of the computation.
    **architecture
        Keyword arguments of :func:`build_ani_model`.
    """
    model = build_ani_model(**architecture).to(_dtype(dtype))
    return TorchANIPotential(model, elements)


def _dtype(name):
    if name not in _DTYPES:
        raise ValueError(f"dtype must be 'float32' or 'float64', got {name!r}")
    return _DTYPES[name]


def save_potential(potential, path, metadata=None):
    """Write ``potential`` as a TorchScript file that ``openmmtorch.TorchForce`` loads.

    Parameters
    ----------
    potential : TorchANIPotential
        The module (it is scripted here; its dtype is kept).
    path : str
        Output file (written to a temporary name first, then renamed: never a half-written file).
    metadata : dict, optional
        Extra JSON-serialisable information (training data, errors, ...), merged into ``metadata.json``.
        ``elements``, ``dtype``, ``units`` and ``format`` are always set from the module.

    Returns
    -------
    dict
        The metadata written.
    """
    info = dict(metadata or {})
    info.update(
        format=METADATA_FORMAT,
        elements=list(potential.elements),
        dtype=str(potential.angstrom_per_nm.dtype).replace("torch.", ""),
        units={"positions": "nm", "energy": "kJ/mol"},
    )
    scripted = torch.jit.script(potential.eval())
    with atomic_write_path(path) as temporary:
        scripted.save(temporary, _extra_files={"metadata.json": json.dumps(info, indent=1)})
    return info


def load_potential(path):
    """Load a potential written by :func:`save_potential`.

    Parameters
    ----------
    path : str
        TorchScript file.

    Returns
    -------
    module : torch.jit.ScriptModule
        ``module(positions_nm)`` -> energy in kJ/mol; ``module.energies(batch)`` for shape (B, N, 3).
    metadata : dict
        Contents of ``metadata.json`` (at least ``elements``).

    Raises
    ------
    ModelFileError
        If the file is missing, is not TorchScript, or lacks metadata with ``elements``.
    """
    if not os.path.isfile(path):
        raise ModelFileError(f"potential file {path!r} does not exist")
    extra = {"metadata.json": ""}
    try:
        module = torch.jit.load(path, map_location="cpu", _extra_files=extra)
    except Exception as error:
        raise ModelFileError(f"potential file {path!r} is not a readable TorchScript module: {error}") from error
    try:
        metadata = json.loads(extra["metadata.json"])
    except json.JSONDecodeError as error:
        raise ModelFileError(f"potential file {path!r} has no valid metadata.json: {error}") from error
    if not isinstance(metadata, dict) or not isinstance(metadata.get("elements"), list):
        raise ModelFileError(f"potential file {path!r}: metadata.json lacks the list of 'elements'")
    return module, metadata


def shipped_potential(name="ala2-ani-amber14"):
    """Path of a potential shipped in ``openmm_forecast/resources/potentials`` (``name`` without ``.pt``).

    ``ala2-ani-amber14``: alanine dipeptide fitted to amber14 vacuum by ``configs/potential_ala2.yaml``
    (its ``metadata.json`` holds the held-out errors and the MD check).  Use it as
    ``build_system("ml", potential_file=shipped_potential())``.

    Raises
    ------
    ModelFileError
        If no such file is shipped.
    """
    path = resource_path(f"potentials/{name}.pt")
    if not os.path.isfile(path):
        raise ModelFileError(f"no shipped potential {name!r} (expected {path})")
    return path


def ani2x_weights_path():
    """Where torchani 2.9 keeps the ANI-2x weights: ``$TORCHANI_DATA_DIR/StateDicts/ani2x_state_dict.pt``.

    ``TORCHANI_DATA_DIR`` defaults to ``~/.local/share/Torchani``.  (torchani's own ``ANI2x()`` looks
    there and downloads the file when it is missing; :func:`ani2x_module` never does.)
    """
    from torchani.paths import data_dir  # data_dir() creates nothing; state_dicts_dir() would

    return os.path.join(str(data_dir()), "StateDicts", ANI2X_STATE_DICT)


def _published_architecture(symbols, name):
    """A published torchani architecture (``name``: 'ani1x' or 'ani2x') as its ``models`` module builds it.

    8-member ensemble, cosine cutoff, all-pairs neighbour list, random weights; the self energies are
    placeholders (torchani's wB97X/6-31G(d) GSAEs), replaced by those of the weights loaded into it.
    """
    assembler = Assembler(periodic_table_index=True)
    assembler.set_symbols(symbols)
    assembler.set_global_cutoff_fn("cosine")
    assembler.set_aev_computer(radial=name, angular=name, strategy="pyaev")
    assembler.set_atomic_networks(ctor=name)
    assembler.set_neighborlist("all_pairs")
    assembler.set_gsaes_as_self_energies("wb97x-631gd")
    return assembler.assemble(8)


def _refuse_elements(elements, symbols, name):
    """Raise :class:`ModelMismatchError` naming the atoms whose element ``name`` (a model) does not cover."""
    unsupported = [(index, symbol) for index, symbol in enumerate(elements) if symbol not in symbols]
    if unsupported:
        listed = ", ".join(f"{symbol} (atom {index})" for index, symbol in unsupported[:10])
        more = f" and {len(unsupported) - 10} more" if len(unsupported) > 10 else ""
        raise ModelMismatchError(f"{name} supports only {', '.join(symbols)}; this molecule has {listed}{more}")


def _pretrained_module(model, path, elements, dtype, name):
    """Load a state dict into ``model`` (cast to ``dtype``) and script it as a :class:`TorchANIPotential`.

    The model is cast before loading, so float64 values in the file (self energies) stay exact.

    Raises
    ------
    ModelFileError
        The state dict at ``path`` cannot be read or does not fit the model.
    """
    model = model.to(_dtype(dtype))
    try:
        model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
    except Exception as error:
        raise ModelFileError(f"{name} weights at {path} could not be loaded: {error}") from error
    model.requires_grad_(False)
    return torch.jit.script(TorchANIPotential(model, elements).eval())


def ani2x_architecture():
    """torchani's ANI-2x model (8-member ensemble, elements H C N O S F Cl) with random weights."""
    return _published_architecture(SYMBOLS_2X, "ani2x")


def ani2x_module(elements):
    """TorchScript module of torchani's ANI-2x for a molecule, from weights already on this machine.

    Parameters
    ----------
    elements : sequence of str
        Element of each atom in topology order (ANI-2x supports H, C, N, O, S, F, Cl).

    Returns
    -------
    torch.jit.ScriptModule
        float64 :class:`TorchANIPotential` (nm in, kJ/mol out, absolute ANI-2x energies including the
        self energies, about -1.3e6 kJ/mol for alanine dipeptide).

    Raises
    ------
    ModelFileError
        If the weights are not at :func:`ani2x_weights_path` (nothing is downloaded; fetch them once with
        ``torchani.models.ANI2x()`` on a machine with network access, or copy the file there) or
        cannot be read.
    ModelMismatchError
        If an element is not supported by ANI-2x.
    """
    path = ani2x_weights_path()
    if not os.path.isfile(path):
        raise ModelFileError(
            f"ANI-2x weights not found at {path} (torchani 2.9's location: $TORCHANI_DATA_DIR/StateDicts, "
            "TORCHANI_DATA_DIR defaulting to ~/.local/share/Torchani). openmm-forecast never downloads "
            "weights: run torchani.models.ANI2x() once where network access is allowed, or copy "
            f"{ANI2X_STATE_DICT} there"
        )
    _refuse_elements(elements, SYMBOLS_2X, "ANI-2x")
    return _pretrained_module(ani2x_architecture(), path, elements, "float64", "ANI-2x")


def ani1x_architecture():
    """torchani's ANI-1x model (8-member ensemble, elements H C N O) with random weights."""
    return _published_architecture(SYMBOLS_1X, "ani1x")


def ani1x_module(elements, dtype=ANI1X_DTYPE):
    """TorchScript module of the published ANI-1x for any molecule made of H, C, N and O.

    ANI-1x (Smith et al., J. Chem. Phys. 148, 241733 (2018); 8-model ensemble, wB97X/6-31G(d)) with the
    parameters of torchani 2.2.4's ``ani-1x_8x`` files (MIT licence), converted once by
    ``scripts/make_ani1x.py`` into ``openmm_forecast/resources/`` (:data:`ANI1X_STATE_DICT`): shipped with
    the package, never downloaded.  Its energies and forces equal torchani 2.2.4's own model of the same files
    (``tests/test_ani1x.py``).

    Parameters
    ----------
    elements : sequence of str
        Element of each atom in topology order, length n_atoms; each one of H, C, N, O.
    dtype : {'float32', 'float64'}
        Dtype of the computation; default :data:`ANI1X_DTYPE`, float32, chosen by measurement: one MD step of
        alanine dipeptide (22 atoms, torch on one thread, openmm-torch) cost 12.4-15 ms of CPU time in float32
        against 17-18.3 ms in float64, alike on the Reference and CPU platforms (2-core AMD EPYC under load,
        interleaved runs; docs/ani1x.md).  The published parameters are float32, so float32 loses nothing in
        them; it rounds the absolute energy (about -1.3e6 kJ/mol for alanine dipeptide, a float32 spacing of
        0.125 kJ/mol): energies differ from float64 by 0.05 kJ/mol (std, 0.02 kT at 300 K; at most 0.11),
        forces by at most 3e-6 of the largest force.  float64 reproduces torchani's own float64 evaluation to
        the last bits.

    Returns
    -------
    torch.jit.ScriptModule
        :class:`TorchANIPotential`: positions in nm, shape (n_atoms, 3), to the absolute ANI-1x energy in
        kJ/mol (self energies included), a scalar tensor.

    Raises
    ------
    ModelMismatchError
        An element other than H, C, N, O (the message names the atoms).
    ModelFileError
        The shipped weights are missing or unreadable (a broken install).
    """
    _refuse_elements(list(elements), SYMBOLS_1X, "ANI-1x")
    return _pretrained_module(ani1x_architecture(), resource_path(ANI1X_STATE_DICT), elements, dtype, "ANI-1x")
