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

Guarantees (by construction, to floating-point rounding)
---------------------------------------------------------
Equivariant under rotations and reflections (O(3)), invariant under translations and Galilean boosts of
the input, centre of mass moves ballistically, total momentum conserved.  Markovian: history = 1.
"""

import math

import torch
from torch import nn

from ._layers import EquivariantInteraction, RadialBasis, ResidualForecastModule, mlp
from .registry import register_architecture

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
    """

    rotation_equivariant = True
    """Whether forecasts commute with rotations by construction (recorded in the metadata)."""

    time_scale: float

    def __init__(self, elements, stride_ps, history=1, d_model=64, layers=2, heads=4, n_rbf=16, r_max_nm=1.0,
                 masses=None):
        super().__init__(elements, stride_ps, history, masses)
        self.time_scale = TIME_SCALE_PS
        if history != 1:
            raise ValueError(f"mdtrajnet is Markovian and reads one state (history=1), got history={history}")
        self.embedding = nn.Embedding(119, d_model)
        self.atom_in = mlp(2, d_model, d_model)
        self.radial = RadialBasis(n_rbf, r_max_nm)
        self.pair_in = mlp(n_rbf + 4, d_model, d_model)
        self.vector_in = nn.Linear(d_model, d_model)
        self.blocks = nn.ModuleList([PairAttention(d_model, heads) for _ in range(layers)])
        self.interactions = nn.ModuleList([EquivariantInteraction(d_model) for _ in range(layers)])
        self.vector_out = nn.Linear(d_model, 2, bias=False)
        with torch.no_grad():
            self.vector_out.weight.mul_(0.1)

    def forward(self, positions, velocities, n_frames: int):
        """(B, 1, N, 3) nm and nm/ps -> (B, n_frames, N, 3) positions and velocities at k * stride."""
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
        pair_features = torch.cat(
            [
                self.radial(distance * self.position_scale),
                (v[:, :, None] * unit_r).sum(-1, keepdim=True),
                (v[:, None, :] * unit_r).sum(-1, keepdim=True),
                (v[:, :, None] * v[:, None, :]).sum(-1, keepdim=True),
                tau[:, None, None, None].expand(m, n, n, 1),
            ],
            dim=-1,
        )
        pairs = self.pair_in(pair_features)
        speed = torch.sqrt((v * v).sum(-1, keepdim=True))
        h = self.embedding(self.atomic_numbers)[None] + self.atom_in(
            torch.cat([speed, tau[:, None, None].expand(m, n, 1)], dim=-1)
        )
        vec = v[..., None] * self.vector_in(h)[:, :, None]  # (M, N, 3, d)
        for block, interaction in zip(self.blocks, self.interactions):
            h = block(h, pairs)
            h, vec = interaction(h, vec, pairs, unit_r)
        correction = self.vector_out(vec)  # (M, N, 3, 2)
        dx, dv = correction[..., 0], correction[..., 1]

        t = spans[None, :, None, None]
        dx = self.remove_centre_of_mass(dx.view(b, n_frames, n, 3)) * (self.acceleration_scale * t * t)
        dv = self.remove_centre_of_mass(dv.view(b, n_frames, n, 3)) * (self.acceleration_scale * t)
        new_positions = x0[:, None] + v0[:, None] * t + dx
        new_velocities = v0[:, None] + dv
        return new_positions, new_velocities


register_architecture("mdtrajnet", MDtrajNet)
