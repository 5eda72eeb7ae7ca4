"""Mechanical, dynamical and thermal properties of FM, AFM and PM states.

The properties reported by Kotykhov et al. (PRB 2025) for CrN:

* elastic constants C_ij (6x6, GPa) from stress-strain with internal relaxation
  (:func:`elastic_constants`), Born stability (:func:`born_stability`);
* phonons with phonopy: band structure along the seekpath standard path, DOS,
  optional non-analytic correction (:func:`phonons`);
* quasi-harmonic thermal expansion alpha(T) and isobaric heat capacity C_p(T)
  through phonopy's QHA (:func:`quasi_harmonic`);
* ``mmtp properties CONFIG.toml``: all of it for a set of magnetic states,
  written as JSON, Markdown and PNG (:func:`run_report`, :func:`run`).

A magnetic state is put on any cell by a :class:`MagneticSetup`: FM and
layered AFM moments come from the positions, the PM state is a
:class:`~mmtp_rs.magnetism.paramagnetic.ParamagneticCalculator` with its own K random
states per cell (moments attach by index). Within one property calculation
every strained or displaced copy shares the moments (or the K states) of its
reference geometry, so finite differences are taken at fixed moments.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any, Mapping

import numpy as np
from ase import Atoms

from mmtp_rs.config import ConfigError, read_toml
from mmtp_rs.io.atomic import atomic_write_text, save_figure
from mmtp_rs.magnetism.paramagnetic import convergence, plot_convergence
from mmtp_rs.properties.elastic import born_stability, cubic_constants, elastic_constants, equilibrium_scale
from mmtp_rs.properties.phonons import phonons
from mmtp_rs.properties.qha import quasi_harmonic
from mmtp_rs.properties.setup import MagneticSetup
from mmtp_rs.units import EV_A3_TO_GPA


__all__ = ["EV_A3_TO_GPA", "DEFAULTS", "load_config", "build_structure", "build_calculator", "run_report", "write_report"]




# ================================================================ configuration
DEFAULTS: dict[str, Any] = {
    "structure": {"prototype": "rocksalt", "symbols": "CrN", "a": 4.15, "cubic": True, "relax_volume": True},
    "calculator": {"reference": "CrN"},
    "moments": {"equilibrate": True},
    "states": {"FM": {"kind": "FM"}, "AFM": {"kind": "AFM", "direction": "AFM1"},
               "PM": {"kind": "PM", "n_states": 50, "seed": 0}},
    "elastic": {"enabled": True, "supercell": [2, 2, 2], "strain": 0.005, "fmax": 1e-3, "relax": True, "max_steps": 300,
                "moments": "relaxed"},
    "phonons": {"enabled": True, "supercell": [2, 2, 2], "distance": 0.01, "mesh": [16, 16, 16], "npoints": 51},
    "qha": {"enabled": True, "n_volumes": 7, "volume_range": 0.05, "t_min": 0.0, "t_max": 1000.0,
            "t_step": 10.0, "mesh": [12, 12, 12]},
    "convergence": {"enabled": True, "k_max": 50, "n_pool": 400},
    "output": {"dir": "properties"},
}


def load_config(path_or_dict) -> tuple[dict, Path]:
    """Read a TOML config (or take a dict) and fill defaults; returns (config, base directory)."""
    if isinstance(path_or_dict, Mapping):
        raw, base = dict(path_or_dict), Path.cwd()
    else:
        path = Path(path_or_dict)
        raw, base = read_toml(path), path.resolve().parent
    where = "config" if isinstance(path_or_dict, Mapping) else str(path_or_dict)
    unknown = set(raw) - set(DEFAULTS)
    if unknown:
        raise ConfigError(f"{where}: unknown config sections: {sorted(unknown)}; known: {sorted(DEFAULTS)}")
    extra = {"structure": {"file"}, "phonons": {"nac"}, "calculator": {"potential", "species", "reference"}}
    for sec, vals in raw.items():
        if not isinstance(vals, dict):
            raise ConfigError(f"{where}: [{sec}] must be a table")
        if sec in ("states", "moments"):
            continue
        bad = set(vals) - set(DEFAULTS[sec]) - extra.get(sec, set())
        if bad:
            raise ConfigError(f"{where}: [{sec}] unknown key(s) {sorted(bad)}; known: "
                              f"{sorted(set(DEFAULTS[sec]) | extra.get(sec, set()))}")
    for name, st in raw.get("states", {}).items():
        allowed = {"kind", "direction", "n_layers", "n_states", "seed"}
        if not isinstance(st, dict) or set(st) - allowed:
            raise ConfigError(f"{where}: [states.{name}] unknown key(s) "
                              f"{sorted(set(st) - allowed) if isinstance(st, dict) else st}; known: {sorted(allowed)}")
    for k, v in raw.get("moments", {}).items():
        if k == "equilibrate":
            if not isinstance(v, bool):
                raise ConfigError(f"{where}: [moments] equilibrate must be true or false, got {v!r}")
        elif not (isinstance(v, (int, float)) and not isinstance(v, bool) and 0 <= v <= 20):
            raise ConfigError(f"{where}: [moments] {k} must be a magnitude in μB (0-20), got {v!r}")
    cfg: dict[str, Any] = {}
    for sec, dflt in DEFAULTS.items():
        if sec == "states":
            cfg[sec] = raw.get(sec, dflt)
        else:
            cfg[sec] = {**dflt, **raw.get(sec, {})}
    if "moments" not in raw or not (set(raw["moments"]) - {"equilibrate"}):
        cfg["moments"].setdefault("Cr", 2.5)
    return cfg, base


def check_config(path_or_dict) -> str:
    """Load and check a properties configuration without computing anything
    (``mmtp properties --check``); returns a one-line summary."""
    cfg, base = load_config(path_or_dict)
    cell = build_structure(cfg["structure"], base)
    calc = build_calculator(cfg["calculator"], base)
    setups = _setups(cfg, calc)
    for st in setups:
        if st.kind != "PM":
            st.signed_moments(cell.repeat(cfg["elastic"]["supercell"]))
    enabled = [k for k in ("elastic", "phonons", "qha", "convergence") if cfg[k].get("enabled", True)]
    return f"{len(cell)}-atom cell, states {[st.name for st in setups]}, computing {enabled}"


def build_structure(scfg: Mapping[str, Any], base: Path) -> Atoms:
    """The unit cell described by the [structure] section (prototype via ase.build.bulk, or a file)."""
    if "file" in scfg:
        from ase.io import read

        p = Path(scfg["file"])
        return read(p if p.is_absolute() else base / p)
    from ase.build import bulk

    return bulk(scfg["symbols"], scfg["prototype"], a=float(scfg["a"]), cubic=bool(scfg.get("cubic", True)))


def build_calculator(ccfg: Mapping[str, Any], base: Path):
    """The moment-aware calculator of the [calculator] section."""
    if "potential" in ccfg:
        from mmtp_rs.model.calculator import MMTPCalculator
        from mmtp_rs.model.potential import Potential

        p = Path(ccfg["potential"])
        pot = Potential.from_file(str(p if p.is_absolute() else base / p), species=ccfg.get("species"))
        return MMTPCalculator(pot)
    if "reference" in ccfg:
        from mmtp_rs.oracles.reference import ReferenceCalculator

        return ReferenceCalculator(str(ccfg["reference"]))
    raise ValueError("[calculator] needs 'reference = PRESET' or 'potential = FILE' (+ 'species')")


def _setups(cfg: dict, calc) -> list[MagneticSetup]:
    mom = {k: float(v) for k, v in cfg["moments"].items() if k != "equilibrate"}
    eq = bool(cfg["moments"].get("equilibrate", True))
    out = []
    for name, s in cfg["states"].items():
        s = dict(s)
        kind = s.pop("kind", name)
        allowed = {"direction", "n_layers", "n_states", "seed"}
        if set(s) - allowed:
            raise ValueError(f"state {name}: unknown keys {sorted(set(s) - allowed)}")
        out.append(MagneticSetup(calc, kind=kind, moment=mom, equilibrate=eq, name=name, **s))
    return out


# ================================================================ report
def _progress(msg: str, quiet: bool):
    if not quiet:
        print(msg, flush=True)


def run_report(config, outdir: str | Path | None = None, quiet: bool = False) -> dict:
    """Compute the configured properties for every state and write the report.

    Writes ``report.json``, ``report.md`` and PNG plots (elastic.png,
    phonons.png, thermal_expansion.png, heat_capacity.png,
    pm_convergence.png) into the output directory; returns the report dict
    (including ``timings_s``, the split of the wall time).
    """
    cfg, base = load_config(config)
    out = Path(outdir) if outdir is not None else Path(cfg["output"]["dir"])
    if not out.is_absolute() and outdir is None:
        out = base / out
    out.mkdir(parents=True, exist_ok=True)
    t_all = time.perf_counter()
    timings: dict[str, float] = {}
    calc = build_calculator(cfg["calculator"], base)
    cell0 = build_structure(cfg["structure"], base)
    setups = _setups(cfg, calc)
    report: dict[str, Any] = {"config": cfg, "n_atoms_unit_cell": len(cell0), "states": {}}

    def tick(key, t0):
        timings[key] = timings.get(key, 0.0) + time.perf_counter() - t0

    for st in setups:
        r: dict[str, Any] = {"kind": st.kind}
        report["states"][st.name] = r
        t0 = time.perf_counter()
        scale, p = 1.0, None
        if cfg["structure"].get("relax_volume", True):
            ecell = cell0.repeat(cfg["elastic"]["supercell"])
            scale, p = equilibrium_scale(ecell, st)
        unit = cell0.copy()
        unit.set_cell(cell0.cell.array * scale, scale_atoms=True)
        r["lattice_scale"] = scale
        r["cell_lengths_A"] = unit.cell.lengths().tolist()
        r["pressure_at_scale_GPa"] = p
        tick(f"{st.name}/volume", t0)
        _progress(f"[{st.name}] cell scale {scale:.5f} (a = {unit.cell.lengths()[0]:.4f} Å)", quiet)

        if cfg["elastic"]["enabled"]:
            t0 = time.perf_counter()
            ec = cfg["elastic"]
            at = st.attach(unit.repeat(ec["supercell"]))
            res = elastic_constants(at, strain=float(ec["strain"]), relax=bool(ec["relax"]),
                                    fmax=float(ec["fmax"]), max_steps=int(ec["max_steps"]),
                                    reattach=st.reattacher(at) if ec["moments"] == "relaxed" else None)
            r["elastic"] = {"C_GPa": res["C"].tolist(), "C_sym_GPa": res["C_sym"].tolist(),
                            "asymmetry_GPa": res["asymmetry"], "stress0_GPa": res["stress0_GPa"].tolist(),
                            "cubic": cubic_constants(res["C_sym"]), "born": born_stability(res["C_sym"]),
                            "relax_steps": res["relax_steps"], "n_atoms": len(at),
                            "moments_muB": st.moments_summary(at)}
            tick(f"{st.name}/elastic", t0)
            cc = r["elastic"]["cubic"]
            _progress(f"[{st.name}] C11 {cc['C11']:.1f}  C12 {cc['C12']:.1f}  C44 {cc['C44']:.1f} GPa "
                      f"(Born stable: {r['elastic']['born']['stable']})", quiet)

        pc = cfg["phonons"]
        if pc["enabled"]:
            t0 = time.perf_counter()
            nac = pc.get("nac")
            ph = phonons(unit, st, supercell=pc["supercell"], distance=float(pc["distance"]), mesh=pc["mesh"],
                         npoints=int(pc["npoints"]), nac=nac)
            r["phonons"] = {k: ph[k] for k in ("bands", "dos", "min_frequency_THz", "n_displacements",
                                               "n_supercell_atoms", "n_primitive_atoms", "moments")}
            r["phonons"]["nac"] = bool(nac)
            tick(f"{st.name}/phonons", t0)
            _progress(f"[{st.name}] phonons: {ph['n_displacements']} displacements, "
                      f"min frequency {ph['min_frequency_THz']:.3f} THz", quiet)

        qc = cfg["qha"]
        if qc["enabled"]:
            t0 = time.perf_counter()
            r["qha"] = quasi_harmonic(unit, st, supercell=pc["supercell"], volume_range=float(qc["volume_range"]),
                                      n_volumes=int(qc["n_volumes"]), t_min=float(qc["t_min"]),
                                      t_max=float(qc["t_max"]), t_step=float(qc["t_step"]), mesh=qc["mesh"],
                                      distance=float(pc["distance"]))
            tick(f"{st.name}/qha", t0)
            if not r["qha"]["temperatures"]:
                _progress(f"[{st.name}] QHA: equilibrium volume outside the sampled range at all T", quiet)
                continue
            i300 = int(np.argmin(np.abs(np.array(r["qha"]["temperatures"]) - 300)))
            _progress(f"[{st.name}] QHA: alpha(300 K) = {r['qha']['alpha_per_K'][i300]:.3e} 1/K, "
                      f"C_p(300 K) = {r['qha']['cp_J_K_mol'][i300]:.2f} J/(K mol)", quiet)

    cc = cfg["convergence"]
    pm = [s for s in setups if s.kind == "PM"]
    if cc["enabled"] and pm:
        t0 = time.perf_counter()
        st = pm[0]
        s = report["states"][st.name]["lattice_scale"]
        cell = cell0.repeat(cfg["elastic"]["supercell"])
        cell.set_cell(cell.cell.array * s, scale_atoms=True)
        conv = convergence(calc, cell, k_max=int(cc["k_max"]), seed=st.seed, moment=st.moment,
                           equilibrate="once" if st.equilibrate else "none", n_pool=int(cc["n_pool"]))
        report["pm_convergence"] = conv
        tick("pm_convergence", t0)

    t0 = time.perf_counter()
    write_report(report, out)
    tick("report_writing", t0)
    timings["total"] = time.perf_counter() - t_all
    report["timings_s"] = timings
    atomic_write_text(out / "report.json", json.dumps(_jsonable(report), indent=1) + "\n")
    _progress(f"report written to {out}", quiet)
    return report


def _jsonable(x):
    if isinstance(x, dict):
        return {str(k): _jsonable(v) for k, v in x.items() if k != "phonopy"}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    if isinstance(x, np.ndarray):
        return _jsonable(x.tolist())
    if isinstance(x, (np.floating, float)):
        return None if not math.isfinite(float(x)) else float(x)
    if isinstance(x, (np.integer,)):
        return int(x)
    if isinstance(x, (np.bool_,)):
        return bool(x)
    return x


def _markdown(report: dict) -> str:
    lines = ["# Property report", ""]
    states = report["states"]
    lines += ["## Structure", "", "| state | cell lengths (Å) | mean |m| (μB) |", "|---|---|---|"]
    for n, r in states.items():
        mom = (r.get("elastic") or r.get("phonons") or {}).get("moments_muB") or \
            (r.get("phonons") or {}).get("moments") or {}
        ls = ", ".join(f"{v:.4f}" for v in r["cell_lengths_A"])
        lines.append(f"| {n} | {ls} | " + ", ".join(f"{k} {v:.3f}" for k, v in mom.items()) + " |")
    if any("elastic" in r for r in states.values()):
        lines += ["", "## Elastic constants (GPa)", "",
                  "| state | C11 | C12 | C44 | B | max dev. from cubic | Born stable |", "|---|---|---|---|---|---|---|"]
        for n, r in states.items():
            if "elastic" in r:
                c = r["elastic"]["cubic"]
                lines.append(f"| {n} | {c['C11']:.1f} | {c['C12']:.1f} | {c['C44']:.1f} | {c['B']:.1f} | "
                             f"{c['max_deviation_from_cubic']:.1f} | {r['elastic']['born']['stable']} |")
        for n, r in states.items():
            if "elastic" in r:
                lines += ["", f"Full C_ij of {n} (GPa, symmetrised):", "", "```"]
                lines += ["  ".join(f"{v:8.1f}" for v in row) for row in r["elastic"]["C_sym_GPa"]]
                lines += ["```"]
    if any("phonons" in r for r in states.values()):
        lines += ["", "## Phonons", "", "| state | min frequency (THz) | displacements | supercell atoms | NAC |",
                  "|---|---|---|---|---|"]
        for n, r in states.items():
            if "phonons" in r:
                p = r["phonons"]
                lines.append(f"| {n} | {p['min_frequency_THz']:.3f} | {p['n_displacements']} | "
                             f"{p['n_supercell_atoms']} | {p['nac']} |")
    if any("qha" in r for r in states.values()):
        lines += ["", "## Quasi-harmonic thermal properties", "",
                  "| state | T (K) | α (1e-6/K) | C_p (J/(K mol f.u.)) | V (Å³/f.u.) |", "|---|---|---|---|---|"]
        for n, r in states.items():
            if "qha" in r:
                q = r["qha"]
                t = np.array(q["temperatures"])
                for tt in (100, 300, 500, 800, 1000):
                    if t.size and t.min() <= tt <= t.max():
                        i = int(np.argmin(np.abs(t - tt)))
                        lines.append(f"| {n} | {t[i]:.0f} | {q['alpha_per_K'][i] * 1e6:.2f} | "
                                     f"{q['cp_J_K_mol'][i]:.2f} | {q['volume_A3'][i]:.3f} |")
    if "pm_convergence" in report:
        lines += ["", "## Convergence of the PM average", "", "| quantity | mean (K = k_max) | standard error | "
                  "log-log slope of the K-mean scatter (−0.5 expected) |", "|---|---|---|---|"]
        for name, d in report["pm_convergence"]["quantities"].items():
            lines.append(f"| {name} | {d['final']:.6g} | {d['final_sem']:.2g} | {d['batch']['loglog_slope']:.3f} |")
    lines.append("")
    return "\n".join(lines)


def write_report(report: dict, out: Path) -> None:
    """Markdown tables and PNG plots of a report (the JSON is written by :func:`run_report`)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = Path(out)
    atomic_write_text(out / "report.md", _markdown(report))
    states = report["states"]
    el = {n: r["elastic"] for n, r in states.items() if "elastic" in r}
    if el:
        fig, axes = plt.subplots(1, len(el), figsize=(4.2 * len(el), 4), squeeze=False)
        for ax, (n, e) in zip(axes[0], el.items()):
            c = np.array(e["C_sym_GPa"])
            vmax = np.abs(c).max()
            ax.imshow(c, cmap="RdBu_r", vmin=-vmax, vmax=vmax)
            for i in range(6):
                for j in range(6):
                    ax.text(j, i, f"{c[i, j]:.0f}", ha="center", va="center", fontsize=7)
            ax.set_xticks(range(6), [str(i + 1) for i in range(6)])
            ax.set_yticks(range(6), [str(i + 1) for i in range(6)])
            ax.set_title(f"{n}: C_ij (GPa)")
        fig.tight_layout()
        save_figure(fig, out / "elastic.png", dpi=120)
        plt.close(fig)
    ph = {n: r["phonons"] for n, r in states.items() if "phonons" in r and "bands" in r["phonons"]}
    if ph:
        fig, axes = plt.subplots(len(ph), 2, figsize=(10, 3.6 * len(ph)), squeeze=False,
                                 gridspec_kw={"width_ratios": [4, 1]})
        for row, (n, p) in zip(axes, ph.items()):
            ax = row[0]
            b = p["bands"]
            ticks, tlabels = [], []
            for k, (d, f) in enumerate(zip(b["distances"], b["frequencies_THz"])):
                ax.plot(d, f, color="C0", lw=0.8)
                a, z = b["labels"][k].split("-")
                a, z = a.replace("GAMMA", "Γ"), z.replace("GAMMA", "Γ")
                if not b["connected"][k] and ticks:
                    tlabels[-1] = f"{tlabels[-1]}|{a}"
                elif not ticks:
                    ticks.append(d[0])
                    tlabels.append(a)
                ticks.append(d[-1])
                tlabels.append(z)
            for t in ticks:
                ax.axvline(t, color="k", lw=0.5)
            ax.axhline(0, color="k", lw=0.5, ls=":")
            ax.set_xticks(ticks, tlabels)
            ax.set_xlim(ticks[0], ticks[-1])
            ax.set_ylabel("frequency (THz)")
            ax.set_title(f"{n}" + (" (NAC)" if p.get("nac") else ""))
            if "dos" in p:
                row[1].plot(p["dos"]["total_dos"], p["dos"]["frequency_points_THz"], color="C1")
                row[1].set_ylim(ax.get_ylim())
                row[1].set_xlabel("DOS")
            else:
                row[1].axis("off")
        fig.tight_layout()
        save_figure(fig, out / "phonons.png", dpi=120)
        plt.close(fig)
    qh = {n: r["qha"] for n, r in states.items() if "qha" in r}
    for key, fname, ylabel, scale in (("alpha_per_K", "thermal_expansion.png", "α (10⁻⁶/K)", 1e6),
                                      ("cp_J_K_mol", "heat_capacity.png", "C_p (J/(K mol f.u.))", 1.0)):
        if not qh:
            break
        fig, ax = plt.subplots(figsize=(5.5, 4))
        for n, q in qh.items():
            ax.plot(q["temperatures"], np.array(q[key]) * scale, label=n)
        ax.set_xlabel("T (K)")
        ax.set_ylabel(ylabel)
        ax.legend()
        fig.tight_layout()
        save_figure(fig, out / fname, dpi=120)
        plt.close(fig)
    if "pm_convergence" in report:
        plot_convergence(report["pm_convergence"], out / "pm_convergence.png")


