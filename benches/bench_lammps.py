"""Benchmark of MD in LAMMPS with the mmtp_rs plugin against ``Potential.evaluate``.

On rock-salt CrN cells of 4096 and 32768 atoms (random collinear Cr moments ±2.4 μB, N 0,
atoms displaced by 0.02 Å), measures

* ``evaluate_us_per_atom``: one ``Potential.evaluate`` (energy, forces, stress, magnetic
  forces; spin-symmetrised) with 1 thread, best of several repeats, µs per atom;
* ``lammps_us_per_atom_step`` for 1 and 2 MPI ranks (1 thread each): NVE MD at 300 K
  (time step 1 fs), from LAMMPS's "Loop time", µs per atom per step (force evaluation,
  integration, communication and neighbour-list rebuilds);
* ratios: ``lammps_1rank_over_evaluate`` (cost of one LAMMPS step over one evaluation) and
  ``speedup_2_ranks`` (1-rank time over 2-rank time; the target is >= 1.8 at 32768 atoms);
  on a shared machine also ``cpu_normalised_speedup_2_ranks``, the speed-up with each run's
  wall time scaled by the CPU share its ranks got (LAMMPS's "% CPU use").

The result is one JSON document on stdout (and in ``--out FILE``).

Usage::

    mmtp lammps build                                   # once
    python benches/bench_lammps.py [--quick] [--out bench_lammps.json]

``--quick`` runs the 4096-atom cell only. The potential is the level-12 CrN mMTP of the tests
(``tests/data/crn_lev12_reference.json``) unless ``--potential`` is given.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import platform
import re
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
DEFAULT_POTENTIAL = HERE.parent / "tests" / "data" / "crn_lev12_reference.json"
SIZES = {4096: 8, 32768: 16}  # atoms: repeats of the 8-atom cubic cell
STEPS = {4096: 40, 32768: 10}
LATTICE_A = 4.15
SEED = 7


def cell(repeat: int):
    from ase.build import bulk

    atoms = bulk("CrN", "rocksalt", a=LATTICE_A, cubic=True).repeat(repeat)
    rng = np.random.default_rng(SEED)
    atoms.positions += rng.normal(0, 0.02, atoms.positions.shape)
    cr = np.array([s == "Cr" for s in atoms.get_chemical_symbols()])
    atoms.set_initial_magnetic_moments(np.where(cr, 2.4 * rng.choice([-1.0, 1.0], len(atoms)), 0.0))
    return atoms


def time_evaluate(pot, atoms, budget: float = 6.0) -> float:
    best = np.inf
    t_start = time.perf_counter()
    while True:
        t0 = time.perf_counter()
        pot.evaluate(atoms, param_grad=False)
        best = min(best, time.perf_counter() - t0)
        if time.perf_counter() - t_start > budget:
            break
    return best


def time_lammps(pot, atoms, steps: int, nprocs: int, work: Path) -> tuple[float, float]:
    """(wall seconds per step, fraction of a CPU each rank got: LAMMPS's "% CPU use")."""
    from mmtp_rs import lammps as L

    body = (f"timestep 0.001\nvelocity all create 300 {SEED} dist gaussian mom yes rot no\nfix nve all nve\n"
            f"thermo {steps}\nrun {steps}\n")
    L.write_potential(pot, work / "pot.mmtp")
    L.write_data(atoms, work / "start.data", pot.species)
    script = L.input_script(data="start.data", potential="pot.mmtp", species=pot.species, body=body)
    L.run_lammps(script, work, nprocs=nprocs, log=f"log.{nprocs}")
    text = (work / f"log.{nprocs}").read_text()
    m = re.search(r"Loop time of ([0-9.eE+-]+) on (\d+) procs for (\d+) steps with (\d+) atoms", text)
    cpu = re.search(r"([0-9.]+)% CPU use with", text)
    if m is None or cpu is None:
        raise RuntimeError(f"no loop time in {work / f'log.{nprocs}'}")
    return float(m.group(1)) / int(m.group(3)), float(cpu.group(1)) / 100.0


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="4096 atoms only")
    p.add_argument("--potential", default=str(DEFAULT_POTENTIAL))
    p.add_argument("--out", default=None)
    args = p.parse_args(argv)
    os.environ["MMTP_NUM_THREADS"] = "1"
    import mmtp_rs

    mmtp_rs.set_num_threads(1)
    pot = mmtp_rs.Potential.from_file(args.potential)
    sizes = [4096] if args.quick else list(SIZES)
    report = {"benchmark": "bench_lammps", "date": _dt.datetime.now().isoformat(timespec="seconds"),
              "machine": {"cpu_count": os.cpu_count(), "platform": platform.platform(),
                          "python": sys.version.split()[0],
                          "load_average_1min_at_start": os.getloadavg()[0]},  # > 0.5: numbers are disturbed
              "potential": {"file": Path(args.potential).name, "n_params": pot.n_params, "cutoff_A": pot.max_dist},
              "sizes": {}}
    for n in sizes:
        atoms = cell(SIZES[n])
        t_eval = time_evaluate(pot, atoms)
        with tempfile.TemporaryDirectory() as tmp:
            t1, c1 = time_lammps(pot, atoms, STEPS[n], 1, Path(tmp))
            t2, c2 = time_lammps(pot, atoms, STEPS[n], 2, Path(tmp))
        row = {"n_atoms": len(atoms), "steps": STEPS[n],
               "evaluate_us_per_atom": t_eval / n * 1e6,
               "lammps_us_per_atom_step": {"1": t1 / n * 1e6, "2": t2 / n * 1e6},
               "lammps_1rank_over_evaluate": t1 / t_eval,
               "speedup_2_ranks": t1 / t2,
               "cpu_share_per_rank": {"1": c1, "2": c2},
               # wall-clock speed-up corrected for the CPU share the ranks got on a busy machine
               "cpu_normalised_speedup_2_ranks": (t1 * c1) / (t2 * c2)}
        report["sizes"][str(n)] = row
        print(f"{n} atoms: evaluate {row['evaluate_us_per_atom']:.2f} µs/atom, LAMMPS 1 rank "
              f"{row['lammps_us_per_atom_step']['1']:.2f}, 2 ranks {row['lammps_us_per_atom_step']['2']:.2f} "
              f"µs/atom/step (speed-up {row['speedup_2_ranks']:.2f}, CPU-normalised "
              f"{row['cpu_normalised_speedup_2_ranks']:.2f})", file=sys.stderr)
    text = json.dumps(report, indent=1)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")
    return report


if __name__ == "__main__":
    main()
