"""Helpers shared by the tests: a tiny NVE data file, a tiny architecture, a potential that fails far away."""

import numpy as np
import torch
from openmm import unit

from openmm_forecast.forecasters import available_architectures, register_architecture
from openmm_forecast.forecasters.torch_forecaster import atomic_numbers_of

TINY = "tiny_test_mlp"


class TinyMLP(torch.nn.Module):
    """Free flight plus an MLP correction of the current state (not equivariant; for tests only)."""

    def __init__(self, elements, stride_ps, history, hidden=64, max_frames=3):
        super().__init__()
        n = len(elements)
        self.stride_ps = float(stride_ps)
        self.n_atoms = n
        self.max_frames = int(max_frames)
        self.register_buffer("atomic_numbers", torch.tensor(atomic_numbers_of(elements), dtype=torch.int64))
        self.net = torch.nn.Sequential(
            torch.nn.Linear(6 * n, hidden), torch.nn.Tanh(), torch.nn.Linear(hidden, self.max_frames * n * 6)
        )
        torch.nn.init.zeros_(self.net[2].weight)
        torch.nn.init.zeros_(self.net[2].bias)

    def forward(self, positions: torch.Tensor, velocities: torch.Tensor, n_frames: int):
        x0, v0 = positions[:, -1], velocities[:, -1]
        batch = x0.shape[0]
        centred = x0 - x0.mean(dim=1, keepdim=True)
        features = torch.cat([10.0 * centred.reshape(batch, -1), v0.reshape(batch, -1)], dim=1)
        out = self.net(features).reshape(batch, self.max_frames, self.n_atoms, 6)[:, :n_frames]
        spans = self.stride_ps * torch.arange(1, n_frames + 1, dtype=x0.dtype, device=x0.device)
        new_x = x0[:, None] + v0[:, None] * spans[None, :, None, None] + 0.01 * out[..., :3]
        new_v = v0[:, None] + out[..., 3:]
        return new_x, new_v


if TINY not in available_architectures():
    register_architecture(TINY, TinyMLP)


def make_nve_file(path, n_segments=12, segment_fs=60, seed=3):
    """A tiny NVE data file of amber14-vacuum alanine dipeptide (HBonds): frames every 10 fs, 0.5 fs steps."""
    from openmm_forecast import build_system
    from openmm_forecast.data import generate_nve_segments

    return generate_nve_segments(
        build_system("amber14-vacuum"), str(path), n_segments=n_segments,
        segment_length=segment_fs * unit.femtosecond, frame_interval=10 * unit.femtosecond,
        nve_timestep=0.5 * unit.femtosecond, spacing=0.1 * unit.picosecond,
        equilibration=1.0 * unit.picosecond, seed=seed, platform="Reference", progress=False,
    )


def tiny_config(data, out, **changes):
    """A training config for the tiny architecture (small and fast)."""
    config = dict(
        data=[str(data)], out=str(out), architecture=TINY, hyperparameters={"hidden": 32, "max_frames": 3},
        stride_ps=0.01, max_frames=3, history=1, validation_fraction=0.25, epochs=2, batch_size=16,
        learning_rate=3e-3, warmup_steps=2, device="cpu", num_threads=1, progress=False, augment_rotations=False,
    )
    config.update(changes)
    return config


class FailsFarAway:
    """PythonForce computation: no energy, but a PotentialEvaluationError when the molecule is 5 nm away."""

    def __call__(self, state):
        from openmm_forecast.errors import POTENTIAL_EVALUATION_FAILED, PotentialEvaluationError

        x = state.getPositions(asNumpy=True).value_in_unit(unit.nanometer)
        if np.linalg.norm(x.mean(axis=0)) > 5.0:
            raise PotentialEvaluationError(f"{POTENTIAL_EVALUATION_FAILED}: SCF not converged (test double)")
        return 0.0, np.zeros(x.shape)


def wells_system(expression, n_particles, **parameters):
    """Carbon atoms 1 nm apart, each in its own well ``expression`` of (dx, y, z); no bonds, no CM remover.

    ``dx`` is the displacement along x from the particle's own centre; ``parameters`` become global parameters.
    """
    from openmm_forecast._runtime import openmm as mm

    system = mm.System()
    force = mm.CustomExternalForce(expression.replace("dx", "(x-x0)"))
    for name, value in parameters.items():
        force.addGlobalParameter(name, value)
    force.addPerParticleParameter("x0")
    for i in range(n_particles):
        system.addParticle(12.0)
        force.addParticle(i, [float(i)])
    system.addForce(force)
    return system


def wells_topology(n_particles):
    """The Topology of :func:`wells_system`: ``n_particles`` carbon atoms, one residue each, no bonds."""
    from openmm import app

    topology = app.Topology()
    chain = topology.addChain()
    for _ in range(n_particles):
        topology.addAtom("C", app.element.carbon, topology.addResidue("C", chain))
    return topology
