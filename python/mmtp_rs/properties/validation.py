"""Validation of what users compute, with the moments equilibrated, against the oracle.

A potential is only as good as the quantities people take from it, and in a
magnetic material those come out of stage 1: the moments are equilibrated at
each geometry before anything else is computed. :func:`validate` therefore
puts the potential and the oracle through the *same* stage 1
(:func:`mmtp_rs.magnetism.stage1.equilibrate_moments`, from the same starts) and
compares, over a range of lattice parameters:

* the equilibrated moments, atom by atom and per species;
* the energies of the magnetic states (FM, AFM, random 50/50) relative to the
  first state, ΔE in meV/atom;
* E(a) per state and its equilibrium lattice parameter;
* elastic constants C11, C12, C44 of FM, AFM and PM (moments re-equilibrated
  at every strain; PM as an average over random states);
* zone-boundary phonon frequencies (moments of the reference geometry).

Each quantity is checked against a tolerance (defaults: 0.03 μB, 3 meV/atom,
10 % for C_ij, 5 % for phonons) and the report says which pass.
``mmtp validate CONFIG --potential P`` runs it from a learn configuration; the
learning loop runs it in its report whenever the oracle is the reference model.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Mapping, Sequence

import numpy as np
from ase import Atoms

from mmtp_rs.io.atomic import atomic_write_text, save_figure
from mmtp_rs.magnetism.stage1 import equilibrate_moments
from mmtp_rs.magnetism.states import state_moments


__all__ = ["ValidationOptions", "validate", "validation_markdown", "plot_validation", "write_validation"]


@dataclass
class ValidationOptions:
    """What :func:`validate` computes and the tolerances it checks."""

    lattice: Sequence[float]  # Å, lattice parameters of the moment / energy scan
    states: Sequence[str] = ("AFM", "FM", "random")  # first state is the energy zero
    afm_direction: str | tuple = "AFM1"  # layer normal of "AFM" (name or Cartesian)
    n_random: int = 2  # random 50/50 states per lattice parameter
    elastic: bool = True
    elastic_states: Sequence[str] = ("FM", "AFM", "PM")
    elastic_lattice: float | None = None  # Å (default: the middle of ``lattice``)
    pm_states: int = 6  # random states of the PM average (elastic constants, phonons)
    strain: float = 0.005
    phonons: bool = True
    seed: int = 0
    tol_moment: float = 0.03  # μB, every moment
    tol_energy: float = 3.0  # meV/atom, state energy differences
    tol_elastic: float = 0.10  # relative, C11, C12, C44
    tol_phonon: float = 0.05  # relative, zone-boundary frequencies
    tol_lattice: float = 0.01  # Å, equilibrium lattice parameter


def _state_starts(cell: Atoms, opts: ValidationOptions, moment) -> list[tuple[str, np.ndarray]]:
    rng = np.random.default_rng(opts.seed)
    out = []
    for st in opts.states:
        if st.upper() in ("RANDOM", "PM"):
            for r in range(opts.n_random):
                out.append((f"random{r + 1}", state_moments(cell, "random", moment, seed=int(rng.integers(1 << 31)))))
        elif st.upper() == "AFM":
            out.append(("AFM", state_moments(cell, "AFM", moment, direction=opts.afm_direction)))
        else:
            out.append((st, state_moments(cell, st, moment)))
    return out


def _energy(cell: Atoms, calc, m: np.ndarray) -> float:
    a = cell.copy()
    a.set_initial_magnetic_moments(m)
    a.calc = calc
    return float(a.get_potential_energy()) / len(a)


def _fit_lattice(lattice: np.ndarray, energies: np.ndarray) -> float | None:
    """Minimum of a cubic polynomial through E(a); None if it is not inside the scanned range."""
    if len(lattice) < 4:
        return None
    c = np.polyfit(lattice, energies, 3)
    roots = np.roots(np.polyder(c))
    roots = roots[np.isreal(roots)].real
    roots = [r for r in roots if np.polyval(np.polyder(c, 2), r) > 0 and lattice.min() <= r <= lattice.max()]
    return float(roots[0]) if roots else None


def _elastic(calc, cell: Atoms, kind: str, moment, opts: ValidationOptions) -> dict:
    from mmtp_rs.properties.elastic import cubic_constants, elastic_constants
    from mmtp_rs.properties.setup import MagneticSetup

    kw = dict(direction=opts.afm_direction) if kind == "AFM" else {}
    setup = MagneticSetup(calc, kind, moment=moment, equilibrate=True, n_states=opts.pm_states, seed=opts.seed,
                          **kw)
    at = setup.attach(cell)
    res = elastic_constants(at, strain=opts.strain, fmax=5e-3, max_steps=100, reattach=setup.reattacher(at))
    c = cubic_constants(res["C"])
    return {k: c[k] for k in ("C11", "C12", "C44", "B")}, setup


def _zone_boundary(setup, cell: Atoms) -> np.ndarray:
    from mmtp_rs.properties.phonons import phonons

    res = phonons(cell, setup, supercell=(2, 2, 2) if setup.kind != "PM" else (1, 1, 1), bands=False, dos=False,
                  mesh=(2, 2, 2), primitive_matrix=None)
    ph = res["phonopy"]
    ph.run_qpoints([[0.5, 0.0, 0.0], [0.5, 0.5, 0.0]])
    return np.sort(np.asarray(ph.qpoints.frequencies).ravel())


def validate(potential_calc, oracle_calc, structure: Callable[[float], Atoms], moment: Mapping[str, float],
             opts: ValidationOptions, elastic_cell: Callable[[float], Atoms] | None = None,
             pm_cell: Callable[[float], Atoms] | None = None, progress: Callable[[str], None] | None = None) -> dict:
    """Compare the potential with the oracle on equilibrated-moment quantities.

    Parameters
    ----------
    potential_calc, oracle_calc : moment-aware ASE calculators (energy, stress,
        magnetic forces)
    structure : lattice parameter (Å) -> the cell of the moment / energy scan
    moment : starting magnitudes per species, μB (as in the magnetic states)
    opts : what to compute, tolerances
    elastic_cell : lattice parameter -> cell for FM/AFM elastic constants and
        phonons (default: ``structure``)
    pm_cell : lattice parameter -> cell of the PM average (default: ``structure``)
    progress : called with a line of text as the work proceeds

    Returns
    -------
    dict (JSON-serialisable): ``scan`` (per lattice parameter and state:
    moments per species, E/atom, ΔE, both sides, max |Δm|), ``lattice``
    (equilibrium a per state), ``elastic``, ``phonons``, ``checks`` (each
    with value, tolerance and pass) and ``passed``.
    """
    say = progress or (lambda msg: None)
    t0 = time.perf_counter()
    lattice = [float(a) for a in opts.lattice]
    scan = []
    for a in lattice:
        cell = structure(a)
        sym = np.array(cell.get_chemical_symbols())
        rows = {}
        for label, m0 in _state_starts(cell, opts, moment):
            row = {}
            for side, calc in (("potential", potential_calc), ("oracle", oracle_calc)):
                m = equilibrate_moments(cell, calc, m0)
                row[side] = {"m": m, "E": _energy(cell, calc, m)}
            dm = np.abs(row["potential"]["m"] - row["oracle"]["m"])
            rows[label] = {
                "E_potential": row["potential"]["E"], "E_oracle": row["oracle"]["E"],
                "max_dm": float(dm.max()),
                "worst_atom": int(np.argmax(dm)),
                "moments": {side: {s: float(np.abs(row[side]["m"][sym == s]).mean()) for s in dict.fromkeys(sym)}
                            for side in ("potential", "oracle")},
                "max_dm_species": {s: float(dm[sym == s].max()) for s in dict.fromkeys(sym)},
            }
        first = next(iter(rows))
        for label, r in rows.items():
            r["dE_potential_meV"] = 1000 * (r["E_potential"] - rows[first]["E_potential"])
            r["dE_oracle_meV"] = 1000 * (r["E_oracle"] - rows[first]["E_oracle"])
        scan.append({"a": a, "states": rows})
        say(f"validation: a = {a:.4f} Å: max |Δm| {max(r['max_dm'] for r in rows.values()):.4f} μB, "
            f"max |ΔΔE| {max(abs(r['dE_potential_meV'] - r['dE_oracle_meV']) for r in rows.values()):.2f} meV/atom")
    labels = list(scan[0]["states"]) if scan else []
    lat = {}
    la = np.array(lattice)
    for label in labels:
        ep = np.array([s["states"][label]["E_potential"] for s in scan])
        eo = np.array([s["states"][label]["E_oracle"] for s in scan])
        lat[label] = {"potential": _fit_lattice(la, ep), "oracle": _fit_lattice(la, eo)}
    checks = []
    if scan:
        worst = max(((s["a"], lab, r) for s in scan for lab, r in s["states"].items()), key=lambda x: x[2]["max_dm"])
        checks.append({"name": "moments", "value": worst[2]["max_dm"], "tolerance": opts.tol_moment, "unit": "μB",
                       "where": f"a = {worst[0]:.4f} Å, {worst[1]}, atom {worst[2]['worst_atom']}"})
        worst = max(((s["a"], lab, abs(r["dE_potential_meV"] - r["dE_oracle_meV"])) for s in scan
                     for lab, r in s["states"].items()), key=lambda x: x[2])
        checks.append({"name": "state energy differences", "value": worst[2], "tolerance": opts.tol_energy,
                       "unit": "meV/atom", "where": f"a = {worst[0]:.4f} Å, {worst[1]} - {labels[0]}"})
        for label, v in lat.items():
            if v["potential"] is not None and v["oracle"] is not None:
                checks.append({"name": f"lattice parameter {label}", "value": abs(v["potential"] - v["oracle"]),
                               "tolerance": opts.tol_lattice, "unit": "Å", "where": label})
    out = {"lattice_scan": lattice, "scan": scan, "lattice": lat, "elastic": {}, "phonons": {}}
    if opts.elastic or opts.phonons:
        a_el = float(opts.elastic_lattice if opts.elastic_lattice is not None else lattice[len(lattice) // 2])
        for kind in opts.elastic_states:
            cell = (pm_cell or structure)(a_el) if kind == "PM" else (elastic_cell or structure)(a_el)
            res = {}
            setups = {}
            for side, calc in (("potential", potential_calc), ("oracle", oracle_calc)):
                res[side], setups[side] = _elastic(calc, cell, kind, moment, opts) if opts.elastic else (None, None)
            if opts.elastic:
                rel = {k: abs(res["potential"][k] - res["oracle"][k]) / abs(res["oracle"][k])
                       for k in ("C11", "C12", "C44")}
                out["elastic"][kind] = {"a": a_el, **res, "relative_error": rel}
                for k, v in rel.items():
                    checks.append({"name": f"{k} {kind}", "value": v, "tolerance": opts.tol_elastic, "unit": "",
                                   "where": f"a = {a_el:.4f} Å"})
                say(f"validation: elastic constants {kind}: " + ", ".join(
                    f"{k} {res['potential'][k]:.0f} vs {res['oracle'][k]:.0f} GPa" for k in ("C11", "C12", "C44")))
            if opts.phonons:
                from mmtp_rs.properties.setup import MagneticSetup

                freq = {}
                for side, calc in (("potential", potential_calc), ("oracle", oracle_calc)):
                    kw = dict(direction=opts.afm_direction) if kind == "AFM" else {}
                    st = setups[side] or MagneticSetup(calc, kind, moment=moment, equilibrate=True,
                                                       n_states=opts.pm_states, seed=opts.seed, **kw)
                    freq[side] = _zone_boundary(st, cell)
                top = freq["oracle"] > 0.2 * freq["oracle"].max()
                rel = float(np.max(np.abs(freq["potential"][top] - freq["oracle"][top]) / freq["oracle"][top]))
                out["phonons"][kind] = {"a": a_el, "potential_THz": freq["potential"].tolist(),
                                        "oracle_THz": freq["oracle"].tolist(), "max_relative_error": rel}
                checks.append({"name": f"zone-boundary phonons {kind}", "value": rel, "tolerance": opts.tol_phonon,
                               "unit": "", "where": f"a = {a_el:.4f} Å, X and M"})
                say(f"validation: zone-boundary phonons {kind}: max relative error {rel:.3f}")
    for c in checks:
        c["pass"] = bool(c["value"] <= c["tolerance"])
    out["checks"] = checks
    out["passed"] = all(c["pass"] for c in checks)
    out["wall_time_s"] = time.perf_counter() - t0
    return _jsonable(out)


def _jsonable(x):
    if isinstance(x, dict):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    if isinstance(x, np.ndarray):
        return x.tolist()
    if isinstance(x, (np.floating, np.integer)):
        return x.item()
    return x


def validation_markdown(rep: dict) -> str:
    """The validation as Markdown tables."""
    md = ["## Validation with moments equilibrated (potential vs oracle)", "",
          "Both sides go through the same stage 1 from the same starting moments.", "",
          "| a (Å) | state | ΔE potential (meV/atom) | ΔE oracle (meV/atom) | max abs Δm (μB) | mean abs m potential | "
          "mean abs m oracle |", "|---|---|---|---|---|---|---|"]
    for s in rep["scan"]:
        for label, r in s["states"].items():
            mp = ", ".join(f"{k} {v:.3f}" for k, v in r["moments"]["potential"].items())
            mo = ", ".join(f"{k} {v:.3f}" for k, v in r["moments"]["oracle"].items())
            md.append(f"| {s['a']:.4f} | {label} | {r['dE_potential_meV']:.2f} | {r['dE_oracle_meV']:.2f} | "
                      f"{r['max_dm']:.4f} | {mp} | {mo} |")
    if rep["lattice"]:
        md += ["", "| state | a0 potential (Å) | a0 oracle (Å) |", "|---|---|---|"]
        for label, v in rep["lattice"].items():
            f = (lambda x: "outside the scan" if x is None else f"{x:.4f}")
            md.append(f"| {label} | {f(v['potential'])} | {f(v['oracle'])} |")
    if rep["elastic"]:
        md += ["", "| state | C11 pot / oracle (GPa) | C12 pot / oracle | C44 pot / oracle |", "|---|---|---|---|"]
        for kind, v in rep["elastic"].items():
            md.append(f"| {kind} | " + " | ".join(f"{v['potential'][k]:.1f} / {v['oracle'][k]:.1f}"
                                               for k in ("C11", "C12", "C44")) + " |")
    md += ["", "| check | value | tolerance | where | pass |", "|---|---|---|---|---|"]
    for c in rep["checks"]:
        md.append(f"| {c['name']} | {c['value']:.4g} {c['unit']} | {c['tolerance']:.4g} {c['unit']} | {c['where']} | "
                  f"{'yes' if c['pass'] else '**no**'} |")
    md += ["", f"All checks pass: {'yes' if rep['passed'] else '**no**'}", ""]
    return "\n".join(md)


def plot_validation(rep: dict, path: str | Path) -> Path | None:
    """Moments per species and ΔE against the lattice parameter, potential (lines) against oracle (markers)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    a = [s["a"] for s in rep["scan"]]
    labels = list(rep["scan"][0]["states"]) if rep["scan"] else []
    species = list(rep["scan"][0]["states"][labels[0]]["moments"]["oracle"]) if labels else []
    fig, ax = plt.subplots(1, 1 + len(species), figsize=(4.2 * (1 + len(species)), 3.8))
    ax = np.atleast_1d(ax)
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for k, label in enumerate(labels):
        c = colors[k % len(colors)]
        ax[0].plot(a, [s["states"][label]["dE_potential_meV"] for s in rep["scan"]], "-", color=c, label=label)
        ax[0].plot(a, [s["states"][label]["dE_oracle_meV"] for s in rep["scan"]], "o", color=c, mfc="none")
        for j, sp in enumerate(species):
            ax[1 + j].plot(a, [s["states"][label]["moments"]["potential"][sp] for s in rep["scan"]], "-", color=c,
                           label=label)
            ax[1 + j].plot(a, [s["states"][label]["moments"]["oracle"][sp] for s in rep["scan"]], "o", color=c,
                           mfc="none")
    ax[0].set_ylabel(f"E - E({labels[0]}) (meV/atom)" if labels else "ΔE (meV/atom)")
    for j, sp in enumerate(species):
        ax[1 + j].set_ylabel(f"mean |m| of {sp} (μB)")
    for axis in ax:
        axis.set_xlabel("lattice parameter (Å)")
    ax[0].legend(fontsize=7, title="line: potential, o: oracle", title_fontsize=7)
    fig.tight_layout()
    path = Path(path)
    save_figure(fig, path, dpi=110)
    plt.close(fig)
    return path


def write_validation(rep: dict, outdir: str | Path) -> list[str]:
    """``validation.json``, ``validation.md`` and ``validation.png`` in ``outdir``; returns the file names."""
    out = Path(outdir)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "validation.json", json.dumps(rep, indent=1) + "\n")
    atomic_write_text(out / "validation.md", validation_markdown(rep))
    names = ["validation.json", "validation.md"]
    if rep["scan"] and plot_validation(rep, out / "validation.png") is not None:
        names.append("validation.png")
    return names
