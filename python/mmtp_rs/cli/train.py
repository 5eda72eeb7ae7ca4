"""``mmtp train``: fit an mMTP from the command line.

Settings come from a TOML file (``mmtp train config.toml``) and/or flags;
flags override the file. Sections and keys of the file (all optional but
``data.train``)::

    [data]
    train = ["train.cfg"]          # .cfg or extxyz files (paths relative to the TOML file)
    valid = []                     # separate validation files; else a random split:
    species = ["N", "Cr"]          # type order (needed for .cfg); default: species in the data

    [model]
    init = ""                      # start from this potential file instead of a new one
    level = 16
    radial_basis_size = 8
    magnetic_basis_size = 2
    min_dist = 1.7                 # Å; omit for automatic (just below the smallest distance)
    max_dist = 5.0                 # Å
    max_moment = {Cr = 3.2, N = 0.1}   # μB; omit for automatic (max |m| per species + 10 %)

    [fit]
    weights = {energy = 1.0, forces = 0.01, stress = 0.001, magnetic_forces = 0.1}
    energy_per_atom = false
    regularization = 0.0
    optimizer = "auto"             # BFGS, L-BFGS-B
    max_iter = 1000
    restarts = 1
    restart_scale = 0.3
    patience = 100
    linear_solve = "auto"          # hessian, cg, none
    seed = 0
    valid_fraction = 0.1           # random validation split when [data] valid is empty

    [output]
    dir = "mmtp_fit"
    plots = true

Written to the output directory: ``potential.json`` and ``potential.mtp``
(best parameters), ``report.json`` / ``report.md`` (RMSE and MAE, training
and validation), ``parity_*.png``, ``history.json`` and ``checkpoint.json``
(running the same command again resumes a killed fit from it).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from mmtp_rs.config import MODEL, ConfigError, Key, check_fit, check_table, read_toml
from mmtp_rs.io.atomic import atomic_write_text


DEFAULTS = {
    "data": {"train": [], "valid": [], "species": None},
    "model": {"init": None, "level": 16, "radial_basis_size": 8, "magnetic_basis_size": 2, "min_dist": None,
              "max_dist": 5.0, "max_moment": None},
    "fit": {"weights": {"energy": 1.0, "forces": 0.01, "stress": 0.001, "magnetic_forces": 0.1},
            "energy_per_atom": False, "regularization": 0.0, "optimizer": "auto", "max_iter": 1000,
            "restarts": 1, "restart_scale": 0.3, "patience": 100, "linear_solve": "auto", "seed": 0,
            "checkpoint_interval": 30.0, "valid_fraction": 0.1},
    "output": {"dir": "mmtp_fit", "plots": True},
}

# flag dest -> (section, key)
_FLAGS = {
    "data": ("data", "train"), "valid_data": ("data", "valid"), "valid_fraction": ("fit", "valid_fraction"),
    "species": ("data", "species"), "init": ("model", "init"), "level": ("model", "level"),
    "radial_basis_size": ("model", "radial_basis_size"), "magnetic_basis_size": ("model", "magnetic_basis_size"),
    "min_dist": ("model", "min_dist"), "max_dist": ("model", "max_dist"), "max_moment": ("model", "max_moment"),
    "weights": ("fit", "weights"), "energy_per_atom": ("fit", "energy_per_atom"),
    "regularization": ("fit", "regularization"), "optimizer": ("fit", "optimizer"), "max_iter": ("fit", "max_iter"),
    "restarts": ("fit", "restarts"), "restart_scale": ("fit", "restart_scale"), "patience": ("fit", "patience"),
    "linear_solve": ("fit", "linear_solve"), "seed": ("fit", "seed"),
    "checkpoint_interval": ("fit", "checkpoint_interval"), "output": ("output", "dir"), "plots": ("output", "plots"),
}

_DATA = {"train": Key("any"), "valid": Key("any"), "species": Key("strs", nonempty=True)}
_OUTPUT = {"dir": Key("path"), "plots": Key("bool", True)}


def _paths(v, where: str, base: Path) -> list[str]:
    if isinstance(v, str):
        v = [v]
    if not isinstance(v, list) or not all(isinstance(x, str) and x for x in v):
        raise ConfigError(f"{where} must be a file name or a list of file names, got {v!r}")
    return [str(base / x) for x in v]


def _load_toml(path: Path) -> dict:
    """The settings file, checked with the shared schemas ([model], [fit]); paths relative to the file."""
    doc = read_toml(path)
    unknown = set(doc) - set(DEFAULTS)
    if unknown:
        raise ConfigError(f"{path}: unknown sections {sorted(unknown)} (known: {sorted(DEFAULTS)})")
    base = path.resolve().parent
    out: dict = {}
    if "data" in doc:
        raw = dict(doc["data"])
        if "valid_fraction" in raw:
            raise ConfigError(f"{path}: [data] valid_fraction: it belongs to [fit] (the same key as in mmtp learn)")
        d = check_table(raw, _DATA, f"{path}: [data]", base)
        out["data"] = {k: (_paths(d[k], f"{path}: [data] {k}", base) if k in ("train", "valid") and d[k] is not None
                           else d[k]) for k in raw}
    if "model" in doc:
        m = check_table(doc["model"], MODEL, f"{path}: [model]", base)
        out["model"] = {k: m[k] for k in doc["model"]}
    if "fit" in doc:
        f = check_fit(doc["fit"], f"{path}: [fit]")
        out["fit"] = {k: f[k] for k in doc["fit"]}
    if "output" in doc:
        o = check_table(doc["output"], _OUTPUT, f"{path}: [output]", base)
        out["output"] = {k: o[k] for k in doc["output"]}
    return out


def _parse_moment(values):
    if values is None:
        return None
    if len(values) == 1 and "=" not in values[0]:
        return float(values[0])
    out = {}
    for v in values:
        if "=" not in v:
            raise ValueError(f"--max-moment takes SYMBOL=VALUE pairs or one number, got {v!r}")
        s, x = v.split("=", 1)
        out[s] = float(x)
    return out


def settings_from_args(args: argparse.Namespace) -> dict:
    """Merge defaults, the TOML file and the flags into one settings dict."""
    cfg = {sec: dict(vals) for sec, vals in DEFAULTS.items()}
    if getattr(args, "config", None):
        for sec, vals in _load_toml(Path(args.config)).items():
            cfg[sec].update(vals)
    for dest, (sec, key) in _FLAGS.items():
        v = getattr(args, dest, None)
        if v is None:
            continue
        if dest == "max_moment":
            v = _parse_moment(v)
        elif dest == "weights":
            v = dict(zip(("energy", "forces", "stress", "magnetic_forces"), v))
        cfg[sec][key] = v
    if not cfg["data"]["train"]:
        raise ValueError("no training data: give --data FILE ... or [data] train = [...] in the config file")
    return cfg


def run(args: argparse.Namespace) -> dict:
    """Run ``mmtp train``; returns a summary dict (also written to the output directory)."""
    from mmtp_rs.fitting.data import Dataset
    from mmtp_rs.fitting.optimize import fit, make_potential
    from mmtp_rs.fitting.report import write_report
    from mmtp_rs.model.potential import Potential

    cfg = settings_from_args(args)
    d, m, f, o = cfg["data"], cfg["model"], cfg["fit"], cfg["output"]
    if getattr(args, "check", False):
        msg = (f"training data {d['train']}, level {m['level']}, max_iter {f['max_iter']}, restarts {f['restarts']}, "
               f"output {o['dir']}")
        print(f"{getattr(args, 'config', None) or 'flags'}: valid. {msg}")
        return {"valid": True, "summary": msg}
    quiet = bool(getattr(args, "quiet", False))
    outdir = Path(o["dir"])
    outdir.mkdir(parents=True, exist_ok=True)
    species = d["species"]
    data = Dataset.read(d["train"], species=species)
    if d["valid"]:
        train, valid = data, Dataset.read(d["valid"], species=species)
    elif f["valid_fraction"] and len(data) >= 2:
        train, valid = data.split(float(f["valid_fraction"]), seed=int(f["seed"]))
    else:
        train, valid = data, None
    if m["init"]:
        pot = Potential.from_file(m["init"], species=species)
        if pot.species is None:
            raise ValueError(f"{m['init']}: give the species (--species) to fit an .mtp potential")
    else:
        pot = make_potential(data, species=species, level=int(m["level"]), radial_basis_size=int(m["radial_basis_size"]),
                             magnetic_basis_size=int(m["magnetic_basis_size"]), min_dist=m["min_dist"],
                             max_dist=float(m["max_dist"]), max_moment=m["max_moment"], seed=int(f["seed"]))
    if not quiet:
        print(f"training on {len(train)} configurations ({train.n_atoms} atoms), validating on "
              f"{0 if valid is None else len(valid)}; {pot!r}; min_dist {pot.min_dist} Å, "
              f"max_moment {pot.max_moment}", file=sys.stderr)
    ls = f["linear_solve"]
    res = fit(pot, train, valid, weights=f["weights"], regularization=float(f["regularization"]),
              energy_per_atom=bool(f["energy_per_atom"]), optimizer=f["optimizer"], max_iter=int(f["max_iter"]),
              restarts=int(f["restarts"]), restart_scale=float(f["restart_scale"]),
              patience=None if f["patience"] in (None, 0) else int(f["patience"]),
              linear_solve=None if ls in (None, "none", False) else ls, seed=int(f["seed"]),
              checkpoint=outdir / "checkpoint.json", checkpoint_interval=float(f["checkpoint_interval"]),
              quiet=quiet)
    best = res.potential
    best.save(outdir / "potential.json")
    best.save(outdir / "potential.mtp")
    atomic_write_text(outdir / "history.json", json.dumps(res.to_dict(), indent=1, default=float) + "\n")
    summary = {"settings": cfg, "potential": repr(best), "n_params": best.n_params, "min_dist": best.min_dist,
               "max_moment": best.max_moment, "n_train": len(train), "n_valid": 0 if valid is None else len(valid),
               "best_restart": res.best_restart, "best_iteration": res.best_iteration,
               "best_loss": res.best_loss, "best_valid_loss": res.best_valid_loss, "elapsed_s": res.elapsed,
               "resumed": res.resumed}
    sets = {"train": train}
    if valid is not None:
        sets["valid"] = valid
    doc = write_report(best, sets, outdir, plots=bool(o["plots"]), extra={"fit": summary})
    if not quiet:
        from mmtp_rs.fitting.report import to_markdown

        print(to_markdown(doc["errors"]), file=sys.stderr)
        print(f"wrote {outdir / 'potential.json'}, {outdir / 'potential.mtp'}, {outdir / 'report.md'}", file=sys.stderr)
    return doc


def add_cli(sub) -> None:
    """Define the ``train`` subcommand on an argparse subparsers object."""
    t = sub.add_parser("train", help="fit an mMTP to labelled data (.cfg / extxyz)",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    t.add_argument("config", nargs="?", default=None, help="TOML settings file (flags override it)")
    t.add_argument("--data", nargs="+", default=None, help="training data files (.cfg or extxyz)")
    t.add_argument("--valid-data", nargs="+", default=None, help="validation data files")
    t.add_argument("--valid-fraction", type=float, default=None, help="random validation split (default 0.1)")
    t.add_argument("--species", nargs="+", default=None, help="chemical symbols of types 0, 1, ...")
    t.add_argument("--init", default=None, help="start from this potential file")
    t.add_argument("--level", type=int, default=None)
    t.add_argument("--radial-basis-size", type=int, default=None)
    t.add_argument("--magnetic-basis-size", type=int, default=None)
    t.add_argument("--min-dist", type=float, default=None, help="R_min, Å (default automatic)")
    t.add_argument("--max-dist", type=float, default=None, help="R_cut, Å (default 5.0)")
    t.add_argument("--max-moment", nargs="+", default=None, metavar="SYM=VAL",
                   help="M_max per species (μB), e.g. Cr=3.2 N=0.1, or one number (default automatic)")
    t.add_argument("--weights", nargs=4, type=float, default=None, metavar=("WE", "WF", "WS", "WT"),
                   help="w_e w_f w_s w_t (default 1 0.01 0.001 0.1)")
    t.add_argument("--energy-per-atom", action="store_const", const=True, default=None)
    t.add_argument("--regularization", type=float, default=None)
    t.add_argument("--optimizer", choices=["auto", "BFGS", "L-BFGS-B"], default=None)
    t.add_argument("--max-iter", type=int, default=None)
    t.add_argument("--restarts", type=int, default=None)
    t.add_argument("--restart-scale", type=float, default=None)
    t.add_argument("--patience", type=int, default=None, help="early-stopping patience (0: off)")
    t.add_argument("--linear-solve", choices=["auto", "hessian", "cg", "none"], default=None)
    t.add_argument("--seed", type=int, default=None)
    t.add_argument("--checkpoint-interval", type=float, default=None, help="seconds between checkpoints")
    t.add_argument("--out", "--output", "-o", dest="output", default=None, help="output directory (default mmtp_fit)")
    t.add_argument("--check", action="store_true", help="validate the settings and exit (0: valid)")
    t.add_argument("--no-plots", dest="plots", action="store_const", const=False, default=None)
    t.add_argument("--quiet", "-q", action="store_true")
    t.set_defaults(func=run)


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="mmtp")
    add_cli(p.add_subparsers(dest="command", required=True))
    return p.parse_args(["train", *(sys.argv[1:] if argv is None else argv)])


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        run(args)
    except (ValueError, FileNotFoundError) as exc:
        print(f"mmtp train: error: {exc}", file=sys.stderr)
        return 2
    return 0
