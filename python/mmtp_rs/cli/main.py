"""The ``mmtp`` command line.

Each job is a subcommand with its own module-level ``run(args)`` so tests can
call it directly.

    mmtp learn CONFIG.toml               the active-learning loop (resumable)
    mmtp train CONFIG.toml               fit a potential to a dataset
    mmtp select / mmtp grade             maxvol selection and extrapolation grades
    mmtp properties CONFIG.toml          elastic constants, phonons, QHA for FM/AFM/PM
    mmtp magnetism CONFIG.toml           spin Monte Carlo M(T), C(T), chi(T) and the Neel temperature
    mmtp validate CONFIG.toml --potential P   potential vs oracle with moments equilibrated
    mmtp demo [--size K] [--level L]     evaluate an mMTP on rock-salt CrN states
    mmtp eval POT CFG [--species ...]    energies/forces/stresses/magnetic forces of a .cfg
    mmtp lammps build                    build the LAMMPS plugin (pair_style mmtp, ...)
    mmtp lammps export POT OUT           a potential (and active set) for the plugin
"""

from __future__ import annotations

import argparse
import sys

from mmtp_rs.cli.evaluate import _demo, _eval


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
    from mmtp_rs.cli import active, lammps, learn, magnetism, properties, train

    for module in (learn, train, active, properties, lammps, magnetism):
        module.add_cli(sub)
    return p.parse_args(argv)


def run(args: argparse.Namespace):
    return args.func(args)


def main(argv=None) -> int:
    args = parse_args(argv)
    from mmtp_rs.model.potential import single_blas_thread

    try:
        with single_blas_thread():
            run(args)
    except (ValueError, FileNotFoundError, KeyError) as exc:
        print(f"mmtp {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except RuntimeError as exc:
        from mmtp_rs.cli.learn import ValidationFailed

        if not isinstance(exc, ValidationFailed):
            raise
        print(f"mmtp {args.command}: {exc}", file=sys.stderr)
        return 1
    return 0


