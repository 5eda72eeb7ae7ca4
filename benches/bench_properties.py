"""Time of the full property report (elastic, phonons, QHA, PM convergence) for
64-atom rock-salt CrN in the FM, AFM1 and PM (K = 50 random states) phases.

    python benches/bench_properties.py [--calculator mtp|reference] [--k 50] [--out bench_properties.json]

``mtp``: the level-16 magnetic CrN potential of the shared MLIP-3 test data
(random coefficients: only the time means anything; the cell is not relaxed and
each internal relaxation is capped at --max-steps steps). ``reference``: the
embedded reference model (physical results). Prints JSON: wall time per
stage and state, evaluations per second, and the main results.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("MMTP_SHARED", ROOT.parent / "shared"))


def config(calculator: str, k: int, max_steps: int) -> dict:
    cfg = {
        "structure": {"prototype": "rocksalt", "symbols": "CrN", "a": 4.15, "cubic": True,
                      "relax_volume": calculator == "reference"},
        "moments": {"Cr": 2.5, "equilibrate": True},
        "states": {"FM": {"kind": "FM"}, "AFM": {"kind": "AFM", "direction": "AFM1"},
                   "PM": {"kind": "PM", "n_states": k, "seed": 0}},
        "elastic": {"supercell": [2, 2, 2], "strain": 0.005, "fmax": 1e-3, "max_steps": max_steps},
        "phonons": {"supercell": [2, 2, 2], "mesh": [16, 16, 16], "npoints": 51,
                    "nac": {"born": {"Cr": 4.4, "N": -4.4}, "dielectric": 22.0}},
        "qha": {"n_volumes": 7, "volume_range": 0.05, "t_max": 1000.0, "t_step": 10.0, "mesh": [12, 12, 12]},
        "convergence": {"k_max": k, "n_pool": 8 * k},
    }
    if calculator == "mtp":
        pot = SHARED / "external" / "mlip3" / "mag_lev16_CrN.mtp"
        if not pot.is_file():
            sys.exit(f"{pot} not found (set MMTP_SHARED)")
        cfg["calculator"] = {"potential": str(pot), "species": ["N", "Cr"]}
        cfg["moments"]["equilibrate"] = False  # random coefficients: no meaningful moment minimum
    else:
        cfg["calculator"] = {"reference": "CrN"}
    return cfg


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--calculator", choices=["mtp", "reference"], default="mtp")
    p.add_argument("--k", type=int, default=50, help="PM states")
    p.add_argument("--max-steps", type=int, default=None, help="cap of each internal relaxation")
    p.add_argument("--out", default=None, help="also write the JSON here")
    args = p.parse_args(argv)
    warnings.simplefilter("ignore")
    from mmtp_rs.properties.report import run_report

    max_steps = args.max_steps or (20 if args.calculator == "mtp" else 300)
    cfg = config(args.calculator, args.k, max_steps)
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        err = None
        try:
            rep = run_report(cfg, outdir=tmp, quiet=True)
        except Exception as exc:  # a random potential may break a fit; report how far it got
            rep, err = {"timings_s": {}}, f"{type(exc).__name__}: {exc}"
        wall = time.perf_counter() - t0
    out = {
        "benchmark": "properties_report",
        "calculator": args.calculator,
        "n_atoms": 64,
        "pm_states": args.k,
        "max_relax_steps": max_steps,
        "wall_time_s": wall,
        "timings_s": rep["timings_s"],
        "error": err,
        "python": platform.python_version(),
        "cpu_count": os.cpu_count(),
    }
    if err is None:
        res = {}
        for name, st in rep["states"].items():
            r = {}
            if "elastic" in st:
                c = st["elastic"]["cubic"]
                r.update(C11=c["C11"], C12=c["C12"], C44=c["C44"], born_stable=st["elastic"]["born"]["stable"])
            if "phonons" in st:
                r["min_frequency_THz"] = st["phonons"]["min_frequency_THz"]
            if "qha" in st and st["qha"]["temperatures"]:
                q = st["qha"]
                i = min(range(len(q["temperatures"])), key=lambda j: abs(q["temperatures"][j] - 300))
                r.update(T=q["temperatures"][i], alpha_per_K=q["alpha_per_K"][i], cp_J_K_mol=q["cp_J_K_mol"][i])
            res[name] = r
        out["results"] = res
    text = json.dumps(out, indent=1, default=float)
    print(text)
    if args.out:
        Path(args.out).write_text(text)
    return out


if __name__ == "__main__":
    main()
