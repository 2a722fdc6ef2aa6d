"""Rotations for training augmentation, and a measure of how far a forecaster is from equivariance.

The true dynamics commute with rotations: forecasting a rotated state must give the rotated forecast.
``mdtrajnet`` and ``multiscale_ode`` satisfy this by construction; ``asteroid`` only approximately, after
training on randomly rotated samples (:func:`random_rotations`).
"""

import numpy as np
import torch


def random_rotations(n, generator=None, dtype=torch.float32, device="cpu"):
    """Uniformly distributed (Haar) random rotation matrices.

    Parameters
    ----------
    n : int
        Number of matrices.
    generator : torch.Generator, optional
        Random number source (for reproducible augmentation).
    dtype, device
        Of the returned tensor.

    Returns
    -------
    torch.Tensor, shape (n, 3, 3)
        Proper rotations (determinant +1).  Rotate positions of shape (n, ..., 3) with
        ``torch.einsum('bij,b...j->b...i', rotations, positions)``.
    """
    gaussian = torch.randn(n, 3, 3, generator=generator, dtype=torch.float64)
    q, r = torch.linalg.qr(gaussian)
    q = q * torch.sign(torch.diagonal(r, dim1=-2, dim2=-1))[:, None, :]
    q[torch.linalg.det(q) < 0, :, 0] *= -1.0
    return q.to(dtype=dtype, device=device)


def equivariance_error(forecaster, positions, velocities, n_frames=None, n_rotations=4, seed=0, forces=None):
    """Root-mean-square violation of rotation equivariance, ``f(R s) - R f(s)``.

    Parameters
    ----------
    forecaster : Forecaster
    positions, velocities : numpy.ndarray, shape (n_walkers, history, n_atoms, 3)
        States to test, nm and nm/ps.
    n_frames : int, optional
        Frames to forecast (default: the forecaster's maximum).
    n_rotations : int
        Random rotations tried (each applied to every walker).
    seed : int
        Seed of the rotations.
    forces : numpy.ndarray, shape (n_walkers, n_atoms, 3), optional
        Start forces (kJ/mol/nm) for forecasters that read them; rotated with the state.

    Returns
    -------
    dict
        ``positions_nm`` and ``velocities_nm_ps``: RMS violation over rotations, walkers, frames and
        atoms; ``relative_positions`` and ``relative_velocities``: the same divided by the RMS change
        the forecast makes from the ballistic prediction (position) or the current velocity (velocity),
        so 1 means "as large as what the model predicts".
    """
    positions = np.asarray(positions, dtype=np.float64)
    velocities = np.asarray(velocities, dtype=np.float64)
    x, v = forecaster.forecast(positions, velocities, n_frames, forces=forces)
    rotations = random_rotations(n_rotations, torch.Generator().manual_seed(seed), torch.float64).numpy()
    position_errors, velocity_errors = [], []
    for rotation in rotations:
        rotated_forces = None if forces is None else np.asarray(forces) @ rotation.T
        rx, rv = forecaster.forecast(positions @ rotation.T, velocities @ rotation.T, n_frames, forces=rotated_forces)
        position_errors.append(rx - x @ rotation.T)
        velocity_errors.append(rv - v @ rotation.T)
    spans = forecaster.metadata.stride_ps * np.arange(1, x.shape[1] + 1)[None, :, None, None]
    ballistic = positions[:, -1:] + velocities[:, -1:] * spans
    result = {"positions_nm": _rms(position_errors), "velocities_nm_ps": _rms(velocity_errors)}
    result["relative_positions"] = result["positions_nm"] / max(_rms(x - ballistic), 1e-300)
    result["relative_velocities"] = result["velocities_nm_ps"] / max(_rms(v - velocities[:, -1:]), 1e-300)
    return result


def _rms(values):
    return float(np.sqrt(np.mean(np.square(values))))
