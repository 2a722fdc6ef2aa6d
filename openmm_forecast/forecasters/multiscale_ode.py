"""``multiscale_ode``: graph-Fourier spatial scales evolved by a learned, equivariant neural ODE.

After "Joint modeling of spatial and temporal multiscales in molecular dynamics" (graph Fourier transform
+ neural ODEs).

Architecture
------------
* Molecular graph (``bonds``, or a distance cutoff on ``reference_positions``) and its Laplacian
  ``L = D - A``; the orthonormal eigenvectors ``U`` (graph-Fourier modes, ascending graph frequency) are a
  buffer.  Modes are split into ``n_scales`` groups of (nearly) equal size: low, ..., high frequency.
* State of the ODE: graph-Fourier coefficients of the displacement from the start, ``D = U^T (x - x0)``,
  and of the velocities, ``W = U^T v`` (each a 3-vector per mode, so rotations act on them as on atoms).
* Vector field: ``dD/dt = W``, ``dW/dt = U^T a`` with ``a`` a learned acceleration that *sees all scales*:
  the atoms' current positions ``x0 + U D`` and velocities ``U W`` (invariant pair features: radial basis
  of distances, velocity projections on interatomic vectors, v_i.v_j), plus the squared amplitudes of
  every scale's displacement and velocity as global invariant inputs, go through ``layers`` PaiNN-style
  equivariant interactions (scalar and vector channels, vectors started from v_i).  One read-out channel
  of equivariant accelerations per scale, ``f^s``, drives the modes of that scale only:
  ``a = P_mom U sum_s M_s U^T f^s`` (``M_s`` selects scale s; ``P_mom`` removes the mass-weighted mean,
  so momentum is conserved inside the ODE too).
* Integration: fixed-step RK4 (no torchdiffeq), ``ode_steps_per_stride`` steps per stride; any span (not
  only multiples of the stride, see :meth:`MultiscaleODE.forecast_spans`) is reached with a step count
  proportional to it.  The dynamics are autonomous, so the span enters through the integration itself.
  With zero learned acceleration the result is exactly ballistic.

Guarantees (by construction, to floating-point rounding)
---------------------------------------------------------
Equivariant under rotations and reflections (O(3)), invariant under translations and Galilean boosts;
centre of mass moves ballistically, total momentum conserved.  Markovian: history = 1.
"""

import math
from typing import List

import numpy as np
import torch
from torch import nn

from ._layers import EquivariantInteraction, RadialBasis, ResidualForecastModule, adjacency_matrix, mlp
from .registry import register_architecture


def graph_fourier_basis(adjacency):
    """Eigenvalues (ascending) and orthonormal eigenvectors (columns) of the graph Laplacian ``D - A``."""
    laplacian = np.diag(adjacency.sum(1)) - adjacency
    return np.linalg.eigh(laplacian)


