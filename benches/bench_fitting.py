"""Benchmark of the training loss and its gradient (JSON to stdout).

Data: rock-salt CrN 64-atom cells (2x2x2 cubic, a = 4.15 Å ± 2 %, atoms
displaced by 0.05 Å, random collinear moments ±[1.5, 3] μB on Cr, ±0.05 μB
on N), labelled by the reference model (energy, forces, stress, magnetic
forces). Potential: the MLIP-3 level-16 CrN file
``tests/data/mlip3/mag_lev16_CrN.mtp`` (MLIP-3 conformance data in the repository),
else a new level-16
potential with N_phi = 8, N_psi = 2.

Reported:

* ``loss_over_eval``: time of one loss + exact gradient over the whole set
  divided by one symmetrised energy/force/stress/magnetic-force pass
  (``Potential.evaluate_many``) over the same set (target <= 4);
* ``peak_rss_MiB`` of the process before motep is loaded (target < 2 GB);
* motep 0.2.0's ``LossFunction`` value + ``jac`` (C-extension engine, fixed
  moments) on the first ``--motep-configs`` configurations against our loss +
  gradient on the same subset, both on the raw E(M) that MLIP/motep fit
  (``motep_over_mmtp``, target >= 100); the loss values are printed as a check.

Usage: ``python benches/bench_fitting.py [--quick] [--n-configs N] [--motep-configs M]``.
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import sys
import time
from pathlib import Path

import numpy as np

SPECIES = ["N", "Cr"]
POTENTIAL_NAME = "mag_lev16_CrN.mtp"


def shared_dir() -> Path:
    """The MLIP-3 conformance data shipped with the repository."""
    return Path(__file__).resolve().parents[1] / "tests" / "data"


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def make_data(n: int, seed: int = 0):
    from ase.build import bulk

    from mmtp_rs.io.labels import attach_labels
    from mmtp_rs.oracles.reference import ReferenceModel

    model = ReferenceModel.preset("CrN")
    rng = np.random.default_rng(seed)
    base = bulk("CrN", "rocksalt", a=4.15, cubic=True).repeat(2)
    cr = np.array(base.get_chemical_symbols()) == "Cr"
    out = []
    for _ in range(n):
        a = base.copy()
        a.set_cell(a.cell * (1 + 0.02 * rng.normal()), scale_atoms=True)
        a.positions += rng.normal(scale=0.05, size=a.positions.shape)
        mag = np.where(cr, rng.uniform(1.5, 3.0, len(a)), rng.uniform(0.0, 0.05, len(a)))
        a.set_initial_magnetic_moments(mag * rng.choice([-1.0, 1.0], len(a)))
        o = model.evaluate(a)
        out.append(attach_labels(a, o["energy"], o["forces"], o["stress"], o["magnetic_forces"]))
    return out


def best_of(fn, reps: int) -> float:
    best = np.inf
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def motep_loss(path: Path, images) -> dict:
    """motep's loss + Jacobian (its gradient) on ``images``; errors are recorded, not raised."""
    rec: dict = {}
    try:
        import motep
        from ase.calculators.singlepoint import SinglePointCalculator
        from ase.data import atomic_numbers
        from motep.io.mlip.mtp import read_mtp
        from motep.loss import LossFunction, LossSetting

        rec["version"] = getattr(motep, "__version__", None)
        data = read_mtp(str(path))
        data.species = np.array([atomic_numbers[s] for s in SPECIES], dtype=np.int32)
        imgs = []
        for a in images:
            b = a.copy()
            b.calc = SinglePointCalculator(b, energy=a.info["REF_energy"], forces=a.arrays["REF_forces"],
                                           stress=a.info["REF_stress"])
            b.calc.results["mgrad"] = -np.asarray(a.arrays["REF_magnetic_forces"])  # +dE/dm
            imgs.append(b)
        setting = LossSetting(energy_per_atom=False, forces_per_atom=False, energy_per_conf=False,
                              forces_per_conf=False, stress_per_conf=False, stress_times_volume=True)
        t0 = time.perf_counter()
        loss = LossFunction(imgs, data, setting, engine="cext", relax_magmoms=False)
        rec["setup_s"] = time.perf_counter() - t0
        p = np.asarray(data.parameters, dtype=float).copy()
        t0 = time.perf_counter()  # one call (it takes minutes for 20 configurations at level 16)
        val = loss(p)
        jac = loss.jac(p)
        rec["loss_plus_gradient_s"] = time.perf_counter() - t0
        rec["loss"] = float(val)
        rec["gradient_norm"] = float(np.linalg.norm(jac))
        rec["n_params_optimized"] = int(len(jac))
    except Exception as exc:  # record why, keep the benchmark going
        rec["error"] = f"{type(exc).__name__}: {exc}"
    return rec


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="100 configurations, 5 for motep")
    ap.add_argument("--n-configs", type=int, default=None)
    ap.add_argument("--motep-configs", type=int, default=None)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--no-motep", action="store_true")
    args = ap.parse_args(argv)
    n = args.n_configs or (100 if args.quick else 1000)
    n_motep = args.motep_configs or (5 if args.quick else 20)

    import mmtp_rs
    from mmtp_rs.fitting.data import Dataset

    res: dict = {"benchmark": "fitting", "python": platform.python_version(), "machine": platform.machine(),
                 "threads": mmtp_rs.get_num_threads(), "n_configs": n, "atoms_per_config": 64}
    path = shared_dir() / "mlip3" / POTENTIAL_NAME
    if path.exists():
        pot = mmtp_rs.Potential.from_file(path, species=SPECIES)
        res["potential"] = f"MLIP-3 file {POTENTIAL_NAME}"
    else:
        pot = mmtp_rs.Potential.new(SPECIES, level=16, radial_basis_size=8, magnetic_basis_size=2, min_dist=1.7,
                                    max_dist=5.0, max_moment={"Cr": 3.2, "N": 0.1}, seed=0)
        res["potential"] = "new level-16 potential (MLIP-3 file not found)"
    res["n_params"] = pot.n_params
    t0 = time.perf_counter()
    images = make_data(n)
    res["labelling_s"] = time.perf_counter() - t0
    data = Dataset(images)
    rss0 = peak_rss_mib()
    t0 = time.perf_counter()
    core = data.to_core(pot)
    res["dataset_build_s"] = time.perf_counter() - t0
    res["n_pairs"] = core.n_pairs()
    w = (1.0, 0.01, 0.001, 0.1)
    pot._core.loss(core, w)  # warm-up
    t_eval = best_of(lambda: pot.evaluate_many(images, symmetrize=True, param_grad=False), args.reps)
    t_loss = best_of(lambda: pot._core.loss(core, w, symmetrize=True, gradient=True), args.reps)
    res["eval_many_s"] = t_eval
    res["loss_plus_gradient_s"] = t_loss
    res["loss_over_eval"] = t_loss / t_eval
    res["loss_ms_per_config"] = 1e3 * t_loss / n
    res["peak_rss_MiB"] = peak_rss_mib()
    res["peak_rss_before_dataset_MiB"] = rss0
    if not args.no_motep:
        sub = list(range(min(n_motep, n)))
        ours = {"loss_plus_gradient_s": best_of(lambda: pot._core.loss(core, w, symmetrize=False, subset=sub),
                                                max(args.reps, 5)),
                "loss": pot._core.loss(core, w, symmetrize=False, subset=sub, gradient=False)["loss"],
                "gradient_norm": float(np.linalg.norm(pot._core.loss(core, w, symmetrize=False, subset=sub)["gradient"]))}
        mot = motep_loss(path, [images[i] for i in sub]) if path.exists() else {"error": "no MLIP-3 file"}
        cmp = {"n_configs": len(sub), "mmtp_rs": ours, "motep": mot}
        if "loss_plus_gradient_s" in mot:
            cmp["motep_over_mmtp"] = mot["loss_plus_gradient_s"] / ours["loss_plus_gradient_s"]
            cmp["loss_relative_difference"] = abs(mot["loss"] - ours["loss"]) / abs(ours["loss"])
            cmp["gradient_norm_relative_difference"] = (abs(mot["gradient_norm"] - ours["gradient_norm"])
                                                        / ours["gradient_norm"])
        res["motep_comparison"] = cmp
    print(json.dumps(res, indent=1))
    return res


if __name__ == "__main__":
    main(sys.argv[1:])
