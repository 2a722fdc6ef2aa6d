"""Importance sampling: lowered-surrogate Langevin MD, frames reweighted to the OBC2 target by exp(-(U_t - U_s')/kT)."""
import os, sys, time, json, numpy as np
os.environ["OMP_NUM_THREADS"]="1"
import openmm
from openmm import unit
from openmm_forecast import build_system
from openmm_forecast.shipped import resource_path
from openmm_forecast.barriers import lower_barriers, load_surfaces
strength, cpu_s, seed, interval = float(sys.argv[1]), float(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
kT = 0.0083144626*300
t = build_system("amber14-obc2")
base = openmm.XmlSerializer.deserialize(open(resource_path("surrogates/fit-amber14-obc2.xml")).read())
surf = load_surfaces("/work/main/runs/lower-barriers/amber14-obc2/surface.npz")
s = lower_barriers(base, surf, strength) if strength > 0 else base
si = openmm.LangevinMiddleIntegrator(300,1,0.002); si.setRandomNumberSeed(seed)
sc = openmm.Context(s, si, openmm.Platform.getPlatformByName("Reference"))
sc.setPositions(t.positions); openmm.LocalEnergyMinimizer.minimize(sc); sc.setVelocitiesToTemperature(300, seed)
tc = openmm.Context(t.system, openmm.LangevinMiddleIntegrator(300,1,0.002), openmm.Platform.getPlatformByName("CPU"), {"Threads":"1"})
def dih(p,a,b,c,d):
    b0=p[a]-p[b]; b1=p[c]-p[b]; b2=p[d]-p[c]; b1=b1/np.linalg.norm(b1); v=b0-b0.dot(b1)*b1; w=b2-b2.dot(b1)*b1
    return np.degrees(np.arctan2(np.cross(b1,v).dot(w), v.dot(w)))
si.step(5000)
logw=[]; phis=[]; psis=[]
st0=time.process_time()
while time.process_time()-st0 < cpu_s:
    si.step(interval)
    st = sc.getState(getPositions=True, getEnergy=True)
    p = st.getPositions(asNumpy=True)
    tc.setPositions(p)
    ut = tc.getState(getEnergy=True).getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole)
    us = st.getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole)
    logw.append(-(ut-us)/kT); pn = p.value_in_unit(unit.nanometer)
    phis.append(dih(pn,4,6,8,14)); psis.append(dih(pn,6,8,14,16))
cpu = time.process_time()-st0
logw=np.array(logw); w=np.exp(logw-logw.max()); phis=np.array(phis); psis=np.array(psis)
L = (phis>0).astype(float)
def est(w, L): return (w*L).sum()/w.sum()
# block bootstrap
n=len(w); nb=20; bs=n//nb; rng=np.random.default_rng(0); ests=[]
for _ in range(1000):
    idx=np.concatenate([np.arange(b*bs,(b+1)*bs) for b in rng.integers(0,nb,nb)])
    ests.append(est(w[idx],L[idx]))
kish = w.sum()**2/(w**2).sum()
beta = ((phis<0)&((psis>120)|(psis<-150))).astype(float)  # rough
np.savez(f"/tmp/rare/is_{strength}_{seed}.npz", logw=logw, phi=phis, psi=psis, cpu=cpu)
print(json.dumps(dict(strength=strength, seed=seed, frames=n, cpu_s=cpu, kish=kish, frac_L_unweighted=L.mean(), alphaL=est(w,L), se=float(np.std(ests)), rel_se=float(np.std(ests)/est(w,L)))), flush=True)
