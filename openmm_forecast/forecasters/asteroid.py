"""``asteroid``: a spatiotemporal transformer that reads a history window and forecasts autoregressively.

After ASTEROID (spatiotemporal information transformer for multi-step MD forecasting).

Architecture
------------
* Tokens: one per atom and history frame: centre-of-mass-free position and velocity (each frame's own
  centre of mass removed), element embedding, learned embedding of the frame's place in the history.
* Spatial local-global self-attention over the atoms of a frame: the *local* half of the heads attend only
  to atoms within ``local_hops`` bonds (molecular graph from ``bonds`` or a distance cutoff on
  ``reference_positions``, stored as a buffer), the *global* half to all atoms.
* Temporal encoder: self-attention of each atom over its ``history`` frames.
* Decoder, autoregressive: frame k is predicted from frame k - 1 (frame 0: the current state): spatial
  local-global attention over the atoms of frame k - 1, cross-attention of each atom to its encoded
  history, then a correction over the ballistic step of one stride ``s``:
  ``x_k = x_{k-1} + v_{k-1} s + s^2 A dx``, ``v_k = v_{k-1} + s A dv``, mass-weighted mean of the
  corrections removed.  The elapsed time ``k s`` is an input feature of step k.

Guarantees
----------
Exactly invariant under translations and Galilean boosts of the input; centre of mass moves
ballistically and momentum is conserved exactly.  **Not rotation-equivariant by construction**: train with
random rotations (:func:`openmm_forecast.forecasters.symmetry.random_rotations`) and measure the
remaining error (:func:`openmm_forecast.forecasters.symmetry.equivariance_error`).
"""

import numpy as np
import torch
from torch import nn

from ._layers import ResidualForecastModule, adjacency_matrix, mlp
from .registry import register_architecture

TIME_SCALE_PS = 0.1
"""Elapsed times are read in units of 0.1 ps."""


