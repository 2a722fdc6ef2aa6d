"""``mdtrajnet``: an E(3)-equivariant attention network mapping (x, v, t) directly to x(t), v(t).

After MDtrajNet-1 (Dral group): atom-centred, equivariant, multi-head attention over atoms; the time
interval is an input, so every future frame ``k`` is predicted directly from the current state with span
``t_k = k * stride`` (no autoregression: errors of frame k do not feed frame k + 1).

Architecture
------------
* Invariant atom features: element embedding, speed |v_i|, span t.
* Invariant pair features (all pairs; 22 atoms need no cutoff): Gaussian radial basis of d_ij, the
  projections v_i.r_ij/d_ij and v_j.r_ij/d_ij, v_i.v_j, span t.
* ``layers`` blocks of multi-head attention over atoms whose logits carry a pair-feature bias and whose
  values are gated by the pair features, each followed by a feed-forward block (pre-norm residual).
* Vector features (d channels per atom, started from v_i) updated after each attention block by a
  PaiNN-style equivariant interaction (messages are scalar-weighted sums of neighbours' vectors and of
  unit vectors r_ij/|r_ij|; updates gate channels by invariants).
* Equivariant read-out: the corrections are linear combinations of the vector channels, for positions
  ``dx`` and velocities ``dv``:
  ``x(t) = x + v t + t^2 A dx``, ``v(t) = v + t A dv`` (A: acceleration scale), mass-weighted mean
  of the corrections removed.

Force-informed variant (``uses_forces=True``)
---------------------------------------------
The forces at the start state (kJ/mol/nm, already computed by the caller's energy check or integration
step) enter as accelerations ``a_i = F_i / m_i`` (centre-of-mass part removed): an invariant |a_i|, the
pair projections a_i.r_ij/d_ij and a_j.r_ij/d_ij, and a second vector channel started from a_i; and as a
physical base step, velocity Verlet from the start forces damped over a learned time ``t_c``:
``x(t) = x + v t + g(t) a t^2 / 2 + t^2 A dx``, ``v(t) = v + g(t) a t + t A dv``,
``g(t) = exp(-(t / t_c)^2)`` (``t_c`` starts at 10 fs), so short spans start from the exact Taylor step
and the learned correction takes over where one force evaluation says little.  Recorded as
``extra['uses_forces']`` in the metadata.

Guarantees (by construction, to floating-point rounding)
---------------------------------------------------------
Equivariant under rotations and reflections (O(3)), invariant under translations and Galilean boosts of
the input, centre of mass moves ballistically, total momentum conserved.  Markovian: history = 1.
"""

import math
from typing import Optional

import numpy as np
import torch
from torch import nn

from ._layers import EquivariantInteraction, RadialBasis, ResidualForecastModule, mlp
from .registry import register_architecture
from .torch_forecaster import masses_of

TIME_SCALE_PS = 0.1
"""Spans are read in units of 0.1 ps."""


class PairAttention(nn.Module):
    """Multi-head self-attention over atoms with pair-feature logit bias and value gates (invariant)."""

    def __init__(self, d_model, heads):
        super().__init__()
        if d_model % heads:
            raise ValueError(f"d_model ({d_model}) must be divisible by heads ({heads})")
        self.heads = heads
        self.head_dim = d_model // heads
        self.norm = nn.LayerNorm(d_model)
        self.qkv = nn.Linear(d_model, 3 * d_model)
        self.pair_bias = nn.Linear(d_model, heads)
        self.pair_gate = nn.Linear(d_model, d_model)
        self.out = nn.Linear(d_model, d_model)
        self.feed_forward = nn.Sequential(nn.LayerNorm(d_model), mlp(d_model, 2 * d_model, d_model))

    def forward(self, h, pairs):
        """h: (M, N, d) atom features; pairs: (M, N, N, d) pair features -> updated h."""
        m, n, d = h.shape
        q, k, v = self.qkv(self.norm(h)).view(m, n, 3, self.heads, self.head_dim).unbind(2)
        logits = torch.einsum("mihc,mjhc->mijh", q, k) / math.sqrt(self.head_dim) + self.pair_bias(pairs)
        weights = torch.softmax(logits, dim=2)
        gate = torch.sigmoid(self.pair_gate(pairs)).view(m, n, n, self.heads, self.head_dim)
        message = torch.einsum("mijh,mijhc->mihc", weights, gate * v[:, None]).reshape(m, n, d)
        h = h + self.out(message)
        return h + self.feed_forward(h)


