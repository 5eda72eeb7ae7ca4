"""The ``mmtp magnetism`` job: a spin Monte-Carlo temperature scan of one or
two supercells and the ordering (Néel or Curie) temperature, written as
``magnetism.json``, ``magnetism.md`` and plots of M(T), C(T) and χ(T).

Config sections (TOML): ``[structure]`` and ``[calculator]`` as for
``mmtp properties``; ``[moments]`` (starting magnitudes per species, μB, and
``equilibrate``); ``[scan]`` (see :data:`DEFAULTS` and docs/magnetism.md);
``[output]`` (``dir``).
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np

from mmtp_rs.magnetism.montecarlo import MCSettings
from mmtp_rs.magnetism.observables import TransitionNotFound
from mmtp_rs.magnetism.scan import ordering_patterns, ordering_temperature, temperature_scan

__all__ = ["DEFAULTS", "load_config", "run_magnetism"]

DEFAULTS: dict[str, Any] = {
    "structure": {"prototype": "rocksalt", "symbols": "CrN", "a": 4.15, "cubic": True},
    "calculator": {"reference": "CrN"},
    "moments": {"equilibrate": True},
    "scan": {
        "temperatures": None,       # K, explicit list; else t_min, t_max, n_t
        "t_min": 50.0,
        "t_max": 300.0,
        "n_t": 11,
        "supercells": [[2, 2, 2], [3, 3, 3]],
        "order": "AFM1",            # "FM", "AFM1", "AFM2", "AFM110_2" or "h,k,l"
        "equivalent": True,         # order parameter over the cubic-equivalent variants of the order
        "m_max": "auto",            # "auto" or {symbol = μB}
        "n_equil": 300,
        "n_samples": 1500,
        "sweeps_per_sample": 1,
        "p_flip": 0.5,
        "step": 0.2,
        "n_blocks": 16,
        "seed": 0,
    },
    "output": {"dir": "magnetism"},
}


def load_config(path_or_dict) -> tuple[dict, Path]:
    """Read a TOML config (or take a dict), reject unknown sections and keys,
    fill defaults; returns (config, base directory for relative paths)."""
    from mmtp_rs.config import read_toml

    if isinstance(path_or_dict, Mapping):
        raw, base = dict(path_or_dict), Path.cwd()
    else:
        path = Path(path_or_dict)
        if not path.is_file():
            raise FileNotFoundError(f"config file {path} not found")
        raw, base = read_toml(path), path.resolve().parent
    unknown = set(raw) - set(DEFAULTS)
    if unknown:
        raise ValueError(f"unknown config sections: {sorted(unknown)} (known: {sorted(DEFAULTS)})")
    cfg = {sec: {**dflt, **raw.get(sec, {})} for sec, dflt in DEFAULTS.items()}
    for sec in ("scan", "output"):
        bad = set(raw.get(sec, {})) - set(DEFAULTS[sec])
        if bad:
            raise ValueError(f"[{sec}]: unknown keys {sorted(bad)} (known: {sorted(DEFAULTS[sec])})")
    s = cfg["scan"]
    if s["temperatures"] is None:
        if not (0 < s["t_min"] < s["t_max"] and int(s["n_t"]) >= 3):
            raise ValueError("[scan]: need 0 < t_min < t_max and n_t >= 3")
        s["temperatures"] = np.linspace(float(s["t_min"]), float(s["t_max"]), int(s["n_t"])).tolist()
    s["temperatures"] = sorted(float(t) for t in s["temperatures"])
    if len(s["temperatures"]) < 3 or s["temperatures"][0] <= 0:
        raise ValueError("[scan]: need at least 3 temperatures, all > 0 K")
    if not s["supercells"] or any(len(r) != 3 or min(r) < 1 for r in s["supercells"]):
        raise ValueError("[scan]: supercells must be a list of [n1, n2, n3] repeats")
    for k in ("n_equil", "n_samples", "sweeps_per_sample"):
        if int(s[k]) < (0 if k == "n_equil" else 1):
            raise ValueError(f"[scan]: {k} must be >= {0 if k == 'n_equil' else 1}")
    MCSettings(float(s["p_flip"]), float(s["step"]))  # validates
    if "Cr" not in cfg["moments"] and len(set(cfg["moments"]) - {"equilibrate"}) == 0:
        cfg["moments"]["Cr"] = 2.5
    return cfg, base


def _say(progress, msg):
    if progress is not None:
        progress(msg)


def run_magnetism(config, outdir: str | Path | None = None,
                  progress: Callable[[str], None] | None = print) -> dict:
    """Run the scan of ``config`` (path or dict) and write the report; returns the result dict."""
    from mmtp_rs.magnetism.stage1 import equilibrate_moments
    from mmtp_rs.magnetism.states import magnitudes
    from mmtp_rs.properties.report import build_calculator, build_structure

    cfg, base = load_config(config)
    out = Path(outdir) if outdir is not None else base / cfg["output"]["dir"]
    out.mkdir(parents=True, exist_ok=True)
    calc = build_calculator(cfg["calculator"], base)
    unit = build_structure(cfg["structure"], base)
    s = cfg["scan"]
    mom = {k: float(v) for k, v in cfg["moments"].items() if k != "equilibrate"}
    magnetic = sorted(k for k, v in mom.items() if v > 0)
    if not magnetic:
        raise ValueError("[moments]: give the magnitude of at least one magnetic species")
    settings = MCSettings(float(s["p_flip"]), float(s["step"]))
    m_max = s["m_max"] if isinstance(s["m_max"], str) else {k: float(v) for k, v in s["m_max"].items()}
    t0 = time.perf_counter()
    scans, sizes = {}, {}
    for rep in s["supercells"]:
        atoms = unit.repeat(tuple(int(x) for x in rep))
        patterns = ordering_patterns(atoms, magnetic, s["order"], equivalent=bool(s["equivalent"]))
        m0 = patterns[0] * magnitudes(atoms, mom)
        if cfg["moments"].get("equilibrate", True):
            m0 = equilibrate_moments(atoms, calc, m0)
        atoms.set_initial_magnetic_moments(m0)
        n = len(atoms)
        _say(progress, f"[{n} atoms] {len(s['temperatures'])} temperatures, "
                       f"{s['n_equil']} + {s['n_samples']} x {s['sweeps_per_sample']} sweeps each")

        def tick(t, k, n=n):
            _say(progress, f"[{n} atoms] T = {t:7.1f} K  ({k + 1}/{len(s['temperatures'])}, "
                           f"{time.perf_counter() - t0:.0f} s)")

        res = temperature_scan(atoms, calc, s["temperatures"], patterns, n_equil=int(s["n_equil"]),
                               n_samples=int(s["n_samples"]), sweeps_per_sample=int(s["sweeps_per_sample"]),
                               m_max=m_max, settings=settings, seed=int(s["seed"]), n_blocks=int(s["n_blocks"]),
                               progress=tick)
        scans[n] = res
        sizes[n] = list(rep)
    try:
        tn = ordering_temperature(scans)
    except TransitionNotFound as exc:
        tn = {"temperature_K": None, "uncertainty_K": None, "method": None, "error": str(exc)}
    kind = "curie" if s["order"].upper() == "FM" else "neel"
    result = {
        f"{kind}_temperature_K": tn.get("temperature_K"),
        f"{kind}_temperature_uncertainty_K": tn.get("uncertainty_K"),
        "method": tn.get("method"),
        "transition": tn,
        "order": s["order"],
        "magnetic_species": magnetic,
        "calculator": dict(cfg["calculator"]),
        "scan": {k: v for k, v in s.items()},
        "sizes": {str(n): {"supercell": sizes[n], "results": scans[n]} for n in scans},
        "wall_time_s": time.perf_counter() - t0,
    }
    _write(out, result, kind)
    val = result[f"{kind}_temperature_K"]
    _say(progress, f"{kind.capitalize()} temperature: "
                   + (f"{val:.1f} ± {result[f'{kind}_temperature_uncertainty_K']:.1f} K ({result['method']})"
                      if val is not None else f"not found ({tn.get('error')})"))
    _say(progress, f"report written to {out}")
    return result


def _write(out: Path, result: dict, kind: str) -> None:
    from mmtp_rs.io.atomic import atomic_write_text

    atomic_write_text(out / "magnetism.json", json.dumps(result, indent=1, default=float))
    _plots(out, result)
    t = result[f"{kind}_temperature_K"]
    name = "Néel" if kind == "neel" else "Curie"
    lines = [f"# Spin Monte Carlo: {name} temperature", ""]
    if t is not None:
        lines.append(f"**T = {t:.1f} ± {result[f'{kind}_temperature_uncertainty_K']:.1f} K** ({result['method']}; "
                     f"order {result['order']}, calculator {result['calculator']})")
    else:
        lines.append(f"No transition found: {result['transition'].get('error')}")
    tr = result["transition"]
    if "T_peak" in tr:
        lines.append(f"\n- staggered-susceptibility peak (largest cell): {tr['T_peak']:.1f} ± {tr['T_peak_err']:.1f} K")
    if "T_binder" in tr:
        lines.append(f"- Binder-cumulant crossing (two largest cells): {tr['T_binder']:.1f} ± {tr['T_binder_err']:.1f} K")
    for n, d in result["sizes"].items():
        lines += ["", f"## {n} atoms (supercell {d['supercell']})", "",
                  "| T (K) | E (eV/atom) | |M_s| (μB) | |M| (μB) | C (k_B/atom) | χ_s (μB²/eV) | U_s | acc. |",
                  "|---|---|---|---|---|---|---|---|"]
        for r in d["results"]:
            lines.append(f"| {r['temperature_K']:.1f} | {r['energy']:.5f} ± {r['energy_err']:.5f} | "
                         f"{r['abs_Ms']:.3f} ± {r['abs_Ms_err']:.3f} | {r['abs_M']:.3f} ± {r['abs_M_err']:.3f} | "
                         f"{r['C']:.3f} ± {r['C_err']:.3f} | {r['chi_s']:.4g} ± {r['chi_s_err']:.2g} | "
                         f"{r['binder']:.3f} ± {r['binder_err']:.3f} | {r['acceptance']:.2f} |")
    lines += ["", "Plots: `M_T.png`, `C_T.png`, `chi_T.png`. Data: `magnetism.json`."]
    atomic_write_text(out / "magnetism.md", "\n".join(lines) + "\n")


def _plots(out: Path, result: dict) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tn = result["transition"].get("temperature_K")
    specs = [("M_T.png", [("abs_Ms", "|M_s|"), ("abs_M", "|M|")], "magnetisation (μB per magnetic atom)"),
             ("C_T.png", [("C", "C")], "specific heat (k_B per atom)"),
             ("chi_T.png", [("chi_s", "χ_s"), ("chi", "χ")], "susceptibility (μB²/eV per magnetic atom)")]
    for fname, keys, ylabel in specs:
        fig, ax = plt.subplots(figsize=(5.5, 4))
        for n, d in result["sizes"].items():
            t = [r["temperature_K"] for r in d["results"]]
            for key, label in keys:
                ax.errorbar(t, [r[key] for r in d["results"]], yerr=[r[key + "_err"] for r in d["results"]],
                            marker="o", ms=3, capsize=2, label=f"{label}, {n} atoms")
        if tn is not None:
            ax.axvline(tn, color="k", ls="--", lw=0.8, label=f"T = {tn:.0f} K")
        if fname == "chi_T.png":
            ax.set_yscale("log")
        ax.set_xlabel("T (K)")
        ax.set_ylabel(ylabel)
        ax.legend(fontsize=7)
        fig.tight_layout()
        fig.savefig(out / fname, dpi=110)
        plt.close(fig)