class MultiscaleODE(ResidualForecastModule):
    """Graph-Fourier multiscale neural-ODE forecaster (see the module docstring).

    Parameters
    ----------
    elements : list of str
    stride_ps : float
        Time between frames, ps.
    history : int
        Must be 1 (the model is Markovian).
    bonds : list of (int, int), optional
        Molecular graph (0-based atom pairs).
    reference_positions : array_like, shape (N, 3), optional
        Used when ``bonds`` is None: atoms closer than ``cutoff_nm`` (nm) are bonded.
    cutoff_nm : float
        Bond cutoff for ``reference_positions``, nm.
    n_scales : int
        Number of spatial scales (groups of graph-Fourier modes).
    d_model, layers : int
        Width and number of message-passing layers of the vector field.
    n_rbf : int
        Radial basis functions over [0, ``r_max_nm``].
    r_max_nm : float
        Range of the radial basis, nm.
    ode_steps_per_stride : int
        RK4 steps per stride (the step is ``stride_ps / ode_steps_per_stride``; at most that for other spans).
    max_acceleration : float
        Soft bound on the learned accelerations, nm/ps^2 (default 1e4: ten times the largest force on a
        hydrogen atom of a force field at 300 K), so that a stiff field cannot make RK4 diverge.
    masses : array_like, optional
        Atom masses, amu (default: standard masses of ``elements``).
    """

    rotation_equivariant = True
    """Whether forecasts commute with rotations by construction (recorded in the metadata)."""

    max_step_ps: float
    max_acceleration: float

    def __init__(self, elements, stride_ps, history=1, bonds=None, reference_positions=None, cutoff_nm=0.16,
                 n_scales=3, d_model=32, layers=1, n_rbf=16, r_max_nm=1.0, ode_steps_per_stride=4,
                 max_acceleration=1e4, masses=None):
        super().__init__(elements, stride_ps, history, masses)
        if history != 1:
            raise ValueError(f"multiscale_ode is Markovian and reads one state (history=1), got history={history}")
        n = len(elements)
        if not 1 <= n_scales <= n:
            raise ValueError(f"n_scales must be in [1, {n}], got {n_scales}")
        if int(ode_steps_per_stride) < 1:
            raise ValueError(f"ode_steps_per_stride must be >= 1, got {ode_steps_per_stride}")
        self.max_step_ps = float(stride_ps) / int(ode_steps_per_stride)
        self.max_acceleration = float(max_acceleration)
        frequencies, basis = graph_fourier_basis(adjacency_matrix(n, bonds, reference_positions, cutoff_nm))
        masks = np.zeros((n_scales, n))
        for scale, modes in enumerate(np.array_split(np.arange(n), n_scales)):
            masks[scale, modes] = 1.0
        dtype = torch.get_default_dtype()
        self.register_buffer("graph_frequencies", torch.tensor(frequencies, dtype=dtype))
        self.register_buffer("basis", torch.tensor(basis, dtype=dtype))
        self.register_buffer("scale_masks", torch.tensor(masks, dtype=dtype))
        self.embedding = nn.Embedding(119, d_model)
        self.atom_in = mlp(1 + 2 * n_scales, d_model, d_model)
        self.radial = RadialBasis(n_rbf, r_max_nm)
        self.pair_in = mlp(n_rbf + 3, d_model, d_model)
        self.vector_in = nn.Linear(d_model, d_model)
        self.interactions = nn.ModuleList([EquivariantInteraction(d_model) for _ in range(layers)])
        self.force_out = nn.Linear(d_model, n_scales, bias=False)
        with torch.no_grad():
            self.force_out.weight.mul_(0.1)

    def to_modes(self, values):
        """Graph-Fourier transform over atoms: (B, N, 3) -> (B, N modes, 3)."""
        return torch.einsum("nm,bnc->bmc", self.basis, values)

    def from_modes(self, coefficients):
        """Inverse graph-Fourier transform: (B, N modes, 3) -> (B, N, 3)."""
        return torch.einsum("nm,bmc->bnc", self.basis, coefficients)

    def acceleration(self, x0, displacement, velocity_modes):
        """dW/dt in nm/ps^2: x0 (B, N, 3) nm centre-of-mass free; D, W (B, N modes, 3) nm, nm/ps."""
        x = (x0 + self.from_modes(displacement)) / self.position_scale
        v = self.from_modes(velocity_modes) / self.velocity_scale
        b, n = x.shape[0], x.shape[1]
        scale_amplitudes = torch.cat(
            [
                (self.scale_masks[None] * (displacement * displacement).sum(-1)[:, None]).sum(-1)
                / (self.position_scale * self.position_scale),
                (self.scale_masks[None] * (velocity_modes * velocity_modes).sum(-1)[:, None]).sum(-1)
                / (self.velocity_scale * self.velocity_scale),
            ],
            dim=-1,
        ) / n  # (B, 2 S)
        r = x[:, :, None] - x[:, None, :]
        distance = torch.sqrt((r * r).sum(-1) + 1e-12)
        unit_r = r / distance[..., None]
        pairs = self.pair_in(
            torch.cat(
                [
                    self.radial(distance * self.position_scale),
                    (v[:, :, None] * unit_r).sum(-1, keepdim=True),
                    (v[:, None, :] * unit_r).sum(-1, keepdim=True),
                    (v[:, :, None] * v[:, None, :]).sum(-1, keepdim=True),
                ],
                dim=-1,
            )
        )
        speed = torch.sqrt((v * v).sum(-1, keepdim=True))
        h = self.embedding(self.atomic_numbers)[None] + self.atom_in(
            torch.cat([speed, scale_amplitudes[:, None].expand(b, n, scale_amplitudes.shape[-1])], dim=-1)
        )
        vec = v[..., None] * self.vector_in(h)[:, :, None]  # (B, N, 3, d)
        for interaction in self.interactions:
            h, vec = interaction(h, vec, pairs, unit_r)
        forces = self.force_out(vec).transpose(2, 3)  # (B, N, S, 3): one acceleration channel per scale
        mode_forces = torch.einsum("nm,bnsc->bmsc", self.basis, forces)  # (B, modes, S, 3)
        selected = (mode_forces * self.scale_masks.t()[None, :, :, None]).sum(2)
        # Soft bound |a| < max_acceleration (direction kept): a stiff field cannot blow up the integration.
        magnitude = torch.sqrt((selected * selected).sum(-1, keepdim=True) + 1e-12)
        bound = self.max_acceleration / self.acceleration_scale
        selected = selected * (bound * torch.tanh(magnitude / bound) / magnitude)
        atom_acceleration = self.remove_centre_of_mass(self.from_modes(selected))
        return self.to_modes(atom_acceleration) * self.acceleration_scale

    def _rk4(self, x0, displacement, velocity_modes, span_ps: float):
        """Advance (D, W) by ``span_ps`` with RK4 steps of at most ``max_step_ps``."""
        n_steps = max(1, int(math.ceil(span_ps / self.max_step_ps - 1e-9)))
        h = span_ps / n_steps
        for _ in range(n_steps):
            k1_d, k1_w = velocity_modes, self.acceleration(x0, displacement, velocity_modes)
            k2_d = velocity_modes + 0.5 * h * k1_w
            k2_w = self.acceleration(x0, displacement + 0.5 * h * k1_d, k2_d)
            k3_d = velocity_modes + 0.5 * h * k2_w
            k3_w = self.acceleration(x0, displacement + 0.5 * h * k2_d, k3_d)
            k4_d = velocity_modes + h * k3_w
            k4_w = self.acceleration(x0, displacement + h * k3_d, k4_d)
            displacement = displacement + h / 6.0 * (k1_d + 2.0 * k2_d + 2.0 * k3_d + k4_d)
            velocity_modes = velocity_modes + h / 6.0 * (k1_w + 2.0 * k2_w + 2.0 * k3_w + k4_w)
        return displacement, velocity_modes

    @torch.jit.export
    def forecast_spans(self, positions, velocities, spans_ps: List[float]):
        """States at arbitrary increasing times after the current one.

        Parameters
        ----------
        positions, velocities : Tensor, shape (B, 1, N, 3)
            Current state, nm and nm/ps.
        spans_ps : list of float
            Increasing times after the current state, ps (need not be multiples of the stride).

        Returns
        -------
        positions, velocities : Tensor, shape (B, len(spans_ps), N, 3)
        """
        x_start, v_start = positions[:, -1], velocities[:, -1]
        x0 = self.remove_centre_of_mass(x_start)
        v_free = self.remove_centre_of_mass(v_start)
        displacement = torch.zeros_like(x0)
        velocity_modes = self.to_modes(v_free)
        out_x = []
        out_v = []
        elapsed = 0.0
        for span in spans_ps:
            if span <= elapsed:
                raise ValueError("spans_ps must be positive and increasing")
            displacement, velocity_modes = self._rk4(x0, displacement, velocity_modes, span - elapsed)
            elapsed = span
            dx = self.remove_centre_of_mass(self.from_modes(displacement) - v_free * span)
            dv = self.remove_centre_of_mass(self.from_modes(velocity_modes) - v_free)
            out_x.append(x_start + v_start * span + dx)
            out_v.append(v_start + dv)
        return torch.stack(out_x, dim=1), torch.stack(out_v, dim=1)

    def forward(self, positions, velocities, n_frames: int):
        """(B, 1, N, 3) nm and nm/ps -> (B, n_frames, N, 3) positions and velocities at k * stride."""
        spans: List[float] = [self.stride_ps * (k + 1) for k in range(n_frames)]
        return self.forecast_spans(positions, velocities, spans)


register_architecture("multiscale_ode", MultiscaleODE)
