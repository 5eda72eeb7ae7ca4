"""Benchmark of the spin Monte Carlo (mmtp_core::spin_mc) against full evaluations.

On a 512-atom rock-salt CrN cell (the level-16 magnetic MTP of the MLIP-3
conformance data, tests/data/mlip3/mag_lev16_CrN.mtp; Gaussian displacements
0.05 Å, random collinear moments), times with 1 and 2 threads:

* one Metropolis sweep (N attempted moves, half sign flips, half magnitude
  moves, at 1000 K) of ``mmtp_rs._core.SpinSampler``;
* one full evaluation, energy only (``forces=False``) and with forces, stress
  and magnetic forces (``Potential.evaluate``);
* building the sampler (neighbour list and partial sums);
* one sweep of the reference model's numpy sampler on the same cell.

Prints one JSON document (and writes it to ``--out FILE``): times in seconds
(best of repeats), sweeps per second, evaluations per second, the ratios
``sweep / evaluation`` and ``target_met`` per thread count (the issue's
target: one sweep <= 3 full evaluations, i.e. with forces, stress and magnetic
forces as an MD step computes them; ``target_met_energy_only`` compares with
the energy-only evaluation, the stricter reading). A sweep is sequential by
nature (each Metropolis move sees the previous one), so with 2 threads it is
compared with an evaluation that uses both. The sweep and the two
evaluations are timed in turn, call by call (interleaved best-of), so that
load from other processes hits all three alike.

Usage: ``python benches/bench_montecarlo.py [--quick] [--out FILE]``
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
POTENTIAL = ROOT / "tests" / "data" / "mlip3" / "mag_lev16_CrN.mtp"


def best(fn, reps):
    ts = []
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t)
    return min(ts)


def best_interleaved(fns, reps):
    """Best wall and best process CPU time of each of ``fns``, called in
    turn ``reps`` times."""
    ts = [float("inf")] * len(fns)
    cs = [float("inf")] * len(fns)
    for _ in range(reps):
        for k, fn in enumerate(fns):
            c = time.process_time()
            t = time.perf_counter()
            fn()
            ts[k] = min(ts[k], time.perf_counter() - t)
            cs[k] = min(cs[k], time.process_time() - c)
    return ts, cs


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="fewer repeats")
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    from ase.build import bulk

    import mmtp_rs
    from mmtp_rs.magnetism.montecarlo import beta_of, spin_sampler
    from mmtp_rs.oracles.reference import ReferenceCalculator

    reps = 3 if args.quick else 7
    # the sweep and the evaluations it is compared with, timed in turn
    reps_ratio = 6 if args.quick else 15
    pot = mmtp_rs.Potential.from_file(str(POTENTIAL), species=["N", "Cr"])
    atoms = bulk("CrN", "rocksalt", a=4.15, cubic=True).repeat(4)
    rng = np.random.default_rng(512)
    atoms.positions += rng.normal(scale=0.05, size=atoms.positions.shape)
    cr = np.array(atoms.get_chemical_symbols()) == "Cr"
    mag = np.where(cr, rng.uniform(2.2, 2.6, len(atoms)), 0.05)
    atoms.set_initial_magnetic_moments(mag * rng.choice([-1.0, 1.0], len(atoms)))
    mmax = {s: float(v) for s, v in pot.max_moment.items()}
    beta = beta_of(1000.0)
    res = {"n_atoms": len(atoms), "potential": POTENTIAL.name, "level": 16, "machine": platform.machine(),
           "python": platform.python_version(), "threads": {}}
    old = mmtp_rs.get_num_threads()
    try:
        for nt in (1, 2):
            mmtp_rs.set_num_threads(nt)
            s = spin_sampler(pot, atoms, m_max=mmax, seed=1)
            (t_sweep, t_e, t_f), (c_sweep, c_e, _) = best_interleaved([
                lambda: s.sweep(beta, 0.5, 0.2, 1),
                lambda: pot.evaluate(atoms, param_grad=False, forces=False),
                lambda: pot.evaluate(atoms, param_grad=False),
            ], reps_ratio)
            t_build = best(lambda: spin_sampler(pot, atoms, m_max=mmax, seed=1), reps)
            res["threads"][str(nt)] = {
                "sweep_s": t_sweep, "sweeps_per_s": 1 / t_sweep,
                "eval_energy_s": t_e, "evals_energy_per_s": 1 / t_e,
                "eval_forces_s": t_f, "evals_forces_per_s": 1 / t_f,
                "build_sampler_s": t_build,
                "move_us": 1e6 * t_sweep / len(atoms),
                "ratio_sweep_to_energy_eval": t_sweep / t_e,
                "ratio_sweep_to_forces_eval": t_sweep / t_f,
                # the target: a sweep against a full evaluation (energy, forces,
                # stress, magnetic forces: what an MD step computes); the stricter
                # comparison with an energy-only evaluation is reported beside it
                "target_met": t_sweep <= 3.0 * t_f,
                "target_met_energy_only": t_sweep <= 3.0 * t_e,
            }
            if nt == 1:
                # process CPU time: on a loaded machine a 20 ms sweep is
                # preempted more often than a 7 ms evaluation, which biases
                # the wall-clock ratio; with one thread CPU time is the cost
                res["threads"][str(nt)].update({
                    "sweep_cpu_s": c_sweep, "eval_energy_cpu_s": c_e,
                    "ratio_sweep_to_energy_eval_cpu": c_sweep / c_e,
                })
    finally:
        mmtp_rs.set_num_threads(old)
    s = spin_sampler(pot, atoms, m_max=mmax, seed=1)
    res["mean_affected_atoms_per_move"] = float(np.mean([s.n_affected(i) for i in range(len(atoms))]))
    ref = spin_sampler(ReferenceCalculator("CrN"), atoms, m_max={"Cr": 3.5, "N": 0.5}, seed=1)
    res["reference_sweep_s"] = best(lambda: ref.sweep(beta, 0.5, 0.2, 1), max(2, reps // 2))
    res["target"] = ("one sweep <= 3 full evaluations (energy, forces, stress, magnetic forces); "
                     "target_met_energy_only: <= 3 energy-only evaluations")
    res["timing"] = f"sweep and evaluations interleaved, best of {reps_ratio}"
    res["target_met"] = all(v["target_met"] for v in res["threads"].values())
    res["target_met_energy_only_1_thread"] = res["threads"]["1"]["target_met_energy_only"]
    text = json.dumps(res, indent=1)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")


if __name__ == "__main__":
    main()
