"""The ``mmtp`` command line.

Each job is a subcommand with its own module-level ``run(args)`` so tests can
call it directly.

    mmtp learn CONFIG.toml               the active-learning loop (resumable)
    mmtp train CONFIG.toml               fit a potential to a dataset
    mmtp select / mmtp grade             maxvol selection and extrapolation grades
    mmtp properties CONFIG.toml          elastic constants, phonons, QHA for FM/AFM/PM
    mmtp validate CONFIG.toml --potential P   potential vs oracle with moments equilibrated
    mmtp demo [--size K] [--level L]     evaluate an mMTP on rock-salt CrN states
    mmtp eval POT CFG [--species ...]    energies/forces/stresses/magnetic forces of a .cfg
    mmtp lammps build                    build the LAMMPS plugin (pair_style mmtp, ...)
    mmtp lammps export POT OUT           a potential (and active set) for the plugin
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import numpy as np


def _demo(args) -> dict:
    from ase.build import bulk

    from .potential import Potential

    pot = Potential.new(["N", "Cr"], level=args.level, radial_basis_size=8, magnetic_basis_size=2,
                        min_dist=1.7, max_dist=5.0, max_moment={"Cr": 3.2, "N": 0.1}, seed=args.seed)
    atoms = bulk("CrN", "rocksalt", a=4.15, cubic=True).repeat(args.size)
    cr = np.array([s == "Cr" for s in atoms.get_chemical_symbols()])
    rng = np.random.default_rng(args.seed)
    z = atoms.positions[:, 2]
    states = {
        "FM": np.where(cr, 2.4, 0.0),
        "AFM (layers along z)": np.where(cr, 2.4 * np.where(np.round(z / (4.15 / 2)).astype(int) % 2 == 0, 1, -1), 0.0),
        "random collinear 50/50": np.where(cr, 2.4 * rng.permutation(np.resize([1.0, -1.0], len(atoms))), 0.0),
    }
    report = {"potential": repr(pot), "n_atoms": len(atoms), "states": {}}
    print(f"{pot!r}\nrock-salt CrN, {len(atoms)} atoms, a = 4.15 Å")
    for name, m in states.items():
        t0 = time.perf_counter()
        out = pot.evaluate(atoms, moments=m, param_grad=False)
        dt = time.perf_counter() - t0
        flipped = pot.evaluate(atoms, moments=-m, param_grad=False)["energy"]
        line = {
            "energy_eV_per_atom": out["energy"] / len(atoms),
            "max_force_eV_per_A": float(np.abs(out["forces"]).max()),
            "pressure_GPa": float(-out["stress"][:3].mean() * 160.21766),
            "max_magnetic_force_eV_per_muB": float(np.abs(out["magnetic_forces"]).max()),
            "spin_inversion_error_eV": abs(flipped - out["energy"]),
            "time_ms": dt * 1e3,
        }
        report["states"][name] = line
        print(f"  {name:24s} E = {line['energy_eV_per_atom']: .6f} eV/atom  |F|max = {line['max_force_eV_per_A']:.3e} eV/Å"
              f"  |T|max = {line['max_magnetic_force_eV_per_muB']:.3e} eV/μB  E(M)-E(-M) = {line['spin_inversion_error_eV']:.1e} eV"
              f"  ({line['time_ms']:.1f} ms)")
    return report


def _eval(args) -> dict:
    from .cfg import read_cfg
    from .potential import Potential

    pot = Potential.from_file(args.potential, species=args.species)
    images = read_cfg(args.cfg, species=args.species)
    outs = pot.evaluate_many(images, symmetrize=not args.raw)
    rows = []
    for k, (a, o) in enumerate(zip(images, outs)):
        row = {"index": k, "n_atoms": len(a), "energy": o["energy"]}
        if "REF_energy" in a.info:
            row["energy_error_per_atom"] = (o["energy"] - a.info["REF_energy"]) / len(a)
        rows.append(row)
    for r in rows:
        print(json.dumps(r))
    return {"configurations": rows}


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="mmtp", description="Self-training magnetic Moment Tensor Potentials")
    sub = p.add_subparsers(dest="command", required=True)
    d = sub.add_parser("demo", help="evaluate a random level-16 CrN mMTP on FM, AFM and random states")
    d.add_argument("--size", type=int, default=2, help="supercell repeats of the 8-atom cubic cell")
    d.add_argument("--level", type=int, default=16)
    d.add_argument("--seed", type=int, default=0)
    d.set_defaults(func=_demo)
    e = sub.add_parser("eval", help="evaluate a potential on the configurations of a .cfg file")
    e.add_argument("potential")
    e.add_argument("cfg")
    e.add_argument("--species", nargs="+", default=None, help="chemical symbols of MLIP types 0, 1, ...")
    e.add_argument("--raw", action="store_true", help="raw E(M) instead of the symmetrised energy")
    e.set_defaults(func=_eval)
    # each job module defines its own subcommand(s)
    from . import active, lammps, learn, properties, train_cli

    for module in (learn, train_cli, active, properties, lammps):
        module.add_cli(sub)
    return p.parse_args(argv)


def run(args: argparse.Namespace):
    return args.func(args)


def main(argv=None) -> int:
    args = parse_args(argv)
    from .potential import single_blas_thread

    try:
        with single_blas_thread():
            run(args)
    except (ValueError, FileNotFoundError, KeyError) as exc:
        print(f"mmtp {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except RuntimeError as exc:
        from .learn import ValidationFailed

        if not isinstance(exc, ValidationFailed):
            raise
        print(f"mmtp {args.command}: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
