"""``mmtp select`` and ``mmtp grade``: maxvol selection and extrapolation grades from the command line."""

from __future__ import annotations

from mmtp_rs.active import _MODES, ActiveSet
from mmtp_rs.model.potential import Potential


# ---------------------------------------------------------------- command line
def _read_images(path: str, species):
    if str(path).endswith(".cfg"):
        from mmtp_rs.io.cfg import read_cfg
        return read_cfg(path, species=species)
    import ase.io
    return ase.io.read(path, ":")


def _write_images(path: str, images, species) -> None:
    if str(path).endswith(".cfg"):
        from mmtp_rs.io.cfg import write_cfg
        write_cfg(path, images, species=species)
    else:
        import ase.io
        ase.io.write(path, images)


def _active_set_for(args) -> ActiveSet:
    pot = Potential.from_file(args.potential, species=args.species)
    if str(args.training).endswith(".npz"):
        return ActiveSet.load(args.training, pot)
    train = _read_images(args.training, pot.species)
    kw = {"tol": args.tol} if getattr(args, "tol", None) is not None else {}
    aset = ActiveSet.from_training(pot, train, mode=args.mode, scale_by_atoms=not args.no_scale, **kw)
    if args.save_state:
        aset.save(args.save_state)
    return aset


def _cli_grade(args) -> dict:
    import json
    aset = _active_set_for(args)
    images = _read_images(args.configurations, aset.potential.species)
    g = aset.grades(images, store=True)
    rows = [{"index": k, "n_atoms": len(a), "MV_grade": float(x)} for k, (a, x) in enumerate(zip(images, g))]
    for r in rows:
        print(json.dumps(r))
    if args.output:
        _write_images(args.output, images, aset.potential.species)
    return {"grades": g.tolist()}


def _cli_select(args) -> dict:
    import json
    aset = _active_set_for(args)
    pool = _read_images(args.pool, aset.potential.species)
    idx = aset.select(pool, limit=args.limit, tol=args.tol, return_indices=True)
    chosen = [pool[i] for i in idx]
    aset.grades(chosen, store=True)
    _write_images(args.output, chosen, aset.potential.species)
    rep = {"pool": len(pool), "selected": [int(i) for i in idx], "n_selected": len(idx),
           "output": str(args.output)}
    print(json.dumps(rep))
    return rep


def add_cli(sub) -> None:
    """Add the ``select`` and ``grade`` subcommands to the ``mmtp`` parser."""
    def common(p):
        p.add_argument("potential", help="potential file (.mtp or JSON)")
        p.add_argument("training", help="training set (.cfg or extxyz) or a saved active set (.npz)")
        p.add_argument("--species", nargs="+", default=None, help="chemical symbols of MLIP types 0, 1, ...")
        p.add_argument("--mode", default="configuration", choices=sorted(_MODES),
                       help="one row per configuration (default) or per atom (nbh)")
        p.add_argument("--no-scale", action="store_true", help="configuration mode: do not divide rows by N")
        p.add_argument("--save-state", default=None, help="write the active set built from the training set (.npz)")

    s = sub.add_parser("select", help="choose configurations to label from a pool by maxvol (MLIP's select-add)")
    common(s)
    s.add_argument("pool", help="preselected configurations (.cfg or extxyz)")
    s.add_argument("-o", "--out", "--output", dest="output", required=True, help="selected configurations (.cfg or extxyz)")
    s.add_argument("--limit", type=int, default=None, help="select at most this many configurations")
    s.add_argument("--tol", type=float, default=1e-3, help="swap while |c| > 1 + tol")
    s.set_defaults(func=_cli_select)
    g = sub.add_parser("grade", help="extrapolation grades of configurations (MLIP's calc-grade)")
    common(g)
    g.add_argument("configurations", help="configurations to grade (.cfg or extxyz)")
    g.add_argument("-o", "--out", "--output", dest="output", default=None, help="write them with MV_grade (and nbh_grades)")
    g.set_defaults(func=_cli_grade, tol=None)