class LocalGlobalAttention(nn.Module):
    """Self-attention over atoms: half the heads restricted to graph neighbours, half global."""

    def __init__(self, d_model, heads, local_mask):
        super().__init__()
        if d_model % 2 or heads % 2 or (d_model // 2) % (heads // 2):
            raise ValueError(f"d_model ({d_model}) and heads ({heads}) must be even, d_model/2 divisible by heads/2")
        self.norm = nn.LayerNorm(d_model)
        self.down = nn.Linear(d_model, d_model)
        self.local = nn.MultiheadAttention(d_model // 2, heads // 2, batch_first=True)
        self.glob = nn.MultiheadAttention(d_model // 2, heads // 2, batch_first=True)
        self.register_buffer("blocked", ~local_mask)
        self.feed_forward = nn.Sequential(nn.LayerNorm(d_model), mlp(d_model, 2 * d_model, d_model))

    def forward(self, h):
        """h: (M, N, d) -> (M, N, d)."""
        local_in, global_in = self.down(self.norm(h)).chunk(2, dim=-1)
        local_out = self.local(local_in, local_in, local_in, attn_mask=self.blocked, need_weights=False)[0]
        global_out = self.glob(global_in, global_in, global_in, need_weights=False)[0]
        h = h + torch.cat([local_out, global_out], dim=-1)
        return h + self.feed_forward(h)


class TemporalAttention(nn.Module):
    """Attention of each atom's query tokens to a sequence of that atom's tokens (self or cross)."""

    def __init__(self, d_model, heads):
        super().__init__()
        self.norm_query = nn.LayerNorm(d_model)
        self.norm_memory = nn.LayerNorm(d_model)
        self.attention = nn.MultiheadAttention(d_model, heads, batch_first=True)
        self.feed_forward = nn.Sequential(nn.LayerNorm(d_model), mlp(d_model, 2 * d_model, d_model))

    def forward(self, query, memory):
        """query: (M, Q, d), memory: (M, T, d) -> (M, Q, d)."""
        q = self.norm_query(query)
        m = self.norm_memory(memory)
        h = query + self.attention(q, m, m, need_weights=False)[0]
        return h + self.feed_forward(h)


class Asteroid(ResidualForecastModule):
    """Spatiotemporal transformer forecaster (see the module docstring).

    Parameters
    ----------
    elements : list of str
    stride_ps : float
        Time between frames (and between history states), ps.
    history : int
        Number of states read (the current one and ``history - 1`` earlier ones, oldest first).
    bonds : list of (int, int), optional
        Molecular graph for the local attention (0-based atom pairs).
    reference_positions : array_like, shape (N, 3), optional
        Used when ``bonds`` is None: atoms closer than ``cutoff_nm`` (nm) are bonded.
    cutoff_nm : float
        Bond cutoff for ``reference_positions``, nm.
    local_hops : int
        Local attention reaches atoms up to this many bonds away.
    d_model, layers, heads : int
        Width, number of encoder and decoder blocks, attention heads (even).
    masses : array_like, optional
        Atom masses, amu (default: standard masses of ``elements``).
    """

    rotation_equivariant = False
    """Whether forecasts commute with rotations by construction (recorded in the metadata)."""

    time_scale: float

    def __init__(self, elements, stride_ps, history=1, bonds=None, reference_positions=None, cutoff_nm=0.16,
                 local_hops=2, d_model=64, layers=2, heads=4, masses=None):
        super().__init__(elements, stride_ps, history, masses)
        self.time_scale = TIME_SCALE_PS
        n = len(elements)
        adjacency = adjacency_matrix(n, bonds, reference_positions, cutoff_nm) + np.eye(n)
        local = np.linalg.matrix_power(adjacency, int(local_hops)) > 0
        self.register_buffer("local_mask", torch.tensor(local))
        mask = self.local_mask
        self.embedding = nn.Embedding(119, d_model)
        self.token_in = mlp(6, d_model, d_model)
        self.history_embedding = nn.Parameter(0.02 * torch.randn(history, d_model))
        self.step_in = mlp(7, d_model, d_model)
        self.encoder_spatial = nn.ModuleList([LocalGlobalAttention(d_model, heads, mask) for _ in range(layers)])
        self.encoder_temporal = nn.ModuleList([TemporalAttention(d_model, heads) for _ in range(layers)])
        self.decoder_spatial = nn.ModuleList([LocalGlobalAttention(d_model, heads, mask) for _ in range(layers)])
        self.decoder_cross = nn.ModuleList([TemporalAttention(d_model, heads) for _ in range(layers)])
        self.head = nn.Sequential(nn.LayerNorm(d_model), mlp(d_model, d_model, 6, last_gain=0.1))

    def _state_features(self, x, v):
        """Centre-of-mass-free, scaled positions and velocities: (..., N, 3) x2 -> (..., N, 6)."""
        return torch.cat(
            [self.remove_centre_of_mass(x) / self.position_scale, self.remove_centre_of_mass(v) / self.velocity_scale],
            dim=-1,
        )

    def forward(self, positions, velocities, n_frames: int):
        """(B, H, N, 3) nm and nm/ps -> (B, n_frames, N, 3) positions and velocities at k * stride."""
        b, h, n = positions.shape[0], positions.shape[1], positions.shape[2]
        d = self.history_embedding.shape[1]
        species = self.embedding(self.atomic_numbers)
        tokens = self.token_in(self._state_features(positions, velocities)) + species
        tokens = tokens + self.history_embedding[None, :, None, :]
        for spatial, temporal in zip(self.encoder_spatial, self.encoder_temporal):
            tokens = spatial(tokens.reshape(b * h, n, d)).view(b, h, n, d)
            per_atom = tokens.transpose(1, 2).reshape(b * n, h, d)
            tokens = temporal(per_atom, per_atom).view(b, n, h, d).transpose(1, 2)
        memory = tokens.transpose(1, 2).reshape(b * n, h, d)

        s = self.stride_ps
        x, v = positions[:, -1], velocities[:, -1]
        out_x = []
        out_v = []
        for k in range(n_frames):
            elapsed = torch.full_like(x[..., :1], k * s / self.time_scale)
            query = self.step_in(torch.cat([self._state_features(x, v), elapsed], dim=-1)) + species
            for decoder_spatial, cross in zip(self.decoder_spatial, self.decoder_cross):
                query = decoder_spatial(query)
                query = cross(query.reshape(b * n, 1, d), memory).view(b, n, d)
            correction = self.head(query)
            dx = self.remove_centre_of_mass(correction[..., :3]) * (self.acceleration_scale * s * s)
            dv = self.remove_centre_of_mass(correction[..., 3:]) * (self.acceleration_scale * s)
            x = x + v * s + dx
            v = v + dv
            out_x.append(x)
            out_v.append(v)
        return torch.stack(out_x, dim=1), torch.stack(out_v, dim=1)


register_architecture("asteroid", Asteroid)
