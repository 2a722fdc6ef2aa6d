import glob, json, sys, numpy as np
from openmm_forecast.analysis import ramachandran_histogram, js_divergence
d = sys.argv[1]
files = sorted(glob.glob("openmm_forecast/resources/reference/amber14-obc2/*.npy"))
ref = {f.split("_seed")[1][0]: np.load(f) for f in files}
neg = lambda h: h[:18, :]   # axis 0 is phi: bins 0-17 are phi < 0
h_pool = neg(ramachandran_histogram(np.concatenate(list(ref.values()))))
out = {"reference_noise_phi_neg": {
    "seed3_vs_seed4": js_divergence(neg(ramachandran_histogram(ref["3"])), neg(ramachandran_histogram(ref["4"]))),
    "seeds13_vs_24": js_divergence(neg(ramachandran_histogram(np.concatenate([ref["1"], ref["3"]]))),
                                   neg(ramachandran_histogram(np.concatenate([ref["2"], ref["4"]]))))}}
for arm in ("plain", "hmr", "lowered", "flat", "metad"):
    pp = np.load(f"{d}/{arm}_phipsi.npy").reshape(-1, 2)
    try: w = np.load(f"{d}/{arm}_weights.npy").reshape(-1)
    except FileNotFoundError: w = None
    out[arm] = js_divergence(neg(ramachandran_histogram(pp, weights=w)), h_pool)
print(json.dumps(out, indent=1))
