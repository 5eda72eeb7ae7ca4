"""``mmtp demo`` and ``mmtp eval``: evaluate a potential."""

from __future__ import annotations

import json
import time

import numpy as np

from mmtp_rs.units import EV_A3_TO_GPA


def _demo(args) -> dict:
    from ase.build import bulk

    from mmtp_rs.model.potential import Potential

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
            "pressure_GPa": float(-out["stress"][:3].mean() * EV_A3_TO_GPA),
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
    from mmtp_rs.io.cfg import read_cfg
    from mmtp_rs.model.potential import Potential

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


