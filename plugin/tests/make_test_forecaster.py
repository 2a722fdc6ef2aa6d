"""Write the C++ tests' TorchScript forecaster: free flight of 3 argon-like atoms, x_k = x + k s v, v_k = v.

Usage: python make_test_forecaster.py OUT.pt
"""

import json
import sys

import torch


class FreeFlight(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.stride_ps = 0.002
        self.register_buffer("atomic_numbers", torch.tensor([18, 18, 18], dtype=torch.int64))
        self.register_buffer("scale", torch.ones((), dtype=torch.float64))

    def forward(self, positions: torch.Tensor, velocities: torch.Tensor, n_frames: int):
        x0, v0 = positions[:, -1], velocities[:, -1]
        spans = self.stride_ps * torch.arange(1, n_frames + 1, dtype=x0.dtype)
        new_x = x0[:, None] + self.scale * v0[:, None] * spans[None, :, None, None]
        return new_x, v0[:, None].expand(-1, n_frames, -1, -1).contiguous()


metadata = {"format": 1, "architecture": "free_flight", "elements": ["Ar", "Ar", "Ar"], "stride_ps": 0.002, "max_frames": 4,
            "history": 1, "setup": None, "potential": None, "constraints": "none", "temperature_K": 300.0,
            "data_fingerprint": None, "system_fingerprint": None, "extra": {"history": 7}}
torch.jit.save(torch.jit.script(FreeFlight()), sys.argv[1], _extra_files={"metadata.json": json.dumps(metadata, indent=1)})
