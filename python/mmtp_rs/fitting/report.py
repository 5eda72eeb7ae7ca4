"""Errors of a fitted potential, reported as in the mMTP papers.

RMSE and MAE of energies (meV/atom), forces (meV/Å, over Cartesian
components), stresses (GPa, over the 6 Voigt components) and magnetic
forces (meV/μB), for each dataset given (e.g. training and validation), as a
dict (JSON-ready), a Markdown table, and parity plots (PNG, matplotlib Agg).
A configuration without a label contributes nothing to that quantity.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from mmtp_rs.fitting.data import Dataset
from mmtp_rs.io.atomic import atomic_write_text, save_figure
from mmtp_rs.io.labels import REF_ENERGY, REF_FORCES, REF_MAGNETIC_FORCES, REF_STRESS
from mmtp_rs.units import EV_A3_TO_GPA


__all__ = ["QUANTITIES", "predictions", "error_metrics", "error_report", "to_markdown", "parity_plots",
           "write_report"]


#: name -> (unit, factor from eV-based units)
QUANTITIES = {
    "energy": ("meV/atom", 1e3),
    "forces": ("meV/Å", 1e3),
    "stress": ("GPa", EV_A3_TO_GPA),
    "magnetic_forces": ("meV/μB", 1e3),
}


def predictions(pot, data: Dataset, symmetrize: bool | None = None) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Reference and predicted values per quantity, in report units.

    Returns ``{quantity: (reference, predicted)}`` with flat arrays: energy
    per atom (meV/atom), force components (meV/Å), stress Voigt components
    (GPa), magnetic forces (meV/μB).
    """
    outs = pot.evaluate_many(data.images, symmetrize=symmetrize) if len(data) else []
    acc = {q: ([], []) for q in QUANTITIES}
    for a, o in zip(data.images, outs):
        n = len(a)
        if REF_ENERGY in a.info:
            acc["energy"][0].append(np.array([a.info[REF_ENERGY] / n]))
            acc["energy"][1].append(np.array([o["energy"] / n]))
        if REF_FORCES in a.arrays:
            acc["forces"][0].append(np.asarray(a.arrays[REF_FORCES], float).ravel())
            acc["forces"][1].append(o["forces"].ravel())
        if REF_STRESS in a.info and "stress" in o:
            acc["stress"][0].append(np.asarray(a.info[REF_STRESS], float).ravel())
            acc["stress"][1].append(o["stress"].ravel())
        if REF_MAGNETIC_FORCES in a.arrays:
            acc["magnetic_forces"][0].append(np.asarray(a.arrays[REF_MAGNETIC_FORCES], float).ravel())
            acc["magnetic_forces"][1].append(o["magnetic_forces"].ravel())
    out = {}
    for q, (ref, pred) in acc.items():
        f = QUANTITIES[q][1]
        out[q] = (f * np.concatenate(ref) if ref else np.empty(0), f * np.concatenate(pred) if pred else np.empty(0))
    return out


def error_metrics(pred: dict) -> dict:
    """RMSE, MAE and count per quantity from :func:`predictions` output (None where no labels)."""
    res = {}
    for q, (ref, p) in pred.items():
        unit = QUANTITIES[q][0]
        if ref.size == 0:
            res[q] = {"unit": unit, "rmse": None, "mae": None, "count": 0}
            continue
        d = p - ref
        res[q] = {"unit": unit, "rmse": float(np.sqrt(np.mean(d * d))), "mae": float(np.mean(np.abs(d))),
                  "count": int(ref.size)}
    return res


def error_report(pot, datasets: dict[str, Dataset], symmetrize: bool | None = None) -> dict:
    """``{set name: {quantity: {unit, rmse, mae, count}}}`` for each dataset (e.g. train, valid)."""
    return {name: error_metrics(predictions(pot, d, symmetrize)) for name, d in datasets.items() if d is not None}


def to_markdown(report: dict) -> str:
    """The report as a Markdown table (one row per set, RMSE / MAE per quantity)."""
    head = "| set | " + " | ".join(f"{q.replace('_', ' ')} RMSE / MAE ({u})" for q, (u, _) in QUANTITIES.items()) + " |"
    sep = "|---|" + "---|" * len(QUANTITIES)
    rows = [head, sep]
    for name, m in report.items():
        cells = []
        for q in QUANTITIES:
            e = m.get(q, {})
            cells.append("–" if e.get("rmse") is None else f"{e['rmse']:.4g} / {e['mae']:.4g}")
        rows.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(rows) + "\n"


def parity_plots(pot, datasets: dict[str, Dataset], outdir: str | os.PathLike, symmetrize: bool | None = None,
                 prefix: str = "parity") -> list[Path]:
    """One parity plot (PNG) per quantity with labels, all datasets on it; returns the paths."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    outdir = Path(outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    preds = {name: predictions(pot, d, symmetrize) for name, d in datasets.items() if d is not None and len(d)}
    paths = []
    for q, (unit, _) in QUANTITIES.items():
        have = {n: p[q] for n, p in preds.items() if p[q][0].size}
        if not have:
            continue
        fig, ax = plt.subplots(figsize=(4.5, 4.5))
        lo, hi = np.inf, -np.inf
        for n, (ref, pr) in have.items():
            rmse = float(np.sqrt(np.mean((pr - ref) ** 2)))
            ax.scatter(ref, pr, s=6, alpha=0.6, label=f"{n} (RMSE {rmse:.3g})")
            lo = min(lo, ref.min(), pr.min())
            hi = max(hi, ref.max(), pr.max())
        pad = 0.05 * (hi - lo if hi > lo else 1.0)
        ax.plot([lo - pad, hi + pad], [lo - pad, hi + pad], "k-", lw=0.8)
        ax.set_xlim(lo - pad, hi + pad)
        ax.set_ylim(lo - pad, hi + pad)
        ax.set_xlabel(f"reference {q.replace('_', ' ')} ({unit})")
        ax.set_ylabel(f"mMTP {q.replace('_', ' ')} ({unit})")
        ax.legend(fontsize=7)
        fig.tight_layout()
        path = outdir / f"{prefix}_{q}.png"
        save_figure(fig, path, dpi=120)
        plt.close(fig)
        paths.append(path)
    return paths


def write_report(pot, datasets: dict[str, Dataset], outdir: str | os.PathLike, plots: bool = True,
                 symmetrize: bool | None = None, extra: dict | None = None) -> dict:
    """Write ``report.json``, ``report.md`` and (optionally) parity PNGs to ``outdir``; returns the report."""
    outdir = Path(outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    rep = error_report(pot, datasets, symmetrize)
    doc = {"errors": rep, **(extra or {})}
    atomic_write_text(outdir / "report.json", json.dumps(doc, indent=1) + "\n")
    atomic_write_text(outdir / "report.md", to_markdown(rep))
    if plots:
        doc["plots"] = [p.name for p in parity_plots(pot, datasets, outdir, symmetrize)]
    return doc
