"""Import order: TorchForce must work whether the user imported openmm or torch first."""

import subprocess
import sys
import textwrap

import pytest

SCRIPT = textwrap.dedent(
    """
    {first_import}
    import openmm_forecast
    import torch, openmm, openmmtorch

    class Harmonic(torch.nn.Module):
        def forward(self, positions):
            return torch.sum(positions ** 2)

    module = torch.jit.script(Harmonic())
    system = openmm.System()
    for _ in range(2):
        system.addParticle(1.0)
    system.addForce(openmmtorch.TorchForce(module))
    context = openmm.Context(system, openmm.VerletIntegrator(0.001), openmm.Platform.getPlatformByName("Reference"))
    context.setPositions([[0.1, 0.2, 0.3], [0.0, -0.5, 0.0]])
    state = context.getState(getEnergy=True, getForces=True)
    energy = state.getPotentialEnergy()._value
    force = state.getForces(asNumpy=True)._value
    # E = |r|^2, F = -2 r
    assert abs(energy - 0.39) < 1e-6, energy
    assert abs(force[1][1] - 1.0) < 1e-6, force
    print("ok")
    """
)


@pytest.mark.parametrize("first_import", ["import openmm", "import torch", ""])
def test_torchforce_works_in_any_import_order(first_import, tmp_path):
    script = tmp_path / "check_import_order.py"  # TorchScript needs the module source in a file
    script.write_text(SCRIPT.format(first_import=first_import))
    result = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and "ok" in result.stdout, result.stderr[-2000:]


def test_ml_setup_builds_without_the_simtk_deprecation_warning_of_openmmtorch():
    # openmmtorch 1.5 imports simtk.openmm, whose alias logs a deprecation warning on the root logger.
    code = "import openmm_forecast as of; of.build_system('ml', potential_file='ala2-ani-amber14'); print('ok')"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and "ok" in result.stdout, result.stderr[-2000:]
    assert "simtk" not in result.stderr, result.stderr[-2000:]
