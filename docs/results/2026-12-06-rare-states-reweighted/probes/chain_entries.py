"""Probe: alpha_L entry rate per CPU second of the exact ghmc chain with barrier-lowered surrogates."""
import os, sys, time, json
os.environ["OMP_NUM_THREADS"] = "1"
import numpy as np
import openmm
from openmm import unit
from openmm_forecast import build_system
from openmm_forecast.shipped import resource_path
from openmm_forecast.barriers import lower_barriers, load_surfaces
from openmm_forecast.integrators import velocity_verlet_integrator

strength, jump_ps, cpu_s, seed = float(sys.argv[1]), float(sys.argv[2]), float(sys.argv[3]), int(sys.argv[4])
kT = 0.0083144626 * 300
t = build_system("amber14-obc2")
base = openmm.XmlSerializer.deserialize(open(resource_path("surrogates/fit-amber14-obc2.xml")).read())
base = openmm.XmlSerializer.clone(base)
for i in reversed(range(base.getNumForces())):
    if isinstance(base.getForce(i), openmm.CMMotionRemover): base.removeForce(i)
surf = load_surfaces("/work/main/runs/lower-barriers/amber14-obc2/surface.npz")
surr = lower_barriers(base, surf, strength) if strength > 0 else base
cpu = openmm.Platform.getPlatformByName("CPU")
tctx = openmm.Context(t.system, openmm.LangevinMiddleIntegrator(300, 1, 0.002), cpu, {"Threads": "1"})
tctx.setPositions(t.positions); openmm.LocalEnergyMinimizer.minimize(tctx)
sint = velocity_verlet_integrator(0.002 * unit.picosecond, update_context_state=False)
sctx = openmm.Context(surr, sint, openmm.Platform.getPlatformByName("Reference"))
masses = np.array([t.system.getParticleMass(i).value_in_unit(unit.dalton) for i in range(t.system.getNumParticles())])
rng = np.random.default_rng(seed)
n_steps = int(round(jump_ps / 0.002))
x = tctx.getState(getPositions=True).getPositions(asNumpy=True).value_in_unit(unit.nanometer)
U = tctx.getState(getEnergy=True).getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole)
def dihedral(p, a, b, c, d):
    b0 = p[a]-p[b]; b1 = p[c]-p[b]; b2 = p[d]-p[c]
    b1 /= np.linalg.norm(b1); v = b0 - b0.dot(b1)*b1; w = b2 - b2.dot(b1)*b1
    return np.degrees(np.arctan2(np.cross(b1, v).dot(w), v.dot(w)))
def basin(p):
    phi = dihedral(p, 4, 6, 8, 14); return "L" if phi > 0 else "R"
series_plain, series_rb = [], []
rec = dict(jumps=0, acc=0, prop_L_from_R=0, acc_L_from_R=0, prop_R_from_L=0, acc_R_from_L=0, n_in_L=0)
start = time.process_time()
while time.process_time() - start < cpu_s:
    v = rng.standard_normal(x.shape) * np.sqrt(kT / masses)[:, None]
    v -= (masses[:, None] * v).sum(0) / masses.sum()
    sctx.setPositions(x); sctx.setVelocities(v); sctx.applyVelocityConstraints(1e-8)
    st = sctx.getState(getVelocities=True, getEnergy=True)
    v0 = st.getVelocities(asNumpy=True).value_in_unit(unit.nanometer / unit.picosecond)
    K0 = 0.5 * (masses[:, None] * v0**2).sum()
    try:
        sint.step(n_steps)
        st = sctx.getState(getPositions=True, getVelocities=True)
        x1 = st.getPositions(asNumpy=True).value_in_unit(unit.nanometer)
        v1 = st.getVelocities(asNumpy=True).value_in_unit(unit.nanometer / unit.picosecond)
        tctx.setPositions(x1)
        U1 = tctx.getState(getEnergy=True).getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole)
        K1 = 0.5 * (masses[:, None] * v1**2).sum()
        dH = U1 + K1 - U - K0
    except Exception:
        dH = np.inf
    b0, b1 = basin(x), basin(x1)
    ok = np.isfinite(dH) and rng.random() < np.exp(min(0.0, -dH / kT))
    rec["jumps"] += 1; rec["acc"] += int(ok); ok = bool(ok)
    if b0 == "R" and b1 == "L": rec["prop_L_from_R"] += 1; rec["acc_L_from_R"] += ok
    if b0 == "L" and b1 == "R": rec["prop_R_from_L"] += 1; rec["acc_R_from_L"] += ok
    a = float(np.exp(min(0.0, -dH / kT))) if np.isfinite(dH) else 0.0
    series_rb.append(a * (b1 == "L") + (1 - a) * (b0 == "L"))
    if ok: x, U = x1, U1
    series_plain.append(float(basin(x) == "L"))
    rec["n_in_L"] += basin(x) == "L"
rec.update(strength=strength, jump_ps=jump_ps, cpu_s=time.process_time() - start, seed=seed)
rec["entries_per_cpu_s"] = rec["acc_L_from_R"] / rec["cpu_s"]
rec["jumps_per_cpu_s"] = rec["jumps"] / rec["cpu_s"]
np.savez(f"/tmp/rare/series_{strength}_{jump_ps}_{seed}.npz", plain=np.array(series_plain), rb=np.array(series_rb), cpu_s=rec["cpu_s"])
print(json.dumps({k: (float(v) if not isinstance(v, str) else v) for k, v in rec.items()}), flush=True)