class ForceInput(nn.Module):
    """What the force-informed variant adds: accelerations from forces, their vector channel, the damping time."""

    time_scale: float

    def __init__(self, d_model, masses):
        super().__init__()
        self.time_scale = TIME_SCALE_PS
        masses = torch.as_tensor(np.asarray(masses, dtype=float), dtype=torch.get_default_dtype())
        self.register_buffer("inverse_masses", 1.0 / masses)
        self.vector_in = nn.Linear(d_model, d_model)
        self.log_damping_time = nn.Parameter(torch.tensor(math.log(0.01 / TIME_SCALE_PS)))

    def accelerations(self, forces):
        """(B, N, 3) kJ/mol/nm -> (B, N, 3) nm/ps^2."""
        return forces * self.inverse_masses[:, None]

    def damping(self, t_ps):
        """``g(t) = exp(-(t / t_c)^2)``, t in ps (any shape)."""
        t_c = self.time_scale * torch.exp(self.log_damping_time)
        return torch.exp(-((t_ps / t_c) ** 2))


class MDtrajNet(ResidualForecastModule):
    """Equivariant direct trajectory predictor (see the module docstring).

    Parameters
    ----------
    elements : list of str
    stride_ps : float
        Time between frames, ps.
    history : int
        Must be 1 (the model is Markovian).
    d_model, layers, heads : int
        Width, number of attention blocks, attention heads.
    n_rbf : int
        Radial basis functions over [0, ``r_max_nm``].
    r_max_nm : float
        Range of the radial basis, nm.
    masses : array_like, optional
        Atom masses, amu (default: standard masses of ``elements``).
    uses_forces : bool
        Read the forces at the start state (see the module docstring).
    """

    rotation_equivariant = True
    """Whether forecasts commute with rotations by construction (recorded in the metadata)."""

    time_scale: float
    uses_forces: bool

    def __init__(self, elements, stride_ps, history=1, d_model=64, layers=2, heads=4, n_rbf=16, r_max_nm=1.0,
                 masses=None, uses_forces=False):
        super().__init__(elements, stride_ps, history, masses)
        self.time_scale = TIME_SCALE_PS
        self.uses_forces = bool(uses_forces)
        n_force = 2 if self.uses_forces else 0  # pair projections of the accelerations
        if history != 1:
            raise ValueError(f"mdtrajnet is Markovian and reads one state (history=1), got history={history}")
        self.embedding = nn.Embedding(119, d_model)
        self.atom_in = mlp(2 + n_force // 2, d_model, d_model)
        self.radial = RadialBasis(n_rbf, r_max_nm)
        self.pair_in = mlp(n_rbf + 4 + n_force, d_model, d_model)
        self.vector_in = nn.Linear(d_model, d_model)
        # None without forces: the state dict (and init_from of older models) is unchanged
        self.force_input = ForceInput(d_model, masses_of(elements) if masses is None else masses) if uses_forces else None
        self.blocks = nn.ModuleList([PairAttention(d_model, heads) for _ in range(layers)])
        self.interactions = nn.ModuleList([EquivariantInteraction(d_model) for _ in range(layers)])
        self.vector_out = nn.Linear(d_model, 2, bias=False)
        with torch.no_grad():  # with forces: zero, so the untrained model is the damped Verlet base step
            self.vector_out.weight.mul_(0.0 if self.uses_forces else 0.1)

    def forward(self, positions, velocities, n_frames: int, forces: Optional[torch.Tensor] = None):
        """(B, 1, N, 3) nm and nm/ps [, forces (B, N, 3) kJ/mol/nm] -> (B, n_frames, N, 3) positions and velocities."""
        x0, v0 = positions[:, -1], velocities[:, -1]
        b, n = x0.shape[0], x0.shape[1]
        spans = self.stride_ps * torch.arange(1, n_frames + 1, dtype=x0.dtype, device=x0.device)
        x = (self.remove_centre_of_mass(x0) / self.position_scale)[:, None].expand(b, n_frames, n, 3).reshape(-1, n, 3)
        v = (self.remove_centre_of_mass(v0) / self.velocity_scale)[:, None].expand(b, n_frames, n, 3)
        v = v.reshape(-1, n, 3)
        tau = (spans / self.time_scale)[None].expand(b, n_frames).reshape(-1)
        m = x.shape[0]

        r = x[:, :, None] - x[:, None, :]  # r_ij = x_i - x_j, (M, N, N, 3)
        distance = torch.sqrt((r * r).sum(-1) + 1e-12)
        unit_r = r / distance[..., None]
        pair_parts = [
            self.radial(distance * self.position_scale),
            (v[:, :, None] * unit_r).sum(-1, keepdim=True),
            (v[:, None, :] * unit_r).sum(-1, keepdim=True),
            (v[:, :, None] * v[:, None, :]).sum(-1, keepdim=True),
            tau[:, None, None, None].expand(m, n, n, 1),
        ]
        speed = torch.sqrt((v * v).sum(-1, keepdim=True))
        atom_parts = [speed, tau[:, None, None].expand(m, n, 1)]
        a0 = torch.zeros_like(x0)
        a = torch.zeros_like(v)
        force_input = self.force_input
        if force_input is not None:
            if forces is None:
                raise ValueError("this mdtrajnet model reads the forces at the start state: pass forces (kJ/mol/nm)")
            a0 = self.remove_centre_of_mass(force_input.accelerations(forces))
            a = (a0 / self.acceleration_scale)[:, None].expand(b, n_frames, n, 3).reshape(-1, n, 3)
            pair_parts.append((a[:, :, None] * unit_r).sum(-1, keepdim=True))
            pair_parts.append((a[:, None, :] * unit_r).sum(-1, keepdim=True))
            atom_parts.append(torch.sqrt((a * a).sum(-1, keepdim=True) + 1e-12))
        pairs = self.pair_in(torch.cat(pair_parts, dim=-1))
        h = self.embedding(self.atomic_numbers)[None] + self.atom_in(torch.cat(atom_parts, dim=-1))
        vec = v[..., None] * self.vector_in(h)[:, :, None]  # (M, N, 3, d)
        if force_input is not None:
            vec = vec + a[..., None] * force_input.vector_in(h)[:, :, None]
        for block, interaction in zip(self.blocks, self.interactions):
            h = block(h, pairs)
            h, vec = interaction(h, vec, pairs, unit_r)
        correction = self.vector_out(vec)  # (M, N, 3, 2)
        dx, dv = correction[..., 0], correction[..., 1]

        t = spans[None, :, None, None]
        dx = self.remove_centre_of_mass(dx.view(b, n_frames, n, 3)) * (self.acceleration_scale * t * t)
        dv = self.remove_centre_of_mass(dv.view(b, n_frames, n, 3)) * (self.acceleration_scale * t)
        if force_input is not None:  # velocity Verlet from the start forces, damped over t_c
            kick = force_input.damping(t) * a0[:, None]
            dx = dx + 0.5 * kick * t * t
            dv = dv + kick * t
        new_positions = x0[:, None] + v0[:, None] * t + dx
        new_velocities = v0[:, None] + dv
        return new_positions, new_velocities


register_architecture("mdtrajnet", MDtrajNet)
